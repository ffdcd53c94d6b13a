"""A training run's control: the run directory's lock and stop requests (SIGINT/SIGTERM)."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX: runs are not locked
    fcntl = None


class TrainError(Exception):
    """User-facing training failure (one line)."""


class StopRequested:
    """SIGINT/SIGTERM set a flag; the loop stops at the next step boundary and checkpoints. The
    final checkpoint is written inside this scope too, so a second Ctrl-C (or a SIGTERM) only
    repeats the request instead of interrupting the write (checkpoint.save also holds signals back
    while it writes)."""

    def __init__(self):
        self.flag = False
        self.signal = None

    def __enter__(self):
        self._old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (tests)
                pass
        return self

    def _handle(self, signum, frame):
        if self.flag:
            with contextlib.suppress(OSError):
                os.write(2, f"{signal.Signals(signum).name}: already stopping; writing the checkpoint first\n".encode())
            return
        self.flag = True
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


class RunLock:
    """A run directory locked for one training run: flock on RUN_DIR/.lock, which holds the pid.

    Two `train`s into one --out both ran and appended to one history.bin (issue 12 item 4); the
    second is now refused. The kernel drops the lock when the process ends, however it ends, so a
    killed run leaves no stale lock (the file stays, unlocked). A directory made here is removed
    again if the run fails before writing anything into it.
    """

    NAME = ".lock"

    def __init__(self, run_dir: Path, create: bool):
        self.run_dir = Path(run_dir)
        self.create = create  # False for --resume: a missing run is load_model's error to report
        self.fd: int | None = None
        self.made = False

    def __enter__(self) -> "RunLock":
        if fcntl is None or (not self.create and not self.run_dir.is_dir()):
            return self
        if self.create:
            try:
                self.run_dir.mkdir(parents=True)
                self.made = True
            except FileExistsError:
                if not self.run_dir.is_dir():
                    raise TrainError(f"{self.run_dir}: exists and is not a directory; choose another --out") from None
            except OSError as exc:
                raise TrainError(f"{self.run_dir}: cannot create the run directory ({exc.strerror or exc})") from None
        try:
            fd = os.open(self.run_dir / self.NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            self._remove_if_empty()
            raise TrainError(f"{self.run_dir}: cannot lock the run directory ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise TrainError(f"{self.run_dir}: another cheaplm train (pid {holder}) is using this run directory; "
                             "wait for it to finish or choose another --out") from None
        except OSError:  # a file system without locks: run unlocked rather than not at all
            os.close(fd)
            return self
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self.fd = fd
        return self

    def _remove_if_empty(self) -> None:
        if self.made:
            with contextlib.suppress(OSError):
                if {p.name for p in self.run_dir.iterdir()} <= {self.NAME}:
                    (self.run_dir / self.NAME).unlink(missing_ok=True)
                    self.run_dir.rmdir()

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None:
            self._remove_if_empty()  # still locked: nobody else is inside
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None
