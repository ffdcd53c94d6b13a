"""The document's own words (issue 23 item 2): a third input to the memory-reader mix that knows
what the article is about.

Asked "Who was Archimedes?", chat writes an article whose title is "Archimedes"; a transformer sees
the title at every position and copies it, cheaplm's reader sees a fading scan state and its match
model needs long matches, so the reply never named its subject again. This input remembers the
words of the current document and, inside a word, says which of them it could be:

- A document is the bytes since the last separator: a NUL (the shards' article end, and the zeros
  generation puts before a new document) or the "<doc " that opens a WikiExtractor article (chat's
  framed prompt starts with one). Of that "<doc ...>" line (up to its ">") only the title's words
  (title="...") are counted: "curid" and "title" open every article, so counted they made D push
  c- and t-words at every word start of a reply whose subject had no other word ("the
  competition", "the title track"); the title's words predict the title line that follows.
- Words are maximal runs of letters (A-Z, a-z) and bytes >= 0x80 (UTF-8). When a word of >= 4 bytes
  ends, for each prefix length k = 0..L-1, count(doc, word[:k], next byte word[k]) += 1, and
  count(doc, word, END) += 1; also per prefix: TOTAL (word ends under it), DISTINCT (distinct words
  under it) and HIGH (continuations >= 0x80, so that a prediction reads the 128 UTF-8 bytes only
  when some were seen). The counts sit in one hashed table whose tag holds a document number:
  entries of an earlier document read as zero and are replaced (nothing is ever cleared), so what
  the table says inside a document depends on that document's bytes alone; the slot depends on the
  key alone, so collisions inside a document are the same whatever came before it.
- Prediction at t: w = the bytes since the last non-word byte (empty at a word start). With no word
  under w (or w longer than MAX_WORD), D abstains: every bit probability 0.5, stretch 0, no effect on
  the mix. Otherwise p_D(y) = (count(w, y) + END mass spread evenly over bytes 0x00-0x3F (spaces,
  digits, punctuation) + SMOOTH / 256) / (TOTAL + SMOOTH): it says "this word goes on with y" or
  "the word ends here" and nothing about which non-word byte follows (that bit's stretch is ~0).
- The mix (reader.py): for bit j, z += w_d[j, c] * stretch(P_D(bit j = 1 | bits above)), where c is
  a confidence context (CONTEXTS = 24): prefix length 0/1/2/3+ x distinct words under w 1/2-3/4+
  x whether the word starts a sentence (after . ! ? or a newline, or at the document's start).

It runs on the host as numba njit, where the mix runs: the mix reads (B, 8) numbers per batch that
are on the host in training, scoring and generation alike, so no CUDA twin is needed. It reads the
text once, sequentially (a document's counts need its past): about as fast as the mix itself.
"""

from __future__ import annotations


import math

import numba
import numpy as np

TABLE_BITS = 20  # slots: 12 MB of host memory; a long article (50 KB) fills a few percent
MAX_WORD = 32  # a longer run of word bytes is not a word: D abstains until it ends
CONTEXTS = 24
DOC_SETS = 8 * CONTEXTS  # weights w_d: one per (bit, context)
LOOKBACK = 1 << 20  # how far back a reading looks for its document's start
SMOOTH = 0.5  # pseudo-count spread over all 256 bytes
END_SPREAD = 64  # a word's end puts its mass on bytes 0 .. END_SPREAD - 1

END, TOTAL, DISTINCT, HIGH = 256, 257, 258, 259
# the state vector's fields
DOC, K, HASH, SENT, WSENT, TAIL, TAG = 0, 1, 2, 3, 4, 5, 6
WORD = 7
STATE = WORD + MAX_WORD  # the word's bytes follow the fields
SEED = np.int64(0x2545F4914F6CDD1D)
_DOC_TAG = 0x3C646F6320  # "<doc " as a 40-bit number, first byte highest


@numba.njit(cache=True, inline="always")
def is_word_byte(b):
    return (65 <= b <= 90) or (97 <= b <= 122) or b >= 128


@numba.njit(cache=True, inline="always")
def _mix(h):
    # a 64-bit finaliser (xorshift-multiply); int64 arithmetic wraps as uint64's would
    h ^= (h >> 31) & 0x1FFFFFFFF
    h *= np.int64(-7070675565921424023)
    h ^= (h >> 29) & 0x7FFFFFFFF
    return h


@numba.njit(cache=True, inline="always")
def _step(h, b):
    """The hash of a word prefix after one more byte."""
    return _mix(h + (b + 1) * np.int64(0x100000001B3))


@numba.njit(cache=True, inline="always")
def _slot(h, y, bits):
    kh = _mix(h ^ ((y + 1) * np.int64(-4417276706812531889)))
    idx = (kh >> 7) & ((1 << bits) - 1)
    return idx, (kh >> 40) & 0xFFFFFF


@numba.njit(cache=True, inline="always")
def _get(keys, counts, doc, h, y):
    idx, check = _slot(h, y, _bits(keys))
    if keys[idx] == (doc << 24) | check:
        return counts[idx]
    return 0


@numba.njit(cache=True, inline="always")
def _bits(keys):
    n = keys.size
    b = 0
    while (1 << b) < n:
        b += 1
    return b


@numba.njit(cache=True, inline="always")
def _add(keys, counts, doc, h, y):
    idx, check = _slot(h, y, _bits(keys))
    tag = (doc << 24) | check
    if keys[idx] != tag:  # empty, an earlier document's, or a collision: replaced
        keys[idx] = tag
        counts[idx] = 0
    counts[idx] += 1


@numba.njit(cache=True)
def reset(st, new_doc=True):
    """A new document: the next document number (unless not `new_doc`: a joined document, see
    DocWords.join), no word, at a sentence start."""
    if new_doc:
        st[DOC] += 1
    st[K] = 0
    st[HASH] = SEED
    st[SENT] = 1
    st[WSENT] = 1
    st[TAIL] = 0
    st[TAG] = 0


@numba.njit(cache=True)
def _word_end(keys, counts, st):
    L = st[K]
    if L < 4:
        return
    doc = st[DOC]
    h = SEED
    for k in range(L):
        h = _step(h, st[WORD + k])
    new = _get(keys, counts, doc, h, END) == 0
    h = SEED
    for k in range(L + 1):
        y = st[WORD + k] if k < L else END
        _add(keys, counts, doc, h, y)
        _add(keys, counts, doc, h, TOTAL)
        if 128 <= y < 256:
            _add(keys, counts, doc, h, HIGH)
        if new:
            _add(keys, counts, doc, h, DISTINCT)
        if k < L:
            h = _step(h, st[WORD + k])


@numba.njit(cache=True)
def update(keys, counts, st, b, learn=True, join=False):
    """The state after reading byte b; a word that b ends joins the counts only when `learn`
    (generation reads its own reply with learn False: see DocWords.advance); a separator read with
    `join` starts a sentence but not a new document (DocWords.join)."""
    tail = ((st[TAIL] << 8) | b) & 0xFFFFFFFFFF
    if b == 0 or tail == _DOC_TAG:
        reset(st, not join)
        st[TAG] = 1 if b != 0 else 0  # inside the "<doc ...>" line until its ">"
        return
    st[TAIL] = tail
    if is_word_byte(b):
        if st[K] < 0:
            return  # inside an over-long run
        if st[K] == MAX_WORD:
            st[K] = -1
            return
        if st[K] == 0:
            st[WSENT] = st[SENT]
        st[WORD + st[K]] = b
        st[K] += 1
        st[HASH] = _step(st[HASH], b)
        st[SENT] = 0
        return
    inside = st[TAG]  # 0 out of the "<doc ...>" line; 1 in it; 2 after its "title="; 3 in the title's value
    if inside == 3:
        if b == 34:  # the value's closing quote
            st[TAG] = 1
    elif inside:
        if b == 62:
            st[TAG] = 0
        elif inside == 2:
            st[TAG] = 3 if b == 34 else 1
        elif b == 61 and st[K] == 5 and st[WORD] == 116 and st[WORD + 1] == 105 and st[WORD + 2] == 116 \
                and st[WORD + 3] == 108 and st[WORD + 4] == 101:  # "title="
            st[TAG] = 2
    # the line's own words (curid, title) are every article's, not this one's; its title's are
    if st[K] > 0 and learn and (inside == 0 or inside == 3):
        _word_end(keys, counts, st)
    st[K] = 0
    st[HASH] = SEED
    if b != 32:
        st[SENT] = 1 if (b == 46 or b == 33 or b == 63 or b == 10) else 0


@numba.njit(cache=True)
def distribution(keys, counts, st, p):
    """p[y] = p_D(next byte = y) from the state; returns the confidence context c (0..CONTEXTS-1),
    or -1 when D abstains (p untouched)."""
    k = st[K]
    if k < 0:
        return -1
    doc, h = st[DOC], st[HASH]
    total = _get(keys, counts, doc, h, TOTAL)
    if total == 0:
        return -1
    base = SMOOTH / 256.0
    for y in range(256):
        p[y] = base
    for y in range(65, 91):
        p[y] += _get(keys, counts, doc, h, y)
    for y in range(97, 123):
        p[y] += _get(keys, counts, doc, h, y)
    if _get(keys, counts, doc, h, HIGH) > 0:
        for y in range(128, 256):
            p[y] += _get(keys, counts, doc, h, y)
    end = _get(keys, counts, doc, h, END)
    if end > 0:
        share = end / END_SPREAD
        for y in range(END_SPREAD):
            p[y] += share
    norm = 1.0 / (total + SMOOTH)
    for y in range(256):
        p[y] *= norm
    distinct = _get(keys, counts, doc, h, DISTINCT)
    kb = min(k, 3)
    db = 0 if distinct <= 1 else (1 if distinct <= 3 else 2)
    sent = st[SENT] if k == 0 else st[WSENT]
    return (kb * 3 + db) * 2 + sent


def starts_sentence(c: int) -> bool:
    """Whether confidence context c (distribution's) is a word that starts a sentence."""
    return c >= 0 and (c & 1) == 1


@numba.njit(cache=True)
def path_stretches(p, y, out_row):
    """out_row[j] = stretch(P(bit j = 1 | y's bits above j)) under the distribution p."""
    lo, size = 0, 256
    for j in range(8):
        half = size >> 1
        s0 = 0.0
        for v in range(lo, lo + half):
            s0 += p[v]
        s1 = 0.0
        for v in range(lo + half, lo + size):
            s1 += p[v]
        out_row[j] = stretch(s1 / max(s0 + s1, 1e-300))
        if (y >> (7 - j)) & 1:
            lo += half
        size = half


@numba.njit(cache=True, inline="always")
def _doc_tag_ends(data, i):
    """Whether data[i] is the space that ends a "<doc "."""
    return data[i] == 32 and i >= 4 and data[i - 4] == 60 and data[i - 3] == 100 and data[i - 2] == 111 \
        and data[i - 1] == 99


@numba.njit(cache=True)
def doc_start(data, t, lookback):
    """The start of the document that position t is in: just after the last NUL or "<doc " before
    t, or t - lookback (or 0) when there is none that close."""
    lo = max(0, t - lookback)
    i = t - 1
    while i >= lo:
        b = data[i]
        if b == 0:
            return i + 1
        if _doc_tag_ends(data, i):
            return i + 1
        i -= 1
    return lo


@numba.njit(cache=True)
def begin(data, st, s):
    """The state for reading a document from position s (doc_start's): as update leaves it after
    the separator before s, inside the "<doc " line when that is the separator."""
    reset(st)
    if s >= 1 and _doc_tag_ends(data, s - 1):
        st[TAG] = 1


@numba.njit(cache=True)
def _range_inputs(data, ranges, keys, counts, st, zd, cd, lookback):
    p = np.empty(256)
    at = 0
    for r in range(ranges.shape[0]):
        a, b = ranges[r, 0], ranges[r, 1]
        s = doc_start(data, a, lookback)
        begin(data, st, s)
        for i in range(s, a):
            update(keys, counts, st, data[i])
        for t in range(a, b):
            c = distribution(keys, counts, st, p)
            if c < 0:
                for j in range(8):
                    zd[at, j] = 0.0
                cd[at] = 0
            else:
                path_stretches(p, data[t], zd[at])
                cd[at] = c
            at += 1
            update(keys, counts, st, data[t])


class DocWords:
    """D's table and state; `advance` reads a buffer up to a position (generation's, incrementally),
    `range_inputs` the inputs of whole ranges (scoring and the mix fit)."""

    def __init__(self, bits: int = TABLE_BITS, lookback: int = LOOKBACK):
        self.keys = np.full(1 << bits, -1, np.int64)
        self.counts = np.zeros(1 << bits, np.int32)
        self.st = np.zeros(STATE, np.int64)
        self.lookback = lookback
        self.t = None  # the position whose byte is predicted next (advance)
        self.joined = (0, 0)  # separators in [a, b) start no new document (join)
        self._p = np.empty(256)

    def range_inputs(self, data: np.ndarray, ranges) -> tuple[np.ndarray, np.ndarray]:
        """(zd (n, 8) float32, cd (n,) int64) for the true bytes of data[a:b] for each (a, b) in
        ranges, end to end: zd[i, j] = stretch(P_D(bit j = 1 | bits above)), 0 where D abstains."""
        r = np.asarray(ranges, np.int64).reshape(-1, 2)
        n = int((r[:, 1] - r[:, 0]).sum())
        zd = np.zeros((n, 8), np.float32)
        cd = np.zeros(n, np.int64)
        _range_inputs(data, r, self.keys, self.counts, self.st, zd, cd, self.lookback)
        return zd, cd

    def advance(self, data: np.ndarray, t: int, learn_before: int | None = None) -> None:
        """Read data up to position t (exclusive): from where the last call stopped when that is
        before t and not too far, else from the start of t's document. With `learn_before`, a word
        ended at or after that position is read (the prefix still follows it) but not counted: a
        reply's own words would otherwise feed back (each use of a word makes it likelier), which
        is how greedy and low-temperature replies looped "state the state state ..." (the match
        model's candidates leave the reply out for the same reason, Sampling.self_copy)."""
        a, b = self.joined
        if self.t is None or t < self.t or t - self.t > self.lookback:
            self.t = doc_start(data, t, self.lookback)
            if a < self.t <= b and t - a <= self.lookback:
                self.t = a
            begin(data, self.st, self.t)
        _advance(data, self.t, t, self.keys, self.counts, self.st, t if learn_before is None else learn_before,
                 b if self.t >= a else 0)
        self.t = t

    def join(self, a: int, b: int) -> None:
        """Read data[a:b] as one document with what follows b, whatever separators it holds: chat
        feeds a recalled article as the document before the question's (for the match model and
        the reader, recall.py), and with this D reads its words as the reply's document's own, so
        a recalled answer stays with the article's words. The next advance reads from a."""
        self.joined = (a, b)
        self.t = None

    def snapshot(self) -> tuple:
        """Where the reading is (its state vector, position, joined range), for `restore`. The
        counts are not in it: a caller restores only over bytes read without learning."""
        return self.st.copy(), self.t, self.joined

    def restore(self, snap: tuple) -> None:
        st, self.t, self.joined = snap
        self.st[:] = st

    def distribution(self) -> tuple[np.ndarray | None, int]:
        """(p_D over the next byte, context) at the position advance reached; (None, 0) when D abstains."""
        c = distribution(self.keys, self.counts, self.st, self._p)
        return (None, 0) if c < 0 else (self._p, c)


@numba.njit(cache=True)
def _advance(data, a, b, keys, counts, st, learn_before, join_before):
    for i in range(a, b):
        update(keys, counts, st, data[i], i < learn_before, i < join_before)


def doc_inputs(data: np.ndarray, ranges) -> tuple[np.ndarray, np.ndarray]:
    """DocWords().range_inputs: D's inputs of the true bytes of the ranges."""
    return DocWords().range_inputs(data, ranges)


STRETCH_CLIP = 8.0  # the mixes' logit clip (the memory-reader mix reads this stretch too)


@numba.njit(cache=True, inline="always")
def stretch(p):
    p = min(max(p, 1e-6), 1.0 - 1e-6)
    z = math.log(p / (1.0 - p))
    return min(max(z, -STRETCH_CLIP), STRETCH_CLIP)
