"""Measure `cheaplm prepare` throughput in MB/s of uncompressed input on ../shared/data.

Usage: python bench/prepare_speed.py [--data ../shared/data] [--workers 0] [--multistream-mb 200]
       [--only multistream] [--profile]
Prints one row per source group, then a short table; numbers go into bench/RESULTS.md by hand
with the date, machine, commit and this command.

The multistream rows read a larger dump built once in the temp directory: the three dump
fragments' pages, repeated until the XML holds --multistream-mb MB, each copy's titles prefixed
with its number so that no copy is a duplicate of another (every page is cleaned and kept),
compressed as Wikimedia does its multistream dumps: one bz2 stream (level 9) per 100 pages, the
siteinfo header and the closing tag each a stream of their own. It is prepared twice: with one
decoder in the main process (`parallel_bz2=False`, the path before) and with the streams decoded
by the worker pool (which, since 2026-12-03, also reads and cleans each chunk's pages: the row
keeps its name so that the rates compare across commits).

--profile: only the pool path on the built multistream dump, --repeat times, each run's costs
broken down (prepare.LAST_PROFILE, from workpool.PoolStats): the main process's CPU, its wall time
in sends and in waiting for replies, the bytes crossing the pipes per MB of XML, and how the
workers' time splits into busy, idle (waiting for a task) and blocked (sending a reply the main
process has not read yet). From these: the serial ceiling (1 / the main process's CPU seconds per
MB) and a predicted rate on --project-cores cores (the pool's CPU per MB spread over the cores,
bounded by the serial ceiling).
"""

from __future__ import annotations

import argparse
import bz2
import io
import multiprocessing
import multiprocessing.pool
import re
import resource
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from cheaplm.multistream import ParallelBz2Reader
from cheaplm import prepare as prepare_module
from cheaplm.prepare import PrepareOptions, prepare

PAGES_PER_STREAM = 100  # as in Wikimedia's pages-articles-multistream dumps

GROUPS = {
    "dumps .xml.bz2 (3 files)": ["dumps/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
                                 "dumps/enwiki-latest-pages-articles1.xml-p000000010p000010000-shortened.bz2",
                                 "dumps/enwiki-table-markup.xml.bz2"],
    "enwik8 prefix .xz (export-0.3)": ["enwik8.head4154399.xz"],
    "wiki tar.xz (raw wikitext)": ["dumps/wtf_wikipedia-tests-cache.tar.xz"],
    "WikiExtractor .xz (11 MB)": ["wikitext/matthewsilver_wikiextractor.txt.xz"],
}


def compress9(data: bytes) -> bytes:
    return bz2.compress(data, 9)


def build_multistream(data: Path, mb: int) -> Path:
    """The fragments' pages repeated to `mb` MB of XML, as a multistream .bz2 (module docstring)."""
    out = Path(tempfile.gettempdir()) / f"cheaplm-bench-multistream-{mb}MB.xml.bz2"
    if out.exists():
        return out
    xmls = [bz2.decompress((data / f).read_bytes()) for f in GROUPS["dumps .xml.bz2 (3 files)"]]
    head = xmls[0][:xmls[0].index(b"  <page>")]
    pages = [p for x in xmls for p in re.findall(rb"  <page>.*?</page>\n", x, re.S)]
    print(f"building {out} ({mb} MB of XML from {len(pages)} pages) ...", flush=True)
    tmp = out.with_suffix(".partial")
    groups, size, copy = [], len(head), 0
    while size < mb * 1e6:
        copy += 1
        for i in range(0, len(pages), PAGES_PER_STREAM):
            groups.append(b"".join(pages[i:i + PAGES_PER_STREAM]).replace(b"<title>", b"<title>%d " % copy))
            size += len(groups[-1])
    with open(tmp, "wb") as f, multiprocessing.Pool() as pool:
        for stream in pool.imap(compress9, [head, *groups, b"</mediawiki>\n"], chunksize=1):
            f.write(stream)
    tmp.rename(out)
    return out


def decode_only(path: Path, workers: int, how: str) -> float:
    """MB/s of XML out of the multistream file alone: one decoder, or the streams decoded by a pool
    of `workers` processes or threads (what prepare does, less parsing and cleaning)."""
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        if how == "one decoder":
            reader, pool = bz2.BZ2File(f), None
        else:
            pool = (multiprocessing.pool.ThreadPool(workers) if how == "threads"
                    else multiprocessing.get_context("fork").Pool(workers))
            reader = io.BufferedReader(ParallelBz2Reader(f, pool, 2 * workers), 1 << 20)
        n = 0
        while block := reader.read(1 << 20):
            n += len(block)
        if pool is not None:
            pool.terminate()
    return n / 1e6 / (time.perf_counter() - t0)


def cpu_seconds(who) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def profile(path: Path, workers: int, repeat: int, cores: int) -> None:
    """The --profile breakdown (module docstring), one block per run."""
    for run in range(repeat):
        tmp = Path(tempfile.mkdtemp())
        pool0 = cpu_seconds(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        prepare([str(path)], tmp / "out", PrepareOptions(workers=workers))
        dt = time.perf_counter() - t0
        pool_cpu = cpu_seconds(resource.RUSAGE_CHILDREN) - pool0
        shutil.rmtree(tmp)
        p = dict(prepare_module.LAST_PROFILE)
        mb, n, wall = p["xml_bytes"] / 1e6, p["workers"], p["wall_s"]
        ms = lambda seconds: 1e3 * seconds / mb  # noqa: E731 - per MB of XML
        main_s, pool_s = p["main_cpu_s"] / mb, pool_cpu / mb
        serial = 1 / main_s
        predicted = min(serial, cores / (main_s + pool_s))
        print(f"run {run + 1}: {mb:.1f} MB of XML in {dt:.2f} s = {mb / dt:.1f} MB/s, {n} workers, "
              f"{p['tasks']} tasks, load average {os.getloadavg()[0]:.1f}")
        print(f"  main process: CPU {ms(p['main_cpu_s']):.2f} ms/MB; wall in sends {ms(p['send_s']):.2f}, "
              f"waiting for replies {ms(p['wait_s']):.2f}, unpickling {ms(p['load_s']):.2f} ms/MB "
              f"(pool's life {wall:.2f} s)")
        print(f"  bytes per MB of XML: to the workers {p['sent_bytes'] / 1e6 / mb:.3f} MB, "
              f"back {p['received_bytes'] / 1e6 / mb:.3f} MB")
        print(f"  workers ({n} x {wall:.2f} s): busy {p['busy_s'] / (n * wall):.0%}, idle waiting for a task "
              f"{p['idle_s'] / (n * wall):.0%}, blocked sending a reply {p['blocked_s'] / (n * wall):.0%}; "
              f"pool CPU {ms(pool_cpu):.1f} ms/MB, busy wall {ms(p['busy_s']):.1f} ms/MB")
        tasks = sorted(p["task_s"])
        print(f"  task seconds: median {tasks[len(tasks) // 2]:.3f}, "
              f"90th percentile {tasks[int(0.9 * len(tasks))]:.3f}, max {tasks[-1]:.3f}")
        print(f"  serial ceiling 1 / main CPU = {serial:.0f} MB/s; predicted on {cores} cores: "
              f"min({serial:.0f}, {cores} / (main + pool CPU) = {cores / (main_s + pool_s):.0f}) = "
              f"{predicted:.0f} MB/s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs")
    ap.add_argument("--multistream-mb", type=int, default=100, help="MB of XML in the built multistream dump")
    ap.add_argument("--project-cores", type=int, default=16,
                    help="cores for the CPU-time model's rate (main process alone, the rest spread)")
    ap.add_argument("--only", default="", help="run only the groups whose name contains this")
    ap.add_argument("--profile", action="store_true",
                    help="only the pool path on the multistream dump, its costs broken down (module docstring)")
    args = ap.parse_args()
    data = Path(args.data)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; commit {commit}")
    if args.profile:
        profile(build_multistream(data, args.multistream_mb), args.workers, args.repeat, args.project_cores)
        return
    groups = {name: (files, True) for name, files in GROUPS.items()}
    if "multistream" in args.only or not args.only:
        multi = build_multistream(data, args.multistream_mb)
        groups[f"multistream .bz2, {args.multistream_mb} MB: one decoder"] = ([multi], False)
        groups[f"multistream .bz2, {args.multistream_mb} MB: streams decoded by the pool"] = ([multi], True)
    if "multistream" in args.only or not args.only:
        workers = args.workers or os.cpu_count()
        for how in ("one decoder", "processes", "threads"):
            rate = max(decode_only(multi, workers, how) for _ in range(args.repeat))
            print(f"decompression alone, {how}{'' if how == 'one decoder' else f' ({workers})'}: "
                  f"{rate:.1f} MB/s of XML", flush=True)
    rows = []
    for name, (files, parallel_bz2) in groups.items():
        if args.only and args.only not in name:
            continue
        paths = [str(data / f) for f in files]
        best = None
        for _ in range(args.repeat):
            tmp = Path(tempfile.mkdtemp())
            main0, pool0 = cpu_seconds(resource.RUSAGE_SELF), cpu_seconds(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            m = prepare(paths, tmp / "out", PrepareOptions(workers=args.workers, parallel_bz2=parallel_bz2))
            dt = time.perf_counter() - t0
            # the pool's workers are joined when prepare returns, so their CPU time is counted by now
            main_cpu, pool_cpu = cpu_seconds(resource.RUSAGE_SELF) - main0, cpu_seconds(resource.RUSAGE_CHILDREN) - pool0
            shutil.rmtree(tmp)
            mb = sum(s["bytes_uncompressed"] for s in m["sources"]) / 1e6
            if best is None or dt < best[0]:
                best = (dt, main_cpu, pool_cpu)
        dt, main_cpu, pool_cpu = best
        # Cores kept busy, the main process (read, parse, write) runs alone: the rate is bounded by it
        # and by all CPU time spread over the cores (a model: no contention, no start-up)
        bound = mb / max(main_cpu, (main_cpu + pool_cpu) / args.project_cores)
        rows.append((name, mb, m["pages"]["kept"], dt, mb / dt, 1e3 * main_cpu / mb, 1e3 * pool_cpu / mb, bound))
        print(f"{name}: {mb:.1f} MB in {dt:.2f} s = {mb / dt:.1f} MB/s; CPU ms/MB main {1e3 * main_cpu / mb:.1f}, "
              f"pool {1e3 * pool_cpu / mb:.1f}", flush=True)
    print()
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"| input | MB uncompressed | articles kept | seconds | MB/s | main CPU ms/MB | pool CPU ms/MB "
          f"| CPU-bound MB/s on {args.project_cores} cores |")
    print("|---|---|---|---|---|---|---|---|")
    for name, mb, kept, dt, rate, main_ms, pool_ms, bound in rows:
        print(f"| {name} | {mb:.1f} | {kept:,} | {dt:.2f} | {rate:.1f} | {main_ms:.1f} | {pool_ms:.1f} | {bound:.0f} |")


if __name__ == "__main__":
    main()
