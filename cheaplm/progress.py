"""Progress on stderr: a live line on a terminal, a plain line every few seconds otherwise."""

from __future__ import annotations

import sys
import time

from rich.console import Console


def stderr_console() -> Console:
    # rich honours NO_COLOR by itself; stderr keeps stdout clean for generated text. soft_wrap: a
    # record stays one line (rich wrapped at 80 columns when stderr was a file, and grep on a log
    # then saw half lines: issue 11)
    return Console(stderr=True, highlight=False, soft_wrap=True)


def fmt_seconds(s: float) -> str:
    if s != s or s == float("inf"):
        return "?"
    s = int(s)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class Eta:
    """Seconds left, from the rate since progress was first seen. Start-up (compiling kernels,
    starting workers, filling buffers) is no rate: counting it made the first estimates several
    times too long, and the ETA then jumped (0:35 -> ETA 2:03, then 0:45 -> ETA 0:13; issue 11)."""

    def __init__(self):
        self.origin = None  # (elapsed, fraction) when progress was first seen

    def __call__(self, elapsed: float, frac: float) -> float:
        if frac >= 1.0:
            return 0.0
        if self.origin is None:
            if frac > 0:
                self.origin = (elapsed, frac)
            return float("inf")
        el0, f0 = self.origin
        if frac <= f0 or elapsed <= el0:
            return float("inf")
        return (elapsed - el0) * (1.0 - frac) / (frac - f0)


class Progress:
    """Tracks input bytes consumed against a known total: articles, MB/s of text, ETA."""

    def __init__(self, console: Console | None, total: int, unit: str = "items", every: float = 2.0):
        self.console = console
        self.total = max(total, 1)
        self.unit = unit
        self.every = every if (console is not None and console.is_terminal) else max(every, 10.0)
        self.t0 = time.time()
        self.last = 0.0
        self.live = console is not None and console.is_terminal
        self.eta = Eta()

    def update(self, done_input: int, count: int, text_bytes: int) -> None:
        if self.console is None:
            return
        now = time.time()
        if now - self.last < (0.25 if self.live else self.every):
            return
        self.last = now
        el = now - self.t0
        frac = min(done_input / self.total, 1.0)
        eta = self.eta(el, frac)
        line = (f"{frac * 100:5.1f}%  {count:,} {self.unit}  {text_bytes / 1e6 / max(el, 1e-9):.1f} MB/s  "
                f"elapsed {fmt_seconds(el)}  ETA {fmt_seconds(eta)}")
        if self.live:
            sys.stderr.write("\r" + line + "   ")
            sys.stderr.flush()
        else:
            self.console.print(line)

    def finish(self) -> None:
        if self.live:
            sys.stderr.write("\n")
            sys.stderr.flush()
