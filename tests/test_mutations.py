"""The safety net of issue 21 item 1: for each hand mutation listed in tests/MUTATIONS.md, a test
here (or the one named there) fails. Written against the entry points that a refactor of the core
keeps: the kernels' CPU functions, reader.Reader, reader.mix_loss / mixed_distribution,
train.train and its summary, sample.Generator / filter_probs, checkpoint.load_model / load_state.

Each test says what it would catch. The model-level ones share one small training run (`trained`):
a deliberately weak memory (orders 0-1, one word context, one match length) beside a small reader
with a scan, on the embedded sample, so that the reader's share of the result is large and the
comparisons below have margins that do not rest on noise.
"""

import numpy as np
import pytest

from cheaplm.docwords import doc_inputs
from cheaplm.kernels import match as kmatch
from cheaplm.kernels.counts import BLOCK, count_add_cpu
from cheaplm.kernels.hashing import context_hash, slot_of
from cheaplm.kernels.match import match_index
from cheaplm.kernels.scan import scan_backward_cpu, scan_forward_cpu
from cheaplm.memory import context_array
from cheaplm.model import Model, ModelConfig
from cheaplm.prepare import PrepareOptions, prepare
from cheaplm.reader import MixFit, Reader, init_mix, init_params, mix_loss, mixed_distribution, reader_bpb
from cheaplm.sample import Generator, Sampling, filter_probs, utf8_allowed
from cheaplm.shards import write_raw_split_dir
from cheaplm.train import TrainConfig, train

from conftest import SAMPLE_DUMP
from test_kernels import text
from test_reader import SMALL, oracle, pointers, small_model
from test_scan import SCAN, lanes_of, scan_model, scan_oracle


def quiet(*a):
    pass


# ---- 1. the count kernel over several blocks -----------------------------------------------------

def independent_counts(d, start, end, ctx, shape):
    """The count tables of d[start:end] from the definition (model.py / counts.py docstrings): per
    position and context, the 4 nodes of the high nibble in its row and the 4 of the low nibble in
    the row of (hash, high nibble + 1); int64 scatter-adds by NumPy, no blocks, no rolling hash."""
    want = np.zeros(shape, np.int64)
    t = np.arange(start, end)
    y = d[start:end].astype(np.int64)
    for i in range(len(ctx)):
        hs = [context_hash(d, int(p), ctx[i, 0], ctx[i, 1], i) for p in t]
        row_hi = np.array([slot_of(h, 0, ctx[i, 2], ctx[i, 3]) for h in hs])
        row_lo = np.array([slot_of(h, int(hi) + 1, ctx[i, 2], ctx[i, 3]) for h, hi in zip(hs, y >> 4)])
        for rows, val in ((row_hi, y >> 4), (row_lo, y & 15)):
            node = np.ones_like(val)
            for j in range(4):
                bit = (val >> (3 - j)) & 1
                np.add.at(want, (rows, 2 * node + bit), 1)
                node = 2 * node + bit
    return want


def test_count_add_over_several_blocks_equals_an_independent_count():
    """Kills: the count kernel dropping (or doubling) a position per BLOCK. 3 blocks and a part, from
    a start that is not a multiple of BLOCK, with orders >= 4 (the kernel's rolled hash) and a call
    split at an odd place (each call restarts the roll)."""
    cfg = ModelConfig(orders=[0, 1, 3, 4, 6], words=1, sparse=[0b101], skips=[2], table_bits=9)
    ctx = context_array(cfg)
    n, start, split = 3 * BLOCK + 517, 1001, 2 * BLOCK + 77
    d = text(n, seed=11)
    got = np.zeros((cfg.table_rows(), 32), np.uint32)
    count_add_cpu(d, start, split, ctx, got, np.uint32(1))
    count_add_cpu(d, split, n, ctx, got, np.uint32(1))
    want = independent_counts(d, start, n, ctx, got.shape)
    assert int(got.sum()) == (n - start) * len(ctx) * 8
    assert np.array_equal(got.astype(np.int64), want)


# ---- 4. the scan kernel over consecutive batches, against float64 ----------------------------------

def scan_numpy(proj, bias, state, T):
    """float64 from the scan.py docstring: (gate, s, state after), lane-major rows."""
    lanes, n_d = state.shape
    s = state.astype(np.float64).copy()
    gate, out = np.zeros((lanes * T, n_d)), np.zeros((lanes * T, n_d))
    for lane in range(lanes):
        for t in range(T):
            r = lane * T + t
            a = 1 / (1 + np.exp(-(proj[r, :n_d] + bias[0])))
            s[lane] = a * s[lane] + (1 - a) * proj[r, n_d:]
            gate[r], out[r] = a, s[lane]
    return gate, out, s


def test_scan_kernel_over_consecutive_batches_matches_float64_and_its_backward_finite_differences():
    """Kills: the gate applied one step late; the state not carried from batch to batch (the kernel
    reads state_in, writes state_out); a wrong backward. Awkward shapes: 3 lanes, T 5, 7 units."""
    rng = np.random.default_rng(0)
    lanes, T, n_d, batches = 3, 5, 7, 4
    bias = rng.standard_normal((1, n_d)).astype(np.float32)
    state = rng.standard_normal((lanes, n_d)).astype(np.float32)
    want_state = state.astype(np.float64)
    for _ in range(batches):
        proj = (rng.standard_normal((lanes * T, 2 * n_d)) * 2).astype(np.float32)
        gate, s = np.zeros((lanes * T, n_d), np.float32), np.zeros((lanes * T, n_d), np.float32)
        out = np.zeros_like(state)
        scan_forward_cpu(proj, bias, state, out, gate, s, T)
        want_gate, want_s, want_state = scan_numpy(proj.astype(np.float64), bias.astype(np.float64), want_state, T)
        assert np.allclose(gate, want_gate, atol=1e-6) and np.allclose(s, want_s, atol=1e-5)
        assert np.allclose(out, want_state, atol=1e-5)
        state_in, state = state, out  # carried to the next batch
    # backward of L = sum(ds * s) against central differences of the float64 forward
    ds = rng.standard_normal((lanes * T, n_d)).astype(np.float32)
    dproj = np.zeros_like(proj)
    dbias = np.zeros_like(bias)
    scan_backward_cpu(proj, gate, s, state_in, ds, dproj, dbias, T)
    p64, b64, st64 = proj.astype(np.float64), bias.astype(np.float64), state_in.astype(np.float64)

    def loss(p, b):
        return float((scan_numpy(p, b, st64, T)[1] * ds).sum())

    eps = 1e-6
    for r in range(lanes * T):
        for c in range(2 * n_d):
            up, dn = p64.copy(), p64.copy()
            up[r, c] += eps
            dn[r, c] -= eps
            assert abs((loss(up, b64) - loss(dn, b64)) / (2 * eps) - dproj[r, c]) < 1e-4, (r, c)
    for c in range(n_d):
        up, dn = b64.copy(), b64.copy()
        up[0, c] += eps
        dn[0, c] -= eps
        assert abs((loss(p64, up) - loss(p64, dn)) / (2 * eps) - dbias[0, c]) < 1e-4, c


# ---- 5. finite differences that look at every block, whatever the analytic gradient says ---------------

def picked_coordinates(r, ws, rng):
    """Flat parameter indices chosen without looking at the gradient: in the table, both ends of a
    row that each slot (byte slot, hashed context, match candidate, constant) actually read; in the
    copy block, the (candidate, state) pairs in play; elsewhere, random entries of the block."""
    picks = {}
    rows = np.asarray(ws["rows"])
    dim = r.cfg.dim
    for s in range(rows.shape[1]):
        row = int(rows[rng.integers(rows.shape[0]), s])
        picks[f"table slot {s}"] = [row * dim, row * dim + dim - 1]
    for k, (name, shape, _) in enumerate(r.blocks):
        lo = r.offsets[k]
        if name == "table":
            continue
        if name == "copy":
            cand = np.asarray(ws["cand"])
            used = {(kk, int(cand[b, kk, 1])) for b in range(cand.shape[0]) for kk in range(cand.shape[1])
                    if cand[b, kk, 1] > 0 and cand[b, kk, 0] >= 0}
            picks[name] = [lo + kk * shape[1] + st for kk, st in sorted(used)][:4]
        else:
            picks[name] = list(lo + rng.choice(shape[0] * shape[1], 4, replace=False))
    return picks


def assert_every_block_checked(loss_nats, base, grad, picks, eps=1e-4):
    for name, idx in picks.items():
        assert idx, f"{name}: nothing to check"
        fds = []
        for i in idx:
            up, dn = base.copy(), base.copy()
            up[i] += eps
            dn[i] -= eps
            fd = (loss_nats(up) - loss_nats(dn)) / (2 * eps)
            assert abs(fd - grad[i]) <= 2e-3 * max(1.0, abs(fd)) + 1e-4, (name, i, fd, grad[i])
            fds.append(abs(fd))
        # the check could have seen a dropped gradient: the loss does depend on these parameters
        assert max(fds) > 1e-3, (name, fds)


def test_reader_gradient_of_every_block_and_every_slot_against_finite_differences():
    """Kills: a block (or one byte slot's, context's or match candidate's table rows) getting no
    gradient. The existing checks pick parameters whose analytic gradient is already non-zero, so a
    zeroed part was never looked at."""
    m = small_model(SMALL, seed=3)
    r = m.reader
    data = text(2000, seed=4)
    data[1200:1300] = data[100:200]
    prev = pointers(m, data)
    pos = np.random.default_rng(5).integers(1, len(data), 24).astype(np.int64)
    pos[:4] = [1250, 1260, 1270, 1280]
    ws = r.forward(data, pos, m.match.args(prev, 0), scale=1.0 / len(pos))
    picks = picked_coordinates(r, ws, np.random.default_rng(1))
    r.backward()
    assert_every_block_checked(lambda p: oracle(m, data, pos, prev, p)[2], r.params.astype(np.float64),
                               r.grad.astype(np.float64), picks)


def test_reader_with_a_scan_gradient_of_every_block_against_finite_differences():
    """As above with the scan's blocks (scan_in, scan_bias, scan_out) and a state carried in."""
    m = scan_model(seed=4)
    r = m.reader
    data = text(2000, seed=4)
    data[1200:1300] = data[100:200]
    prev = pointers(m, data)
    pos = lanes_of(data, 3, 5, seed=5)
    pos[:5] = np.arange(1250, 1255)
    state0 = np.random.default_rng(6).standard_normal((3, SCAN["scan"])).astype(np.float32)
    ws = r.forward(data, pos, m.match.args(prev, 0), scale=1.0 / len(pos), state=state0.copy())
    picks = picked_coordinates(r, ws, np.random.default_rng(2))
    assert {"scan_in", "scan_bias", "scan_out"} <= set(picks)
    r.backward()
    assert_every_block_checked(lambda p: scan_oracle(m, data, pos, prev, state0, p)[2],
                               r.params.astype(np.float64), r.grad.astype(np.float64), picks)


# ---- 6. the match model's candidates, against an index-free brute force --------------------------------

@pytest.mark.parametrize("each", [True, False], ids=["one-per-length", "longest-only"])
def test_match_inputs_predict_the_byte_after_the_latest_earlier_occurrence(each):
    """Kills: the match model predicting from one position late (the byte after the match, the
    pointer of the position before, ...). Whenever a candidate is given, its byte must be the one
    that followed the most recent earlier occurrence of the context, found here by comparing bytes
    (no hash); and with few hash collisions, almost every such occurrence must be given."""
    cfg = ModelConfig(orders=[1], words=0, sparse=[], skips=[], table_bits=6, match_minlens=[6, 3], match_bits=20,
                      match_cap=32, match_recency=[50, 400], match_each=each, reader={"on": False})
    m = Model(cfg, "cpu")
    d = text(3000, seed=7)
    prev = pointers(m, d)
    n_in = m.match.spec.inputs
    spec = m.match.spec.array()
    assert n_in == (2 if each else 1)
    cand = np.zeros((n_in, 2), np.int64)
    latest = [{} for _ in cfg.match_minlens]
    given = expected = 0
    for t in range(len(d)):
        kmatch.match_inputs(d, t, prev, t, m.match.minlens, spec, cand)
        want = []
        for k, ml in enumerate(cfg.match_minlens):
            key = bytes(d[t - ml: t]) if t >= ml else None
            p = latest[k].get(key, -1)
            n = 0
            while p >= 0 and n < cfg.match_cap and p - 1 - n >= 0 and d[t - 1 - n] == d[p - 1 - n]:
                n += 1
            want.append((int(d[p]), int(kmatch.match_state(n, t - p, spec))) if p >= 0 and n >= ml else (-1, 0))
            if key is not None:
                latest[k][key] = t
        if not each:
            # the longest verified one (or, after a hash collision lost it, a shorter one)
            got = (int(cand[0, 0]), int(cand[0, 1]))
            expected += any(w[0] >= 0 for w in want)
            if got[0] >= 0:
                given += 1
                assert got in want, (t, got, want)
            continue
        for k in range(n_in):
            expected += want[k][0] >= 0
            if cand[k, 0] >= 0:
                given += 1
                assert (int(cand[k, 0]), int(cand[k, 1])) == want[k], (t, k, cand[k], want[k])
    assert expected > 1000 and given >= 0.97 * expected, (given, expected)


# ---- 7, 9: the mix and the sampler, at unit level -------------------------------------------------------

def test_the_mix_reads_the_reader():
    """Kills: mix_loss / mix_bit / mixed_distribution ignoring the reader (z_r = 0). With weights
    that take the reader alone, the mix gives the reader's own bits and distribution."""
    rng = np.random.default_rng(0)
    n = 50
    pm = rng.uniform(0.05, 0.95, (n, 8)).astype(np.float32)
    pr = rng.uniform(0.05, 0.95, (n, 8)).astype(np.float32)
    y = rng.integers(0, 256, n).astype(np.uint8)
    reader_only = np.zeros_like(init_mix())
    reader_only[:, 1] = 1.0
    bits = (y[:, None].astype(np.int64) >> (7 - np.arange(8))) & 1
    want = -np.log2(np.where(bits == 1, pr, 1 - pr).astype(np.float64)).sum(axis=1)
    got = mix_loss(pm, pr, y, reader_only, np.zeros((0, 3), np.float32))
    assert np.allclose(got, want, atol=1e-4)
    dist = rng.dirichlet(np.ones(256) * 20)  # no node so sure that the stretch clips it
    out, mass = np.zeros(256), np.zeros(512)
    mixed_distribution(rng.uniform(0.05, 0.95, 256), dist, reader_only, mass, out)
    assert np.allclose(out, dist, rtol=1e-3, atol=1e-9)


def test_temperature_reshapes_the_filtered_distribution():
    """Kills: filter_probs ignoring its temperature. p^(1/T), renormalised, computed here."""
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(256) * 0.5)
    for temp in (0.3, 0.7, 2.5):
        want = p ** (1 / temp)
        assert np.allclose(filter_probs(p, temp, 0, 1.0), want / want.sum(), rtol=1e-9, atol=1e-15)
    assert filter_probs(p, 0.3, 0, 1.0).max() > p.max() > filter_probs(p, 2.5, 0, 1.0).max()


# ---- model level: one small training run ---------------------------------------------------------------

READER = {"on": True, "window": 4, "dim": 8, "ctx_bits": 8, "hidden": [32, 16], "batch": 128,
          "contexts": [[0, 2], [1, 1]], "scan": 8, "scan_chunk": 16, "max_epochs": 2.0, "table_epochs": 2.0}
WEAK_MEMORY = dict(orders=[0, 1], words=1, sparse=[], skips=[], table_bits=10, match_bits=12, match_minlens=[8],
                   match_recency=[], apm2_bits=6, apm_hash_bits=8)
CFG = ModelConfig(**WEAK_MEMORY, reader=READER)


def tc(**kw):
    return TrainConfig(**{**dict(device="cpu", bytes=10**6, batch=256, count_chunk=3000, lr=0.01, log_seconds=1e9,
                                 val_seconds=1e9, checkpoint_minutes=0, holdout_max=2048), **kw})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The embedded sample: its train split twice (16 KB, to be counted), its val and test articles
    as the val split (5.5 KB the model never reads in training)."""
    d = tmp_path_factory.mktemp("mut")
    prepare([str(SAMPLE_DUMP)], d / "sample", PrepareOptions(val_fraction=0.1, test_fraction=0.1))
    raw = (d / "sample" / "train-00000.bin").read_bytes()
    val = (d / "sample" / "val-00000.bin").read_bytes() + (d / "sample" / "test-00000.bin").read_bytes()
    write_raw_split_dir(d / "data", {"train": raw * 2, "val": val}, "mutation tests")
    return d / "data", np.frombuffer(raw * 2, np.uint8), np.frombuffer(val, np.uint8)


@pytest.fixture(scope="module")
def trained(data):
    """One bytes-budget run, with every training call of Reader.forward recorded (positions, the
    scan state it was given and the state it left)."""
    calls = []
    real = Reader.forward

    def spy(self, data_, pos, match=None, scale=0.0, state=None, **more):
        before = None if state is None else np.array(state, copy=True)
        ws = real(self, data_, pos, match, scale, state, **more)
        if scale > 0:
            calls.append((np.array(pos, copy=True), before, None if state is None else np.array(state, copy=True)))
        return ws

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Reader, "forward", spy)
        s = train(data[0], data[0].parent / "run", CFG, tc(), log=quiet, save=False, keep_model=True)
    return s, calls


def test_training_counts_every_byte_of_the_budget_exactly_once(data, trained):
    """Kills: training skipping (or repeating) a byte per counted chunk, or a held-out block never
    counted. After a bytes-budget run the tables equal one count of the whole training text."""
    s, _ = trained
    m, train_bytes = s["model"], data[1]
    assert s["counted_bytes"] == s["train_bytes"] == len(train_bytes)
    assert np.array_equal(s["history"], train_bytes)
    want = np.zeros_like(m.memory.tables)
    count_add_cpu(train_bytes, 0, len(train_bytes), m.memory.ctx, want, np.uint32(1))
    assert np.array_equal(m.memory.tables, want)


def val_reading(m, history, val):
    """The memory's and the reader's bit probabilities for each val byte, after the history."""
    h, n = len(history), len(val)
    d = np.concatenate([history, val])
    last = m.match.last_pos.copy()
    prev = np.empty((len(m.match.minlens), n), np.int32)
    match_index(d, h, h + n, m.match.minlens, m.cfg.match_bits, last, prev, h)
    caches = m.caches(n)
    m.memory.forward(d, np.arange(h, h + n, dtype=np.int64), m.match.args(prev, h), caches)
    pr = m.reader.range_probs(d, [(h, h + n)], m.match.args(prev, h))
    return d, prev, np.array(caches.prob, np.float32), pr


def test_the_reader_learns(data, trained):
    """Kills: the reader's learning rate 0 (or its update skipped). Its own bits on the val text fall
    far below the same reader's at its initial parameters, and every dense block moved."""
    s, _ = trained
    m = s["model"]
    d, prev, _, _ = val_reading(m, s["history"], data[2])
    h, n = len(s["history"]), len(data[2])
    fresh = Reader(m.reader.cfg, "cpu")
    learned = reader_bpb(m.reader, d, h, h + n, d, m.match.args(prev, h))
    initial = reader_bpb(fresh, d, h, h + n, d, m.match.args(prev, h))
    assert learned < initial - 2.0, (learned, initial)  # measured at e0c6bf0: 3.81 against 7.98
    start = init_params(m.reader.cfg)
    for k, (name, _, _) in enumerate(m.reader.blocks):
        if name != "copy":  # the copy path is all zeros unless a candidate in play
            assert not np.array_equal(m.reader.view(m.reader.params, k), m.reader.view(start, k)), name


def test_the_trained_model_beats_the_memory_alone_with_the_same_mix_fit(data, trained):
    """Kills: the memory-reader mix ignoring the reader. On the val text, a mix fitted on its first
    half with the reader's probabilities scores the second half better than the same fit given an
    uninformative reader (p = 1/2: the memory alone, recalibrated as the mix can); and the run's own
    mix, fitted on its held-out bytes, does better with the reader's probabilities than without."""
    s, _ = trained
    m = s["model"]
    d, prev, pm, pr = val_reading(m, s["history"], data[2])
    y = data[2]
    half = len(y) // 2
    none = np.zeros((0, 3), np.float32)
    blind = np.full_like(pr, 0.5)

    def fitted(p_reader):
        fit = MixFit(init_mix(), steps=300)
        rng = np.random.default_rng(0)
        for _ in range(300):
            k = rng.integers(0, half, 1024)
            fit.step(pm[k], p_reader[k], y[k])
        return float(mix_loss(pm[half:], p_reader[half:], y[half:], fit.w, none).mean())

    with_reader, memory_alone = fitted(pr), fitted(blind)
    assert with_reader < memory_alone - 0.03, (with_reader, memory_alone)  # e0c6bf0: 3.371 against 3.453
    # the run's mix also reads the document words (docwords.py), with and without the reader alike
    doc = m.reader.doc_mix(*doc_inputs(d, [(len(s["history"]), len(d))]))
    own = float(mix_loss(pm, pr, y, m.reader.mix, none, doc).mean())
    own_blind = float(mix_loss(pm, blind, y, m.reader.mix, none, doc).mean())
    assert own < own_blind - 0.1, (own, own_blind)  # c9d06f1, with D: 3.371 against 3.589
    assert abs(s["val_bpb"] - own) < 1e-3  # the run's val is this mix of these two readings


def test_training_carries_the_scan_state_from_step_to_step(trained):
    """Kills: the scan state reset at every training step (a new state per step, in train.py or
    Reader.training_state). Each step's lanes start from the state the step before left, and the
    run's final training state is the last step's."""
    s, calls = trained
    assert len(calls) > 100
    for (_, _, after), (_, before, _) in zip(calls, calls[1:]):
        assert np.array_equal(before, after)
    assert np.abs(calls[-1][1]).max() > 0.05  # not zero: a state really was carried in
    assert np.array_equal(np.asarray(s["model"].reader.training_state()), calls[-1][2])


def test_resume_restores_the_reader_s_optimizer_and_scan_state(data, tmp_path):
    """Kills: a checkpoint or Reader.load_state dropping the reader's Adam moments or its scan
    state. The state a resumed run starts from equals the stopped run's own, array for array."""
    from cheaplm.checkpoint import load_model, load_state

    s = train(data[0], tmp_path / "run", CFG, tc(), log=quiet, keep_model=True, stop_after_reader_steps=20)
    assert s["stopped"] == "stop_after_steps"
    live = s["model"].reader
    model, _, ckpt = load_model(tmp_path / "run")
    load_state(ckpt, model)
    r = model.reader
    assert r.step == live.step == 20
    assert np.abs(live.adam_m).max() > 0 and np.abs(np.asarray(live.training_state())).max() > 0
    assert np.array_equal(r.params, live.params)
    assert np.array_equal(r.adam_m, live.adam_m) and np.array_equal(r.adam_v, live.adam_v)
    assert np.array_equal(np.asarray(r.training_state()), np.asarray(live.training_state()))


def test_the_sampler_draws_from_the_tempered_distribution(trained):
    """Kills: Generator.sample (or the CLI's Sampling) not passing the temperature on. The byte drawn
    with a seed is the inverse CDF, at that seed's uniform, of p^(1/T) renormalised, computed here
    from the generator's own distribution; and the two temperatures draw differently."""
    from cheaplm.cli import _sampling

    assert _sampling(0.3, 0, 1.0, 0.0, 0, 0, 2.0).temperature == 0.3
    s, _ = trained
    m, history = s["model"], s["history"]
    prompt = b"The lighthouse is a "
    g = Generator(m, history)
    g.feed(prompt)
    p = g.distribution() * utf8_allowed(g.pending)
    drawn = {}
    for temp in (0.3, 3.0):
        sampling = Sampling(temperature=temp, top_k=0, top_p=1.0, min_p=0.0, no_repeat=0, max_copy=0, self_copy=True)
        q = p ** (1 / temp)
        q /= q.sum()
        drawn[temp] = []
        for seed in range(12):
            want = int(np.searchsorted(np.cumsum(q), np.random.default_rng(seed).random(), side="right"))
            g = Generator(m, history)
            g.feed(prompt)
            got = g.sample(np.random.default_rng(seed), sampling)
            assert got == want, (temp, seed, got, want)
            drawn[temp].append(got)
    assert drawn[0.3] != drawn[3.0]
