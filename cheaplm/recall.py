"""Recall: find the article a question is about in the model's memory text, for chat to read first.

The memory text (the history) *is* the training text, article after article, so a subject whose
article was trained on can be looked up by title instead of hoped for. `TitleIndex` lists the
articles of a history: for each, its title and where its header and its text start. Both formats
the model trains on are read:

    shards:        TITLE \\n \\n BODY \\n \\0          (cheaplm prepare; NUL ends an article)
    WikiExtractor: <doc id=".." url=".." title="TITLE">\\n TITLE \\n\\n BODY </doc>\\n   (wikibench)

A question's subject matches a title when their keys are equal: casefolded, a leading article word
("a", "an", "the") dropped, punctuation other than letters, digits and inner spaces removed. When no
title has that key, the subject without a plural "s"/"es" is tried. The first article in text order
wins a tie. Titles are not matched without their parenthesised qualifier: "Volcano" would find
"Volcano (South Park)", and a wrong article read first is worse than none.

`train` writes the index as `titles.tsv` in the run directory (offset, header offset, title per
line, for the history's first `history_len` bytes) and beside it `titles.idx.npy`, which chat maps
instead of reading the titles: each line's offset, and the lines sorted by a 64-bit hash of their
title key, so a lookup is a binary search and a few lines read (`MappedTitleIndex`; a full
English dump has some 6 million titles, 400 MB of lines that chat would otherwise read and parse at
every start). A run without them (or with stale ones) gets the index rebuilt in memory, which
takes well under a second for 150 MB (one regex pass or one NUL search); a titles.tsv from before
titles.idx.npy is read whole, as it was.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import regex

TITLES_FILE = "titles.tsv"
TITLES_IDX = "titles.idx.npy"
BLOCK = 1 << 24  # bytes searched for NULs at a time
_DOC = regex.compile(rb'<doc id="[^"\n]*" url="[^"\n]*" title="([^"\n]*)">\n')
_LEADING_ARTICLE = regex.compile(r"^(?:a|an|the)\s+")
_NOT_WORD = regex.compile(r"[^\p{L}\p{N}]+")


def title_key(text: str) -> str:
    """The form titles and subjects are compared in: 'The Moon' and 'moon?' give 'moon'."""
    s = _LEADING_ARTICLE.sub("", text.strip().casefold())
    return " ".join(_NOT_WORD.sub(" ", s).split())


@dataclass(frozen=True)
class Article:
    title: str
    header: int  # offset of the article's first byte (its header) in the history
    text: int  # offset of its body (after the title line and blank line)
    end: int  # offset just past it (its NUL, or the start of the next header)


class TitleIndex:
    """The articles of a history, looked up by title key."""

    def __init__(self, articles: list[Article], history_len: int):
        self.articles = articles
        self.history_len = history_len
        self._by_key: dict[str, int] | None = None  # built at the first lookup: train writes indexes it never reads

    def __len__(self) -> int:
        return len(self.articles)

    def find(self, subject: str) -> Article | None:
        key = title_key(subject)
        if not key:
            return None
        tries = [key]
        if key.endswith("es"):
            tries.append(key[:-2])
        if key.endswith("s"):
            tries.append(key[:-1])
        if self._by_key is None:
            self._by_key = {}
            for i, a in enumerate(self.articles):
                self._by_key.setdefault(title_key(a.title), i)
        for k in tries:
            i = self._by_key.get(k)
            if i is not None:
                return self.articles[i]
        return None


def build_index(history: np.ndarray) -> TitleIndex:
    """Index the articles of a history in either format (WikiExtractor when its first 64 KiB has a <doc line)."""
    data = memoryview(np.ascontiguousarray(history, dtype=np.uint8))
    n = len(data)
    head = bytes(data[: 1 << 16])
    articles: list[Article] = []
    if b'<doc id="' in head:
        raw = bytes(data)
        starts = [(m.start(), m.end(), m.group(1)) for m in _DOC.finditer(raw)]
        for i, (h0, h1, title_b) in enumerate(starts):
            end = starts[i + 1][0] if i + 1 < len(starts) else n
            title = _unescape(title_b.decode("utf-8", "replace"))
            # the body follows the title line repeated and a blank line
            body = h1
            line_end = raw.find(b"\n", h1, end)
            if line_end >= 0 and raw[line_end + 1: line_end + 2] == b"\n":
                body = line_end + 2
            articles.append(Article(title, h0, body, end))
    else:
        arr = np.frombuffer(data, dtype=np.uint8)
        # NULs found a block at a time: a whole-text comparison made a temporary as large as the text
        ends = np.concatenate([np.flatnonzero(arr[lo: lo + BLOCK] == 0) + lo for lo in range(0, n, BLOCK)] or [[]]).astype(np.int64)
        h0 = 0
        for e in list(ends) + ([n] if (len(ends) == 0 or ends[-1] != n - 1) and n else []):
            e = int(e)
            if e > h0:
                line_end = bytes(data[h0: min(e, h0 + 1024)]).find(b"\n")
                if line_end > 0:
                    title = bytes(data[h0: h0 + line_end]).decode("utf-8", "replace")
                    body = min(e, h0 + line_end + 2)
                    articles.append(Article(title, h0, body, e))
            h0 = e + 1
    return TitleIndex(articles, n)


def _unescape(s: str) -> str:
    return s.replace("&quot;", '"').replace("&amp;", "&")


def key_hash(key: str) -> int:
    """A title key's 64-bit hash (as a signed int64, the index's sort order)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


def write_index(run_dir: Path, index: TitleIndex) -> None:
    """titles.tsv: a first line `history_len N`, then `header<TAB>text<TAB>end<TAB>title` per article;
    then titles.idx.npy, int64 (3, 1 + articles): column 0 holds (titles.tsv's size, history_len,
    articles), then row 0 each article's line offset in text order, row 1 the title keys' hashes
    sorted, row 2 the article of each (by hash, then text order). Each written to a temporary name
    and renamed."""
    path = Path(run_dir) / TITLES_FILE
    tmp = path.with_name(f".{TITLES_FILE}.tmp-{os.getpid()}")
    head = f"history_len\t{index.history_len}\n".encode()
    n = len(index.articles)
    offsets, hashes = np.empty(n, np.int64), np.empty(n, np.int64)
    at = len(head)
    with open(tmp, "wb") as f:
        f.write(head)
        for i, a in enumerate(index.articles):
            title = a.title.replace("\t", " ").replace("\n", " ")
            line = f"{a.header}\t{a.text}\t{a.end}\t{title}\n".encode("utf-8")
            f.write(line)
            offsets[i], hashes[i] = at, key_hash(title_key(title))
            at += len(line)
    os.replace(tmp, path)
    order = np.lexsort((np.arange(n), hashes))
    idx = np.empty((3, n + 1), np.int64)
    idx[:, 0] = (at, index.history_len, n)
    idx[0, 1:], idx[1, 1:], idx[2, 1:] = offsets, hashes[order], order
    tmp_idx = path.with_name(f".{TITLES_IDX}.tmp-{os.getpid()}.npy")
    np.save(tmp_idx, idx)
    os.replace(tmp_idx, Path(run_dir) / TITLES_IDX)


class _MappedArticles(Sequence):
    """The articles of a mapped titles.tsv, parsed when asked for."""

    def __init__(self, owner: "MappedTitleIndex"):
        self.owner = owner

    def __len__(self) -> int:
        return self.owner.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.owner.n))]
        if not -self.owner.n <= i < self.owner.n:
            raise IndexError(i)
        return self.owner.article(int(self.owner.idx[0, 1 + (i % self.owner.n)]))


class MappedTitleIndex:
    """TitleIndex over a run's titles.tsv and titles.idx.npy, both mapped: nothing is read at start
    but two headers, a lookup reads the few lines whose key hash matches."""

    def __init__(self, tsv: Path, idx: np.ndarray, history_len: int):
        with open(tsv, "rb") as f:
            self.text = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.idx, self.history_len, self.n = idx, history_len, int(idx[2, 0])
        self.articles = _MappedArticles(self)

    def __len__(self) -> int:
        return self.n

    def article(self, offset: int) -> Article:
        end = self.text.find(b"\n", offset)
        h0, body, stop, title = self.text[offset: end].decode("utf-8").split("\t", 3)
        a = Article(title, int(h0), int(body), int(stop))
        if not (0 <= a.header <= a.text <= a.end <= self.history_len):
            raise ValueError(f"{TITLES_FILE}: offset outside the history")
        return a

    def find(self, subject: str) -> Article | None:
        key = title_key(subject)
        if not key:
            return None
        hashes, order, offsets = self.idx[1, 1:], self.idx[2, 1:], self.idx[0, 1:]
        for k in [key] + ([key[:-2]] if key.endswith("es") else []) + ([key[:-1]] if key.endswith("s") else []):
            h = key_hash(k)
            lo, hi = np.searchsorted(hashes, h, "left"), np.searchsorted(hashes, h, "right")
            for j in range(int(lo), int(hi)):  # by text order: the first article with the key wins
                a = self.article(int(offsets[int(order[j])]))
                if title_key(a.title) == k:
                    return a
        return None


def load_index(run_dir: Path, history: np.ndarray) -> TitleIndex | MappedTitleIndex:
    """The run's titles.tsv when it describes exactly this history (mapped with titles.idx.npy
    when that describes it), else an index built from the history."""
    path = Path(run_dir) / TITLES_FILE
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline().split("\t")
            if len(first) == 2 and first[0] == "history_len" and int(first[1]) == len(history):
                try:
                    idx = np.load(Path(run_dir) / TITLES_IDX, mmap_mode="r", allow_pickle=False)
                    if (idx.dtype == np.int64 and idx.ndim == 2 and idx.shape[0] == 3 and idx.shape[1] == idx[2, 0] + 1
                            and idx[0, 0] == path.stat().st_size and idx[1, 0] == len(history)):
                        return MappedTitleIndex(path, idx, len(history))
                except (OSError, ValueError):
                    pass  # none (a run from before it) or damaged: the titles are read
                articles = []
                for line in f:
                    h0, body, end, title = line.rstrip("\n").split("\t", 3)
                    a = Article(title, int(h0), int(body), int(end))
                    if not (0 <= a.header <= a.text <= a.end <= len(history)):
                        raise ValueError("offset outside the history")
                    articles.append(a)
                return TitleIndex(articles, len(history))
    except (OSError, ValueError, UnicodeDecodeError):
        pass  # missing, stale or damaged: the history itself is the truth
    return build_index(history)


def lead_bytes(history: np.ndarray, article: Article, most: int) -> bytes:
    """The article from its header through its first `most` bytes of body, cut after the last
    paragraph (or else sentence) end inside that, so the model reads whole sentences."""
    body_end = min(article.end, article.text + most)
    body = bytes(history[article.text: body_end])
    if body_end < article.end:
        cut = body.rfind(b"\n")
        if cut < len(body) // 3:
            cut = body.rfind(b". ") + 1
        if cut > 0:
            body = body[:cut]
        if not body.endswith(b"\n"):
            body += b"\n"
    # a short last line is a section heading ("Early life."): it belongs to what was cut
    last = body.rfind(b"\n", 0, len(body) - 1)
    if last > 0 and len(body) - last < 48:
        body = body[: last + 1]
    return bytes(history[article.header: article.text]) + body
