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


def test_eta_does_not_jump_after_a_slow_start():
    """30 s of start-up (kernels compiling) at 1% done, then 10% every 5 s: the ETA from the whole
    elapsed time said 4:43, then 2:30, then 1:36 (a jump each line); from the rate since progress
    was first seen it falls by the 5 s that pass."""
    from cheaplm.progress import Eta

    eta = Eta()
    points = [(30.0, 0.01)] + [(30.0 + 5 * k, 0.01 + 0.1 * k) for k in range(1, 9)]
    got = [eta(el, fr) for el, fr in points]
    assert got[0] == float("inf")
    for (el_a, _), (el_b, _), a, b in zip(points[1:], points[2:], got[1:], got[2:]):
        assert abs((a - b) - (el_b - el_a)) < 1e-6
    naive = [el * (1 - fr) / fr for el, fr in points[1:]]
    assert naive[0] - naive[1] > 100  # what the old formula did between two lines 5 s apart
    assert eta(100.0, 1.0) == 0.0
