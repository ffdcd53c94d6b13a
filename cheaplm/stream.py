"""A generation stream: the model reading a growing text after its history, byte by byte.

`Generator` keeps the model's memory (history bytes, count tables, mixer) and a stream position.
Each new byte costs: the context hashes of one position, one match-index step (rolling from the
saved index), and the 255 node probabilities of the byte tree (memory.py byte_distribution), from
which the 256-way distribution is read, mixed node by node with the reader's. Nothing is
recomputed over the whole context. How bytes are drawn from it (temperature, guards) is
sample.py's; this module is the model's side.

The history is a past document, not the stream's recent past: the stream starts `gap` bytes after
it (the gap holds zeros and then a copy of the history's last HISTORY_TAIL bytes, so contexts and
match verification read what they would read right after it), which puts every match into the
history beyond the match model's largest recency threshold. Evaluation-equivalent streams (tests)
pass `history_far=False`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import corpus, hostmem
from .docwords import DocWords, starts_sentence as docwords_starts_sentence
from .match import drop_pointers_in
from .memory import PRUNE
from .reader import mixed_distribution, mixed_nibble_masses
from .reader_host import HostReader
from .utf8 import utf8_after

END_OF_ARTICLE = 0
# bytes of history copied in front of a stream that treats the history as far: more than any
# context or match verification reads back
HISTORY_TAIL = 4096
FEED_BATCH = 16
# address space (not memory) reserved after a mapped history for the stream to grow into in place
STREAM_RESERVE = 1 << 30  # feeds at least this long read the reader in one batch


def gained_weights(w: np.ndarray, gain: float) -> np.ndarray:
    """The document words' mix weights at a gain (Sampling.subject). Below 1 every weight is scaled
    (0: D off). Above 1 only the positive ones are: where the mix learnt to trust D's prediction
    of a bit it is trusted more, and where it learnt a negative weight (D over-confident there,
    e.g. "a letter comes next" after a space, where digits and dashes also do) that weight is kept
    as trained. Scaling those too turns D's "a letter" into a push toward anything else: the likely
    cause of the dashes and quote marks that 18 of 80 replies at gain 4 ran into on a 1-minute H200
    model (bench/NOTES.md §21b)."""
    if gain <= 1.0:
        return w * np.float32(gain)
    return np.where(w > 0, w * np.float32(gain), w).astype(np.float32)


class Mark(NamedTuple):
    """Where a stream was (Stream.mark): what rollback restores."""
    t: int
    pending: bytes
    prev_ready: bool
    prev_t: np.ndarray  # a copy: the walk writes the next position's pointers into the stream's own
    rstate: object  # the reader's state: replaced at each byte, never written in place
    doc: tuple | None  # the document words' reading (DocWords.snapshot)
    undo_len: int  # entries of the stream's undo log at the mark


class Stream:
    """A stream after the model's history; feed text, read distributions, sample bytes.

    history_far: the stream starts HISTORY_GAP bytes after the history (see the module docstring);
    False continues the history directly, exactly as evaluation scores a split after it.
    own_index: the stream writes its positions into the model's own match index instead of a copy
    (100 MB for the CPU default, a tenth of `sample`'s start-up); for a caller that makes no other
    generator from this model."""

    def __init__(self, model, history: np.ndarray, extra: int = 1 << 16, history_far: bool = True,
                 own_index: bool = False):
        if model.dev.gpu:
            raise ValueError("generation runs on the CPU twin")
        self.model = model
        self.h = len(history)
        self.gap = max(model.cfg.match_recency, default=0) + HISTORY_TAIL
        # a mapped history (corpus.py) gets a mapping of its own: nothing of the training text is
        # read or copied at start, and the address space reserved after it lets the stream grow in
        # place; any other history is copied (hostmem: numpy's huge-page advice can stall the copy)
        self.buf = corpus.with_room(history, extra + (self.gap if history_far else 0), reserve=STREAM_RESERVE)
        self.t = self.h
        if history_far and self.h:
            self._jump()
        self.start = self.t  # where the stream's first byte went
        self.doc_start = self.t  # where the current document began (new_document)
        self.match = model.match
        self.match.widen(self.h + extra + self.gap)  # int64 positions past 1.75 GiB (256 MiB of room for the stream)
        self.last_pos = self.match.last_pos if own_index else hostmem.copy(self.match.last_pos)
        self.prev_t = self.match.pointers(1)
        self._prev_ready = False
        self.copy_before = None  # with a position: match pointers at or after it are dropped
        self.copy_gap = None  # with (lo, hi): match pointers in [lo, hi) are dropped too (earlier chat turns)
        self._scratch = model.memory.new_node_scratch()
        self._node_p1 = np.zeros(256, np.float64)
        self._nibble_mass = np.zeros(512, np.float64)  # the mix's, for distribution's floor
        self.pruned_most = 0.0
        # the reader's scan state: it has read the positions before t (zero at the generator's start,
        # as evaluation starts a run); _rnext caches position t's reading: (t, probabilities, state after)
        self._rstate = model.reader.new_state(1) if model.reader is not None else None
        self._host = HostReader(model.reader) if model.reader is not None else None  # forward-only, serial per byte
        self._rnext = None
        self.pending = b""  # bytes of an incomplete UTF-8 character at the end of the stream
        # the document's words (docwords.py), read up to t when the mix reads them
        self._doc = DocWords() if model.reader is not None and model.reader.reads_doc else None
        # with marks taken (mark): each position walked into the match index since, with what its
        # slots held before (rollback puts them back)
        self._undo: list | None = None

    def _jump(self) -> None:
        """Move the stream's end `gap` bytes on: zeros, then a copy of the last HISTORY_TAIL bytes
        before the jump. What was before it is then further back than any recency threshold."""
        tail = min(self.t, HISTORY_TAIL)
        self._grow(self.gap)
        self.buf[self.t: self.t + self.gap] = 0
        self.buf[self.t + self.gap - tail: self.t + self.gap] = self.buf[self.t - tail: self.t].copy()
        self.t += self.gap
        self._prev_ready = False
        self._rnext = None

    def new_document(self) -> None:
        """Start a new document (chat's next turn): everything before it counts as far back for
        the match model, as the history does. The match index and the reader's state carry on."""
        if self.t > self.start:
            self._jump()
        self.doc_start = self.t

    def join_documents(self, a: int, b: int) -> None:
        """The document words read the stream's bytes a..b and the document after them as one
        document (DocWords.join): chat's recalled article and the question's."""
        if self._doc is not None:
            self._doc.join(a, b)

    def _ensure_prev(self) -> None:
        if not self._prev_ready:
            self.match.index(self.buf, self.t, self.t + 1, self.prev_t, self.t, last_pos=self.last_pos)
            if self._undo is not None:  # what position t's slots held: the walk read it into prev_t
                self._undo.append((self.t, self.prev_t[:, 0].copy()))
            self._drop(self.prev_t)
            self._prev_ready = True

    def _drop(self, prev) -> None:
        """Drop the match pointers that generation may not copy from (copy_before, copy_gap)."""
        if self.copy_before is not None:
            drop_pointers_in(prev, self.copy_before, np.iinfo(prev.dtype).max)
        if self.copy_gap is not None:
            drop_pointers_in(prev, self.copy_gap[0], self.copy_gap[1])

    def drop_cached(self) -> None:
        """Apply copy_before and copy_gap to the pointers already read for position t, if any."""
        if self._prev_ready:
            self._drop(self.prev_t)

    def mark(self) -> "Mark":
        """The stream as it is now, to come back to with `rollback` (generate's sentence search
        tries several continuations from one point). Marks are taken by pushes and samples only:
        a feed, a new document or a join after a mark is not undone. The document words' counts are
        not copied: they must learn nothing after the mark, so the mark needs copy_before at or
        before it (generate's, unless Sampling.self_copy), and D reads up to the mark first."""
        if self._doc is not None:
            if self.copy_before is None or self.copy_before > self.t:
                raise ValueError("a mark needs the bytes after it left out of the document words' counts "
                                 "(copy_before)")
            self._doc.advance(self.buf, self.t, self.copy_before)
        if self._undo is None:
            self._undo = []
        doc = None if self._doc is None else self._doc.snapshot()
        return Mark(self.t, self.pending, self._prev_ready, self.prev_t.copy(), self._rstate, doc, len(self._undo))

    def rollback(self, mark: "Mark") -> None:
        """Back to `mark`: the bytes after it are forgotten as if never read. The match index gets
        back what the positions walked since held (newest first, while the buffer still holds the
        bytes their slots were hashed from); the reader's state and the document words' are the
        mark's; the position's pointers, if read, are the mark's copy."""
        log = self._undo
        for t, held in reversed(log[mark.undo_len:]):
            self.match.unindex(self.buf, t, held, last_pos=self.last_pos)
        del log[mark.undo_len:]
        self.t, self.pending, self._prev_ready = mark.t, mark.pending, mark.prev_ready
        self.prev_t[:] = mark.prev_t
        self._rstate, self._rnext = mark.rstate, None
        if mark.doc is not None:
            self._doc.restore(mark.doc)

    def unmark(self) -> None:
        """No rollback will come: stop keeping what the match index held."""
        self._undo = None

    def _grow(self, n: int = 1) -> None:
        if self.t + n >= len(self.buf):
            size = len(self.buf) + max(1 << 16, n, len(self.buf) - self.h)
            bigger = corpus.grow(self.buf, size)
            if bigger is None:
                bigger = np.zeros(size, dtype=np.uint8)
                bigger[: self.t] = self.buf[: self.t]
            else:
                bigger[self.t:] = 0  # as the copy: nothing after the stream's end
            self.buf = bigger

    def _reader_probs(self) -> np.ndarray:
        self._ensure_prev()
        if self._rnext is None or self._rnext[0] != self.t:
            state = None if self._rstate is None else self._rstate.copy()
            pr = self._host.next_probs(self.buf, self.t, self.match.args(self.prev_t, self.t), state)
            self._rnext = (self.t, pr, state)
        return self._rnext[1]

    def push(self, byte: int) -> None:
        self._ensure_prev()
        if self._rstate is not None:  # the scan reads every position, sampled or fed
            self._reader_probs()
            self._rstate = self._rnext[2]
        self._grow()
        self.buf[self.t] = byte
        self.t += 1
        self._prev_ready = False
        self._track_utf8(bytes([byte]))

    def _track_utf8(self, data: bytes) -> None:
        for byte in data:
            self.pending = utf8_after(self.pending, byte)

    def feed(self, data: bytes) -> None:
        """Append bytes to the stream. A long feed (a recalled article) walks the match index over
        all of it at once and runs the reader's scan over it in one batch, which leaves both as
        byte-by-byte pushes would."""
        if len(data) < FEED_BATCH:
            for b in data:
                self.push(b)
            return
        n, t0 = len(data), self.t
        self._grow(n + 1)
        self.buf[t0: t0 + n] = np.frombuffer(data, dtype=np.uint8)
        prev = self.match.pointers(n)
        first = t0
        if self._prev_ready:  # position t0 is already in the index: walking it again would point at itself
            prev[:, 0] = self.prev_t[:, 0]
            first = t0 + 1
        self.match.index(self.buf, first, t0 + n, prev, t0, last_pos=self.last_pos)
        self._drop(prev)
        if self._rstate is not None:  # the scan's state after the fed bytes: nothing after the scan is read
            state = self._rstate.copy()
            self._host.advance(self.buf, t0, t0 + n, self.match.args(prev, t0), state)
            self._rstate = state
        self.t = t0 + n
        self._prev_ready = False
        self._rnext = None
        self._track_utf8(data)

    def distribution(self, doc_gain: float = 1.0, doc_gain_inside: float | None = None, floor: float = 0.0) -> np.ndarray:
        """P(next byte) over 0..255 (float64), from the model alone: the memory's byte tree, mixed
        node by node with the reader's distribution when the model has a reader (as evaluation
        mixes the bits of the true byte, reader.py). doc_gain: the document words' mix weights
        times this (Sampling.subject; 1 is the model as trained and scored; above 1, the positive
        weights only: gained_weights); doc_gain_inside, when
        given, replaces it where D's context says the word does not start a sentence
        (Sampling.subject_inside).
        floor > 0 (generation, Generator.sample): with a reader, a high nibble whose probability
        under the mix is below floor x the likeliest nibble's is not expanded by the memory (its
        memory nodes are 0.5; it keeps its probability, which the reader shares out among its bytes);
        self.pruned_most is then the largest such nibble's
        probability, which bounds each of its bytes (0 when none was pruned so)."""
        self._ensure_prev()
        m = self.model
        out = np.zeros(256, np.float64)
        self.pruned_most = 0.0
        margs = self.match.args(self.prev_t, self.t)
        if m.reader is None:
            m.memory.node_probs(self.buf, self.t, margs, self._scratch, out, self._node_p1)
            return out
        pr = self._reader_probs()
        doc = None
        if self._doc is not None:  # the same inputs as evaluation's (docwords.doc_inputs)
            self._doc.advance(self.buf, self.t, self.copy_before)  # a reply's words are not counted
            p_d, c = self._doc.distribution()
            gain = doc_gain if (doc_gain_inside is None or docwords_starts_sentence(c)) else doc_gain_inside
            doc = (p_d, c, m.reader.mix_doc if gain == 1.0 else gained_weights(m.reader.mix_doc, gain))
        if floor <= 0.0:
            m.memory.node_probs(self.buf, self.t, margs, self._scratch, out, self._node_p1)
        else:
            mem = m.memory
            mem.node_probs_top(self.buf, self.t, margs, self._scratch, self._node_p1)
            mixed_nibble_masses(self._node_p1, pr, m.reader.mix, self._nibble_mass, doc)
            nib = self._nibble_mass[16:32]
            keep = self._scratch.mass[16:32] >= PRUNE  # as node_probs: the memory's own pruning
            low = nib < floor * nib.max()
            self.pruned_most = float(nib[keep & low].max()) if np.any(keep & low) else 0.0
            mem.node_probs_low(self.buf, self.t, self._scratch, out, self._node_p1, keep & ~low)
        mixed_distribution(self._node_p1, pr, m.reader.mix, self._scratch.mass, out, doc)
        return out

    def history_copies(self, most: int) -> set:
        """Bytes that would continue a verbatim copy of at least `most` bytes of what came before the
        current document (the history, earlier chat turns): what the match candidates pointing there
        predict, where they verify that far back. What the document itself holds (a recalled
        article, fed into it) may be quoted."""
        self._ensure_prev()
        return self.match.copy_candidates(self.buf, self.t, self.prev_t, self.doc_start, most)
