"""The reader on its own, on the GPU: product kernel check and speed, GPU vs CPU twin, and a
reader-only training run on wikibench train with bits per byte on a held-out stretch.

    python bench/reader_probe.py --seconds 150 [--reader '{"hidden": [2048, 1024]}'] [--json out.json]
    python bench/reader_probe.py --profile 20 ...   # also: milliseconds per step of each operation

--profile N times N training steps op by op (a synchronize around each of the GPU ops of
reader_backend.py, the bf16 copies of the weights and the Adam update): where a step's time goes.

Val: the 2 MB of wikibench train just before the test (same source as test), kept out of training.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from numba import cuda  # noqa: E402

from cheaplm.kernels import gemm  # noqa: E402
from cheaplm.lanes import stream_positions  # noqa: E402
from cheaplm.reader import Reader, ReaderConfig, describe, flops_per_position, reader_bpb  # noqa: E402
from cheaplm.schedule import ReaderSchedule, split_reader_options  # noqa: E402
from cheaplm.shards import load_split  # noqa: E402
from wikibench_data import TEST_START, build  # noqa: E402

VAL = 2_000_000


def check_gemm() -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for m, n, k in ((128, 64, 16), (256, 192, 1088), (1024, 2048, 64)):
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((n, k)).astype(np.float32)
        a16, b16 = gemm.bf16_bits_host(a), gemm.bf16_bits_host(b)
        ref = gemm.bf16_to_float(a16).astype(np.float64) @ gemm.bf16_to_float(b16).astype(np.float64).T
        c = cuda.to_device(np.ones((m, n), np.float32))
        gemm.gemm_nt(cuda.to_device(a16), cuda.to_device(b16), c, accumulate=True)
        err = float(np.max(np.abs(c.copy_to_host() - 1.0 - ref)) / np.max(np.abs(ref)))
        d = cuda.device_array((k, m), np.uint16)
        e = cuda.device_array((m, k), np.uint16)
        gemm.to_bf16(cuda.to_device(a), e, d)
        conv = bool(np.array_equal(e.copy_to_host(), a16) and np.array_equal(d.copy_to_host(), a16.T))
        out[f"{m}x{n}x{k}"] = {"rel_err": err, "bf16_conversion_exact": conv}
        print(f"gemm {m}x{n}x{k}: rel err {err:.2e}, bf16 conversion exact {conv}", flush=True)
    for m, n, k in ((16384, 2048, 1088), (16384, 1024, 2048), (2048, 1024, 16384)):
        a = cuda.to_device(rng.integers(0, 1 << 14, (m, k)).astype(np.uint16))
        b = cuda.to_device(rng.integers(0, 1 << 14, (n, k)).astype(np.uint16))
        c = cuda.device_array((m, n), np.float32)
        gemm.gemm_nt(a, b, c)
        cuda.synchronize()
        t0 = time.perf_counter()
        reps = 20
        for _ in range(reps):
            gemm.gemm_nt(a, b, c)
        cuda.synchronize()
        tf = 2.0 * m * n * k * reps / (time.perf_counter() - t0) / 1e12
        out[f"speed {m}x{n}x{k}"] = tf
        print(f"gemm {m}x{n}x{k}: {tf:.1f} TFLOP/s", flush=True)
    return out


def check_parity() -> dict:
    cfg = ReaderConfig(window=3, dim=64, ctx_bits=10, hidden=[128, 64], batch=192, contexts=[[0, 2], [1, 1], [3, 2], [0, 4]])
    rng = np.random.default_rng(1)
    text = np.frombuffer(b"the river flows into the sea; the stream flows into the lake. " * 200, dtype=np.uint8)
    pos = rng.integers(0, len(text), cfg.batch).astype(np.int64)
    cpu = Reader(cfg, "cpu")
    gpu = Reader(cfg, "cuda", params=cpu.host(cpu.params).copy())
    cpu.params[: cpu.view(cpu.params, 0).size] += rng.standard_normal(cpu.view(cpu.params, 0).size).astype(np.float32) * 0.3
    gpu.params = cuda.to_device(cpu.params)
    cpu.forward(text, pos, scale=1.0 / cfg.batch)
    cpu.backward()
    gpu.forward(cuda.to_device(text), cuda.to_device(pos), scale=1.0 / cfg.batch)
    gpu.backward()
    lc, lg = cpu.ws["loss"], gpu.host(gpu.ws["loss"])
    gc_, gg = cpu.grad, gpu.host(gpu.grad)
    out = {"loss_max_diff": float(np.max(np.abs(lc - lg))), "loss_mean": float(lc.mean()),
           "grad_rel_err": float(np.max(np.abs(gc_ - gg)) / np.max(np.abs(gc_))),
           "bitp_max_diff": float(np.max(np.abs(cpu.ws["bitp"] - gpu.host(gpu.ws["bitp"]))))}
    print("parity (bf16 GPU vs float32 CPU):", out, flush=True)
    return out


def profile_ops(reader, d_data, ranges, steps: int) -> dict:
    """Milliseconds per training step spent in each reader operation (each call synchronised)."""
    from cheaplm import reader as reader_mod
    from cheaplm.reader_backend import GpuOps

    spent: dict = {}

    def timed(name, fn):
        def wrap(*a, **kw):
            cuda.synchronize()
            t = time.perf_counter()
            out = fn(*a, **kw)
            cuda.synchronize()
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
            return out
        return wrap

    saved = {}
    for name in ("weights", "matmul", "relu", "grad_w", "grad_x", "relu_backward", "rows", "gather", "scatter",
                 "scan_forward", "scan_backward", "softmax"):
        saved[name] = getattr(GpuOps, name)
        setattr(GpuOps, name, timed(name, saved[name]))
    saved_update = reader_mod.Reader.update
    reader_mod.Reader.update = timed("adam update", saved_update)
    try:
        state = reader.new_state(reader.cfg.lanes)
        for i in range(steps + 2):
            if i == 2:  # the first two steps compile and allocate
                spent.clear()
                cuda.synchronize()
                t0 = time.perf_counter()
            pos = stream_positions(ranges, reader.cfg.lanes, i, reader.cfg.scan_chunk)
            reader.train_step(d_data, cuda.to_device(pos), 1e-4, state=state)
        cuda.synchronize()
        total = (time.perf_counter() - t0) / steps * 1e3
    finally:
        for name, fn in saved.items():
            setattr(GpuOps, name, fn)
        reader_mod.Reader.update = saved_update
    out = {name: v / steps * 1e3 for name, v in sorted(spent.items(), key=lambda kv: -kv[1])}
    out["step (synchronised ops)"] = total
    print(f"profile over {steps} steps, ms per step:", flush=True)
    for name, ms in out.items():
        print(f"  {name:>24} {ms:8.2f}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--reader", default="{}")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    ap.add_argument("--split-dir", default=str(Path(__file__).resolve().parent / "work" / "wikibench"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--skip-checks", action="store_true")
    ap.add_argument("--profile", type=int, default=0, help="time this many steps op by op first")
    args = ap.parse_args()
    res = {"date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)}
    if not args.skip_checks:
        res["gemm"] = check_gemm()
        res["parity"] = check_parity()
    train = load_split(build(Path(args.split_dir), Path(args.data)), "train")
    own, sched_over = split_reader_options(json.loads(args.reader))
    cfg = ReaderConfig.for_device("cuda", **own)
    sched = ReaderSchedule.for_device("cuda", over=sched_over)
    print(describe(cfg), flush=True)
    reader = Reader(cfg, "cuda")
    d_data = cuda.to_device(train)
    val_lo, val_hi = TEST_START - VAL, TEST_START
    rng = np.random.default_rng(0)
    n = len(train)
    ranges = [(1, val_lo), (val_hi, n)]
    if args.profile:
        res["profile_ms"] = profile_ops(reader, d_data, [(1, val_lo), (val_hi, len(train))], args.profile)
        reader = Reader(cfg, "cuda")
    state = reader.new_state(cfg.lanes)
    t0 = time.perf_counter()
    step, seen, last = 0, 0, t0
    curve = []
    while True:
        el = time.perf_counter() - t0
        if el >= args.seconds:
            break
        if cfg.scan:  # lanes of consecutive bytes carry the scan's state (lanes.py)
            pos = stream_positions(ranges, cfg.lanes, step, cfg.scan_chunk)
        else:
            pos = rng.integers(1, n - VAL, cfg.batch, dtype=np.int64)
            pos[pos >= val_lo] += VAL  # step over the val stretch
        loss = reader.train_step(d_data, cuda.to_device(pos), sched.lr_at(reader.step, el / args.seconds),
                                 state=state, table_lr=sched.table_lr)
        step += 1
        seen += cfg.batch
        if time.perf_counter() - last >= 15 or step == 1:
            last = time.perf_counter()
            vb = reader_bpb(reader, d_data, val_lo, val_lo + 262144, train)
            curve.append({"seconds": round(el, 1), "step": step, "train_bpb": loss, "val_bpb_256k": vb})
            print(f"{el:6.1f} s  step {step}  train {loss:.3f}  val(256 KB) {vb:.4f}  "
                  f"{seen / el / 1e6 if el else 0:.2f} M pos/s", flush=True)
    cuda.synchronize()
    el = time.perf_counter() - t0
    vb = reader_bpb(reader, d_data, val_lo, val_hi, train)
    res.update({"reader": json.loads(reader.to_json()), "seconds": el, "steps": step, "positions": seen,
                "positions_per_s": seen / el, "dense_tflops": seen * flops_per_position(cfg) / el / 1e12,
                "val_bpb": vb, "curve": curve})
    print(f"reader alone: val {vb:.4f} bpb after {el:.0f} s, {seen / el / 1e6:.2f} M positions/s, "
          f"{res['dense_tflops']:.1f} TFLOP/s dense (whole step)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
