"""The plan (cheaplm/plan.py) of issue 25's 10 GB H200 run, computed here without the data or a
GPU, against what that run measured (bench/results/h200-scale-10gb-e88d66a.json).

    python bench/plan_10gb.py [--checkpoint-minutes 0]

The run: 9,856,601,287 training bytes, `--device cuda --minutes 5 --checkpoint-minutes 0`, the
default config for a GPU, 16 host cores, 2,509,232 articles (titles.tsv's 160,590,848 bytes / 64).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint-minutes", type=float, default=0.0)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--cores", type=int, default=16)
    args = ap.parse_args()
    os.cpu_count = lambda: args.cores  # the H200 host's, as the plan there saw them
    from cheaplm.model import ModelConfig
    from cheaplm.plan import format_plan, run_plan
    from cheaplm.schedule import ReaderSchedule
    from cheaplm.train import TrainConfig, Trainer, widen, with_resolved_reader

    n, device = 9_856_601_287, "cuda"
    tc = TrainConfig(minutes=args.minutes, checkpoint_minutes=args.checkpoint_minutes).resolved(device)
    cfg = with_resolved_reader(ModelConfig(table_bits=None).sized_for(n, device), device, tc.minutes)
    sched = ReaderSchedule.for_device(device, tc.minutes, tc.reader, widen(tc.minutes))
    trainer = Trainer.__new__(Trainer)
    trainer.tc = tc
    plan = run_plan(cfg, tc, n, device, sched, 2_509_232, trainer.holdout_of(n))
    print("\n".join(format_plan(plan)))
    measured = json.loads((ROOT / "bench/results/h200-scale-10gb-e88d66a.json").read_text())["train"]
    host, gpu = sum(plan["host"].values()), sum(plan["gpu"].values())
    gpu_peak = measured["gpu_used"] - measured["gpu_used_before"]
    print(f"host: plan {host / 2**30:.2f} GiB ({plan['host_phase']}) / peak RSS {measured['ru_maxrss'] / 2**30:.2f} GiB "
          f"= {host / measured['ru_maxrss']:.3f}")
    print(f"GPU: plan {gpu / 2**30:.2f} GiB ({plan['gpu_phase']}) / nvidia-smi peak less before {gpu_peak / 2**30:.2f} GiB "
          f"= {gpu / gpu_peak:.3f}")


if __name__ == "__main__":
    main()
