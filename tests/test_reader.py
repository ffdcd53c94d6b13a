"""The reader (reader.py): tier 1 (CPU twin vs a float64 oracle written from the module docstring),
tier 3 (backward vs finite differences), the product kernel's CPU twin and bf16 rounding, lazy Adam,
the memory-reader mix at generation vs evaluation, and the reader's phase in training (tier 4 is in
test_train.py). Tier 2 (CUDA vs CPU under the simulator) runs in gpu_parity.py."""

import math

import numpy as np
import pytest

from cheaplm.kernels import adam, gemm
from cheaplm.kernels.hashing import context_hash
from cheaplm.kernels.match import match_index
from cheaplm.kernels.match import match_inputs
from cheaplm.model import Model, ModelConfig
from cheaplm.reader import Reader, ReaderConfig, blocks, mix_loss, mixed_distribution

from test_kernels import text

SMALL = {"on": True, "window": 3, "dim": 4, "ctx_bits": 6, "hidden": [12, 8], "batch": 37, "scan": 0,
         "contexts": [[0, 2], [1, 1], [3, 2]]}
MEM = dict(orders=[0, 1, 2], words=1, sparse=[], skips=[], table_bits=8, match_minlens=[6, 3], match_bits=10,
           match_cap=48, match_recency=[50, 400], apm2_bits=4, apm_hash_bits=5)


def small_model(reader=SMALL, seed=0):
    m = Model(ModelConfig.from_dict({**MEM, "reader": reader}), "cpu")
    r = m.reader
    rng = np.random.default_rng(seed)
    r.params[:] += rng.standard_normal(r.n_params).astype(np.float32) * 0.3  # hashed rows start at 0: move them
    return m


def pointers(m, data):
    prev = np.full((len(m.match.minlens), len(data)), -1, np.int32)
    last = np.full((len(m.match.minlens), 1 << m.cfg.match_bits), -1, np.int32)
    match_index(data, 0, len(data), m.match.minlens, m.cfg.match_bits, last, prev, 0)
    return prev


def param_views(m, params=None):
    """float64 views of each parameter block, in blocks() order, by name."""
    r = m.reader
    p = (r.params if params is None else params).astype(np.float64)
    views, at = {}, 0
    for name, shape, _ in blocks(r.cfg):
        views[name] = p[at: at + shape[0] * shape[1]].reshape(shape)
        at += shape[0] * shape[1]
    return views


def oracle_input(m, data, t, prev, table, keep=None):
    """The first layer's input at position t (all slots' rows end to end, each times keep[slot]
    when training drops rows) and the match candidates."""
    cfg = m.reader.cfg
    n_mb = m.match.spec.states
    rows = [i * 256 + (int(data[t - 1 - i]) if t - 1 - i >= 0 else 0) for i in range(cfg.window)]
    for c, (kind, param) in enumerate(cfg.contexts):
        h = context_hash(data, t, kind, param, 100 + c)
        rows.append(cfg.window * 256 + (c << cfg.ctx_bits) + ((h >> 16) & ((1 << cfg.ctx_bits) - 1)))
    cand = np.zeros((cfg.match_inputs, 2), np.int64)
    match_inputs(data, t, prev, t, m.match.minlens, m.match.spec.array(), cand)
    base = cfg.window * 256 + (len(cfg.contexts) << cfg.ctx_bits)
    for k in range(cfg.match_inputs):
        e, st = (cand[k, 0], cand[k, 1]) if cand[k, 0] >= 0 else (0, 0)
        rows.append(base + (k * n_mb + st) * 256 + e)
    rows.append(table.shape[0] - 1)
    keep = np.ones(len(rows)) if keep is None else keep
    return np.concatenate([table[q] * k for q, k in zip(rows, keep)]), cand


def oracle_output(m, x, cand, y, copy):
    """From the logits (copy path added): loss in bits, bit probabilities, loss in nats."""
    for k in range(m.reader.cfg.match_inputs):
        if cand[k, 1] > 0 and cand[k, 0] >= 0:
            x[cand[k, 0]] += copy[k, cand[k, 1]]
    q = np.exp(x - x.max())
    q /= q.sum()
    bp = []
    for j in range(8):
        lo = (y >> (8 - j)) << (8 - j)
        half = 1 << (7 - j)
        bp.append(q[lo + half: lo + 2 * half].sum() / q[lo: lo + 2 * half].sum())
    return -math.log2(q[y]), bp, -math.log(q[y])


def oracle(m, data, pos, prev, params=None, keep=None):
    """float64: (loss in bits, bit probabilities, mean loss in nats) straight from the docstring;
    keep: (positions, slots) factors of the rows (training's dropout), none: all 1."""
    v = param_views(m, params)
    dense = [v[f"w{i + 1}"] for i in range(len(m.reader.cfg.hidden))] + [v["out"]]
    losses, bitps, nats = [], [], 0.0
    for b, t in enumerate(pos):
        x, cand = oracle_input(m, data, t, prev, v["table"], None if keep is None else keep[b])
        for i, w in enumerate(dense):
            x = w @ x
            if i + 1 < len(dense):
                x = np.maximum(x, 0)
        bits, bp, nat = oracle_output(m, x, cand, int(data[t]), v["copy"])
        losses.append(bits)
        bitps.append(bp)
        nats += nat
    return np.array(losses), np.array(bitps), nats / len(pos)


@pytest.mark.parametrize("n_b", [1, 37])
def test_reader_forward_matches_float64_oracle(n_b):
    m = small_model()
    data = text(3000, seed=2)
    data[1500:1600] = data[200:300]  # a long copied stretch: long, far matches occur
    prev = pointers(m, data)
    pos = np.random.default_rng(1).integers(0, len(data), n_b).astype(np.int64)
    pos[0] = 1550  # inside the copy
    ws = m.reader.forward(data, pos, m.match.args(prev, 0))
    want_loss, want_bitp, _ = oracle(m, data, pos, prev)
    assert np.allclose(ws["loss"], want_loss, atol=2e-4)
    assert np.allclose(ws["bitp"], want_bitp, atol=2e-5)
    assert (ws["cand"][:, :, 1] > 0).any()  # the match path was exercised


def test_reader_backward_matches_finite_differences():
    m = small_model(seed=3)
    r = m.reader
    data = text(2000, seed=4)
    data[1200:1300] = data[100:200]
    prev = pointers(m, data)
    pos = np.random.default_rng(5).integers(1, len(data), 24).astype(np.int64)
    pos[:4] = [1250, 1260, 1270, 1280]
    r.forward(data, pos, m.match.args(prev, 0), scale=1.0 / len(pos))
    r.backward()
    grad = r.grad.astype(np.float64)
    base = r.params.astype(np.float64)
    rng = np.random.default_rng(6)
    # parameters with a gradient in every block: touched table rows, dense layers, the copy path
    candidates = [i for i in np.flatnonzero(np.abs(grad) > 1e-4)]
    offs = [0]
    for _, shape, _ in blocks(r.cfg):
        offs.append(offs[-1] + shape[0] * shape[1])
    picked = []
    for lo, hi in zip(offs, offs[1:]):
        inside = [i for i in candidates if lo <= i < hi]
        assert inside, "every block must get a gradient"
        picked += list(rng.choice(inside, min(6, len(inside)), replace=False))
    assert_finite_differences(lambda p: oracle(m, data, pos, prev, p)[2], base, grad, picked)


def test_hashed_row_dropout_forward_backward_and_draw():
    """Training's dropout of hashed rows (ReaderSchedule.ctx_dropout): only hashed-context slots
    are dropped, at about the rate asked, the kept ones scaled by 1 / (1 - p); forward matches the
    float64 oracle fed the same factors, backward its finite differences; a row read only where it
    was dropped gets no gradient; the draw is fixed by (seed, step, position) and changes with the
    step; without dropout forward reads every row at 1."""
    m = small_model(seed=7)
    r, cfg = m.reader, m.reader.cfg
    data = text(2000, seed=8)
    data[1200:1300] = data[100:200]
    prev = pointers(m, data)
    pos = np.random.default_rng(9).integers(1, len(data), 37).astype(np.int64)
    p = 0.4
    r.forward(data, pos, m.match.args(prev, 0), scale=1.0 / len(pos), drop=p)
    keep = r.ws["keep"].copy()
    hashed = slice(cfg.window, cfg.window + len(cfg.contexts))
    others = np.delete(keep, np.arange(cfg.window, cfg.window + len(cfg.contexts)), axis=1)
    assert np.all(others == 1.0)
    assert set(np.unique(keep[:, hashed])) == {0.0, np.float32(1 / (1 - p))}
    assert 0.25 < (keep[:, hashed] == 0).mean() < 0.55  # 111 draws at p = 0.4
    want_loss, _, _ = oracle(m, data, pos, prev, keep=keep.astype(np.float64))
    assert np.allclose(r.ws["loss"], want_loss, atol=2e-4)
    r.backward()
    grad = r.grad.astype(np.float64)
    rows = r.ws["rows"]
    dropped_only = set(rows[:, hashed][keep[:, hashed] == 0]) - set(rows[:, hashed][keep[:, hashed] > 0])
    assert dropped_only
    dim = cfg.dim
    assert all(not grad[q * dim: (q + 1) * dim].any() for q in dropped_only)
    kept_rows = sorted(set(rows[:, hashed][keep[:, hashed] > 0]))
    picked = [q * dim + e for q in kept_rows[:4] for e in (0, dim - 1) if abs(grad[q * dim + e]) > 1e-5]
    picked += list(np.random.default_rng(10).choice(np.flatnonzero(np.abs(grad[r.offsets[1]:]) > 1e-4)
                                                    + r.offsets[1], 8, replace=False))
    assert len(picked) > 8
    assert_finite_differences(lambda q: oracle(m, data, pos, prev, q, keep=keep.astype(np.float64))[2],
                              r.params.astype(np.float64), grad, picked)
    # the same step draws the same rows; the next step others; no dropout reads every row at 1
    r.forward(data, pos, m.match.args(prev, 0), drop=p)
    assert np.array_equal(r.ws["keep"], keep)
    r.step += 1
    r.forward(data, pos, m.match.args(prev, 0), drop=p)
    assert not np.array_equal(r.ws["keep"], keep)
    r.forward(data, pos, m.match.args(prev, 0))
    assert r.ws["keep"].size == 0 and np.allclose(r.ws["loss"], oracle(m, data, pos, prev)[0], atol=2e-4)


@pytest.mark.timeout(300)
def test_dropout_and_decay_kernels_match_cpu_twins_in_simulator():
    """Tier 2 for the two regularisers alone (tiny shapes; the whole simulator run is
    test_kernels.py's): the CUDA kernels' keep draw, gather and scatter, and Adam with weight decay,
    against their CPU twins."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    code = ("import sys, numpy as np, gpu_parity; from cheaplm import config; config.THREADS_PER_BLOCK = 7; "
            "config.TILE_2D = (7, 3); rng = np.random.default_rng(3); "
            "sys.exit(0 if gpu_parity.check_dropout(rng, False) & gpu_parity.check_adam_decay(rng) else 1)")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1",
               PYTHONPATH=os.pathsep.join([str(tests), str(tests.parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    lines = proc.stdout.strip().splitlines()
    ok = proc.returncode == 0 and len(lines) == 2 and all(ln.endswith("ok") for ln in lines)
    assert ok, proc.stdout + proc.stderr


def assert_finite_differences(loss_nats, base, grad, picked, eps=1e-4):
    """Central differences of loss_nats(params) against grad at each picked parameter."""
    for i in picked:
        up, dn = base.copy(), base.copy()
        up[i] += eps
        dn[i] -= eps
        fd = (loss_nats(up) - loss_nats(dn)) / (2 * eps)
        assert abs(fd - grad[i]) <= 2e-3 * max(1.0, abs(fd)) + 1e-4, (i, fd, grad[i])


def test_gemm_cpu_twin_and_bf16_rounding():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 7)).astype(np.float32), rng.standard_normal((3, 7)).astype(np.float32)
    c = np.ones((5, 3), np.float32)
    gemm.gemm_nt(a, b, c, accumulate=True)
    assert np.allclose(c, 1 + a.astype(np.float64) @ b.T.astype(np.float64), atol=1e-5)
    with pytest.raises(ValueError):
        gemm.gemm_nt(a, b.T.copy(), c)
    # round to nearest even on the bit patterns, as the GPU conversion does
    x = np.array([1.0, 1.00390625, 1.005859375, -2.5, 3.0e-39, 65504.0], np.float32)
    back = gemm.bf16_to_float(gemm.bf16_bits_host(x))
    assert back[0] == 1.0 and back[1] == 1.0  # a tie rounds to the even mantissa
    assert back[2] == np.float32(1.0078125) and back[3] == -2.5
    assert np.all(np.abs(back - x) <= np.abs(x) * 2.0**-8 + 1e-40)


def test_lazy_adam_leaves_rows_without_gradient_alone():
    p = np.arange(6, dtype=np.float32)
    g = np.array([0, 1, 0, -2, 0, 0.5], np.float32)
    m, v = np.full(6, 0.1, np.float32), np.full(6, 0.2, np.float32)
    adam.adam_step(p, g, m, v, 3, 0.01, lazy=True)
    assert p[0] == 0 and p[2] == 2 and p[4] == 4 and m[0] == np.float32(0.1) and v[2] == np.float32(0.2)
    assert p[1] != 1 and p[3] != 3 and np.all(g == 0)
    p2, g2 = np.arange(6, dtype=np.float32), np.array([0, 1, 0, -2, 0, 0.5], np.float32)
    adam.adam_step(p2, g2, np.full(6, 0.1, np.float32), np.full(6, 0.2, np.float32), 3, 0.01, lazy=False)
    assert p2[0] != 0  # the dense form moves on old momentum


def test_weight_decay_shrinks_the_dense_weights_only():
    """weight_decay > 0 shrinks the dense blocks by lr x wd x w beyond Adam's step, and leaves the
    table, the copy path and the scan's gate biases as plain Adam moves them; at 0 it is plain Adam."""
    from cheaplm.reader import decayed

    cfg = {**SMALL, "scan": 4, "scan_chunk": 1}
    data = text(500, seed=11)
    pos = np.arange(100, 137, dtype=np.int64)
    runs = {}
    for wd in (0.0, 0.5):
        m = small_model(cfg, seed=12)
        prev = pointers(m, data)
        r = m.reader
        r.train_step(data, pos, 0.01, m.match.args(prev, 0), r.new_state(r.cfg.lanes), weight_decay=wd)
        runs[wd] = (m, r.params.copy())
    base = small_model(cfg, seed=12).reader.params
    names = [name for name, _, _ in runs[0.0][0].reader.blocks]
    assert [n for n in names if decayed(n)] == ["w1", "w2", "out", "scan_in", "scan_out"]
    r0 = runs[0.0][0].reader
    for k, name in enumerate(names):
        p0, p1, b = (r0.view(x, k).astype(np.float64) for x in (runs[0.0][1], runs[0.5][1], base))
        if decayed(name):
            assert np.allclose(p1, p0 - 0.01 * 0.5 * b, atol=1e-6) and not np.allclose(p1, p0)
        else:
            assert np.array_equal(p1, p0)


def test_generation_mix_equals_evaluation_mix():
    """P(y) from the byte tree mixed node by node (generation) = 2^-(mix_loss of y's bits) (evaluation)."""
    rng = np.random.default_rng(0)
    node_pm = rng.uniform(0.001, 0.999, 256)
    pr = rng.dirichlet(np.ones(256) * 0.3)
    w = rng.normal(0.5, 0.3, (128, 3)).astype(np.float32)
    out, mass = np.zeros(256), np.zeros(512)
    mixed_distribution(node_pm, pr, w, mass, out)
    assert abs(out.sum() - 1) < 1e-9
    for y in (0, 65, 200, 255):
        pm = np.array([[node_pm[(256 | y) >> (8 - j)] for j in range(8)]], np.float32)
        sums = np.zeros(512)
        sums[256:] = pr
        for c in range(255, 0, -1):
            sums[c] = sums[2 * c] + sums[2 * c + 1]
        prb = np.array([[sums[2 * ((256 | y) >> (8 - j)) + 1] / sums[(256 | y) >> (8 - j)] for j in range(8)]],
                       np.float32)
        bits = mix_loss(pm, prb, np.array([y], np.uint8), w, np.zeros((0, 3), np.float32))[0]
        assert abs(-math.log2(out[y]) - bits) < 1e-4


def test_reader_config_checks_and_gpu_shapes():
    with pytest.raises(ValueError, match="unknown reader"):
        ReaderConfig.from_dict({"hiden": [64]})
    with pytest.raises(ValueError, match="unknown reader option.*hiden"):  # --reader '{"hiden": ...}'
        ModelConfig.from_dict({**MEM, "reader": {"on": True, "hiden": [64]}}).reader_config("cpu")
    from cheaplm.schedule import ReaderSchedule

    with pytest.raises(ValueError, match="max_epochs"):  # the schedule is the training run's (schedule.py)
        ReaderSchedule(max_epochs=0).validate(scan=False)
    with pytest.raises(ValueError, match="order stream"):
        ReaderSchedule(order="random").validate(scan=True)
    with pytest.raises(ValueError, match="mix_fit_steps"):
        ReaderSchedule(mix_fit_steps=0).validate(scan=False)
    with pytest.raises(ValueError, match="ctx_dropout"):
        ReaderSchedule(ctx_dropout=1.0).validate(scan=False)
    with pytest.raises(ValueError, match="ctx_dropout_from"):
        ReaderSchedule(ctx_dropout_from=-1.0).validate(scan=False)
    with pytest.raises(ValueError, match="weight_decay"):
        ReaderSchedule(weight_decay=-1.0).validate(scan=False)
    gpu = ReaderConfig.for_device("cuda", match_inputs=6, match_states=37)
    assert gpu.gpu_shapes_ok() and gpu.width == (8 + 8 + 6 + 1) * 64
    with pytest.raises(ValueError, match="multiples of 64"):
        Reader(ReaderConfig.for_device("cpu"), "cuda")
    cfg = ModelConfig.from_dict({**MEM, "reader": {"on": False}})
    assert cfg.reader_config("cpu") is None and Model(cfg, "cpu").reader is None


def test_gpu_width_grows_with_the_budget_in_tensor_core_shapes():
    """A longer GPU budget never gets a narrower reader, every default width fits the product tile
    (multiples of 64), and the memory's phases keep the GPU's tensor cores idle for at most 10% of
    a budget (the CPU, whose counting is slow, keeps 30%)."""
    from cheaplm.reader import ReaderConfig
    from cheaplm.schedule import ReaderSchedule

    widths = [ReaderConfig.for_device("cuda", m).hidden for m in (0.5, 1, 1.5, 2, 3, 4, 5, 8, 10, 30)]
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(widths, widths[1:]))
    assert all(h % 64 == 0 for w in widths for h in w) and widths[-1] != widths[0]
    assert ReaderConfig.for_device("cuda", 5).gpu_shapes_ok()
    assert ReaderSchedule.for_device("cuda", 5).memory_share <= 0.1
    assert ReaderSchedule.for_device("cpu", 5).memory_share == 0.3
