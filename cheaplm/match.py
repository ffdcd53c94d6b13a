"""The match model: where the current context last occurred, and what followed it.

`MatchSpec` is what the match model is (minimum lengths, index size, verification cap, recency
thresholds, one input per minimum length or one in all); the memory's mixer and the reader both
take it. `MatchModel` owns the hash index (`last_pos`: for each minimum length, the last position
of each hash) and builds the causal pointers (`prev[k, t]`: the previous occurrence of the context
of t) for a range of text, at once or ahead of training on a background thread (`IndexAhead`).
The kernels are in kernels/match.py.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numba
import numpy as np

from .kernels import match as kmatch
from .kernels.match import BY_ROW  # noqa: F401 (prev_base of pointers gathered by row: pointers.py)


@dataclass(frozen=True)
class MatchSpec:
    minlens: tuple  # longest first
    bits: int  # rows of the hash index per minimum length
    cap: int  # verify a match at most this many bytes back
    recency: tuple  # distance thresholds of the match state, increasing
    each: bool  # one input per minimum length (else one: the longest that verifies)

    @property
    def states(self) -> int:
        """States of one candidate (0 = none): length bucket x how far back."""
        return kmatch.match_states(self.cap, len(self.recency))

    @property
    def inputs(self) -> int:
        """Candidates the mixer and the reader read."""
        return len(self.minlens) if self.each else 1

    def array(self) -> np.ndarray:
        """The kernels' int64 vector (kernels/match.py SPEC_SLOTS)."""
        out = np.zeros(kmatch.SPEC_LEN, np.int64)
        out[kmatch.M_CAP], out[kmatch.M_INPUTS], out[kmatch.M_STATES] = self.cap, self.inputs, self.states
        out[kmatch.M_NREC] = len(self.recency)
        for i, d in enumerate(self.recency):
            out[kmatch.M_REC + i] = d
        return out


# positions fit int32 below this (with room for an evaluated or generated stream after the
# history); a longer text's index and pointers are int64
POS32_MOST = 2**31 - 2**28


def position_dtype(length: int):
    """The dtype of the index and pointers of a text of `length` bytes: int32 (what every run
    shorter than 1.75 GiB stores), else int64."""
    return np.int32 if length < POS32_MOST else np.int64


class MatchModel:
    """The hash index of the text seen so far, and the pointers the mixer and reader read."""

    def __init__(self, spec: MatchSpec, device, last_pos=None):
        self.spec = spec
        self.minlens = np.asarray(spec.minlens, dtype=np.int64)
        self.last_pos = (last_pos if last_pos is not None
                         else np.full((len(spec.minlens), 1 << spec.bits), -1, dtype=np.int32))
        self.d_minlens = device.put(self.minlens)
        self.d_spec = device.put(spec.array())

    def widen(self, length: int) -> None:
        """Hold the index as int64 if a text of `length` bytes needs it (position_dtype)."""
        if position_dtype(length) == np.int64 and self.last_pos.dtype != np.int64:
            self.last_pos = self.last_pos.astype(np.int64)

    def pointers(self, n: int) -> np.ndarray:
        """An empty (minimum lengths, n) pointer array, of the index's dtype."""
        return np.full((len(self.spec.minlens), n), -1, dtype=self.last_pos.dtype)

    def index(self, data, start: int, end: int, prev, prev_base: int, last_pos=None) -> None:
        """Walk data[start:end] into the index (`last_pos`, the model's own unless given), writing
        each position's pointers to prev[:, t - prev_base] first (one thread)."""
        kmatch.match_index(data, start, end, self.minlens, self.spec.bits,
                           self.last_pos if last_pos is None else last_pos, prev, prev_base)

    def unindex(self, data, t: int, held, last_pos=None) -> None:
        """Undo `index`'s walk of position t alone (the last walked first): its slots get back `held`,
        what the walk wrote into t's pointers column before any were dropped (Stream.rollback)."""
        kmatch.unindex(data, t, self.minlens, self.spec.bits, self.last_pos if last_pos is None else last_pos, held)

    def index_parallel(self, data, start: int, end: int, prev, last_pos=None, workspace=None) -> None:
        """As index (prev_base 0), the range split over all threads, with the same result."""
        kmatch.match_index_parallel(data, start, end, self.minlens, self.spec.bits,
                                    self.last_pos if last_pos is None else last_pos, prev, 0, workspace)

    def workspace(self) -> np.ndarray:
        """Per-thread tables for walk (fresh: each walk of a text from an earlier point needs its own)."""
        return kmatch.index_workspace(self.minlens, self.spec.bits, self.last_pos.dtype)

    def walk(self, data, lo: int, hi: int, last_pos, prev, work) -> None:
        """Walk data[lo:hi) into last_pos on all threads, writing prev[:, t - lo]; work: a workspace
        that only earlier bytes of this walk have used, or a fresh one."""
        kmatch.match_index_parallel(data, lo, hi, self.minlens, self.spec.bits, last_pos, prev, lo, work)

    def args(self, prev, prev_base: int) -> tuple:
        """What a kernel reads of the match model for positions whose pointers are prev[:, t - prev_base]."""
        return (prev, prev_base, self.d_minlens, self.d_spec)

    def copy_candidates(self, buf, t: int, prev_t, before: int, most: int) -> set:
        """Bytes the candidates of position t predict where they point before `before` and verify
        at least `most` bytes back: what continuing a verbatim copy of that text would draw."""
        out = set()
        for k in range(prev_t.shape[0]):
            p = int(prev_t[k, 0])
            if 0 <= p < before and kmatch.verified_length(buf, t, p, self.spec.cap) >= most:
                out.add(int(buf[p]))
        return out


def match_at(match, pos):
    """The kernels' match arguments for host positions pos: `match` itself when it is one tuple for
    every position (MatchModel.args), else what it gathers for them (pointers.WindowedPointers)."""
    return match.args_for(pos) if hasattr(match, "args_for") else match


@numba.njit(cache=True)
def drop_pointers_in(prev, lo, hi):
    """Match pointers in [lo, hi) become 'no match' (generation: the reply's own bytes, from its
    start to the end; earlier chat turns)."""
    for k in range(prev.shape[0]):
        for i in range(prev.shape[1]):
            if lo <= prev[k, i] < hi:
                prev[k, i] = -1


class IndexAhead:
    """Match pointers for data[start:end], built block by block in order on a background thread
    (kernels/match.py releases the GIL), or all at once when background is False."""

    FIRST_BLOCK = 2 << 20  # small, so that counting starts at once; then blocks double, since each
    MAX_BLOCK = 64 << 20  # call pays a fixed cost of merging its per-thread tables

    def __init__(self, data, start, end, minlens, bits, last_pos, prev, background: bool):
        self.args = (data, minlens, bits, last_pos, prev)
        self.last_pos = last_pos  # once done: the index of data[:end]
        self.start, self.end = start, end
        self.done = start
        self.error = None
        self.cv = threading.Condition()
        self.thread = None
        if background:
            self.thread = threading.Thread(target=self._run, name="match-index", daemon=True)
            self.thread.start()
        else:
            self._run()

    def _run(self) -> None:
        data, minlens, bits, last_pos, prev = self.args
        try:
            if self.thread is not None:
                # leave one core to the thread that drives the GPU (the setting is per thread)
                numba.set_num_threads(max(1, numba.get_num_threads() - 1))
            work = kmatch.index_workspace(minlens, bits, last_pos.dtype)
            lo, block = self.start, self.FIRST_BLOCK
            while lo < self.end:
                hi = min(lo + block, self.end)
                kmatch.match_index_parallel(data, lo, hi, minlens, bits, last_pos, prev, 0, work)
                with self.cv:
                    self.done = hi
                    self.cv.notify_all()
                lo, block = hi, min(2 * block, self.MAX_BLOCK)
        except BaseException as exc:  # surfaced by wait() in the training thread
            with self.cv:
                self.error = exc
                self.cv.notify_all()

    def wait(self, end: int) -> None:
        """Block until the pointers of every position below `end` are built."""
        with self.cv:
            while self.done < min(end, self.end) and self.error is None:
                self.cv.wait()
        if self.error is not None:
            raise self.error
