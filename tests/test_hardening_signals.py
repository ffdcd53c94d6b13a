"""Ctrl-C and SIGTERM during `prepare`: one message, no tracebacks, nothing left behind (issue 12, items 7 and 12)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from cheaplm.prepare import PrepareOptions, prepare

from conftest import REPO, SAMPLE_DUMP

# Runs `cheaplm prepare` with a reader that stops after its first page until killed.
DRIVER = """
import sys, time
from pathlib import Path
import cheaplm.prepare as prep
from cheaplm.cli import main
ready, src, out = sys.argv[1:4]
real = prep.read_pages
def stalled(source, state):
    for page in real(source, state):
        yield page
        Path(ready).write_text("reading")
        time.sleep(60)
prep.read_pages = stalled
sys.argv = ["cheaplm", "prepare", src, "--out", out, "--workers", "2"]
main()
"""


@pytest.fixture
def started():
    """Processes a test starts; any still running at its end (a failed test) are killed with their group."""
    procs = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_until_reading(tmp_path, started):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, str(driver), str(ready), str(SAMPLE_DUMP), str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})  # this checkout's cheaplm
    started.append(proc)
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.3)  # the workers are up and idle
    return proc


def left_behind(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if p.name not in ("driver.py", "ready"))


def test_ctrl_c_reaches_the_workers_too_but_prints_no_traceback(tmp_path, started):
    proc = run_until_reading(tmp_path, started)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: the whole process group
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "Interrupted" in err
    assert left_behind(tmp_path) == []


def test_sigterm_removes_the_partial_output(tmp_path, started):
    proc = run_until_reading(tmp_path, started)
    assert any(name.startswith(".out.partial-") for name in left_behind(tmp_path))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "Interrupted" in err, err
    assert left_behind(tmp_path) == []


def test_partial_output_of_a_dead_run_is_removed_at_the_next_start(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.partial-{dead.pid}"
    stale.mkdir()
    (stale / "train-00000.bin").write_bytes(b"x" * 1000)
    alive = tmp_path / f".out.partial-{os.getppid()}"  # a live process's: not ours to remove
    alive.mkdir()
    prepare([str(SAMPLE_DUMP)], tmp_path / "out", PrepareOptions(workers=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, "out"])
