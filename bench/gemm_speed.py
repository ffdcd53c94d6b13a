"""The reader's product tile on the GPU: exact against float64, then TFLOP/s on the reader's shapes.

    python bench/gemm_speed.py [--json out.json] [--reps 20]

Checks C (+)= A @ B^T (kernels/gemm.py, tile.cu) on bf16 operands against the float64 product of
the same bf16 values, on shapes with half tiles of rows and columns, a half K-step, and K split or
not. Then times every product of one training step of the GPU reader at 2 and 5 minutes' widths
(forward, the input gradients, the weight gradients, K = 16384 positions) and, where torch is
installed (the GPU machine's; cheaplm never imports it), cuBLAS on the same shapes for the card's
practical limit. The step's dense FLOPs over its products' time is the product-only rate the
whole reader step could reach.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from numba import cuda  # noqa: E402

from cheaplm.kernels import gemm  # noqa: E402


def check(rng, m, n, k, splits, c_offset=0) -> float:
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((n, k)).astype(np.float32)
    a16, b16 = gemm.bf16_bits_host(a), gemm.bf16_bits_host(b)
    ref = gemm.bf16_to_float(a16).astype(np.float64) @ gemm.bf16_to_float(b16).astype(np.float64).T
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    flat = cuda.device_array(m * n + c_offset, np.float32)  # C a view at an odd element, as a parameter block can be
    c = flat[c_offset:].reshape((m, n))
    c.copy_to_device(c0)
    gemm.gemm_nt(cuda.to_device(a16), cuda.to_device(b16), c, accumulate=True, splits=splits)
    return float(np.max(np.abs(c.copy_to_host() - c0 - ref)) / np.max(np.abs(ref)))


def step_shapes(batch: int, width: int, hidden: list, scan: int) -> list:
    """(name, M, N, K) of every product in one reader step (reader.py's wiring, one scan layer)."""
    h1, h2 = hidden
    out = [("fwd x@W1", batch, h1, width), ("fwd h1@Wscan_in", batch, 2 * scan, h1),
           ("fwd h1@W2", batch, h2, h1), ("fwd s@Wscan_out", batch, h2, scan), ("fwd h2@W3", batch, 256, h2)]
    out += [("dx dlogits@W3", batch, h2, 256), ("dx dh2@W2", batch, h1, h2), ("dx dh2@Wscan_out", batch, scan, h2),
            ("dx dproj@Wscan_in", batch, h1, 2 * scan), ("dx dh1@W1", batch, width, h1)]
    out += [("dW3", 256, h2, batch), ("dW2", h2, h1, batch), ("dWscan_out", h2, scan, batch),
            ("dWscan_in", 2 * scan, h1, batch), ("dW1", h1, width, batch)]
    return out


def timed(fn, reps) -> float:
    fn()
    cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    cuda.synchronize()
    return (time.perf_counter() - t0) / reps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--checks-only", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    res = {"date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv), "checks": {}, "speed": {}}
    ok = True
    for m, n, k, splits, off in ((64, 64, 16, 1, 0), (192, 320, 48, 1, 0), (192, 320, 48, 1, 1),
                                 (1088, 2048, 1104, 1, 0), (1088, 2048, 1104, 1, 1), (256, 1024, 4096, None, 0),
                                 (256, 1024, 4112, 3, 1), (2048, 1472, 16384, None, 0)):
        err = check(rng, m, n, k, splits, off)
        res["checks"][f"{m}x{n}x{k} splits {splits} C offset {off}"] = err
        ok &= err < 1e-5
        print(f"check {m}x{n}x{k} splits {splits} (plan {gemm.split_plan(m, n, k, gemm.multiprocessors())}), C at "
              f"element {off}: rel err {err:.2e} {'ok' if err < 1e-5 else 'MISMATCH'}", flush=True)
    try:
        import torch
    except ImportError:
        torch = None
    for label, hidden in () if args.checks_only else (("2 min (x1)", [2048, 1024]), ("5 min (x2)", [4096, 2048])):
        total_flop, total_t, total_tc = 0.0, 0.0, 0.0
        print(f"\n{label}: batch 16384, width 1472, hidden {hidden}, scan 512", flush=True)
        print(f"{'product':>20} {'M':>6} {'N':>6} {'K':>6} {'split':>5} {'tile TF/s':>10} {'cuBLAS TF/s':>12}")
        for name, m, n, k in step_shapes(16384, 1472, hidden, 512):
            a = cuda.to_device(rng.integers(0, 1 << 14, (m, k)).astype(np.uint16))
            b = cuda.to_device(rng.integers(0, 1 << 14, (n, k)).astype(np.uint16))
            c = cuda.device_array((m, n), np.float32)
            t = timed(lambda: gemm.gemm_nt(a, b, c, accumulate=True), args.reps)
            flop = 2.0 * m * n * k
            tc = float("nan")
            if torch is not None:
                ta = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
                tb = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
                tc = timed(lambda: torch.matmul(ta, tb.T), args.reps)
                total_tc += tc
            total_flop += flop
            total_t += t
            row = {"M": m, "N": n, "K": k, "splits": gemm.split_plan(m, n, k, gemm.multiprocessors()),
                   "tflops": flop / t / 1e12, "cublas_tflops": flop / tc / 1e12}
            res["speed"][f"{label} {name}"] = row
            print(f"{name:>20} {m:>6} {n:>6} {k:>6} {row['splits']:>5} {row['tflops']:>10.1f} "
                  f"{row['cublas_tflops']:>12.1f}", flush=True)
        res["speed"][f"{label} all products"] = {"tflops": total_flop / total_t / 1e12,
                                                 "cublas_tflops": total_flop / total_tc / 1e12 if total_tc else None}
        print(f"{'all products':>20} {'':>27} {total_flop / total_t / 1e12:>10.1f} "
              f"{total_flop / total_tc / 1e12 if total_tc else float('nan'):>12.1f}", flush=True)
    print("\nchecks:", "ok" if ok else "MISMATCH")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
