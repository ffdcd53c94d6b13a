"""A pipeline model of `prepare`'s pool on a multistream dump: what keeps W workers from being busy.

Usage: python bench/prepare_pool_model.py [--workers 16] [--mb 410] [--cpu-ms-per-mb 152]

Chunks are cut in file order; a task's cost is the pool's CPU per MB times the chunk's MB, spread
lognormally (sigma from the profile's task seconds: 90th percentile / median = exp(1.28 sigma));
the main process takes the results in file order, keeping `ahead` chunks in flight, and spends
`main_ms` per MB. Two pools: before (each worker's tasks in turn, a worker blocked in sending its
reply until the main process reads it in order) and after (replies read as soon as ready, each
task to the worker free first). No contention between workers for the cores or memory is modelled:
the rates are upper bounds for the pipeline alone (bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import random


def simulate(costs: list[float], workers: int, ahead: int, blocking: bool, least: bool,
             main_s: float, first_s: float) -> float:
    """Seconds until the main process has taken the last chunk's result."""
    worker_free = [first_s] * workers  # when each worker is done with all it was given
    done, owner, pending = {}, {}, []
    t, sent, turn = first_s, 0, 0
    for _ in range(len(costs)):
        while sent < len(costs) and len(pending) < ahead:
            k = min(range(workers), key=lambda w: (max(worker_free[w], t), (w - turn) % workers)) if least else turn
            turn = (turn + 1) % workers
            worker_free[k] = max(worker_free[k], t) + costs[sent]
            done[sent], owner[sent] = worker_free[k], k
            pending.append(sent)
            sent += 1
        j = pending.pop(0)
        t = max(t, done[j]) + main_s
        if blocking:  # the worker sent its reply only now: its later tasks start after t
            k, s = owner[j], t
            for c in (c for c in pending if owner[c] == k):
                s = max(s, done[c] - costs[c]) + costs[c]
                done[c] = s
            worker_free[k] = max(worker_free[k], s)
    return t


def rate(mb: float, chunks: int, sigma: float, cpu_s_per_mb: float, main_s_per_mb: float, workers: int,
         ahead: int, blocking: bool, least: bool, first_s: float, runs: int = 40, seed: int = 1) -> float:
    rng = random.Random(seed)
    total = mb * cpu_s_per_mb
    times = []
    for _ in range(runs):
        costs = [rng.lognormvariate(0, sigma) for _ in range(chunks)]
        scale = total / sum(costs)
        times.append(simulate([c * scale for c in costs], workers, ahead, blocking, least,
                              main_s_per_mb * mb / chunks, first_s))
    return mb / (sum(times) / len(times))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--mb", type=float, default=410, help="MB of XML")
    ap.add_argument("--cpu-ms-per-mb", type=float, default=152, help="the pool's CPU per MB of XML")
    ap.add_argument("--main-ms-per-mb", type=float, default=3)
    args = ap.parse_args()
    w, cpu, main_ms = args.workers, args.cpu_ms_per_mb / 1e3, args.main_ms_per_mb / 1e3
    print(f"all CPU time spread over {w} cores: {w / (cpu + main_ms):.0f} MB/s")
    # before: 1 MiB chunks (the built dump: ~4 MB of XML each), 2 a worker; first chunk decoded and parsed alone
    before = rate(args.mb, round(args.mb / 4.1), 0.25, cpu, main_ms, w, 2 * w, True, False, 0.3)
    # after: 256 KiB chunks (the built dump: one ~2.4 MB stream each, more spread), 8 a worker
    after = rate(args.mb, round(args.mb / 2.4), 0.48, cpu, main_ms, w, 8 * w, False, True, 0.1)
    print(f"pipeline model, before (in turn, blocked replies, 1 MiB chunks, 2 a worker): {before:.0f} MB/s")
    print(f"pipeline model, after (free worker first, replies read when ready, 256 KiB, 8 a worker): {after:.0f} MB/s")


if __name__ == "__main__":
    main()
