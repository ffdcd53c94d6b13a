"""A prepare worker's CPU per MB of XML, part by part, in one process: decompression, reading the
pages (wiki.page_run) and cleaning them (prepare.clean_batch, which calls clean_wikitext).

Usage: python bench/clean_speed.py [--data ../shared/data] [--repeat 5] [--passes]
Input: the three dump fragments in ../shared/data/dumps (10.5 MB of XML, 201 articles). Each part
is timed by CPU time (time.process_time), the least of --repeat runs: on a loaded machine that is
steadier than wall time. --passes also times each pass of clean_wikitext: every compiled pattern
of wikitext.py (its page-wide methods) and every helper that clean_wikitext calls once a page is
wrapped in a timer (a helper's time includes its patterns'; the wrappers add a little).
"""

from __future__ import annotations

import argparse
import bz2
import collections
import functools
import subprocess
import time
from pathlib import Path

from cheaplm import wikitext
from cheaplm.prepare import SKIPPED_KINDS, clean_batch
from cheaplm.wiki import MAX_PAGE_CHARS, page_run

FRAGMENTS = ["enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
             "enwiki-latest-pages-articles1.xml-p000000010p000010000-shortened.bz2",
             "enwiki-table-markup.xml.bz2"]


def least_cpu(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


WHOLE_PAGE = {"sub", "split", "finditer"}  # a pattern's methods that scan a page; search, match and
# fullmatch are called per link, template or line, where a timer would cost more than they do
EXPANDERS = {"expand_template", "_link_text", "_link_or_literal"}  # passed in, called per construct


class _TimedPattern:
    """A compiled pattern whose scanning methods add their CPU time to `spent[name]`."""

    def __init__(self, name: str, pattern, spent: collections.Counter):
        self._name, self._pattern, self._spent = name, pattern, spent

    def __getattr__(self, method):
        fn = getattr(self._pattern, method)
        if method not in WHOLE_PAGE:
            return fn

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            t0 = time.process_time()
            out = fn(*args, **kwargs)
            if method == "finditer":
                out = list(out)  # the scan happens as it is iterated
            self._spent[f"{self._name}.{method}"] += time.process_time() - t0
            return out
        return timed


def _timed_function(name: str, fn, spent: collections.Counter):
    @functools.wraps(fn)
    def timed(*args):
        t0 = time.process_time()
        out = fn(*args)
        spent[name] += time.process_time() - t0
        return out
    return timed


def pass_times(texts: list[str], repeat: int) -> collections.Counter:
    """CPU seconds per pass of clean_wikitext over `texts` (the least of `repeat` runs per pass)."""
    spent: collections.Counter = collections.Counter()
    saved = {}
    called = set(wikitext.clean_wikitext.__code__.co_names) - EXPANDERS  # called once a page or pass
    for name, value in list(vars(wikitext).items()):
        if name.startswith("_") and hasattr(value, "pattern") and hasattr(value, "sub"):
            saved[name] = value
            setattr(wikitext, name, _TimedPattern(name, value, spent))
        elif name in called and callable(value):
            saved[name] = value
            setattr(wikitext, name, _timed_function(name + "()", value, spent))
    best: dict[str, float] = {}
    try:
        for _ in range(repeat):
            spent.clear()
            for text in texts:
                wikitext.clean_wikitext(text)
            for name, seconds in spent.items():
                best[name] = min(best.get(name, float("inf")), seconds)
    finally:
        for name, value in saved.items():
            setattr(wikitext, name, value)
    return collections.Counter(best)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--passes", action="store_true", help="also time each pass of clean_wikitext")
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    compressed = [(Path(args.data) / "dumps" / f).read_bytes() for f in FRAGMENTS]
    xmls = [bz2.decompress(data) for data in compressed]
    mb = sum(map(len, xmls)) / 1e6
    runs = [page_run(xml, MAX_PAGE_CHARS) for xml in xmls]
    batch = [(p.title, p.text, p.kind) for run in runs for p in run.pages if p.kind not in SKIPPED_KINDS]
    decompress = least_cpu(lambda: [bz2.decompress(data) for data in compressed], args.repeat)
    read = least_cpu(lambda: [page_run(xml, MAX_PAGE_CHARS) for xml in xmls], args.repeat)
    clean = least_cpu(lambda: clean_batch(batch, False, 1, 60.0), args.repeat)
    ms = lambda seconds: 1e3 * seconds / mb  # noqa: E731 - per MB of XML
    print(f"commit {commit}: {mb:.1f} MB of XML, {len(batch)} articles; CPU per MB of XML, least of {args.repeat}:")
    print(f"  decompress {ms(decompress):.1f} ms, page_run {ms(read):.1f} ms, clean {ms(clean):.1f} ms; "
          f"total {ms(decompress + read + clean):.1f} ms/MB")
    if args.passes:
        for name, seconds in pass_times([text for _, text, _ in batch], args.repeat).most_common():
            print(f"  {name:36s} {ms(seconds):6.2f} ms/MB")


if __name__ == "__main__":
    main()
