"""Issue 11: a progress record is one line in a log file, however long (rich wrapped at 80 columns
when stderr was not a terminal)."""

import subprocess
import sys

from conftest import REPO


def test_a_long_record_stays_one_line_off_a_terminal():
    record = "step 12  train 1.234 bpb  " + "counted 1.0/154.9 MB  " * 12 + "ETA 0:13"
    proc = subprocess.run([sys.executable, "-c", "import sys; from cheaplm.progress import stderr_console; "
                           "stderr_console().print(sys.argv[1])", record],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [record]
