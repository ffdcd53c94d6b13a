"""Bytes each GPU sends per reader step on several GPUs, three designs, computed from the shapes.

    python bench/multi_gpu_volume.py                 # the GPU default at 5 minutes (x5 widening)
    python bench/multi_gpu_volume.py --minutes 2 --gpus 2,4,8 --json out.json

Computed, not timed: nothing runs on a GPU. The shapes are the GPU default's reader
(ReaderConfig for cuda at --minutes, reader.widen) with the memory's match candidates; the
designs (issue 26):
  a. replicated table, the whole flat gradient (dense weights + table) all-reduced (before 7af8abe);
  b. replicated table, the dense weights all-reduced and only the touched table rows exchanged:
     each rank's list of reader.touched_rows_max(batch / GPUs) rows (id int64 + dim float32; padded
     to that bound, so this is what NCCL moves whatever the batch touched) all-gathered (now);
  c. table sharded by hash (row r owned by rank r mod N): the dense weights all-reduced, and per
     step four all-to-alls: how many rows each owner is asked for (small; variable-size exchanges
     need the counts), the distinct rows a rank reads sent to their owners as ids, the owners'
     rows back (float32; these two before forward can start), the rows' gradients to the owners
     (the owners keep the ids). Uniform ownership, no padding: (N-1)/N of a rank's rows leave it (a fixed-size
     all-to-all would pad each destination to the worst case and move N times more).
Every design also broadcasts the step's message (positions, float64) and all-reduces the loss.
Bytes per GPU are those a GPU sends over its links in NCCL's ring algorithms (all-reduce:
2 (N-1)/N x buffer; all-gather: (N-1) x part; all-to-all: what leaves the rank): NCCL's "bus
bandwidth" is defined so that time = these bytes / bus bandwidth.

ASSUMPTIONS (not measurements): NVLink 4 bus bandwidth --bw GB/s per direction (450, an H200's
NVLink 4 at its nominal per-direction rate; NCCL reaches some 70-90% of it at these sizes) and
--latency us per collective. The one-GPU step time is measured: --rate reader positions/s of the
default 5-minute run on one H200 (bench/results/h200-default-5min-01af16d.json), with the reader
config's batch. Predicted efficiency assumes the compute of a step splits evenly over N GPUs
(each GPU's products are N times shorter, which the tensor cores may do less well) and that no
communication overlaps compute (none does in cheaplm today): eff = (T1 / N) / (T1 / N + comm).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cheaplm.model import ModelConfig  # noqa: E402
from cheaplm.reader import blocks, touched_rows_max  # noqa: E402

H200_RATE = 486527.811684814  # reader positions/s, bench/results/h200-default-5min-01af16d.json


def shapes(minutes: float) -> dict:
    """The GPU default reader's sizes at a minutes budget."""
    cfg = ModelConfig.for_device("cuda").reader_config("cuda", minutes)
    table = blocks(cfg)[0][1]
    n_table = table[0] * table[1]
    n_dense = sum(s[0] * s[1] for name, s, _ in blocks(cfg) if name != "table")
    return {"cfg": cfg, "batch": cfg.batch, "dim": cfg.dim, "slots": cfg.slots, "table_rows": table[0],
            "table_bytes": 4 * n_table, "dense_bytes": 4 * n_dense, "hidden": list(cfg.hidden)}


def volumes(s: dict, n: int) -> dict:
    """design -> (bytes each GPU sends per step, collectives per step) on n GPUs."""
    per_rank = s["batch"] // n
    rows = touched_rows_max(s["cfg"], per_rank)  # a rank's list: the bound, what NCCL moves
    row_bytes = 4 * s["dim"]
    ring = 2 * (n - 1) / n
    common = (n - 1) / n * 8 * (6 + s["batch"]) + ring * 8  # the step's message (tree/ring bcast) + the loss
    dense = ring * s["dense_bytes"]
    off = (n - 1) / n  # of a rank's rows, those owned elsewhere (uniform hashing)
    return {
        "a": (common + ring * (s["dense_bytes"] + s["table_bytes"]), 3, rows),
        "b": (common + dense + (n - 1) * rows * (8 + row_bytes), 5, rows),
        "c": (common + dense + off * rows * (8 + row_bytes + row_bytes), 7, rows),
    }


NAMES = {"a": "replicated, whole gradient all-reduced", "b": "replicated, touched rows all-gathered",
         "c": "sharded by hash, rows and gradients all-to-all"}


def table(minutes: float, gpus: list[int], bw: float, latency_us: float, rate: float) -> list[dict]:
    s = shapes(minutes)
    t1 = s["batch"] / rate  # seconds per step on one GPU
    rows = []
    for n in gpus:
        for key, (sent, colls, listed) in volumes(s, n).items():
            comm = sent / (bw * 1e9) + colls * latency_us * 1e-6
            compute = t1 / n
            rows.append({"design": key, "gpus": n, "mb_sent_per_gpu": sent / 1e6, "collectives": colls,
                         "rows_listed_per_rank": listed, "comm_ms": 1e3 * comm, "compute_ms": 1e3 * compute,
                         "efficiency": compute / (compute + comm)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="the budget whose GPU default reader is sized")
    ap.add_argument("--gpus", default="2,8", help="world sizes")
    ap.add_argument("--bw", type=float, default=450.0, help="ASSUMED bus bandwidth per direction, GB/s")
    ap.add_argument("--latency", type=float, default=20.0, help="ASSUMED latency per collective, us")
    ap.add_argument("--rate", type=float, default=H200_RATE, help="MEASURED one-GPU reader positions/s")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    s = shapes(args.minutes)
    gpus = [int(g) for g in args.gpus.split(",")]
    rows = table(args.minutes, gpus, args.bw, args.latency, args.rate)
    t1 = 1e3 * s["batch"] / args.rate
    print(f"reader at {args.minutes:g} min: hidden {s['hidden']}, batch {s['batch']}, {s['slots']} slots x {s['dim']}; "
          f"table {s['table_bytes'] / 1e9:.2f} GB ({s['table_rows']:,} rows), dense {s['dense_bytes'] / 1e6:.0f} MB")
    print(f"one GPU: {t1:.1f} ms a step (measured: {args.rate / 1e6:.3f} M positions/s); ASSUMED: {args.bw:g} GB/s "
          f"bus bandwidth, {args.latency:g} us a collective; no overlap")
    print("design | GPUs | rows listed/rank | MB sent/GPU/step | collectives | comm ms | compute ms | predicted eff.")
    for r in rows:
        print(f"{r['design']} {NAMES[r['design']]:<47} | {r['gpus']:4d} | {r['rows_listed_per_rank']:16,d} | "
              f"{r['mb_sent_per_gpu']:16.1f} | {r['collectives']:11d} | {r['comm_ms']:7.2f} | {r['compute_ms']:10.2f} | "
              f"{100 * r['efficiency']:5.1f}%")
    # what the next lever would buy (not built): b with the dense gradient summed as bf16
    for n in gpus:
        sent = volumes(s, n)["b"][0] - (1 - 0.5) * 2 * (n - 1) / n * s["dense_bytes"]
        comm = sent / (args.bw * 1e9) + 5 * args.latency * 1e-6
        print(f"  not built: b with the dense gradient all-reduced as bf16, {n} GPUs: {sent / 1e6:.1f} MB, "
              f"{1e3 * comm:.2f} ms, {100 * (t1 / n) / (t1 / n + 1e3 * comm):.1f}%")
    if args.json:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=ROOT).stdout.strip()
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "card": "computed", "commit": commit,
                                         "assumed_bw_gb_s": args.bw, "assumed_latency_us": args.latency,
                                         "measured_rate": args.rate, "minutes": args.minutes, "rows": rows},
                                        indent=2))


if __name__ == "__main__":
    main()
