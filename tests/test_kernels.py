"""Kernel tiers 1-3: CPU twins vs float64 NumPy oracles, CUDA vs CPU (simulator), backward vs finite differences."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cheaplm.evaluate import stream_bpb
from cheaplm.kernels import adam, mixer
from cheaplm.kernels.counts import count_add_cpu
from cheaplm.kernels.hashing import ORDER, SKIP, SPARSE, WORD, context_hash, match_hash, mix64, slot_of
from cheaplm.kernels.match import _index_segments, match_index, match_lookup
from cheaplm.memory import context_array
from cheaplm.model import Model, ModelConfig

REPO = Path(__file__).resolve().parent.parent
TINY = ModelConfig(orders=[0, 1, 2, 4], words=2, sparse=[0b10], table_bits=7, match_minlens=[6, 3],
                   match_bits=10, apm2_bits=5, apm_hash_bits=6, selectors=["seen", "partial", "byte1", "byte2", "votes"],
                   match_cap=48, match_recency=[50, 400])
# one mixer, two APMs, match state by length only: the model before the final mixer existed (no V block)
TINY_ONE = ModelConfig(**{**TINY.__dict__, "selectors": ["seen"], "apms": ["partial", "byte1"],
                          "match_cap": 32, "match_recency": [], "match_each": False})


def text(n, seed=0):
    rng = np.random.default_rng(seed)
    words = [b"The", b"river", b"flows", b"into", b"the", b"sea", b"caf\xc3\xa9", b"1821", b"of", b"and"]
    out = bytearray()
    while len(out) < n:
        out += words[rng.integers(len(words))] + (b".\n" if rng.random() < 0.1 else b" ")
    return np.frombuffer(bytes(out[:n]), np.uint8).copy()


# ---- hashing: properties the model relies on --------------------------------------------------------

def test_order_hash_depends_on_exactly_the_last_k_bytes():
    d = text(200)
    t = 100
    for k in (1, 2, 4, 8):
        h = context_hash(d, t, ORDER, k, 3)
        e = d.copy()
        e[t - k - 1] ^= 1  # outside the window
        assert context_hash(e, t, ORDER, k, 3) == h
        e = d.copy()
        e[t - k] ^= 1  # inside
        assert context_hash(e, t, ORDER, k, 3) != h
    assert context_hash(d, t, ORDER, 2, 3) != context_hash(d, t, ORDER, 2, 4)  # contexts are separated


def test_word_hash_folds_case_and_sparse_skips_bytes():
    a = np.frombuffer(b"in the River", np.uint8).copy()
    b = np.frombuffer(b"in the rIVER", np.uint8).copy()
    assert context_hash(a, len(a), WORD, 2, 0) == context_hash(b, len(b), WORD, 2, 0)
    c = np.frombuffer(b"in the Rivers", np.uint8).copy()
    assert context_hash(c, len(c), WORD, 1, 0) != context_hash(a, len(a), WORD, 1, 0)
    d = text(50)
    e = d.copy()
    e[48] ^= 1  # t-1 is not in mask 0b10 (only t-2 is)
    assert context_hash(d, 49, SPARSE, 0b10, 0) == context_hash(e, 49, SPARSE, 0b10, 0)
    e[47] ^= 1
    assert context_hash(d, 49, SPARSE, 0b10, 0) != context_hash(e, 49, SPARSE, 0b10, 0)


def test_skip_hash_sees_the_partial_word_and_the_word_n_back_only():
    def h(s, n=2):
        a = np.frombuffer(s, np.uint8).copy()
        return context_hash(a, len(a), SKIP, n, 5)

    assert h(b"of The big riv") == h(b"in the small riv")  # word 1 back left out, case folded
    assert h(b"of the big riv") != h(b"of a big riv")  # word 2 back differs
    assert h(b"of the big riv") != h(b"of the big rive")  # partial word differs
    assert h(b"x the big riv", 3) != h(b"y the big riv", 3)
    assert h(b"x the big riv", 3) == h(b"x a small riv", 3)
    assert h(b"the big riv") != context_hash(np.frombuffer(b"the big riv", np.uint8).copy(), 11, WORD, 3, 5)


# ---- tier 1: CPU twins vs oracles --------------------------------------------------------------------

@pytest.mark.parametrize("n,start", [(1, 0), (2, 1), (257, 0), (1000, 333)])
def test_count_add_matches_python_oracle(n, start):
    d = text(n, seed=n)
    ctx = context_array(TINY)
    got = np.zeros((TINY.table_rows(), 32), np.uint32)
    count_add_cpu(d, start, n, ctx, got, np.uint32(1))
    want = np.zeros(got.shape, np.int64)
    for t in range(start, n):
        y = int(d[t])
        for i in range(len(ctx)):
            h = context_hash(d, t, ctx[i, 0], ctx[i, 1], i)
            for nib, val in ((0, y >> 4), ((y >> 4) + 1, y & 15)):
                row = slot_of(h, nib, ctx[i, 2], ctx[i, 3])
                node = 1
                for j in range(4):
                    bit = (val >> (3 - j)) & 1
                    want[row, 2 * node + bit] += 1
                    node = 2 * node + bit
    assert np.array_equal(got, want)
    assert got.sum() == (n - start) * len(ctx) * 8


def test_match_index_and_lookup_vs_brute_force():
    d = text(3000, seed=5)
    ml = np.array([6, 3], np.int64)
    last = np.full((2, 1 << 12), -1, np.int32)
    prev = np.empty((2, len(d)), np.int32)
    match_index(d, 0, 1700, ml, 12, last, prev, 0)
    match_index(d, 1700, len(d), ml, 12, last, prev, 0)  # resuming the walk changes nothing
    direct = np.full((2, 1 << 12), -1, np.int32)
    for t in range(len(d)):
        for k, m in enumerate(ml):
            if t < m:
                assert prev[k, t] == -1
                continue
            h = match_hash(d, t, m, 12)
            assert prev[k, t] == direct[k, h]
            assert prev[k, t] < t
            direct[k, h] = t
    hits = 0
    for cap in (32, 48):
        for t in range(10, len(d)):
            e, n, dist = match_lookup(d, t, prev, t, ml, cap)
            want = (-1, 0, 0)
            for k, m in enumerate(ml):
                p = prev[k, t]
                if p < 0:
                    continue
                n_want = 0
                while n_want < cap and p - 1 - n_want >= 0 and d[t - 1 - n_want] == d[p - 1 - n_want]:
                    n_want += 1
                if n_want >= m:
                    want = (int(d[p]), n_want, t - p)
                    break
            assert (e, n, dist) == want
            hits += want[0] >= 0
    assert hits > 100


@pytest.mark.parametrize("n_seg", [2, 3, 7])
@pytest.mark.parametrize("bits", [6, 12])
def test_segmented_match_index_equals_the_sequential_walk(n_seg, bits):
    d = text(5000, seed=n_seg)
    ml = np.array([6, 3], np.int64)
    want_last = np.full((2, 1 << bits), -1, np.int32)
    want = np.full((2, len(d)), -9, np.int32)
    match_index(d, 0, 1234, ml, bits, want_last, want, 0)
    got_last = want_last.copy()
    got = want.copy()
    match_index(d, 1234, len(d), ml, bits, want_last, want, 0)
    # continues the same walk, in two calls sharing one workspace (its stale entries must count as empty)
    work = np.full((2, n_seg, 1 << bits), -1, np.int32)
    _index_segments(d, 1234, 3000, ml, bits, got_last, got, 0, n_seg, work)
    _index_segments(d, 3000, len(d), ml, bits, got_last, got, 0, n_seg, work)
    assert np.array_equal(got, want) and np.array_equal(got_last, want_last)
    assert (want[:, 1234:] >= 0).mean() > 0.5  # the pointers were exercised, not all -1


def test_count_bucket_definition():
    for n in range(0, 5000):
        q = mixer.count_bucket(n)
        if n < 4:
            assert q == n
        else:
            k = int(math.floor(math.log2(n)))
            assert q == min(15, 2 * k + (1 if n >= 1.5 * 2**k else 0))


def oracle_losses(model, d, pos, prev, loo):
    """float64, written from the docstring of kernels/mixer.py, not from its code (the hashes that
    pick byte2 rows are definitions and are called)."""
    ctx, p = model.memory.ctx, model.memory.params.astype(np.float64)
    cfg, lay = model.cfg, model.memory.lay
    n_mi = len(cfg.match_minlens) if cfg.match_each else 1
    n_ctx, n_in = len(ctx), 2 * len(ctx) + n_mi + 1
    knots = mixer.APM_LO + mixer.APM_STEP * np.arange(mixer.APM_KNOTS)
    # block offsets by adding up sizes in the documented order
    def length_bucket(n):
        return 1 if n < 8 else 2 if n < 12 else 3 if n < 16 else 4 if n < 20 else 5 if n < 24 else \
            6 if n < 32 else 7 + (n - 32) // 16

    def candidates(t):
        """[(predicted byte, match state)] per minimum length, (-1, 0) where it does not verify."""
        out = []
        for k, m in enumerate(cfg.match_minlens):
            q = int(prev[k, t])
            n = 0
            while q >= 0 and n < cfg.match_cap and q - 1 - n >= 0 and d[t - 1 - n] == d[q - 1 - n]:
                n += 1
            if q < 0 or n < m:
                out.append((-1, 0))
            else:
                r = sum(t - q >= x for x in cfg.match_recency)
                out.append((int(d[q]), length_bucket(n) + length_bucket(cfg.match_cap) * r))
        if cfg.match_each:
            return out
        return [next((x for x in out if x[0] >= 0), (-1, 0))]  # the longest that verifies

    n_mb = 1 + length_bucket(cfg.match_cap) * (len(cfg.match_recency) + 1)
    at, w_at = 0, []
    for name in cfg.selectors:
        w_at.append(at)
        at += {"seen": 8 * n_mb * (n_ctx + 1), "partial": 256, "byte1": 2048, "byte2": 4096, "votes": 512}[name] * n_in
    v_at = at
    at += 256 * len(cfg.selectors) if len(cfg.selectors) > 1 else 0
    sm_at, ml_at = at, at + n_ctx * 256
    at = ml_at + n_mi * n_mb * 8
    a_at, a_rows = [], []
    for name in cfg.apms:
        rows = {"partial": 256, "byte1": 1 << cfg.apm2_bits, "byte2": 1 << cfg.apm_hash_bits,
                "match": n_mb * 2 * 256}[name]
        a_at.append(at)
        a_rows.append(rows)
        at += rows * 33
    assert at == model.memory.n_params
    out = []
    for t in pos:
        y = int(d[t])
        cands = candidates(t)
        hs = [context_hash(d, t, ctx[i, 0], ctx[i, 1], i) for i in range(n_ctx)]
        b1 = int(d[t - 1]) if t > 0 else 0
        b2 = int(d[t - 2]) if t > 1 else 0
        total = 0.0
        c = 1
        for j in range(8):
            bit = (y >> (7 - j)) & 1
            hi = c >> (j - 4) & 15 if j >= 4 else 0
            node = c if j < 4 else (1 << (j - 4)) | (c & ((1 << (j - 4)) - 1))
            x = np.zeros(n_in)
            nz = 0
            for i in range(n_ctx):
                row = slot_of(hs[i], hi + 1 if j >= 4 else 0, ctx[i, 2], ctx[i, 3])
                n0, n1 = int(model.memory.tables[row, 2 * node]), int(model.memory.tables[row, 2 * node + 1])
                if loo:
                    n0, n1 = (n0, max(n1 - 1, 0)) if bit else (max(n0 - 1, 0), n1)
                x[2 * i] = np.clip(np.log((n1 + 0.4) / (n0 + 0.4)), -8, 8)
                x[2 * i + 1] = p[sm_at + i * 256 + mixer.count_bucket(n0) * 16 + mixer.count_bucket(n1)]
                nz += (n0 + n1) > 0
            mstate, ebit, expect = 0, 0, [0, 0]
            for k, (e, s) in enumerate(cands):
                if s > 0 and (e >> (8 - j)) == c - (1 << j):
                    eb = (e >> (7 - j)) & 1
                    expect[eb] += 1
                    if mstate == 0:
                        mstate, ebit = s, eb
                    x[2 * n_ctx + k] = p[ml_at + (k * n_mb + s) * 8 + j] * (1 if eb else -1)
            x[-1] = 1.0
            h2 = (int(mix64(np.int64(b2 * 256 + b1 + 0x10000))) >> 24) & 511
            sets = {"seen": (j * n_mb + mstate) * (n_ctx + 1) + nz, "partial": c, "byte1": b1 * 8 + j,
                    "byte2": h2 * 8 + j, "votes": (j * 8 + min(expect[1], 7)) * 8 + min(expect[0], 7)}
            zk = [float(p[w_at[k] + sets[name] * n_in:w_at[k] + (sets[name] + 1) * n_in] @ x)
                  for k, name in enumerate(cfg.selectors)]
            z = zk[0] if len(zk) == 1 else float(p[v_at + c * len(zk):v_at + (c + 1) * len(zk)] @ zk)
            zf = z
            for r, name in enumerate(cfg.apms):
                row = {"partial": c, "byte1": (b1 * 256 + c) & (a_rows[r] - 1),
                       "byte2": (int(mix64(np.int64((b2 * 256 + b1) * 256 + c + 0x3000000))) >> 24) & (a_rows[r] - 1),
                       "match": (mstate * 2 + ebit) * 256 + c}[name]
                zf += np.interp(z, knots, p[a_at[r] + row * 33:a_at[r] + (row + 1) * 33])
            pr = 1 / (1 + np.exp(-zf))
            total += -np.log2(pr if bit else 1 - pr)
            c = 2 * c + bit
        out.append(total)
    return np.array(out)


def tiny_model(seed=0, n=2000, cfg=TINY):
    d = text(n, seed)
    if n >= 1600:
        d[1500:1600] = d[200:300]  # long matches (beyond the cap), far back
    model = Model(cfg)
    model.count(d, 0, n // 2)
    rng = np.random.default_rng(seed)
    model.memory.params += rng.normal(0, 0.3, model.memory.n_params).astype(np.float32)
    prev = np.empty((2, n), np.int32)
    match_index(d, 0, n, model.match.minlens, cfg.match_bits, model.match.last_pos, prev, 0)
    return model, d, prev


@pytest.mark.parametrize("loo", [False, True])
@pytest.mark.parametrize("n_b", [1, 37])
@pytest.mark.parametrize("cfg", [TINY, TINY_ONE], ids=["five-mixers", "one-mixer"])
def test_mixer_forward_matches_float64_oracle(loo, n_b, cfg):
    model, d, prev = tiny_model(seed=n_b, cfg=cfg)
    pos = np.random.default_rng(1).integers(0, len(d), n_b).astype(np.int64)
    caches = model.caches(n_b)
    model.memory.forward(d, pos, model.match.args(prev, 0), caches, loo=loo)
    want = oracle_losses(model, d, pos, prev, loo)
    np.testing.assert_allclose(caches.loss, want, rtol=2e-4, atol=2e-4)
    assert np.all(np.isfinite(caches.loss)) and np.all((caches.prob > 0) & (caches.prob < 1))


def test_adaptive_eval_counts_the_stream_then_takes_it_back_exactly():
    d = text(3000, seed=4)
    model = Model(TINY)
    model.count(d, 0, 1000)
    match_index(d, 0, 1000, model.match.minlens, TINY.match_bits, model.match.last_pos, np.empty((2, 1000), np.int32), 0)
    before = model.memory.tables.copy()
    static = stream_bpb(model, d[:1000], d[1000:], batch=128)
    adaptive = stream_bpb(model, d[:1000], d[1000:], batch=128, adaptive=True)
    assert np.array_equal(model.memory.tables, before)
    assert adaptive["bpb"] < static["bpb"] - 0.01  # the stream's own counts help on repetitive text
    assert stream_bpb(model, d[:1000], d[1000:], batch=128)["bpb"] == static["bpb"]
    # a split shorter than one default batch (65,536 bytes) is still scored in pieces, so its own
    # counts help it (before, it was one batch, scored before anything was counted)
    short_static = stream_bpb(model, d[:1000], d[1000:])
    short_adaptive = stream_bpb(model, d[:1000], d[1000:], adaptive=True)
    assert short_adaptive["bpb"] < short_static["bpb"] - 0.01
    assert np.array_equal(model.memory.tables, before)


def test_adam_matches_numpy():
    rng = np.random.default_rng(3)
    p, g, m, v = (rng.normal(size=101).astype(np.float32) for _ in range(4))
    v = np.abs(v)
    want_m = 0.9 * m + 0.1 * g
    want_v = 0.99 * v + 0.01 * g * g
    want_p = p - 0.01 * (want_m / (1 - 0.9**3)) / (np.sqrt(want_v / (1 - 0.99**3)) + 1e-8)
    adam.adam_step(p, g, m, v, step=3, lr=0.01)
    np.testing.assert_allclose(p, want_p, rtol=1e-5, atol=1e-6)
    assert not g.any()  # gradient zeroed for the next step


# ---- tier 3: backward vs central finite differences (float64) ---------------------------------------

@pytest.mark.parametrize("cfg", [TINY, TINY_ONE], ids=["five-mixers", "one-mixer"])
def test_backward_matches_finite_differences(cfg):
    model, d, prev = tiny_model(seed=9, cfg=cfg)
    model.memory.params = model.memory.params.astype(np.float64)
    pos = np.random.default_rng(2).integers(1, len(d), 19).astype(np.int64)
    caches = model.caches(len(pos), dtype=np.float64)

    def total_nats():
        model.memory.forward(d, pos, model.match.args(prev, 0), caches, loo=False)
        return float(caches.loss.sum()) * math.log(2.0)

    total_nats()
    grad = np.zeros(model.memory.n_params, np.float64)
    mixer.backward(d, pos, model.memory.params, model.memory.lay, caches, 1.0, grad,
                   np.zeros((3, model.memory.n_params), np.float64))
    touched = np.flatnonzero(grad)
    assert len(touched) > 50
    rng = np.random.default_rng(0)
    check = np.concatenate([rng.choice(touched, 60, replace=False), rng.integers(0, model.memory.n_params, 20)])
    eps = 1e-6
    for i in check:
        old = model.memory.params[i]
        model.memory.params[i] = old + eps
        up = total_nats()
        model.memory.params[i] = old - eps
        down = total_nats()
        model.memory.params[i] = old
        fd = (up - down) / (2 * eps)
        assert abs(fd - grad[i]) <= 1e-5 + 1e-4 * abs(fd), (i, fd, grad[i])


# ---- tier 2: CUDA kernels vs CPU twins under the simulator ------------------------------------------

@pytest.mark.timeout(900)  # the simulator runs every kernel thread as Python: minutes on 2 cores
def test_cuda_kernels_match_cpu_twins_in_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "gpu_parity.py"), "--tpb", "7"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 14 and all(ln.endswith("ok") or ": ok (" in ln for ln in lines), proc.stdout
