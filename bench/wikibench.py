"""wikibench for cheaplm: train for a budget of training minutes, then score the whole test split.

    python bench/wikibench.py --minutes 5 --device cuda [--model '{"table_bits": 22}'] [--json out.json]
        [--variant 'no-match={"model": {"match_minlens": []}}' ...]   # ablations, same process
        [--keep-run DIR]   # keep the default's trained run (chat, language_quality.py answers --run DIR)

Builds the split from ../shared/data (bench/wikibench_data.py, sizes and sha256 checked) unless
--split-dir points at one. Training minutes exclude JIT compilation (kernels are compiled on a
tiny warm-up run first, timed and reported separately) and exclude evaluation. Prints test bits per
byte over all 5,000,074 test bytes, training throughput, sampling-free eval speed, memory, card.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from cheaplm.evaluate import stream_bpb  # noqa: E402
from cheaplm.kernels.match import _index_segments  # noqa: E402
from cheaplm.model import ModelConfig, memory_estimate  # noqa: E402
from cheaplm.shards import load_split, read_manifest, write_raw_split_dir  # noqa: E402
from cheaplm.train import TrainConfig, pick_device, train  # noqa: E402
from wikibench_data import build  # noqa: E402


def card_name(device: str) -> str:
    if device == "cuda":
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout.strip()
            return out.splitlines()[0] if out else "CUDA GPU"
        except Exception:
            return "CUDA GPU"
    import os

    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"


def warm_up(device: str, model_cfg: ModelConfig) -> float:
    """Compile every kernel on a tiny run so the budget measures training, not JIT."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        text = bytes(rng.integers(97, 123, 40_000, dtype="uint8"))
        write_raw_split_dir(Path(tmp) / "d", {"train": text, "val": text[:2000]}, "warm-up")
        small = ModelConfig(**{**json.loads(model_cfg.to_json()), "table_bits": 8, "match_bits": 10})
        # the segmented match index only runs on long inputs: compile it here too
        data = np.frombuffer(text, dtype=np.uint8)
        _index_segments(data, 0, len(data), np.array([12, 6]), 10, np.full((2, 1024), -1, np.int32),
                        np.empty((2, len(data)), np.int32), 0, 2, np.full((2, 2, 1024), -1, np.int32))
        train(Path(tmp) / "d", Path(tmp) / "r", small,
              TrainConfig(device=device, bytes=40_000, batch=512, count_chunk=8192, log_seconds=1e9,
                          val_seconds=1e9), save=False, log=lambda *a: None)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default="{}", help="JSON overrides of ModelConfig")
    ap.add_argument("--train", default="{}", help="JSON overrides of TrainConfig")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    ap.add_argument("--split-dir", default=str(Path(__file__).resolve().parent / "work" / "wikibench"))
    ap.add_argument("--small", action="store_true", help="train on train-small (Vibhas part only)")
    ap.add_argument("--val", action="store_true",
                    help="score the 2 MB of Vibhas before the test instead of the test (kept out of train): for decisions")
    ap.add_argument("--test-bytes", type=int, default=None, help="score only the first N test bytes")
    ap.add_argument("--adaptive", action="store_true", help="also report adaptive (online-count) test bpb")
    ap.add_argument("--json", default=None)
    ap.add_argument("--other", default=None,
                    help="a `cheaplm prepare` directory of another source (e.g. enwik8.head4154399.xz): also score "
                         "all of its splits, end to end, after the model's history (other_bpb)")
    ap.add_argument("--label", default="cheaplm")
    ap.add_argument("--variant", action="append", default=[],
                    help='extra run: NAME={"model": {...}, "train": {...}} (ablations); repeatable')
    ap.add_argument("--no-full", action="store_true", help="skip the default configuration")
    ap.add_argument("--keep-run", default=None,
                    help="save the default configuration's trained run here (for language_quality.py answers --run)")
    args = ap.parse_args()

    if args.val:
        args.split_dir = args.split_dir.rstrip("/") + "-val"
    split_dir = build(Path(args.split_dir), Path(args.data), small=args.small, val=args.val)
    device = pick_device(args.device)
    base_model = json.loads(args.model)  # over the device's defaults (ModelConfig.for_device)
    variants = [("full", {}, {})]
    for spec in args.variant:
        name, _, js = spec.partition("=")
        over = json.loads(js or "{}")
        variants.append((name, over.get("model", {}), over.get("train", {})))
    if args.no_full:
        variants = variants[1:]
    compile_s = warm_up(device, ModelConfig.for_device(device, base_model))
    print(f"[{args.label}] kernels compiled/warmed in {compile_s:.1f} s", flush=True)
    test = load_split(split_dir, "test")
    if args.test_bytes:
        test = test[: args.test_bytes]
    commit = os.environ.get("CHEAPLM_COMMIT") or subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    rows = []
    for name, m_over, t_over in variants:
        model_cfg = ModelConfig.for_device(device, {**base_model, **m_over})
        label = f"{args.label}:{name}"
        keep = Path(args.keep_run) if args.keep_run and name == "full" else None
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            tc = TrainConfig(device=device, minutes=args.minutes, val_seconds=1e9, log_seconds=15,
                             **{**json.loads(args.train), **t_over, **({"checkpoint_minutes": 0} if keep else {})})
            if keep is not None and keep.exists():
                shutil.rmtree(keep)
            # a kept run is saved once, after the budget (the clock stops before the save)
            summary = train(split_dir, keep or Path(tmp) / "run", model_cfg, tc, save=keep is not None,
                            log=lambda m: print(f"[{label}] {m}", flush=True), keep_model=True)
            wall = time.perf_counter() - t0
        model, history = summary.pop("model"), summary.pop("history")
        if summary["stopped"]:  # interrupted (SIGINT/SIGTERM): a part-trained model is not a result
            sys.exit(f"[{label}] training was interrupted ({summary['stopped']}); no result written")
        res = stream_bpb(model, history, test)
        out = {
            "label": label, "date": time.strftime("%Y-%m-%d"), "card": card_name(device), "device": device,
            "commit": commit, "command": " ".join(sys.argv), "minutes": args.minutes,
            "train_seconds": summary["elapsed"], "compile_seconds": compile_s, "wall_seconds_train_call": wall,
            "counted_bytes": summary["counted_bytes"], "steps": summary["steps"],
            "heldout": summary.get("heldout"),
            "train_mb_per_s": summary["counted_bytes"] / 1e6 / summary["elapsed"],
            "count_seconds": summary["count_seconds"], "count_mb_per_s": summary["count_mb_per_s"],
            "split": "val" if args.val else "test",
            "test_bytes": res["bytes"], "test_bpb": res["bpb"], "eval_seconds": res["seconds"],
            "model": json.loads(model_cfg.to_json()), "train": asdict(tc),
            "memory": memory_estimate(model_cfg, summary["train_bytes"], 0, device),
        }
        for key in ("reader_steps", "reader_seconds", "reader_positions_per_s"):
            out[key] = summary.get(key)
        if args.other:
            other_dir = Path(args.other)
            splits = read_manifest(other_dir)["splits"]
            other = np.concatenate([load_split(other_dir, s) for s, info in splits.items()
                                    if any(sh["bytes"] for sh in info["shards"])])
            res_o = model.score(history, other)
            out.update(other_dir=str(other_dir), other_bpb=res_o["bpb"], other_bytes=res_o["bytes"],
                       other_eval_seconds=res_o["seconds"])
            print(f"[{label}] other {other_dir.name} {res_o['bpb']:.4f} bpb ({res_o['bytes']:,} bytes)", flush=True)
        if args.adaptive:
            out["test_bpb_adaptive"] = stream_bpb(model, history, test, adaptive=True)["bpb"]
        del model, history
        gc.collect()  # the next variant's tables need this one's memory (tens of GB on the GPU)
        print(json.dumps({k: v for k, v in out.items() if k not in ("model", "train", "memory")}), flush=True)
        print(f"[{label}] test {out['test_bpb']:.4f} bpb, adaptive {out.get('test_bpb_adaptive', float('nan')):.4f}",
              flush=True)
        rows.append(out)
        if args.json:  # after every variant: a later one failing (out of memory) keeps the earlier results
            Path(args.json).write_text(json.dumps(rows, indent=1))
    print("\n| variant | card | budget min | trained s | counted MB | train MB/s | test bpb | adaptive |")
    print("|---|---|---|---|---|---|---|---|")
    for o in rows:
        print(f"| {o['label']} | {o['card']} | {o['minutes']} | {o['train_seconds']:.0f} | {o['counted_bytes'] / 1e6:.1f} | "
              f"{o['train_mb_per_s']:.2f} | {o['test_bpb']:.4f} | {o.get('test_bpb_adaptive', float('nan')):.4f} |")


if __name__ == "__main__":
    main()
