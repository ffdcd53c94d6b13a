"""Windowed match pointers (pointers.py): the same pointers as the whole text's, so a run that
holds them a window at a time trains exactly as one that holds them all."""

import numpy as np
import pytest

from cheaplm.checkpoint import load_model
from cheaplm.device import Device
from cheaplm.kernels import match as kmatch
from cheaplm.lanes import stream_positions
from cheaplm.match import MatchModel, MatchSpec
from cheaplm.model import ModelConfig
from cheaplm.pointers import WindowedPointers, lane_runs, pointer_bytes
from cheaplm.train import train

from test_train import CFG, READER, data_dir, small_tc  # noqa: F401 (data_dir: the module's fixture)


def _text(n=30_000, seed=3):
    rng = np.random.default_rng(seed)
    words = [bytes(rng.integers(97, 123, rng.integers(2, 9), dtype=np.uint8)) for _ in range(300)]
    return np.frombuffer(b" ".join(words[i] for i in rng.integers(0, 300, n // 5)), dtype=np.uint8)[:n].copy()


def _whole(match, d):
    prev = match.pointers(len(d))
    last = np.full_like(match.last_pos, -1)
    kmatch.match_index(d, 0, len(d), match.minlens, match.spec.bits, last, prev, 0)
    return prev, last


@pytest.mark.parametrize("background", [False, True])
def test_windows_blocks_held_blocks_and_sweeps_give_the_whole_texts_pointers(monkeypatch, background):
    monkeypatch.setattr(kmatch, "MIN_SEGMENT", 1000)  # several segments per walk even on 2 cores
    d = _text()
    spec = MatchSpec((12, 5, 2), 10, 32, (1024,), True)
    match = MatchModel(spec, Device("cpu"))
    want, want_last = _whole(match, d)
    held = [(5000, 5600), (17000, 17300)]
    w = WindowedPointers(match, d, len(d), Device("cpu"), background, window=8 * 1500, held=held)
    w.start(0)
    for lo in range(0, 16000, 700):  # counting, chunk by chunk: blocks of 1500 built ahead, freed after
        hi = min(lo + 700, len(d))
        w.ready(lo, hi)
        pos = np.arange(lo, hi)
        assert np.array_equal(w.gather(pos), want[:, pos])
        assert sum(b - a for a, b, _ in w.blocks) <= 3 * 1500 + 700
    w.ensure([(5000, 5600), (16100, 16900)])  # a held block the walk passed; a range ahead of it
    pos = np.r_[5000:5600, 16100:16900]
    assert np.array_equal(w.gather(pos), want[:, pos])
    w.ensure([(100, 400)])  # behind the walk and not held: a sweep from the start
    assert np.array_equal(w.gather(np.arange(100, 400)), want[:, 100:400])
    ranges = [(0, 5000), (5600, 17000)]
    w.reader_begin(ranges, lanes=7, chunk=16, order="stream")
    for step in range(0, 60):
        w.reader_at(step)
        pos = stream_positions(ranges, 7, step, 16)
        assert np.array_equal(w.gather(pos), want[:, pos])
    w.index_to(12345)
    check = np.full_like(want_last, -1)
    kmatch.match_index(d, 0, 12345, match.minlens, 10, check, match.pointers(12345), 0)
    assert np.array_equal(match.last_pos, check)
    w.close()


def test_lane_runs_hold_the_positions_of_their_steps():
    ranges = [(0, 1000), (1300, 4100), (4200, 5000)]
    for step0, steps in ((0, 3), (5, 40), (70, 1), (0, 500)):
        runs = lane_runs(ranges, 9, step0, steps, 8)
        covered = np.zeros(5000, bool)
        for a, b in runs:
            covered[a:b] = True
        for s in range(step0, step0 + steps):
            assert covered[stream_positions(ranges, 9, s, 8)].all()
        assert covered.sum() <= 9 * steps * 8


def test_a_windowed_run_trains_as_the_whole_one(data_dir, tmp_path):  # noqa: F811
    """A window of 2,048 positions on 60 KB of text (blocks and sweeps of 256): the same losses,
    tables, index, mixer, reader and mix as the run holding every position's pointers."""
    cfg = ModelConfig(**{**READER.__dict__, "reader": {**READER.reader, "scan": 8, "scan_chunk": 8}})
    logs = []
    whole = train(data_dir, tmp_path / "a", cfg, small_tc(), log=lambda *a: None)
    windowed = train(data_dir, tmp_path / "b", cfg, small_tc(match_window=2048), log=logs.append)
    assert any("window of 2,048 positions" in line for line in logs)
    assert whole["losses"] == windowed["losses"] and whole["val_bpb"] == windowed["val_bpb"]
    assert whole["heldout"] == windowed["heldout"]
    ma, _, _ = load_model(tmp_path / "a")
    mb, _, _ = load_model(tmp_path / "b")
    assert ma.reader.step == mb.reader.step > 0
    for a, b in ((ma.memory.tables, mb.memory.tables), (ma.memory.params, mb.memory.params),
                 (ma.match.last_pos, mb.match.last_pos), (ma.reader.params, mb.reader.params),
                 (ma.reader.mix, mb.reader.mix)):
        assert np.array_equal(a, b)


def test_a_windowed_run_resumes_as_straight(data_dir, tmp_path):  # noqa: F811
    """Stopped in the memory phase and resumed with windows: the held-out blocks before the cursor
    are kept by the resume's walk, and the run ends as the straight one."""
    straight = train(data_dir, tmp_path / "a", CFG, small_tc(match_window=4096), log=lambda *a: None)
    k = straight["steps"] // 2
    train(data_dir, tmp_path / "b", CFG, small_tc(match_window=4096), log=lambda *a: None, stop_after_steps=k)
    second = train(data_dir, tmp_path / "b", None, small_tc(), resume=True, log=lambda *a: None)
    assert second["val_bpb"] == straight["val_bpb"]
    ma, _, _ = load_model(tmp_path / "a")
    mb, _, _ = load_model(tmp_path / "b")
    assert np.array_equal(ma.memory.params, mb.memory.params)
    assert np.array_equal(ma.match.last_pos, mb.match.last_pos)


def test_pointer_memory_is_bounded_by_the_window_not_the_text():
    small = pointer_bytes(10 << 20, 1 << 28, 6, 1 << 20)
    assert small["match pointers"] == (10 << 20) * 6 * 4
    big = [pointer_bytes(n, 1 << 28, 6, 32 << 20)["match pointers"] for n in (1 << 30, 20 << 30)]
    assert big[0] < 1.2 * (1 << 28) * 6 * 4 and big[1] == 2 * big[0]  # int64 positions past 1.75 GiB
