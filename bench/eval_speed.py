"""Evaluation speed against training speed on the CPU, for the same model (issue 24 item 8).

    python bench/eval_speed.py RUN_DIR DATA_DIR [--split val] [--train-steps 60] [--repeats 2]

Loads the run's model on the CPU and, in one process, back to back (so that a shared machine's
load hits both alike):
- train: reader training steps as `cheaplm train` takes them (its lanes over the first few MB of
  the history, match pointers built for them, forward + backward + Adam), on a copy of the reader;
  positions/s = steps x batch / seconds;
- eval: `Model.score` of the split after the history, as `cheaplm eval` runs it (match index, the
  reader's pass, the memory's); positions/s = the split's bytes / seconds, and the reader's pass
  and the memory's pass apart.
Each is repeated and the best time kept. Prints a table row for bench/RESULTS.md and the eval's
bpb (which must not change with the code's speed).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cheaplm.checkpoint import load_model  # noqa: E402
from cheaplm.lanes import stream_positions  # noqa: E402
from cheaplm.reader import Reader  # noqa: E402
from cheaplm.shards import load_split  # noqa: E402


def train_rate(model, history: np.ndarray, steps: int) -> float:
    """Reader positions/s of training steps on a copy of the model's reader."""
    src = model.reader
    reader = Reader(src.cfg, "cpu", params=src.host(src.params).copy(), mix=src.mix)
    rc = reader.cfg
    n = min(len(history), 4 << 20)
    data = np.ascontiguousarray(history[:n])
    prev = model.match.pointers(n)
    model.match.index(data, 0, n, prev, 0, last_pos=np.full_like(model.match.last_pos, -1))
    match = model.match.args(prev, 0)
    state = reader.new_state(rc.lanes)
    chunk = rc.scan_chunk if rc.scan else 1

    def step(k):
        pos = stream_positions([(0, n)], rc.lanes, k, chunk)
        reader.train_step(data, pos, 1e-4, match, state)

    step(0)  # warm: compiles nothing (the cache is on disk) but touches every buffer
    t = time.perf_counter()
    for k in range(1, steps + 1):
        step(k)
    return steps * rc.batch / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("data_dir")
    ap.add_argument("--split", default="val")
    ap.add_argument("--train-steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    model, history, ckpt = load_model(Path(args.run_dir))
    stream = load_split(Path(args.data_dir), args.split)
    model.score(history, stream[:4096])  # warm
    train, ev = [], []
    for _ in range(args.repeats):
        train.append(train_rate(model, history, args.train_steps))
        ev.append(model.score(history, stream))
    best = min(ev, key=lambda r: r["seconds"])
    rate = best["bytes"] / best["seconds"]
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; run {args.run_dir} ({ckpt.name}); "
          f"{args.split} {best['bytes']:,} bytes; commit {commit}")
    every = ", ".join(f"{r['bpb']:.6f}" for r in ev)
    print(f"eval bpb {best['bpb']:.6f} (every repeat: {every})")
    print("| train positions/s | eval positions/s | eval / train | eval's reader pass | eval's memory pass |")
    print("|---|---|---|---|---|")
    print(f"| {max(train):,.0f} | {rate:,.0f} | {rate / max(train):.2f} | {best['reader_seconds']:.2f} s "
          f"| {best['memory_seconds']:.2f} s |")


if __name__ == "__main__":
    main()
