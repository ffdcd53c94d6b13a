"""Measure `cheaplm prepare` throughput in MB/s of uncompressed input on ../shared/data.

Usage: python bench/prepare_speed.py [--data ../shared/data] [--workers 0]
Prints one row per source group, then a short table; numbers go into bench/RESULTS.md by hand
with the date, machine, commit and this command.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from cheaplm.prepare import PrepareOptions, prepare

GROUPS = {
    "dumps .xml.bz2 (3 files)": ["dumps/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
                                 "dumps/enwiki-latest-pages-articles1.xml-p000000010p000010000-shortened.bz2",
                                 "dumps/enwiki-table-markup.xml.bz2"],
    "enwik8 prefix .xz (export-0.3)": ["enwik8.head4154399.xz"],
    "wiki tar.xz (raw wikitext)": ["dumps/wtf_wikipedia-tests-cache.tar.xz"],
    "WikiExtractor .xz (11 MB)": ["wikitext/matthewsilver_wikiextractor.txt.xz"],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs")
    args = ap.parse_args()
    data = Path(args.data)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; commit {commit}")
    rows = []
    for name, files in GROUPS.items():
        paths = [str(data / f) for f in files]
        best = None
        for _ in range(args.repeat):
            tmp = Path(tempfile.mkdtemp())
            t0 = time.perf_counter()
            m = prepare(paths, tmp / "out", PrepareOptions(workers=args.workers))
            dt = time.perf_counter() - t0
            shutil.rmtree(tmp)
            mb = sum(s["bytes_uncompressed"] for s in m["sources"]) / 1e6
            best = min(best or dt, dt)
        rows.append((name, mb, m["pages"]["kept"], best, mb / best))
        print(f"{name}: {mb:.1f} MB in {best:.2f} s = {mb / best:.1f} MB/s", flush=True)
    print()
    print("| input | MB uncompressed | articles kept | seconds | MB/s |")
    print("|---|---|---|---|---|")
    for name, mb, kept, dt, rate in rows:
        print(f"| {name} | {mb:.1f} | {kept:,} | {dt:.2f} | {rate:.1f} |")


if __name__ == "__main__":
    main()
