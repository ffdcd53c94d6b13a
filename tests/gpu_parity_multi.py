"""Several GPUs through NCCL, on a machine that has them (issue 26): parity, scaling, wikibench.

    export PYTHONPATH=$PWD/.devshim:$PWD     # ../shared/DEVICE.md's numpy shim, then the source tree
    python tests/gpu_parity_multi.py                    # parity, then scaling (about 5 minutes on 8 H200s)
    python tests/gpu_parity_multi.py --part wikibench --data .devdata   # the 5-minute wikibench, all GPUs

Needs: two or more CUDA GPUs; CuPy with NCCL (`cupy.cuda.nccl`): the H200 machine of DEVICE.md
lists cupy-cuda13x, and torch's nvidia-nccl-cu13 wheel brings libnccl.so.2, which comm.py loads when
CuPy does not find it by itself. Elsewhere: pip install 'cheaplm[multigpu]' (cupy-cuda12x) or
cupy-cuda13x for CUDA 13, and NCCL (pip install nvidia-nccl-cu12). The script checks this first
and says what is missing. Nothing else is installed; no network is used. NCCL_NVLS_ENABLE=0.

Parts (`--part`, default parity and scaling):
- parity: the same small GPU run (the embedded sample, a bytes budget, the reader stopped after
  --steps steps) on 1 GPU twice and on 2 GPUs. Each process is started with the environment
  torchrun would give it (launch.child_env) and trains through cheaplm.train with comm.connect(),
  as `cheaplm train --gpus N` does. GPU training is not bit-reproducible (atomics), so the test is
  relative: the 2-GPU reader's distance from the 1-GPU reader must be within 3x the distance between
  the two 1-GPU runs plus 1e-3 of how far training moved the weights ("within bf16 rounding": the
  split only changes the order of fp32 sums of bf16 products), and val bpb within 0.01. The two
  ranks' readers must be equal to the bit: the table's gradient travels as each rank's list of
  touched rows, added back on every rank in rank order without atomics (parallel.py).
- scaling: reader positions/s of the default 5-minute reader (x5) on 1, 2, 4, 8 GPUs (those
  visible), --bench-steps steps after the memory phase; efficiency = rate(k) / (k x rate(1)),
  printed beside bench/multi_gpu_volume.py's prediction (computed bytes over an assumed bandwidth).
  Goal (issue 26): >= 85% at 2, >= 75% at 8.
- wikibench: `cheaplm train SPLIT --minutes 5 --gpus all` then `cheaplm eval --split test` on the
  wikibench split (bench/wikibench_data.py builds it from --data, as bench/wikibench.py does).
Prints one table per part and writes --json (default bench/results/multi_gpu.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rank_job(spec: dict) -> None:
    """One process of a world (the environment says which): train, rank 0 writes the summary."""
    from cheaplm.comm import World, connect
    from cheaplm.model import ModelConfig
    from cheaplm.train import TrainConfig, train

    import numpy as np

    comm = connect(World.from_env())
    out = train(Path(spec["data"]), Path(spec["run"]), ModelConfig.from_dict(spec["model"]),
                TrainConfig(**spec["train"]), log=print if comm.rank == 0 else (lambda *a: None),
                stop_after_reader_steps=spec["steps"], comm=comm)
    if comm.rank > 0 and out.get("reader") is not None:  # its replica, to compare with rank 0's checkpoint
        np.save(spec["result"] + f".rank{comm.rank}.npy", out["reader"].host(out["reader"].params))
    if comm.rank == 0:
        keep = ("val_bpb", "reader_steps", "reader_seconds", "reader_positions_per_s", "stopped")
        Path(spec["result"]).write_text(json.dumps({k: out.get(k) for k in keep}))
    comm.close()


def world_run(k: int, spec: dict, tmp: Path, name: str) -> dict:
    """spec's job as k processes (ranks of one world on this machine); rank 0's summary."""
    from cheaplm.launch import child_env, free_port

    spec = {**spec, "run": str(tmp / name), "result": str(tmp / f"{name}.json")}
    port = free_port()
    procs = [subprocess.Popen([sys.executable, __file__, "--rank-job", json.dumps(spec)], env=child_env(r, k, port))
             for r in range(k)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"{name}: exit statuses {codes}")
    return json.loads(Path(spec["result"]).read_text())


def requirements() -> int:
    """GPUs visible; exits with what is missing."""
    from cheaplm.comm import CommError, nccl_module
    from cheaplm.launch import visible_gpus

    n = visible_gpus()
    if n < 2:
        raise SystemExit(f"needs 2 or more CUDA GPUs; {n} visible")
    try:
        nccl = nccl_module()
        print(f"NCCL {nccl.get_version()} through CuPy; {n} GPUs; NCCL_NVLS_ENABLE={os.environ['NCCL_NVLS_ENABLE']}")
    except CommError as exc:
        raise SystemExit(str(exc)) from None
    return n


def sample_data(tmp: Path, mb: float) -> Path:
    """The embedded sample prepared, repeated to about mb MB (the text's size matters little here)."""
    from cheaplm.prepare import PrepareOptions, prepare
    from cheaplm.shards import write_raw_split_dir

    prepare([str(ROOT / "data" / "sample-pages-articles.xml")], tmp / "sample",
            PrepareOptions(val_fraction=0, test_fraction=0))
    raw = (tmp / "sample" / "train-00000.bin").read_bytes()
    reps = max(1, int(mb * 1e6 / len(raw)))
    text = b"".join(raw.replace(b"the", b"the" + str(i % 97).encode(), 1) for i in range(reps))
    write_raw_split_dir(tmp / "rep", {"train": text, "val": raw[:20000]}, "gpu_parity_multi")
    return tmp / "rep"


def params_of(run: Path):
    from cheaplm.checkpoint import load_model

    model, _, _ = load_model(run)
    return model.reader.params.astype("float64")


def parity(tmp: Path, steps: int) -> dict:
    import numpy as np

    from cheaplm.model import ModelConfig
    from cheaplm.reader import init_params

    data = sample_data(tmp, 2)
    model = ModelConfig.for_device("cuda", {"table_bits": 18, "match_bits": 18})
    spec = {"data": str(data), "model": json.loads(model.to_json()), "steps": steps,
            "train": {"device": "cuda", "bytes": 2 * 10**6, "checkpoint_minutes": 0, "log_seconds": 1e9,
                      "val_seconds": 1e9}}
    one_a, one_b, two = (world_run(k, spec, tmp, name) for k, name in ((1, "one_a"), (1, "one_b"), (2, "two")))
    pa, pb, p2 = (params_of(tmp / n) for n in ("one_a", "one_b", "two"))
    from cheaplm.checkpoint import load_model

    p0 = init_params(load_model(tmp / "one_a")[0].reader.cfg).astype("float64")
    noise, d2, moved = (float(np.linalg.norm(x)) for x in (pb - pa, p2 - pa, pa - p0))
    # the replicas: rank 1 adds the same row lists in the same order and gets NCCL's same dense sum,
    # so its reader is rank 0's to the bit (the exchange of touched rows, parallel.py)
    same = np.array_equal(np.load(tmp / "two.json.rank1.npy"), p2.astype(np.float32))
    ok = d2 <= 3 * noise + 1e-3 * moved and abs(two["val_bpb"] - one_a["val_bpb"]) <= 0.01 and same
    row = {"steps": steps, "one_vs_one": noise, "two_vs_one": d2, "moved": moved, "val_one": one_a["val_bpb"],
           "val_one_again": one_b["val_bpb"], "val_two": two["val_bpb"], "replicas_equal": bool(same), "pass": ok}
    print(f"parity after {steps} reader steps: |2 GPUs - 1 GPU| {d2:.3e}, |1 GPU - 1 GPU| {noise:.3e}, "
          f"weights moved {moved:.3e}; val bpb 1 GPU {one_a['val_bpb']:.4f} / {one_b['val_bpb']:.4f}, "
          f"2 GPUs {two['val_bpb']:.4f}; rank 1's reader equals rank 0's bit for bit: {same}: {'PASS' if ok else 'FAIL'}")
    return row


def scaling(tmp: Path, n_gpus: int, steps: int) -> list:
    from cheaplm.model import ModelConfig
    from cheaplm.train import with_resolved_reader

    data = sample_data(tmp, 32)
    model = with_resolved_reader(ModelConfig.for_device("cuda", {"table_bits": 22, "match_bits": 22}), "cuda", 5.0)
    spec = {"data": str(data), "model": json.loads(model.to_json()), "steps": steps,
            "train": {"device": "cuda", "bytes": 32 * 10**6, "checkpoint_minutes": 0, "log_seconds": 1e9,
                      "val_seconds": 1e9}}
    sys.path.insert(0, str(ROOT / "bench"))
    from multi_gpu_volume import table

    rows = []
    for k in (1, 2, 4, 8):
        if k > n_gpus:
            break
        out = world_run(k, spec, tmp, f"scale{k}")
        rate = out["reader_positions_per_s"]
        eff = rate / (k * rows[0]["positions_per_s"]) if rows else 1.0
        # bench/multi_gpu_volume.py's prediction for the touched-rows exchange (design b) at this
        # card's own one-GPU rate, with its assumed 450 GB/s and 20 us a collective
        pred = 1.0 if k == 1 else next(r["efficiency"] for r in table(5.0, [k], 450.0, 20.0, rows[0]["positions_per_s"])
                                       if r["design"] == "b")
        rows.append({"gpus": k, "positions_per_s": rate, "efficiency": eff, "predicted": pred,
                     "steps": out["reader_steps"]})
    print(f"reader {model.reader.get('hidden')}: GPUs | M positions/s | scaling efficiency | predicted (volume model)")
    for r in rows:
        print(f"{r['gpus']:4d} | {r['positions_per_s'] / 1e6:13.3f} | {100 * r['efficiency']:17.1f}% | "
              f"{100 * r['predicted']:5.1f}%")
    return rows


def wikibench(tmp: Path, n_gpus: int, data: Path, minutes: float) -> dict:
    sys.path.insert(0, str(ROOT / "bench"))
    from wikibench_data import build

    split = build(ROOT / "bench" / "work" / "wikibench", data)
    run = tmp / "wiki"
    cli = [sys.executable, "-m", "cheaplm.cli"]
    t0 = time.perf_counter()
    subprocess.run([*cli, "train", str(split), "--out", str(run), "--minutes", str(minutes), "--gpus", str(n_gpus)],
                   check=True)
    wall = time.perf_counter() - t0
    ev = subprocess.run([*cli, "eval", str(run), str(split), "--split", "test"], check=True, capture_output=True,
                        text=True)
    print(ev.stdout.strip())
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"final"' in line][-1]
    row = {"gpus": n_gpus, "minutes": minutes, "train_wall_s": wall, "eval": ev.stdout.strip(), "final": last}
    print(f"wikibench, {minutes} minutes on {n_gpus} GPUs: {ev.stdout.strip()}")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", action="append", choices=("parity", "scaling", "wikibench"))
    ap.add_argument("--steps", type=int, default=30, help="reader steps of the parity runs")
    ap.add_argument("--bench-steps", type=int, default=300, help="reader steps of each scaling run")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="wikibench's sources")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "multi_gpu.json")
    ap.add_argument("--rank-job", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rank_job:
        rank_job(json.loads(args.rank_job))
        return
    n = requirements()
    parts = args.part or ["parity", "scaling"]
    result = {"commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                       cwd=ROOT).stdout.strip(), "gpus": n, "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory() as tmp:
        if "parity" in parts:
            result["parity"] = parity(Path(tmp), args.steps)
        if "scaling" in parts:
            result["scaling"] = scaling(Path(tmp), n, args.bench_steps)
        if "wikibench" in parts:
            result["wikibench"] = wikibench(Path(tmp), n, args.data, args.minutes)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"written {args.json}")
    if "parity" in result and not result["parity"]["pass"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
