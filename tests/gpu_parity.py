"""Tier 2: every CUDA kernel against its CPU twin on fresh random inputs.

Runs under the CUDA simulator in CI (tests/test_kernels.py starts it with
NUMBA_ENABLE_CUDASIM=1, tiny shapes, 7 threads per block so blocks are partial) and on a real GPU:
    python tests/gpu_parity.py [--big]
Exits non-zero on any mismatch and prints one line per kernel.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from numba import cuda  # noqa: E402

from cheaplm import config  # noqa: E402
from cheaplm.kernels import adam, counts, mixer  # noqa: E402
from cheaplm.kernels.match import match_index  # noqa: E402
from cheaplm.memory import context_array  # noqa: E402
from cheaplm.model import Model, ModelConfig  # noqa: E402


def make_text(rng, n: int) -> np.ndarray:
    words = [b"the", b"cat", b"sat", b"on", b"a", b"mat", b"\xc3\xa9t\xc3\xa9", b"1990", b"Paris", b"of"]
    out = bytearray()
    while len(out) < n:
        out += words[rng.integers(len(words))] + (b". " if rng.random() < 0.1 else b" ")
    return np.frombuffer(bytes(out[:n]), dtype=np.uint8).copy()


def check(big: bool = False) -> bool:
    rng = np.random.default_rng(7)
    n = 200_000 if big else 300
    n_b = 50_000 if big else 23
    cfg = ModelConfig(orders=[0, 1, 2, 3, 5], words=2, sparse=[0b10], table_bits=16 if big else 6,
                      match_minlens=[8, 3], match_bits=14 if big else 8, apm2_bits=6, apm_hash_bits=8,
                      selectors=["seen", "partial", "byte1", "byte2"], skips=[2])
    data = make_text(rng, n)
    ctx = context_array(cfg)
    ok = True

    # counts: integer tables must be identical
    t_cpu = np.zeros((cfg.table_rows(), 32), np.uint32)
    counts.count_add_cpu(data, 1, n, ctx, t_cpu, np.uint32(1))
    d_t = cuda.to_device(np.zeros_like(t_cpu))
    tot = (n - 1) * ctx.shape[0]
    tpb = config.THREADS_PER_BLOCK
    d_data, d_ctx = cuda.to_device(data), cuda.to_device(ctx)
    counts.count_add_kernel[(tot + tpb - 1) // tpb, tpb](d_data, 1, n, d_ctx, d_t, np.uint32(1))
    same = np.array_equal(t_cpu, d_t.copy_to_host())
    print(f"count_add: {'ok' if same else 'MISMATCH'} ({int(t_cpu.sum())} counts)")
    ok &= same
    # taking counts back out (adaptive evaluation restores the tables so): exactly what was there
    half = np.zeros_like(t_cpu)
    counts.count_add_cpu(data, 1, n // 2, ctx, half, np.uint32(1))
    tot2 = (n - n // 2) * ctx.shape[0]
    d_back = cuda.to_device(t_cpu)
    counts.count_add_kernel[(tot2 + tpb - 1) // tpb, tpb](d_data, n // 2, n, d_ctx, d_back, np.uint32(0xFFFFFFFF))
    same = np.array_equal(half, d_back.copy_to_host())
    print(f"count_add -1: {'ok' if same else 'MISMATCH'}")
    ok &= same

    # mixer forward/backward with trained-looking random params
    model = Model(cfg, device="cpu", tables=t_cpu)
    model.memory.params += rng.normal(0, 0.3, model.memory.n_params).astype(np.float32)
    prev = np.full((2, n), -1, np.int32)
    match_index(data, 0, n, model.match.minlens, cfg.match_bits, model.match.last_pos, prev, 0)
    pos = rng.integers(0, n, n_b).astype(np.int64)
    for loo in (0, 1):
        c_cpu = model.caches(n_b)
        mixer.forward_cpu(data, pos, loo, prev, 0, model.match.minlens, model.match.spec.array(), ctx, t_cpu, model.memory.params, model.memory.lay,
                          *c_cpu.forward_args())
        c_gpu = mixer.Caches(n_b, model.memory.n_ctx, int(model.memory.lay[mixer.L_K]), int(model.memory.lay[mixer.L_NSEL]),
                             int(model.memory.lay[mixer.L_NAPM]), int(model.memory.lay[mixer.L_NMI]), device=True)
        d_params = cuda.to_device(model.memory.params)
        d_args = [cuda.to_device(a) for a in (data, pos)]
        mixer.forward_kernel[(n_b + tpb - 1) // tpb, tpb](
            d_args[0], d_args[1], loo, cuda.to_device(prev), 0, cuda.to_device(model.match.minlens),
            cuda.to_device(model.match.spec.array()), cuda.to_device(ctx),
            cuda.to_device(t_cpu), d_params, cuda.to_device(model.memory.lay), *c_gpu.forward_args())
        err = np.max(np.abs(c_cpu.loss - c_gpu.loss.copy_to_host()))
        same_idx = (np.array_equal(c_cpu.idx, c_gpu.idx.copy_to_host())
                    and np.array_equal(c_cpu.qidx, c_gpu.qidx.copy_to_host()))
        good = err < 1e-4 and same_idx
        print(f"mixer forward (loo={loo}): max |loss diff| {err:.2e}, indices {'same' if same_idx else 'DIFFER'}: "
              f"{'ok' if good else 'MISMATCH'}")
        ok &= good

        g_cpu = np.zeros(model.memory.n_params, np.float32)
        mixer.backward(data, pos, model.memory.params, model.memory.lay, c_cpu, 1.0 / n_b, g_cpu)
        d_g = cuda.to_device(np.zeros(model.memory.n_params, np.float32))
        mixer.backward_kernel[(n_b + tpb - 1) // tpb, tpb](
            d_args[0], d_args[1], d_params, cuda.to_device(model.memory.lay), *c_gpu.backward_args(), 1.0 / n_b, d_g)
        g_gpu = d_g.copy_to_host()
        gerr = np.max(np.abs(g_cpu - g_gpu)) / max(np.max(np.abs(g_cpu)), 1e-12)
        print(f"mixer backward (loo={loo}): max relative grad diff {gerr:.2e}: {'ok' if gerr < 1e-4 else 'MISMATCH'}")
        ok &= gerr < 1e-4

    # adam
    p0 = rng.normal(size=997).astype(np.float32)
    g0 = rng.normal(size=997).astype(np.float32)
    m0 = rng.normal(size=997).astype(np.float32) * 0.1
    v0 = np.abs(rng.normal(size=997)).astype(np.float32) * 0.1
    a = [x.copy() for x in (p0, g0, m0, v0)]
    adam.adam_cpu(*a, 0.01, 0.9, 0.99, 1e-8, 0.5, 0.3, 0)
    d = [cuda.to_device(x.copy()) for x in (p0, g0, m0, v0)]
    adam.adam_kernel[(997 + tpb - 1) // tpb, tpb](*d, 0.01, 0.9, 0.99, 1e-8, 0.5, 0.3, 0, 0.0)
    aerr = max(np.max(np.abs(x - y.copy_to_host())) for x, y in zip(a, d))
    print(f"adam: max diff {aerr:.2e}: {'ok' if aerr < 1e-6 else 'MISMATCH'}")
    ok &= aerr < 1e-6
    # lazy adam (the reader's table): elements without gradient untouched, on both
    g0[::3] = 0.0
    a = [x.copy() for x in (p0, g0, m0, v0)]
    adam.adam_cpu(*a, 0.01, 0.9, 0.99, 1e-8, 0.5, 0.3, 1)
    d = [cuda.to_device(x.copy()) for x in (p0, g0, m0, v0)]
    adam.adam_kernel[(997 + tpb - 1) // tpb, tpb](*d, 0.01, 0.9, 0.99, 1e-8, 0.5, 0.3, 1, 0.0)
    lerr = max(np.max(np.abs(x - y.copy_to_host())) for x, y in zip(a, d))
    same = lerr < 1e-6 and np.array_equal(a[0][::3], p0[::3])
    # the GPU table's form: only the rows a batch read, each once
    dim, n_rows = 4, 40
    rows = rng.integers(0, n_rows, (6, 3)).astype(np.int64)  # repeats included
    gt = np.zeros(n_rows * dim, np.float32)
    for r in np.unique(rows):
        gt[r * dim:(r + 1) * dim] = rng.normal(size=dim)
    gt[rows[0, 0] * dim] = 0.0  # an element of a read row with no gradient stays lazy too
    pt, mt, vt = (rng.normal(size=n_rows * dim).astype(np.float32) for _ in range(3))
    vt = np.abs(vt)
    d = [cuda.to_device(x.copy()) for x in (pt, gt, mt, vt)]
    marks = cuda.to_device(np.zeros(n_rows, np.int32))
    adam.adam_rows_step(cuda.to_device(rows), marks, dim, *d, 1, 0.01, 0.9, 0.99, 1e-8)  # step 1
    a = [x.copy() for x in (pt, gt, mt, vt)]  # the host's full lazy pass, step 1's bias corrections
    adam.adam_cpu(*a, 0.01, 0.9, 0.99, 1e-8, 1.0 - 0.9, 1.0 - 0.99, 1)
    rerr = max(np.max(np.abs(x - y.copy_to_host())) for x, y in zip(a, d))
    rows_ok = rerr < 1e-6 and not marks.copy_to_host().any()
    print(f"adam lazy: max diff {lerr:.2e}, by rows {rerr:.2e}: {'ok' if same and rows_ok else 'MISMATCH'}")
    ok &= bool(same and rows_ok)
    ok &= check_scan(rng, big)
    ok &= check_dropout(rng, big)
    ok &= check_adam_decay(rng)
    ok &= check_table_rows(rng, big)
    ok &= check_gemm(rng, big)
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        ok &= check_reader(rng, big, scan=False)
        ok &= check_reader(rng, big, scan=True)
    # the simulator runs each kernel thread as Python (over two minutes a reader check on 2 cores):
    # there only this one, whose two stacked scan layers run every op of the other two
    ok &= check_reader(rng, big, scan=True, layers=2)
    return bool(ok)


def check_scan(rng, big: bool) -> bool:
    """The scan's CUDA kernels against their CPU twins (one body each): gate, state sequence, state
    out, the backward's input gradients and bias gradient (the bias summed with atomics on the GPU)."""
    from cheaplm.device import launch_2d
    from cheaplm.kernels import scan

    lanes, T, d = (256, 64, 512) if big else (5, 7, 9)
    n = lanes * T
    proj = rng.standard_normal((n, 2 * d)).astype(np.float32)
    bias = rng.standard_normal((1, d)).astype(np.float32)
    s_in = rng.standard_normal((lanes, d)).astype(np.float32)
    ds = rng.standard_normal((n, d)).astype(np.float32)
    c_out, c_gate, c_s = np.zeros((lanes, d), np.float32), np.zeros((n, d), np.float32), np.zeros((n, d), np.float32)
    scan.scan_forward_cpu(proj, bias, s_in, c_out, c_gate, c_s, T)
    c_dp, c_db = np.zeros((n, 2 * d), np.float32), np.zeros((1, d), np.float32)
    scan.scan_backward_cpu(proj, c_gate, c_s, s_in, ds, c_dp, c_db, T)
    g = [cuda.to_device(x) for x in (proj, bias, s_in)]
    g_out, g_gate, g_s = (cuda.device_array(x.shape, np.float32) for x in (c_out, c_gate, c_s))
    grid, blk = launch_2d(d, lanes)
    scan.scan_forward_kernel[grid, blk](g[0], g[1], g[2], g_out, g_gate, g_s, T)
    g_dp = cuda.device_array((n, 2 * d), np.float32)
    g_db = cuda.to_device(np.zeros((1, d), np.float32))
    scan.scan_backward_kernel[grid, blk](g[0], g_gate, g_s, g[2], cuda.to_device(ds), g_dp, g_db, T)
    ferr = max(float(np.max(np.abs(a - b.copy_to_host()))) for a, b in ((c_out, g_out), (c_gate, g_gate), (c_s, g_s)))
    berr = float(np.max(np.abs(g_dp.copy_to_host() - c_dp)) / np.max(np.abs(c_dp)))
    dberr = float(np.max(np.abs(g_db.copy_to_host() - c_db)) / max(1e-9, float(np.max(np.abs(c_db)))))
    good = ferr < 1e-4 and berr < 1e-4 and dberr < 1e-4
    print(f"scan {lanes}x{T}x{d}: forward diff {ferr:.1e}, input grad rel err {berr:.1e}, bias grad rel err "
          f"{dberr:.1e}: {'ok' if good else 'MISMATCH'}")
    return bool(good)


def check_dropout(rng, big: bool) -> bool:
    """Training's dropout of hashed rows: the keep factors drawn by the kernel equal the CPU twin's
    (one body, an integer hash), gather with them gives the CPU's rows in bf16, scatter the CPU's
    gradient (atomics: within float32 rounding)."""
    from cheaplm.device import launch, launch_2d, launch_tiles
    from cheaplm.kernels import reader_ops
    from cheaplm.kernels.gemm import bf16_bits_host

    n_b, window, n_ctx, dim, n_rows = (4096, 8, 8, 64, 50_000) if big else (11, 2, 3, 5, 40)
    slots = window + n_ctx + 1
    pos = rng.integers(0, 1 << 20, n_b).astype(np.int64)
    rows = rng.integers(0, n_rows, (n_b, slots)).astype(np.int64)
    table = rng.standard_normal((n_rows, dim)).astype(np.float32)
    dx = rng.standard_normal((n_b, slots * dim)).astype(np.float32)
    c_keep = np.zeros((n_b, slots), np.float32)
    reader_ops.keep_cpu(pos, 12345, 0.3, window, n_ctx, c_keep)
    g_keep = cuda.to_device(np.zeros((n_b, slots), np.float32))
    reader_ops.keep_kernel[launch(n_b)](cuda.to_device(pos), 12345, 0.3, window, n_ctx, g_keep)
    same_keep = np.array_equal(c_keep, g_keep.copy_to_host()) and (c_keep == 0).any()
    c_x = np.zeros((n_b, slots * dim), np.float32)
    reader_ops.gather_cpu(table, rows, c_x, c_keep)
    g_x, g_xt = cuda.device_array((n_b, slots * dim), np.uint16), cuda.device_array((slots * dim, n_b), np.uint16)
    grid, blk = launch_tiles(n_b, slots * dim)
    d_rows = cuda.to_device(rows)
    reader_ops.gather_kernel[grid, blk](cuda.to_device(table), d_rows, g_x, g_xt, g_keep)
    same_x = np.array_equal(g_x.copy_to_host(), bf16_bits_host(c_x)) and np.array_equal(g_xt.copy_to_host(),
                                                                                           bf16_bits_host(c_x).T)
    c_g = np.zeros_like(table)
    reader_ops.scatter_cpu(dx, rows, c_g, c_keep)
    g_g = cuda.to_device(np.zeros_like(table))
    grid, blk = launch_2d(slots * dim, n_b)
    reader_ops.scatter_kernel[grid, blk](cuda.to_device(dx), d_rows, g_g, g_keep)
    gerr = float(np.max(np.abs(g_g.copy_to_host() - c_g)))
    good = bool(same_keep and same_x and gerr < 1e-4)
    print(f"hashed-row dropout {n_b}x{slots}x{dim}: keep identical {same_keep}, gather identical {same_x}, "
          f"scatter max diff {gerr:.1e}: {'ok' if good else 'MISMATCH'}")
    return good


def check_adam_decay(rng) -> bool:
    """Adam with decoupled weight decay (the reader's dense weights with weight_decay > 0): the
    kernel against the CPU twin (one body), and both against the float64 formula."""
    n = 997
    p0, g0, m0 = (rng.normal(size=n).astype(np.float32) for _ in range(3))
    v0 = np.abs(rng.normal(size=n)).astype(np.float32) * 0.1
    lr, wd, bc1, bc2 = 0.01, 0.5, 0.5, 0.3
    a = [x.copy() for x in (p0, g0, m0, v0)]
    adam.adam_cpu(*a, lr, 0.9, 0.99, 1e-8, bc1, bc2, 0, wd)
    d = [cuda.to_device(x.copy()) for x in (p0, g0, m0, v0)]
    tpb = config.THREADS_PER_BLOCK
    adam.adam_kernel[(n + tpb - 1) // tpb, tpb](*d, lr, 0.9, 0.99, 1e-8, bc1, bc2, 0, wd)
    err = max(np.max(np.abs(x - y.copy_to_host())) for x, y in zip(a, d))
    m = 0.9 * m0.astype(np.float64) + 0.1 * g0
    v = 0.99 * v0.astype(np.float64) + 0.01 * g0.astype(np.float64) ** 2
    want = p0 - lr * ((m / bc1) / (np.sqrt(v / bc2) + 1e-8) + wd * p0.astype(np.float64))
    oerr = float(np.max(np.abs(a[0] - want)))
    good = bool(err < 1e-6 and oerr < 1e-5)
    print(f"adam with weight decay: max diff {err:.2e}, vs float64 {oerr:.1e}: {'ok' if good else 'MISMATCH'}")
    return good


def check_table_rows(rng, big: bool) -> bool:
    """Several GPUs' exchange of touched table rows (kernels/table_rows.py): the GPU's lists against
    the host's (the same rows and gradient rows, in another order: compared sorted by row), two
    ranks' lists added back in rank order (exact: no atomics), and the row-wise Adam over the
    gathered, -1 padded lists against the host's full lazy pass."""
    from cheaplm.kernels import table_rows

    n_rows, dim, n_b, slots = (200_000, 64, 4096, 20) if big else (50, 5, 9, 4)
    cap = n_b * slots
    host_ids, host_vals, dev_lists = [], [], []
    grads = []
    for _ in range(2):  # two ranks' batches and gradients
        rows = rng.integers(0, n_rows, (n_b, slots)).astype(np.int64)
        g = np.zeros((n_rows, dim), np.float32)
        g[np.unique(rows)] = rng.standard_normal((len(np.unique(rows)), dim))
        grads.append(g.copy())
        ids, vals, marks = np.empty(cap, np.int64), np.empty((cap, dim), np.float32), np.zeros(n_rows, np.int32)
        table_rows.take_rows(rows, marks, g, ids, vals)
        host_ids.append(ids)
        host_vals.append(vals)
        d_ids, d_vals = cuda.device_array(cap, np.int64), cuda.device_array((cap, dim), np.float32)
        d_g, d_marks, count = cuda.to_device(grads[-1]), cuda.to_device(np.zeros(n_rows, np.int32)), cuda.to_device(
            np.zeros(1, np.int32))
        table_rows.take_rows(cuda.to_device(rows), d_marks, d_g, d_ids, d_vals, count)
        dev_lists.append((d_ids, d_vals))
        gi, gv = d_ids.copy_to_host(), d_vals.copy_to_host()
        order_h, order_d = np.argsort(np.where(ids < 0, n_rows, ids)), np.argsort(np.where(gi < 0, n_rows, gi))
        same = (np.array_equal(ids[order_h], gi[order_d]) and np.array_equal(vals[order_h], gv[order_d])
                and not d_g.copy_to_host().any() and not d_marks.copy_to_host().any() and count.copy_to_host()[0] ==
                (ids >= 0).sum())
        if not same:
            print("table rows: lists MISMATCH")
            return False
    want = np.zeros((n_rows, dim), np.float32)
    for g in grads:
        want += g
    d_sum = cuda.to_device(np.zeros((n_rows, dim), np.float32))
    for d_ids, d_vals in dev_lists:
        table_rows.add_rows(d_ids, d_vals, d_sum)
    added = np.array_equal(d_sum.copy_to_host(), want)
    # the row-wise Adam over both lists, padding included, against the host's full lazy pass
    p0, m0 = (rng.normal(size=n_rows * dim).astype(np.float32) for _ in range(2))
    v0 = np.abs(rng.normal(size=n_rows * dim)).astype(np.float32)
    a = [p0.copy(), want.ravel().copy(), m0.copy(), v0.copy()]
    adam.adam_cpu(*a, 0.01, 0.9, 0.99, 1e-8, 1.0 - 0.9, 1.0 - 0.99, 1)
    all_ids = np.concatenate([d.copy_to_host() for d, _ in dev_lists]).reshape(-1, 1)
    d = [cuda.to_device(x) for x in (p0, want.ravel().copy(), m0, v0)]
    marks = cuda.to_device(np.zeros(n_rows, np.int32))
    adam.adam_rows_step(cuda.to_device(all_ids), marks, dim, *d, 1, 0.01, 0.9, 0.99, 1e-8)
    aerr = max(np.max(np.abs(x - y.copy_to_host())) for x, y in zip(a, d))
    good = bool(added and aerr < 1e-6 and (all_ids < 0).any() and not marks.copy_to_host().any())
    print(f"table rows: lists as the host's, sums exact {added}, row-wise Adam over the padded lists {aerr:.1e}: "
          f"{'ok' if good else 'MISMATCH'}")
    return good


def check_gemm(rng, big: bool) -> bool:
    """The product (tensor cores on a GPU, the pure-numba tile under the simulator) against float64
    on the same bf16 operands; bf16 conversion bit-exact."""
    from cheaplm.kernels import gemm

    m_, n_, k_ = (1088, 2048, 1104) if big else (64, 128, 48)  # a half tile of rows, a half K-step
    a = rng.standard_normal((m_, k_)).astype(np.float32)
    b = rng.standard_normal((n_, k_)).astype(np.float32)
    a16, b16 = gemm.bf16_bits_host(a), gemm.bf16_bits_host(b)
    ref = gemm.bf16_to_float(a16).astype(np.float64) @ gemm.bf16_to_float(b16).astype(np.float64).T
    errs = []
    for splits in (1, 4 if big else 2):  # one K range, and K split with the partials added after
        c = cuda.to_device(np.ones((m_, n_), np.float32))
        gemm.gemm_nt(cuda.to_device(a16), cuda.to_device(b16), c, accumulate=True, splits=splits)
        errs.append(float(np.max(np.abs(c.copy_to_host() - 1.0 - ref)) / np.max(np.abs(ref))))
    d16, d16t = cuda.device_array((m_, k_), np.uint16), cuda.device_array((k_, m_), np.uint16)
    gemm.to_bf16(cuda.to_device(a), d16, d16t)
    conv = np.array_equal(d16.copy_to_host(), a16) and np.array_equal(d16t.copy_to_host(), a16.T)
    good = max(errs) < 1e-5 and conv
    print(f"gemm_nt {m_}x{n_}x{k_}: rel err {errs[0]:.2e}, K split {errs[1]:.2e}, bf16 conversion exact {conv}: "
          f"{'ok' if good else 'MISMATCH'}")
    return bool(good)


def check_reader(rng, big: bool, scan: bool, layers: int = 1) -> bool:
    """The reader's forward/backward on the GPU (bf16 products) against its float32 CPU twin, match
    candidates included, with or without a scan."""
    from cheaplm.reader import Reader

    ok = True
    # small: the products' tiles' 64 (a width of 8 slots x 8, 64 units, a batch of 64): the simulator
    # runs a Python thread per element in most kernels
    reader = ({"on": True, "window": 8, "dim": 64, "ctx_bits": 14, "hidden": [512, 256], "batch": 4096}
              if big else {"on": True, "window": 1, "dim": 8, "ctx_bits": 6, "hidden": [64], "batch": 64,
                           "contexts": [[0, 2], [0, 1], [1, 1], [3, 2]]})
    if scan:  # a 64-unit scan; 16 lanes of consecutive positions on the CPU and the GPU alike
        reader = {**reader, "scan": 64 if not big else 256, "scan_chunk": 4 if not big else 64, "scan_layers": layers}
    cfg = ModelConfig(orders=[0, 1, 2], words=1, sparse=[], skips=[], table_bits=6, match_minlens=[8, 3],
                      match_bits=10, reader=reader)
    mem = Model(cfg, "cpu")
    cpu = mem.reader
    table = cpu.view(cpu.params, 0)  # hashed rows start at 0: give them values (the dense layers keep their init)
    table += rng.standard_normal(table.shape).astype(np.float32) * 0.3
    gpu = Reader(cpu.cfg, "cuda", params=cpu.params.copy())
    n = 200_000 if big else 600
    data = make_text(rng, n)
    prev = np.full((2, n), -1, np.int32)
    match_index(data, 0, n, mem.match.minlens, cfg.match_bits, np.full((2, 1 << cfg.match_bits), -1, np.int32), prev, 0)
    lanes = cpu.cfg.lanes
    chunk = cpu.cfg.batch // lanes
    pos = (rng.integers(0, n - chunk, lanes)[:, None] + np.arange(chunk)).ravel().astype(np.int64)
    st = rng.standard_normal((lanes, cpu.cfg.scan * layers)).astype(np.float32) if scan else None
    cpu.forward(data, pos, mem.match.args(prev, 0), scale=1.0 / len(pos), state=None if st is None else st.copy())
    cpu.backward()
    gm = (cuda.to_device(prev), 0, cuda.to_device(mem.match.minlens), cuda.to_device(mem.match.spec.array()))
    gpu.forward(cuda.to_device(data), cuda.to_device(pos), gm, scale=1.0 / len(pos),
                state=None if st is None else cuda.to_device(st))
    gpu.backward()
    same_rows = np.array_equal(cpu.ws["rows"], gpu.host(gpu.ws["rows"]))
    lerr = float(np.max(np.abs(cpu.ws["loss"] - gpu.host(gpu.ws["loss"]))))
    perr = float(np.max(np.abs(cpu.ws["bitp"] - gpu.host(gpu.ws["bitp"]))))
    gerr = float(np.max(np.abs(cpu.grad - gpu.host(gpu.grad))) / np.max(np.abs(cpu.grad)))
    # bf16 products: losses within 0.02 bits, gradients within 2% of the largest
    good = same_rows and lerr < 0.02 and perr < 0.01 and gerr < 0.02
    print(f"reader{f' with {layers} scan layer(s)' if scan else ''} forward/backward: rows identical {same_rows}, loss diff {lerr:.1e}, bit prob diff {perr:.1e}, "
          f"grad rel err {gerr:.1e}: {'ok' if good else 'MISMATCH'}")
    ok &= good
    return bool(ok)


if __name__ == "__main__":
    if "--tpb" in sys.argv:
        config.THREADS_PER_BLOCK = int(sys.argv[sys.argv.index("--tpb") + 1])
        config.TILE_2D = (config.THREADS_PER_BLOCK, 3)
    sys.exit(0 if check(big="--big" in sys.argv) else 1)
