"""The reader's recurrent state (kernels/scan.py): tier 1 (the CPU twin against a float64 oracle
written from the docstrings, with a state carried in), tier 3 (backward, the scan's blocks
included, against finite differences), a state carried across batches equal to one long run, and
the lanes that score a range (lanes.py) reading every byte once from the same state as a single
lane would. Tier 2 (CUDA vs CPU) is in gpu_parity.py; generation against evaluation in
test_sample.py (the CPU default reads a scan)."""

import math

import numpy as np
import pytest

from cheaplm.lanes import RangeSchedule, stream_positions

from test_kernels import text
from test_reader import assert_finite_differences, oracle_input, oracle_output, param_views, pointers, small_model

SCAN = {"on": True, "window": 3, "dim": 4, "ctx_bits": 6, "hidden": [12, 8], "batch": 15,
        "contexts": [[0, 2], [1, 1], [3, 2]], "scan": 6, "scan_chunk": 5}


def scan_oracle(m, data, pos, prev, state_in, params=None):
    """float64, lane by lane: (loss in bits, bit probabilities, mean loss in nats, state out)."""
    cfg = m.reader.cfg
    v = param_views(m, params)
    lanes = state_in.shape[0]
    T = len(pos) // lanes
    d = cfg.scan
    losses, bitps, nats, out_state = [], [], 0.0, np.zeros_like(state_in, dtype=np.float64)
    for lane in range(lanes):
        s = state_in[lane].astype(np.float64)
        for t in pos[lane * T: (lane + 1) * T]:
            x, cand = oracle_input(m, data, t, prev, v["table"])
            h1 = np.maximum(v["w1"] @ x, 0)
            proj = v["scan_in"] @ h1
            a = 1 / (1 + np.exp(-(proj[:d] + v["scan_bias"][0])))
            s = a * s + (1 - a) * proj[d:]
            z = v["w2"] @ h1 + v["scan_out"] @ s
            for w in [v["out"]]:
                z = w @ np.maximum(z, 0)
            bits, bp, nat = oracle_output(m, z, cand, int(data[t]), v["copy"])
            losses.append(bits)
            bitps.append(bp)
            nats += nat
        out_state[lane] = s
    return np.array(losses), np.array(bitps), nats / len(pos), out_state


def lanes_of(data, lanes, T, seed):
    starts = np.random.default_rng(seed).integers(1, len(data) - T, lanes)
    return (starts[:, None] + np.arange(T)).ravel().astype(np.int64)


def scan_model(seed=0):
    m = small_model(SCAN, seed)
    m.reader.params[-m.reader.cfg.scan * 3:] *= 0.2  # keep some units slow: the carried state matters
    return m


def test_scan_forward_matches_float64_oracle():
    m = scan_model()
    r = m.reader
    data = text(3000, seed=2)
    data[1500:1600] = data[200:300]
    prev = pointers(m, data)
    pos = lanes_of(data, 3, 5, seed=1)
    state = np.random.default_rng(3).standard_normal((3, 6)).astype(np.float32)
    want_loss, want_bitp, _, want_state = scan_oracle(m, data, pos, prev, state)
    ws = r.forward(data, pos, m.match.args(prev, 0), state=state)
    assert np.allclose(ws["loss"], want_loss, atol=2e-4)
    assert np.allclose(ws["bitp"], want_bitp, atol=2e-5)
    assert np.allclose(state, want_state, atol=1e-5)  # moved on in place
    with pytest.raises(ValueError, match="needs its state"):
        r.forward(data, pos, m.match.args(prev, 0))


def test_scan_backward_matches_finite_differences():
    m = scan_model(seed=4)
    r = m.reader
    data = text(2000, seed=4)
    prev = pointers(m, data)
    pos = lanes_of(data, 3, 5, seed=5)
    state0 = np.random.default_rng(6).standard_normal((3, 6)).astype(np.float32)
    r.forward(data, pos, m.match.args(prev, 0), scale=1.0 / len(pos), state=state0.copy())
    r.backward()
    grad = r.grad.astype(np.float64)
    base = r.params.astype(np.float64)
    rng = np.random.default_rng(7)
    picked = []
    for k, (name, shape, _) in enumerate(r.blocks):
        lo = r.offsets[k]
        inside = [i for i in range(lo, lo + shape[0] * shape[1]) if abs(grad[i]) > 1e-5]
        assert inside, f"block {name} got no gradient"
        picked += list(rng.choice(inside, min(6, len(inside)), replace=False))
    assert_finite_differences(lambda p: scan_oracle(m, data, pos, prev, state0, p)[2], base, grad, picked)


def test_state_carried_across_batches_equals_one_long_batch():
    m = scan_model(seed=1)
    r = m.reader
    data = text(2000, seed=8)
    prev = pointers(m, data)
    match = m.match.args(prev, 0)
    starts = np.array([10, 700, 1300])
    long_pos = (starts[:, None] + np.arange(10)).ravel().astype(np.int64)
    state = r.new_state(3)
    ws = r.forward(data, long_pos, match, state=state)
    want = ws["loss"].copy().reshape(3, 10)
    carried = r.new_state(3)
    halves = []
    for h in range(2):
        pos = (starts[:, None] + h * 5 + np.arange(5)).ravel().astype(np.int64)
        halves.append(r.forward(data, pos, match, state=carried)["loss"].copy().reshape(3, 5))
    assert np.allclose(np.concatenate(halves, axis=1), want, atol=1e-6)
    assert np.allclose(carried, state, atol=1e-6)


def test_range_probs_score_every_byte_once_as_one_lane_would():
    m = scan_model(seed=2)
    r = m.reader
    data = text(1500, seed=9)
    prev = pointers(m, data)
    match = m.match.args(prev, 0)
    ranges = [(100, 400), (900, 1000)]
    got = r.range_probs(data, ranges, match, warm=10_000)  # warm-up reaches every range's start
    # one lane per range from its start, one position at a time
    for (a, b), off in zip(ranges, [0, 300]):
        state = r.new_state(1)
        for t in range(a, b):
            ws = r.forward(data, np.array([t], np.int64), match, state=state)
            assert np.allclose(ws["bitp"][0], got[off + t - a], atol=1e-5), t
    # a short warm-up: lanes start inside the range, so later bytes differ but every byte is scored
    short = r.range_probs(data, ranges, match, warm=4)
    assert short.shape == got.shape and np.isfinite(short).all()
    assert np.allclose(short[:5], got[:5], atol=1e-5)  # lane 0 starts at the range's start


@pytest.mark.parametrize("opts", [{}, {"scan_layers": 2}, {"scan": 0}])
def test_host_sweep_reads_as_the_lanes_do(opts):
    """reader_host.py's forward-only sweep (each position's own layers once, the scan per piece)
    gives the probabilities of training's forward in lanes, whatever its window and warm-up."""
    from cheaplm.reader_host import range_probs_host

    m = small_model(dict(SCAN, **opts), seed=3)
    m.reader.params[-m.reader.cfg.scan * 3:] *= 0.2
    data = text(4000, seed=9)
    match = m.match.args(pointers(m, data), 0)
    ranges = [(100, 1400), (1900, 1960), (2100, 3900)]
    for warm in (4, 10_000):
        want = m.reader.range_probs_lanes(data, ranges, match, warm)
        assert np.allclose(m.reader.range_probs(data, ranges, match, warm), want, atol=2e-6)
        for window in (1, 7, 100_000):
            assert np.allclose(range_probs_host(m.reader, data, ranges, match, warm, window), want, atol=2e-6)


def test_schedules_cover_each_byte_once():
    ranges = [(5, 50), (60, 61), (100, 173)]
    sched = RangeSchedule(ranges, lanes=7, chunk=4, warm=3)
    seen = []
    for pos, v, scored, _ in sched.steps():
        assert len(pos) == 28 and pos.min() >= 5 and pos.max() < 173
        seen += list(v[scored])
    assert sorted(seen) == list(range(45 + 1 + 73))
    # stream lanes: chunk consecutive positions per lane, each lane `chunk` further per step
    a = stream_positions([(0, 1000)], 4, 0, chunk=8).reshape(4, 8)
    b = stream_positions([(0, 1000)], 4, 1, chunk=8).reshape(4, 8)
    assert (np.diff(a, axis=1) == 1).all() and (b[:, 0] == a[:, -1] + 1).all()
    assert math.isclose(a[1, 0] - a[0, 0], 250)


@pytest.mark.parametrize("opts", [{}, {"scan_layers": 2}, {"scan": 0}, {"hidden": [12]}])
def test_generation_step_and_batched_advance_read_as_training_forward(opts):
    """Generation's serial one-position forward (reader_host.HostReader.next_probs) gives training's
    forward's next-byte distribution and state; `advance` over a run of bytes (a fed prompt) leaves
    the state that stepping through them one by one leaves."""
    from cheaplm.reader_host import HostReader

    m = small_model(dict(SCAN, **opts), seed=3)
    r = m.reader
    data = text(3000, seed=9)
    match = m.match.args(pointers(m, data), 0)
    host = HostReader(r)
    by_forward, by_step = r.new_state(1), r.new_state(1)
    for t in range(1000, 1060):
        want = r.next_byte_probs(data, np.array([t], np.int64), match, by_forward)
        got = host.next_probs(data, t, match, by_step)
        assert np.allclose(got, want, rtol=1e-5, atol=1e-7) and math.isclose(got.sum(), 1.0, rel_tol=1e-9)
    if r.cfg.scan:
        assert np.allclose(by_step, by_forward, atol=1e-6)
        for window in (7, 100_000):
            fed = r.new_state(1)
            host.advance(data, 1000, 1060, match, fed, window=window)
            assert np.allclose(fed, by_step, atol=1e-6)
