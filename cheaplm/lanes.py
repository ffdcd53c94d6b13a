"""Which text positions the reader reads in one batch: lanes of consecutive bytes.

A set of (start, end) ranges of the data is seen as one virtual text (the ranges end to end). A
batch is `lanes` runs of `chunk` consecutive virtual positions each, lane-major (row = lane * chunk
+ t), so that the reader's recurrent state (kernels/scan.py) can move along each lane. With chunk 1
it is the old "stream" order: many cursors, each one byte further at each step.
"""

from __future__ import annotations

import numpy as np


class VirtualText:
    """Maps virtual positions (0 .. total-1 over the ranges end to end) to data positions."""

    def __init__(self, ranges):
        self.sizes = np.array([b - a for a, b in ranges], dtype=np.int64)
        self.starts = np.array([a for a, _ in ranges], dtype=np.int64)
        self.ends = np.cumsum(self.sizes)  # virtual end of each range
        self.total = int(self.ends[-1]) if len(self.ends) else 0

    def range_of(self, v: np.ndarray) -> np.ndarray:
        return np.minimum(np.searchsorted(self.ends, v, side="right"), len(self.ends) - 1)

    def to_data(self, v: np.ndarray) -> np.ndarray:
        k = self.range_of(v)
        return self.starts[k] + v - (self.ends[k] - self.sizes[k])


def stream_positions(ranges, lanes: int, step: int, chunk: int = 1) -> np.ndarray:
    """Step `step` of `lanes` cursors spread evenly over the bytes of `ranges`, each `chunk` bytes
    further on each step (and round again after its stretch): lanes * chunk positions, lane-major."""
    text = VirtualText(ranges)
    stretch = max(1, text.total // lanes)
    at = (np.arange(lanes, dtype=np.int64) * stretch)[:, None] + (step * chunk + np.arange(chunk)) % stretch
    return text.to_data((at % text.total).ravel())


def range_pieces(text: VirtualText, lanes: int, warm: int) -> list[tuple[int, int, int]]:
    """The pieces a range is scored in, (virtual begin of reading, lo of scoring, hi), in text order:
    each range cut into pieces of at most ceil(total / lanes) bytes, each read from a zero state
    `warm` bytes before its lo (never before its range's start). A scored byte's probabilities
    depend only on its piece, however the pieces are then laid out (RangeSchedule's lanes on a
    GPU, PieceSweep on the host)."""
    seg = max(1, -(-text.total // lanes))
    pieces = []
    for k in range(len(text.sizes)):
        r_lo = int(text.ends[k] - text.sizes[k])
        for lo in range(r_lo, int(text.ends[k]), seg):
            pieces.append((max(r_lo, lo - warm), lo, min(lo + seg, int(text.ends[k]))))
    return pieces


class PieceSweep:
    """The pieces of range_pieces read in one sweep along the virtual text, a window of `window`
    positions at a time (the host's forward-only reading, reader_host.py). In a window every
    position is read once by the layers that see only its own bytes, and once per piece that
    covers it by the scan; windows() yields, per window [v0, v1):
    - rows: window-local position of each scan row, the rows of one piece consecutive and in order;
    - seg_lo, seg_hi, seg_piece: each piece's rows in this window and its index (state slot);
    - scored: for each window position, the scan row of the piece that scores it."""

    def __init__(self, ranges, lanes: int, warm: int, window: int):
        self.text = VirtualText(ranges)
        p = np.array(range_pieces(self.text, lanes, warm), dtype=np.int64).reshape(-1, 3)
        self.begin, self.lo, self.hi = p[:, 0], p[:, 1], p[:, 2]
        self.n_pieces = len(p)
        self.window = max(1, window)

    def windows(self):
        for v0 in range(0, self.text.total, self.window):
            v1 = min(v0 + self.window, self.text.total)
            live = np.flatnonzero((self.begin < v1) & (self.hi > v0))
            a = np.maximum(self.begin[live], v0)
            b = np.minimum(self.hi[live], v1)
            seg_hi = np.cumsum(b - a)
            seg_lo = seg_hi - (b - a)
            rows = np.repeat(a - v0 - seg_lo, b - a) + np.arange(int(seg_hi[-1]), dtype=np.int64)
            scored = np.empty(v1 - v0, np.int64)
            s_lo = np.maximum(self.lo[live], a)
            for k in range(len(live)):  # the scored part of each piece's rows, by window position
                scored[s_lo[k] - v0: b[k] - v0] = seg_lo[k] + (s_lo[k] - a[k]) + np.arange(b[k] - s_lo[k])
            yield v0, v1, rows, seg_lo, seg_hi, live, scored


class RangeSchedule:
    """Scores every byte of `ranges` exactly once in lanes of consecutive positions.

    Each range is cut into pieces of at most about total / lanes bytes; a piece is read from up to
    `warm` bytes before it (never before its range's start) so that the state has read the piece's
    recent past, and from a zero state: no lane carries state from one range into another. Pieces
    are dealt to lanes (the longest to the least loaded), each padded to whole steps; steps()
    yields (data positions, virtual positions, which rows are scored, which lanes start afresh)."""

    def __init__(self, ranges, lanes: int, chunk: int, warm: int):
        self.text = VirtualText(ranges)
        self.lanes, self.chunk = lanes, chunk
        pieces = sorted(range_pieces(self.text, lanes, warm), key=lambda p: p[0] - p[2])  # longest first
        load = np.zeros(lanes, np.int64)
        self.plan = [[] for _ in range(lanes)]
        for begin, lo, hi in pieces:
            lane = int(np.argmin(load))
            steps = -(-(hi - begin) // chunk)
            self.plan[lane].append((int(load[lane]), int(load[lane]) + steps, begin, lo, hi))
            load[lane] += steps
        self.n_steps = int(load.max()) if len(pieces) else 0

    def steps(self):
        t = np.arange(self.chunk)
        v = np.zeros((self.lanes, self.chunk), np.int64)
        scored = np.zeros((self.lanes, self.chunk), bool)
        fresh = np.zeros(self.lanes, bool)
        for s in range(self.n_steps):
            v[:] = 0
            scored[:] = False
            fresh[:] = False
            for lane, plan in enumerate(self.plan):
                for first, end, begin, lo, hi in plan:
                    if first <= s < end:
                        at = begin + (s - first) * self.chunk + t
                        scored[lane] = (at >= lo) & (at < hi)
                        v[lane] = np.minimum(at, hi - 1)  # past the piece's end: repeat its last byte
                        fresh[lane] = s == first
                        break  # no piece now: the lane idles on the first byte (v = 0), nothing scored
            yield self.text.to_data(v.ravel()), v.ravel().copy(), scored.ravel().copy(), fresh.copy()
