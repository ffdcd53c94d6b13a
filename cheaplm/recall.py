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
line, for the history's first `history_len` bytes); a run without it (or with a stale one) gets it
rebuilt in memory, which takes well under a second for 150 MB (one regex pass or one NUL search).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import regex

TITLES_FILE = "titles.tsv"
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


def write_index(run_dir: Path, index: TitleIndex) -> None:
    """titles.tsv: a first line `history_len N`, then `header<TAB>text<TAB>end<TAB>title` per article
    (written to a temporary name and renamed)."""
    path = Path(run_dir) / TITLES_FILE
    tmp = path.with_name(f".{TITLES_FILE}.tmp-{os.getpid()}")
    lines = [f"history_len\t{index.history_len}\n"]
    for a in index.articles:
        title = a.title.replace("\t", " ").replace("\n", " ")
        lines.append(f"{a.header}\t{a.text}\t{a.end}\t{title}\n")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, path)


def load_index(run_dir: Path, history: np.ndarray) -> TitleIndex:
    """The run's titles.tsv when it describes exactly this history, else an index built from it."""
    path = Path(run_dir) / TITLES_FILE
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline().split("\t")
            if len(first) == 2 and first[0] == "history_len" and int(first[1]) == len(history):
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
