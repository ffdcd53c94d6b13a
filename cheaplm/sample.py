"""Generation: drawing bytes from a model's stream, one at a time.

The model's side (the stream after the history, the next byte's distribution) is stream.py's;
this module is how bytes are drawn from it: temperature, top-k/top-p/min-p, the guards below.

Output is always valid UTF-8: bytes that cannot continue a valid UTF-8 sequence at this point
get probability 0 before sampling, and a character cut by --max-bytes is completed. The NUL byte
ends an article in the shard format, so sampling stops there.

Three rules keep generated text from feeding on itself or on the training text's last article
(issue 13: replies copied the end of the history and looped "the standard of the standard of"):
- the history is a past document, not the stream's recent past: the stream starts HISTORY_GAP
  bytes after it (the gap holds zeros and then a copy of the history's last bytes, so contexts
  and match verification read what they would read right after it), which puts every match into
  the history beyond the match model's largest recency threshold;
- while a reply is generated its own bytes are not match candidates (`Sampling.self_copy`);
- a byte that would repeat an n-byte string of the reply is not sampled (`Sampling.no_repeat`);
- a byte that would continue a long verbatim copy of the training text is not sampled
  (`Sampling.max_copy`; recall's article is read into the stream, so quoting it is not affected).
  Both guards act at word starts (after a space), so they change the next word, not a letter.
Evaluation-equivalent streams (tests) pass `history_far=False`.
"""

from __future__ import annotations

from dataclasses import dataclass

import copy
import math

import numba
import numpy as np
import regex

from .docwords import is_word_byte
from .stream import END_OF_ARTICLE, Stream
from .utf8 import char_complete, utf8_after, utf8_allowed  # noqa: F401 (callers read them from here)


@dataclass(frozen=True)
class Sampling:
    """How bytes are drawn from the model's distribution (the CLI's defaults are these).

    The defaults are bench/language_quality.py's choice (bench/RESULTS.md, "Answers"): of the rows it
    measured on the H200's 5-minute model, T 0.5 with min-p 0.2, no-repeat 16 and max-copy 32 was
    the warmest whose free answers read no worse to the judge than real article leads, with no loops
    and no copies (T 0.8 and no-repeat 24 read 1.215 bits per byte to the judge, leads 1.087; T 0.5
    with no-repeat 24 looped in 4 of 40 answers). `subject` is 1 here (the model as trained), with no
    return and no hold; chat's are 1.5, 4 after 100 bytes off subject, held (chat.SAMPLING)."""

    temperature: float = 0.5
    top_k: int = 0  # keep the k most likely bytes (0 = all)
    top_p: float = 0.95  # nucleus
    min_p: float = 0.2  # drop bytes less likely than min_p x the most likely one
    no_repeat: int = 16  # a byte completing an n-byte string already in the reply is not drawn (0 = off)
    max_copy: int = 32  # a byte continuing a verbatim copy of this many bytes from before the document is not drawn (0 = off)
    self_copy: bool = False  # let the match model copy from the reply itself
    # the document words' weight in the mix (docwords.py) times this: > 1 holds the reply to its
    # document's words (chat's title, a recalled article); 1: as trained
    subject: float = 1.0
    # the same gain inside a sentence (after its first word); None: `subject` everywhere. D's trained
    # weights are largest where a word starts a sentence, where an article names its subject again
    subject_inside: float | None = None
    # the subject's return: after `subject_drift` bytes of reply that do not name the subject (a word
    # starting with one of Generator.subject_words), the gain is `subject_return` until a word does.
    # A constant gain pushes the document's words everywhere, where the reply is on subject too; this
    # one pushes only where it has drifted (0: off; generate() with no subject words: off)
    subject_drift: int = 0
    subject_return: float = 4.0
    # the subject's hold: a reply that has not named its subject yet does not end, neither with its
    # paragraph (generate's `stop` at a newline is deferred; the reply goes on into the next one,
    # where the return can bring the subject back) nor with its article. Off: a reply may end before
    # the return ever starts
    subject_hold: bool = False
    # the sentence search: after the reply's first sentence (or its first SEARCH_UNIT bytes), each
    # sentence (or stretch of SEARCH_UNIT bytes to a word end) is drawn this many times from the same
    # point (Stream.mark, rollback) and one kept (generate's _search): one that ends before the
    # limit, then one with no word twice in a row and no 20-byte string a third time in the reply
    # (repeats), then one that names the subject where the reply would otherwise go `subject_drift`
    # bytes (or, held, its whole length) without it, then the likeliest per byte under the
    # distribution it was drawn from. 1: off, every byte drawn once
    search: int = 1

    def check(self) -> "Sampling":
        """Raises ValueError naming the option for a value that would sample garbage."""
        t = self.temperature
        # log p / T must stay finite for every byte: nan, inf or a subnormal T would sample garbage
        if not (t == 0 or 1e-3 <= t <= 1e3):
            raise ValueError(f"--temperature must be 0 (greedy) or from 0.001 to 1000, not {t}")
        if not (0 < self.top_p <= 1):
            raise ValueError(f"--top-p must be in (0, 1], not {self.top_p}")
        if not (0 <= self.min_p < 1):
            raise ValueError(f"--min-p must be in [0, 1), not {self.min_p}")
        if not (0 <= self.top_k <= 256):
            raise ValueError(f"--top-k must be in 0..256, not {self.top_k}")
        if self.no_repeat != 0 and not (4 <= self.no_repeat <= 4096):
            raise ValueError(f"--no-repeat must be 0 (off) or from 4 to 4096 bytes, not {self.no_repeat}")
        if self.max_copy != 0 and not (8 <= self.max_copy <= 64):
            raise ValueError(f"--max-copy must be 0 (off) or from 8 to 64 bytes, not {self.max_copy}")
        if not (0 <= self.subject <= 8):  # nan fails too
            raise ValueError(f"--subject must be from 0 to 8, not {self.subject}")
        if self.subject_inside is not None and not (0 <= self.subject_inside <= 8):
            raise ValueError(f"--subject-inside must be from 0 to 8, not {self.subject_inside}")
        if not (0 <= self.subject_drift <= 1 << 20):
            raise ValueError(f"--subject-drift must be from 0 (off) to {1 << 20} bytes, not {self.subject_drift}")
        if not (0 <= self.subject_return <= 8):
            raise ValueError(f"--subject-return must be from 0 to 8, not {self.subject_return}")
        if not (1 <= self.search <= 16):
            raise ValueError(f"--search must be from 1 (off) to 16 sentences, not {self.search}")
        if self.search > 1 and self.self_copy:
            raise ValueError("--search needs the reply left out of the memory's copies and counts (no self-copy)")
        return self


def draw(q: np.ndarray, rng: np.random.Generator) -> int:
    """A byte from the normalised distribution q: the inverse CDF of one uniform draw (reproducible
    from the seed)."""
    y = min(int(np.searchsorted(np.cumsum(q), rng.random() * q.sum(), side="right")), 255)
    while q[y] == 0:  # a zero-probability byte can only be hit at a cumsum tie; step back
        y -= 1
    return y


def filter_probs(p: np.ndarray, temperature: float, top_k: int, top_p: float, min_p: float = 0.0) -> np.ndarray:
    """Temperature, then top-k, then nucleus (top-p), then min-p; returns a normalised distribution."""
    p = np.asarray(p, dtype=np.float64)
    total = p.sum()
    if total <= 0:
        raise ValueError("no byte is allowed here")
    p = p / total
    if temperature == 0:
        q = np.zeros_like(p)
        q[int(np.argmax(p))] = 1.0
        return q
    if temperature != 1.0:
        with np.errstate(divide="ignore"):
            logp = np.where(p > 0, np.log(p), -np.inf) / temperature
        logp -= logp.max()
        p = np.exp(logp)
        p /= p.sum()
    if top_k and top_k < 256:
        keep = np.argsort(-p, kind="stable")[:top_k]
        q = np.zeros_like(p)
        q[keep] = p[keep]
        p = q / q.sum()
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        csum = np.cumsum(p[order])
        cut = int(np.searchsorted(csum, top_p)) + 1
        q = np.zeros_like(p)
        q[order[:cut]] = p[order[:cut]]
        p = q / q.sum()
    if min_p > 0:
        p = np.where(p >= min_p * p.max(), p, 0.0)
        p /= p.sum()
    return p


# ---- the fused path: filter_probs and draw in one pass over the 256 probabilities ---------------------
#
# filter_probs (NumPy) is the reference; sample_byte below is the same arithmetic in the same order
# (the same divisions, NumPy's pairwise sums, a stable descending sort, the same cumulative sums), so it
# draws the same byte from the same uniform. np.log/np.exp and math.log/math.exp agree bit for bit
# where NumPy calls the C library (x86-64 without AVX-512 here); where NumPy has vector versions of
# its own they may differ in the last bit, and a draw then differs only at a boundary that close.

PW_BLOCK = 128  # NumPy's pairwise-sum block (numpy/_core/src/umath/loops_utils.h.src)


@numba.njit(cache=True)
def _pairwise_block(a, lo, n):
    """NumPy's sum of a[lo:lo + n] for n <= PW_BLOCK: 8 partial sums, then the rest in order."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - n % 8:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@numba.njit(cache=True)
def _pairwise(a, lo, n):
    """NumPy's pairwise sum of a[lo:lo + n]: blocks of PW_BLOCK, and above that the sum of the two
    halves (the first a multiple of 8), each summed the same way. Its recursion is walked with a
    stack here: numba's cache segfaults on loading a self-recursive function."""
    if n <= PW_BLOCK:
        return _pairwise_block(a, lo, n)
    f_lo = np.empty(64, np.int64)
    f_n = np.empty(64, np.int64)
    f_stage = np.empty(64, np.int64)
    vals = np.empty(64, np.float64)
    sp, nv = 1, 0
    f_lo[0], f_n[0], f_stage[0] = lo, n, 0
    while sp > 0:
        k = sp - 1
        m = f_n[k]
        if m <= PW_BLOCK:
            vals[nv] = _pairwise_block(a, f_lo[k], m)
            nv += 1
            sp -= 1
            continue
        n2 = m // 2
        n2 -= n2 % 8
        if f_stage[k] == 0:  # the first half
            f_stage[k] = 1
            f_lo[sp], f_n[sp], f_stage[sp] = f_lo[k], n2, 0
            sp += 1
        elif f_stage[k] == 1:  # the second half
            f_stage[k] = 2
            f_lo[sp], f_n[sp], f_stage[sp] = f_lo[k] + n2, m - n2, 0
            sp += 1
        else:  # both done: first + second
            vals[nv - 2] = vals[nv - 2] + vals[nv - 1]
            nv -= 1
            sp -= 1
    return vals[0]


@numba.njit(cache=True)
def np_sum(a):
    """a.sum() as NumPy computes it for a contiguous float64 vector, bit for bit (tests check it)."""
    return _pairwise(a, 0, a.shape[0])


@numba.njit(cache=True)
def _keep_largest(p, order, n_pos, cut):
    """Zero all but the `cut` first bytes of `order` (descending p), then renormalise."""
    for r in range(cut, n_pos):
        p[order[r]] = 0.0
    s = np_sum(p)
    for y in range(256):
        p[y] = p[y] / s


@numba.njit(cache=True)
def sample_byte(p, temperature, top_k, top_p, min_p, u):
    """filter_probs(p, ...) into p (in place, float64 of 256) and the byte `draw` returns for the
    uniform u; -1 when no byte has probability (filter_probs raises there)."""
    total = np_sum(p)
    if not total > 0:
        return -1
    for y in range(256):
        p[y] = p[y] / total
    if temperature == 0:
        best = 0
        for y in range(1, 256):
            if p[y] > p[best]:
                best = y
        for y in range(256):
            p[y] = 0.0
        p[best] = 1.0
    else:
        if temperature != 1.0:
            top = -np.inf
            for y in range(256):
                v = math.log(p[y]) / temperature if p[y] > 0 else -np.inf
                p[y] = v
                if v > top:
                    top = v
            for y in range(256):
                p[y] = math.exp(p[y] - top)
            s = np_sum(p)
            for y in range(256):
                p[y] = p[y] / s
        if (top_k and top_k < 256) or top_p < 1.0:
            # bytes by descending p, ties in byte order (argsort(-p, kind="stable")); the zeros come
            # last in byte order, and cutting among them changes nothing, so only the others are sorted
            n_pos = 0
            for y in range(256):
                if p[y] > 0:
                    n_pos += 1
            pos = np.empty(n_pos, np.int64)
            k = 0
            for y in range(256):
                if p[y] > 0:
                    pos[k] = y
                    k += 1
            order = pos[np.argsort(-p[pos], kind="mergesort")]
            if top_k and top_k < 256:
                if top_k < n_pos:
                    _keep_largest(p, order, n_pos, top_k)
                    n_pos = top_k
                else:
                    _keep_largest(p, order, n_pos, n_pos)
            if top_p < 1.0:
                cut = 0
                csum = 0.0
                while cut < n_pos:  # searchsorted(cumsum, top_p) + 1
                    csum += p[order[cut]]
                    cut += 1
                    if csum >= top_p:
                        break
                _keep_largest(p, order, n_pos, cut)
        if min_p > 0:
            top = 0.0
            for y in range(256):
                if p[y] > top:
                    top = p[y]
            floor = min_p * top
            for y in range(256):
                if not p[y] >= floor:
                    p[y] = 0.0
            s = np_sum(p)
            for y in range(256):
                p[y] = p[y] / s
    # draw: searchsorted(cumsum(q), u * q.sum(), side="right"), stepping back over zeros
    x = u * np_sum(p)
    csum = 0.0
    y = 0
    while y < 255:
        csum += p[y]
        if csum > x:
            break
        y += 1
    while p[y] == 0:
        y -= 1
    return y


class Generator(Stream):
    """A model's generation stream (stream.py) that also draws its next byte."""

    # the reply's subject as casefolded words (chat.ask sets them from the title): what
    # Sampling.subject_drift watches for; empty: the reply has no subject to return to
    subject_words: tuple = ()
    last_logp = 0.0  # log probability of the byte sample drew last (with Sampling.search > 1)

    def sample(self, rng: np.random.Generator, sampling: Sampling = Sampling(), allow_end=True, banned=(),
               gain: float | None = None, barred=()) -> int:
        """Draw the next byte. `banned` (the repeat guard's) and the copy guard's bytes are dropped
        only at a word start (after a space): a ban inside a word left broken words ("buildina").
        `barred` bytes are dropped wherever they are (the subject hold's "<" after a newline: as a
        word-start ban it never applied there, and a held reply ended with "</doc>").

        With min-p at a temperature T > 0, a byte survives only with p >= min_p^T x the largest p
        left, so the byte tree need not expand a high nibble much less likely than the likeliest
        (distribution's floor: min_p^T / 16, as some byte of the likeliest nibble has at least a
        16th of it). If a nibble left out could still hold a survivor (the likeliest bytes were
        banned or masked), the distribution is made again whole: the bytes that can be drawn, and
        their probabilities, are the whole tree's.
        `gain`, when given, is the document words' gain instead of sampling.subject (generate's
        subject return)."""
        at_word_start = self.t > 0 and self.buf[self.t - 1] == 0x20
        if not at_word_start:
            banned = ()
        elif sampling.max_copy:
            banned = set(banned) | self.history_copies(sampling.max_copy)
        prunable = sampling.temperature > 0 and sampling.min_p > 0
        bar = sampling.min_p ** sampling.temperature if prunable else 0.0
        gain = sampling.subject if gain is None else gain
        p = self._masked(sampling, allow_end, banned, bar / 16, gain, barred)
        if self.pruned_most > 0 and self.pruned_most >= bar * p.max() * (1.0 - 1e-9):
            p = self._masked(sampling, allow_end, banned, 0.0, gain, barred)
        u = rng.random()  # draw's one uniform
        before = p.copy() if sampling.search > 1 else None  # sample_byte reshapes p in place
        y = sample_byte(p, sampling.temperature, sampling.top_k, sampling.top_p, sampling.min_p, u)
        if y < 0:
            raise ValueError("no byte is allowed here")
        if before is not None:  # the drawn byte's log probability before temperature and cuts
            self.last_logp = math.log(before[y] / before.sum()) if before[y] > 0 else -64.0
        self.push(y)
        return y

    def _masked(self, sampling: Sampling, allow_end: bool, banned, floor: float, gain: float,
                barred=()) -> np.ndarray:
        """The distribution with the bytes that may not come next set to zero."""
        p = self.distribution(gain, sampling.subject_inside, floor)  # a new array
        p *= utf8_allowed(self.pending)
        if not allow_end:
            p[END_OF_ARTICLE] = 0.0
        for b in barred:
            p[b] = 0.0
        if banned:
            kept = p.copy()
            kept[list(banned)] = 0.0
            if kept.sum() > 0:  # never ban every byte: then the repeat is the only way on
                p = kept
        return p


class RepeatGuard:
    """The bytes that would complete an n-byte string already in the reply (Sampling.no_repeat)."""

    def __init__(self, n: int):
        self.n = n
        self.out = bytearray()
        self.next_of: dict[bytes, set] = {}
        self.added: list[tuple] = []  # (string, byte) pairs in the order next_of first got them: undo's log

    def banned(self) -> set:
        if self.n == 0 or len(self.out) < self.n - 1:
            return set()
        return self.next_of.get(bytes(self.out[len(self.out) - self.n + 1:]), set())

    def add(self, y: int) -> None:
        self.out.append(y)
        if self.n and len(self.out) >= self.n:
            key = bytes(self.out[-self.n:-1])
            seen = self.next_of.setdefault(key, set())
            if y not in seen:
                seen.add(y)
                self.added.append((key, y))

    def state(self) -> tuple:
        return len(self.out), len(self.added)

    def undo(self, state: tuple) -> None:
        """Back to `state` (from state()): the bytes added since are forgotten."""
        n_out, n_added = state
        for key, y in self.added[n_added:]:
            self.next_of[key].discard(y)
        del self.added[n_added:]
        del self.out[n_out:]


def generate(gen: Generator, rng: np.random.Generator, max_bytes: int, sampling: Sampling = Sampling(),
             stop=None, should_stop=None, allow_end=True, opening: bytes = b""):
    """Yield decoded text pieces of the reply, whole words or whole sentences at a time.

    Generation stops at max_bytes (completing a cut character), at the end-of-article byte (unless
    allow_end is False: that byte is then never sampled), when `stop` (a callable on the bytes
    generated so far) says so, or when `should_stop()` is true.
    max_bytes is a soft limit: a reply it cuts ends at its last sentence end, or at its last word
    end when it has none (`ReplyCut`, `finish_thought`): what came after is generated but never
    yielded. A reply ended otherwise (the end-of-article byte, `stop`, `should_stop`) keeps all
    that was produced. With sampling.subject_hold, a `stop` at a paragraph end (a newline) is
    deferred, and the article's end (its byte, or "</doc>" after the paragraph) not drawn, while the
    reply has not named its subject (SubjectWatch.holding, defers, barred). Until the reply's
    first sentence end the text streams a word at a time, then a sentence at a time. With
    sampling.search > 1, what follows the first sentence (or its first SEARCH_UNIT bytes) is drawn a
    unit at a time, each unit sampling.search times from one point, and shown once one is kept
    (_search); a word that repeats the word before it is then drawn again (_Reply.run, REDRAWS).
    Unless sampling.self_copy, the match model does not copy from the bytes this call generates,
    nor from the stream's earlier documents (chat's earlier turns, their replies among them: a later
    reply repeated stretches of an earlier one). The history before the stream stays the memory.
    `opening`: the reply's visible start, fed before (chat's framed words): the repeat guard counts
    it, and the cut reads its last word ("... Mr" + ". " is no sentence end). The opening names the
    subject (chat's frame does), so the subject return (SubjectWatch) counts from the reply's start.
    """
    reply = _Reply(gen.subject_words, sampling, opening, stop, allow_end)
    saved = gen.copy_before, gen.copy_gap
    if not sampling.self_copy:
        gen.copy_before = gen.t  # pointers are causal: those already read for position t are all before it
        # nor from the stream's earlier documents (chat's earlier turns: its own replies among them)
        gen.copy_gap = (gen.start, gen.doc_start) if gen.doc_start > gen.start else None
        gen.drop_cached()
    searching = sampling.search > 1
    try:
        event = yield from reply.run(gen, rng, max_bytes, should_stop, until_unit=searching)
        while event == _UNIT:  # searching: a sentence (or SEARCH_UNIT bytes) ended; search the next
            event, texts = _search(gen, rng, reply, max_bytes, should_stop, sampling.search)
            yield from texts
        if event == _LIMIT:
            return  # cut by the limit: what follows the last sentence (or word) end is dropped
        rest = reply.cut.rest()  # ended before the limit: all of it
        if rest:
            yield rest
    finally:
        gen.copy_before, gen.copy_gap = saved
        gen.unmark()


# how a stretch of reply ended (_Reply.run)
_LIMIT, _END, _STOP, _UNIT = range(4)
# the sentence search's longest unit: a stretch with no sentence end ends at the first word end after
# this many bytes (a run-on sentence is searched in pieces: most replies that never named their
# subject on the CPU model were one sentence of 400 bytes, which a search by sentences never reached)
SEARCH_UNIT = 100


class _Reply:
    """What generate() knows of the reply so far besides the stream: its bytes, the piece of a
    character not yet whole, the cut, the repeat guard and the subject's watch. The sentence search
    copies it (copy.deepcopy: a few hundred bytes and small sets) for each candidate."""

    def __init__(self, subject_words, sampling: Sampling, opening: bytes, stop, allow_end: bool):
        self.sampling, self.stop, self.allow_end = sampling, stop, allow_end
        self.out = bytearray()
        self.piece = bytearray()
        self.watch = SubjectWatch(subject_words, sampling)
        self.guard = RepeatGuard(sampling.no_repeat)
        for y in opening:
            self.guard.add(y)
        self.cut = ReplyCut(opening.decode("utf-8", "replace"))
        self.logp = 0.0  # summed log probability of the bytes drawn (with sampling.search > 1)

    def __deepcopy__(self, memo):
        twin = copy.copy(self)
        twin.out, twin.piece = bytearray(self.out), bytearray(self.piece)
        twin.watch, twin.cut, twin.guard = copy.deepcopy(self.watch), copy.deepcopy(self.cut), copy.deepcopy(self.guard)
        return twin

    def snapshot(self) -> tuple:
        """What restore() needs to come back here, cheaper than a copy: taken at every word start
        while redrawing stutters (the repeat guard's strings are undone from its log, not copied)."""
        watch, cut = copy.copy(self.watch), copy.copy(self.cut)
        watch.word, cut.held = bytearray(self.watch.word), list(self.cut.held)
        return len(self.out), bytes(self.piece), self.guard.state(), watch, cut, self.logp

    def restore(self, snap: tuple) -> None:
        """Back to `snap`, in place (run's local names keep pointing at the same objects)."""
        n_out, piece, guard, watch, cut, self.logp = snap
        del self.out[n_out:]
        self.piece[:] = piece
        self.guard.undo(guard)
        self.watch.__dict__.update(watch.__dict__, word=bytearray(watch.word))
        self.cut.__dict__.update(cut.__dict__, held=list(cut.held))

    def run(self, gen: "Generator", rng, max_bytes: int, should_stop, until_unit: bool):
        """Draw bytes, yielding the text the cut releases, until the reply ends: returns _LIMIT
        (max_bytes reached), _END (the end byte, should_stop), _STOP (`stop` said so) or, with
        `until_unit`, _UNIT once a sentence end is released, or at the first word end after
        SEARCH_UNIT bytes of this call."""
        sampling, watch, guard, out = self.sampling, self.watch, self.guard, self.out
        start = len(out)
        # with the search, a word said twice in a row is drawn again (up to REDRAWS times) from the
        # stream's mark at its start: after the last whitespace, where the cut last released text,
        # so nothing of what is taken back has been shown
        redraw = sampling.search > 1
        mark = snap = None
        shown = False
        tries = 0
        while True:
            if len(out) >= max_bytes and not gen.pending:
                return _LIMIT
            if should_stop is not None and should_stop():
                return _END
            if redraw and mark is None:
                mark, snap, shown, tries = gen.mark(), self.snapshot(), False, 0
            y = gen.sample(rng, sampling, self.allow_end and not watch.holding(), guard.banned(), watch.gain(),
                           watch.barred(out))
            if y == END_OF_ARTICLE:
                return _END
            if sampling.search > 1:
                self.logp += gen.last_logp
            out.append(y)
            guard.add(y)
            watch.add(y)
            self.piece.append(y)
            if not gen.pending:
                if redraw and not shown and tries < REDRAWS and ends_stutter(out):
                    gen.rollback(mark)
                    self.restore(snap)
                    tries += 1
                    continue
                text = self.cut.add(self.piece.decode("utf-8"))
                self.piece.clear()
                if text:
                    shown = True
                    yield text
                if y in (0x20, 0x0A):
                    mark = None  # the next word starts here
                if self.stop is not None and self.stop(out) and not watch.defers(out):
                    return _STOP
                if until_unit and text and self.cut.sentence:
                    return _UNIT
                if until_unit and len(out) - start >= SEARCH_UNIT and y in (0x20, 0x0A) \
                        and out[-2] not in (0x20, 0x0A):
                    return _UNIT


def _search(gen: "Generator", rng, reply: _Reply, max_bytes: int, should_stop, k: int):
    """Draw the reply's next unit (a sentence, or SEARCH_UNIT bytes to a word end) k times from the
    same point and keep the best (Sampling.search): first one that the limit does not cut, then one
    with no word said twice in a row (stutters) and no 20-byte string a third time in the reply
    (repeats), then one that names the subject where the reply
    needs it (its watch holds it open, or the unit would take it subject_drift bytes from its last
    naming), then the highest log probability per byte.
    Returns (how the kept unit ended, its released text); the stream and `reply` are left after it.
    A candidate stopped by should_stop ends the search."""
    mark = gen.mark()
    base = copy.deepcopy(reply)
    watch0 = base.watch
    tried = []
    for i in range(k):
        if i:
            gen.rollback(mark)
        cand = copy.deepcopy(base)
        texts: list[str] = []
        event = yield_into(cand.run(gen, rng, max_bytes, should_stop, until_unit=True), texts)
        n = len(cand.out) - len(base.out)
        named = cand.watch.since < watch0.since + n  # a word of the candidate named the subject
        needs = bool(watch0.words) and (watch0.holding() or (watch0.drift and watch0.since + n >= watch0.drift))
        stutter = stutters(bytes(cand.out[max(0, len(base.out) - 32):]))  # the word before it too
        loop = repeats(bytes(cand.guard.out))  # the opening and the reply, as the loop measure reads them
        # a candidate cut by the limit shows nothing (the cut keeps whole sentences): last
        score = (event != _LIMIT, not (stutter or loop), named if needs else False, (cand.logp - base.logp) / max(n, 1))
        tried.append((score, i, cand, texts, event, bytes(cand.out[len(base.out):])))
        if should_stop is not None and should_stop():
            break
    best = max(tried, key=lambda c: (c[0], -c[1]))
    _, i, cand, texts, event, drawn = best
    if i != len(tried) - 1:  # the stream holds the last candidate: read the kept one instead
        gen.rollback(mark)
        for y in drawn:
            gen.push(y)
    gen.unmark()
    reply.__dict__.update(cand.__dict__)
    return event, texts


# a word of 3+ letters and, after non-letters, the same word again (case ignored)
_TWICE = r"\b(\p{L}{3,})\W+\1"
_STUTTER = regex.compile(_TWICE + r"\b", regex.I)


def stutters(text: bytes) -> bool:
    """Whether a word of 3+ letters comes twice in a row ("Shakespeare Shakespeare", "computer
    computer"): where the document words' gain pushes the subject's word, a weak model says it
    again at once, and the likeliest candidate was often the one that did (its repeat is easy to
    predict). The search ranks such candidates after the others."""
    return _STUTTER.search(text.decode("utf-8", "replace")) is not None


# a word said twice in a row, seen when the second one has just ended (its last byte is the last
# but one of `out`); REDRAWS: how many times _Reply.run draws such a word again before it keeps one
_STUTTER_END = regex.compile(_TWICE + r"\Z", regex.I)
REDRAWS = 4


def ends_stutter(out) -> bool:
    """Whether the byte just drawn ends a word that repeats the word before it ("Shakespeare
    Shakespeare," at the comma)."""
    y = out[-1]
    if y >= 0x80 or chr(y).isalnum() or len(out) < 8:
        return False
    return _STUTTER_END.search(bytes(out[-64:-1]).decode("utf-8", "replace")) is not None


def repeats(text: bytes, n: int = 20, times: int = 3) -> bool:
    """Whether some n-byte string comes `times` times in `text`: a loop as bench/language_quality.py
    counts one. The search ranks a unit that makes one with the stutters: where the subject is
    pushed, a weak model names it in the same words again and again ("the Galileo Galilei ... the
    Galileo Galilei"), which the repeat guard, acting only at word starts, lets through."""
    seen: dict[bytes, int] = {}
    for i in range(len(text) - n + 1):
        k = text[i:i + n]
        seen[k] = seen.get(k, 0) + 1
        if seen[k] >= times:
            return True
    return False


def yield_into(pieces, into: list):
    """Run a generator to its end, collecting what it yields into `into`; returns its return value."""
    while True:
        try:
            into.append(next(pieces))
        except StopIteration as done:
            return done.value


# ---- where a reply cut by --max-bytes ends ---------------------------------------------------------
#
# A sentence ends after ".", "!" or "?" (and any closing quotes or brackets right after it) that is
# followed by whitespace (a space, a newline), except after a period that ends an abbreviation: a
# single letter ("J. S. Bach", "b. 1900"), a word with a period inside ("e.g.", "U.S.", "i.e.", an
# ellipsis "..."), or a word of ABBREVIATIONS ("St.", "Mr.", "approx."). The ideographic full stop
# and exclamation/question marks end a sentence with no space after them (CJK writes none).
# A word ends where whitespace follows a non-whitespace character. A period at the very end of the
# generated text is no sentence end: the next byte could have made it "3.5" or "e.g.".
# Rare misses, accepted: a sentence that ends with an abbreviation ("... in the U.S. He") runs on to
# the next end; a non-abbreviation in the list ("... with no. 5") is a false end.

ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "rev", "hon", "gen", "col", "lt", "capt", "sgt", "cpl",
    "gov", "sen", "rep", "pres", "mt", "ft", "no", "nos", "vol", "vols", "pp", "ed", "eds", "fig", "figs",
    "vs", "etc", "approx", "ca", "cf", "al", "inc", "ltd", "co", "corp", "bros", "dept", "univ", "est",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
})
_TERMINALS = ".!?"
_CLOSERS = "\"')]}\u201d\u2019\u00bb"  # ” ’ »
_OPENERS = "\"'([{\u201c\u2018\u00ab"  # “ ‘ «
_CJK_STOPS = "\u3002\uff01\uff1f"  # 。！？
_LOOK_BACK = 48  # characters of text before a candidate end that the rule reads (abbreviations are shorter)


def ends_sentence(text: str) -> bool:
    """Whether a sentence ends at the end of `text`, given that whitespace follows it."""
    s = text.rstrip(_CLOSERS)
    if not s or s[-1] not in _TERMINALS:
        return bool(s) and s[-1] in _CJK_STOPS
    if s[-1] != ".":
        return True
    word = s[:-1]
    for k in range(len(word) - 1, -1, -1):
        if word[k].isspace():
            word = word[k + 1:]
            break
    word = word.lstrip(_OPENERS)
    if len(word) == 1 and word.isalpha():
        return False
    return "." not in word and word.casefold() not in ABBREVIATIONS


class SubjectWatch:
    """Bytes of reply since a word of it last named the subject (a word starting with one of
    `words`, casefolded), and the document words' gain that follows (Sampling.subject_drift):
    sampling.subject until `subject_drift` bytes went by without the subject, then
    `subject_return` until a word names it. Words are runs of letters and UTF-8 bytes, as the
    document words read them (docwords.is_word_byte). With sampling.subject_hold, it also holds
    the reply open at a paragraph end until a word has named the subject (`defers`)."""

    def __init__(self, words, sampling: Sampling):
        self.words = tuple(words)
        self.drift = sampling.subject_drift if self.words else 0
        self.back = sampling.subject_return
        self.hold = sampling.subject_hold and bool(self.words)
        self.named = False  # a word of the reply has named the subject
        self.since = 0
        self.word = bytearray()

    def holding(self) -> bool:
        """A held reply that has not named its subject yet: it may not end (no end-of-article byte)."""
        return self.hold and not self.named

    def defers(self, out) -> bool:
        """Whether a stop after `out` (the reply so far) waits: a paragraph end of a held reply that
        has not named its subject. A paragraph's last word is read here: "...of Zürich\\n" named it."""
        return self.holding() and out.endswith(b"\n")

    def barred(self, out) -> set:
        """Bytes a held reply may not draw next: after a deferred paragraph end, "<", which starts
        the article's closing "</doc>" line (the end byte's text form)."""
        return {ord("<")} if self.defers(out) else set()

    def gain(self) -> float | None:
        """The gain for the next byte; None: sampling.subject."""
        return self.back if self.drift and self.since >= self.drift else None

    def add(self, y: int) -> None:
        self.since += 1
        if is_word_byte(y):
            self.word.append(y)
            return
        if self.word:
            w = self.word.decode("utf-8", "ignore").casefold()
            if w.startswith(self.words):
                self.since = 0
                self.named = True
            self.word.clear()


def subject_words(title: str) -> tuple:
    """The words of a title that name its subject for SubjectWatch: those of 4+ letters, casefolded
    ("Ada Lovelace": "lovelace"; "Tea": "tea", its only word)."""
    words = [w.casefold() for w in regex.findall(r"\p{L}+", title)]
    long = tuple(w for w in words if len(w) >= 4)
    return long or tuple(words)


class ReplyCut:
    """Holds back the end of a streamed reply that a cut by the limit would drop.

    `add(piece)` takes whole characters and returns the text that is now safe to show: up to the
    latest sentence end, or, while the reply has none yet, up to the latest word end. `rest()` is
    what is held back, for a reply that ends before the limit (it keeps everything); a reply cut
    by the limit shows only what `add` returned. `before`: text before the reply (its opening),
    read only for the rule's look-back."""

    def __init__(self, before: str = ""):
        self.recent = before[-_LOOK_BACK:]  # the last characters seen, shown or not
        self.held: list[str] = []  # the text not shown yet, in pieces
        self.n_held = 0  # its length in characters
        self.sentence = False  # a sentence end has been seen: word ends no longer release text

    def add(self, piece: str) -> str:
        release = 0  # characters of the held text that may be shown
        n = self.n_held
        for c in piece:
            if c.isspace():
                if ends_sentence(self.recent):
                    release, self.sentence = n, True
                elif not self.sentence and self.recent and not self.recent[-1].isspace():
                    release = n
            elif c in _CJK_STOPS:
                release, self.sentence = n + 1, True
            self.recent = (self.recent + c)[-_LOOK_BACK:]
            n += 1
        self.held.append(piece)
        self.n_held = n
        if release == 0:
            return ""
        text = "".join(self.held)
        self.held = [text[release:]]
        self.n_held = n - release
        return text[:release]

    def rest(self) -> str:
        text = "".join(self.held)
        self.held, self.n_held = [], 0
        return text


def finish_thought(text: str, before: str = "") -> str:
    """`text` as a reply cut by the limit shows it: up to its last sentence end, else its last word
    end, else nothing (no whitespace at all: no word is known to be whole)."""
    return ReplyCut(before).add(text)
