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

import numpy as np

from .stream import END_OF_ARTICLE, Stream
from .utf8 import char_complete, utf8_after, utf8_allowed  # noqa: F401 (callers read them from here)


@dataclass(frozen=True)
class Sampling:
    """How bytes are drawn from the model's distribution (the CLI's defaults are these).

    The defaults are bench/language_quality.py's choice (bench/RESULTS.md, "Answers"): of the rows it
    measured on the H200's 5-minute model, T 0.5 with min-p 0.2, no-repeat 16 and max-copy 32 was
    the warmest whose free answers read no worse to the judge than real article leads, with no loops
    and no copies (T 0.8 and no-repeat 24 read 1.215 bits per byte to the judge, leads 1.087; T 0.5
    with no-repeat 24 looped in 4 of 40 answers). `subject` is 1 here (the model as trained) and
    chat's is 2 (chat.SUBJECT)."""

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


class Generator(Stream):
    """A model's generation stream (stream.py) that also draws its next byte."""

    def sample(self, rng: np.random.Generator, sampling: Sampling = Sampling(), allow_end=True, banned=()) -> int:
        """Draw the next byte. `banned` (the repeat guard's) and the copy guard's bytes are dropped
        only at a word start (after a space): a ban inside a word left broken words ("buildina")."""
        p = self.distribution(sampling.subject, sampling.subject_inside) * utf8_allowed(self.pending)
        at_word_start = self.t > 0 and self.buf[self.t - 1] == 0x20
        if not at_word_start:
            banned = ()
        elif sampling.max_copy:
            banned = set(banned) | self.history_copies(sampling.max_copy)
        if not allow_end:
            p[END_OF_ARTICLE] = 0.0
        if banned:
            kept = p.copy()
            kept[list(banned)] = 0.0
            if kept.sum() > 0:  # never ban every byte: then the repeat is the only way on
                p = kept
        y = draw(filter_probs(p, sampling.temperature, sampling.top_k, sampling.top_p, sampling.min_p), rng)
        self.push(y)
        return y


class RepeatGuard:
    """The bytes that would complete an n-byte string already in the reply (Sampling.no_repeat)."""

    def __init__(self, n: int):
        self.n = n
        self.out = bytearray()
        self.next_of: dict[bytes, set] = {}

    def banned(self) -> set:
        if self.n == 0 or len(self.out) < self.n - 1:
            return set()
        return self.next_of.get(bytes(self.out[len(self.out) - self.n + 1:]), set())

    def add(self, y: int) -> None:
        self.out.append(y)
        if self.n and len(self.out) >= self.n:
            self.next_of.setdefault(bytes(self.out[-self.n:-1]), set()).add(y)


def generate(gen: Generator, rng: np.random.Generator, max_bytes: int, sampling: Sampling = Sampling(),
             stop=None, should_stop=None, allow_end=True, opening: bytes = b""):
    """Yield decoded text pieces of the reply, whole words or whole sentences at a time.

    Generation stops at max_bytes (completing a cut character), at the end-of-article byte (unless
    allow_end is False: that byte is then never sampled), when `stop` (a callable on the bytes
    generated so far) says so, or when `should_stop()` is true.
    max_bytes is a soft limit: a reply it cuts ends at its last sentence end, or at its last word
    end when it has none (`ReplyCut`, `finish_thought`): what came after is generated but never
    yielded. A reply ended otherwise (the end-of-article byte, `stop`, `should_stop`) keeps all
    that was produced. Until the reply's first sentence end the text streams a word at a time,
    then a sentence at a time.
    Unless sampling.self_copy, the match model does not copy from the bytes this call generates.
    `opening`: the reply's visible start, fed before (chat's framed words): the repeat guard counts
    it, and the cut reads its last word ("... Mr" + ". " is no sentence end).
    """
    out = bytearray()
    piece = bytearray()
    guard = RepeatGuard(sampling.no_repeat)
    for y in opening:
        guard.add(y)
    cut = ReplyCut(opening.decode("utf-8", "replace"))
    saved = gen.copy_before
    if not sampling.self_copy:
        gen.copy_before = gen.t  # pointers are causal: those already read for position t are all before it
    try:
        while True:
            if len(out) >= max_bytes and not gen.pending:
                return  # cut by the limit: what follows the last sentence (or word) end is dropped
            if should_stop is not None and should_stop():
                break
            y = gen.sample(rng, sampling, allow_end, guard.banned())
            if y == END_OF_ARTICLE:
                break
            out.append(y)
            guard.add(y)
            piece.append(y)
            if not gen.pending:
                text = cut.add(piece.decode("utf-8"))
                piece.clear()
                if text:
                    yield text
                if stop is not None and stop(out):
                    break
        rest = cut.rest()  # ended before the limit: all of it
        if rest:
            yield rest
    finally:
        gen.copy_before = saved


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
