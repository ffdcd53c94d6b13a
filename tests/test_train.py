"""Tier 4 (model level): training lowers the loss; interrupted + resumed == straight; bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from cheaplm.checkpoint import CheckpointError, load_model
from cheaplm.evaluate import stream_bpb
from cheaplm.model import ModelConfig
from cheaplm.prepare import PrepareOptions, prepare
from cheaplm.shards import write_raw_split_dir
from cheaplm.train import TrainConfig, TrainError, draw_positions, holdout_blocks, mix_steps_for, next_chunk, train

from conftest import SAMPLE_DUMP

CFG = ModelConfig(orders=[0, 1, 2, 3, 4, 6], words=2, sparse=[0b10], table_bits=12, match_bits=14, apm2_bits=6)


def small_tc(**kw):
    # 200 steps of the memory-reader mix, not 1500: the held-out bytes here are a few KB (measured:
    # mixed 0.312 against 0.307 bpb, about a minute less per run with a reader)
    base = dict(device="cpu", bytes=60_000, batch=256, count_chunk=2048, lr=0.01, log_seconds=1e9,
                val_seconds=1e9, checkpoint_minutes=0, reader={"mix_fit_steps": 200})
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The embedded sample, repeated with variations so there is something to learn."""
    d = tmp_path_factory.mktemp("data")
    prepare([str(SAMPLE_DUMP)], d / "sample", PrepareOptions(val_fraction=0, test_fraction=0))
    raw = (d / "sample" / "train-00000.bin").read_bytes()
    train_bytes = raw * 4
    write_raw_split_dir(d / "rep", {"train": train_bytes[:70_000], "val": raw[:3000]}, "test data")
    return d / "rep"


def test_training_lowers_the_loss_and_beats_uniform(data_dir, tmp_path):
    s = train(data_dir, tmp_path / "run", CFG, small_tc(), log=lambda *a: None)
    losses = s["losses"]
    assert len(losses) == s["steps"] > 20
    assert np.mean(losses[-5:]) < np.mean(losses[:3]) - 1.0
    assert s["val_bpb"] < 4.0  # uniform is 8
    model, history, _ = load_model(tmp_path / "run")
    assert len(history) == s["counted_bytes"]
    again = stream_bpb(model, history, np.frombuffer(b"The lighthouse keeper", np.uint8))
    assert 0 < again["bpb"] < 8


def test_resume_equals_straight(data_dir, tmp_path):
    straight = train(data_dir, tmp_path / "a", CFG, small_tc(), log=lambda *a: None)
    k = straight["steps"] // 2
    first = train(data_dir, tmp_path / "b", CFG, small_tc(), log=lambda *a: None, stop_after_steps=k)
    assert first["stopped"] == "stop_after_steps" and first["steps"] == k
    second = train(data_dir, tmp_path / "b", None, small_tc(), resume=True, log=lambda *a: None)
    assert first["losses"] + second["losses"] == straight["losses"]
    assert second["counted_bytes"] == straight["counted_bytes"]
    ma, _, _ = load_model(tmp_path / "a")
    mb, hb, _ = load_model(tmp_path / "b")
    assert np.array_equal(ma.memory.params, mb.memory.params)
    assert np.array_equal(ma.memory.tables, mb.memory.tables)
    assert np.array_equal(ma.match.last_pos, mb.match.last_pos)


def test_nan_loss_stops_and_keeps_the_good_checkpoint(data_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(data_dir, run, CFG, small_tc(), log=lambda *a: None, stop_after_steps=5)
    before = (run / "latest").read_text()
    import cheaplm.memory as memory_mod

    real = memory_mod.Memory.update

    def poison(self, step, lr):
        real(self, step, lr)
        self.params[:] = np.nan

    monkeypatch.setattr(memory_mod.Memory, "update", poison)
    with pytest.raises(TrainError, match="loss became nan"):
        train(data_dir, run, None, small_tc(), resume=True, log=lambda *a: None)
    assert (run / "latest").read_text() == before
    load_model(run)  # still loads


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cheaplm.cli", *args], capture_output=True, text=True, cwd=cwd)


def one_line_error(proc, needle):
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and needle in last, proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_inputs(data_dir, tmp_path):
    one_line_error(run_cli("train", str(tmp_path / "nope"), "--out", str(tmp_path / "r"), "--bytes", "1M"), "no such directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(run_cli("train", str(empty), "--out", str(tmp_path / "r"), "--bytes", "1M"), "no manifest.json")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    one_line_error(run_cli("train", str(wrong), "--out", str(tmp_path / "r"), "--bytes", "1M"), "not a cheaplm shard manifest")
    one_line_error(run_cli("train", str(data_dir), "--out", str(tmp_path / "r"), "--minutes", "0"), "budget must be positive")
    one_line_error(run_cli("train", str(data_dir), "--out", str(tmp_path / "r"), "--bytes", "1M", "--device", "cuda"),
                   "no CUDA GPU")
    one_line_error(run_cli("train", str(data_dir), "--out", str(tmp_path / "r"), "--bytes", "1M", "--table-bits", "29"),
                   "lower --table-bits")
    assert not (tmp_path / "r").exists()


def test_corrupt_and_mismatched_checkpoints(data_dir, tmp_path):
    run = tmp_path / "run"
    train(data_dir, run, CFG, small_tc(), log=lambda *a: None, stop_after_steps=4)
    ckpt = run / (run / "latest").read_text().strip()
    good = (ckpt / "model.npz").read_bytes()
    (ckpt / "model.npz").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(run)
    # (--split val: this data has no test split, and eval checks the split before the model)
    one_line_error(run_cli("eval", str(run), str(data_dir), "--split", "val"), "corrupt or truncated")
    proc = run_cli("train", str(data_dir), "--out", str(run), "--bytes", "60000", "--resume")
    one_line_error(proc, "corrupt or truncated")
    assert (ckpt / "model.npz").stat().st_size == len(good) // 2  # nothing written over it
    (ckpt / "model.npz").write_bytes(good)
    other = tmp_path / "other"
    write_raw_split_dir(other, {"train": b"different bytes entirely " * 100}, "x")
    with pytest.raises(TrainError, match="not the data this run was trained on"):
        train(other, run, None, small_tc(), resume=True, log=lambda *a: None)
    with pytest.raises(TrainError, match="already holds a run"):
        train(data_dir, run, CFG, small_tc(), log=lambda *a: None)
    one_line_error(run_cli("eval", str(tmp_path / "missing"), str(data_dir), "--split", "val"), "no such run directory")


def test_resume_of_a_finished_run_changes_nothing(data_dir, tmp_path):
    done = train(data_dir, tmp_path / "r", CFG, small_tc(), log=lambda *a: None)
    before, _, _ = load_model(tmp_path / "r")
    again = train(data_dir, tmp_path / "r", None, small_tc(), resume=True, log=lambda *a: None)
    after, _, _ = load_model(tmp_path / "r")
    assert again["steps"] == done["steps"] and again["losses"] == []
    assert np.array_equal(before.memory.params, after.memory.params) and np.array_equal(before.memory.tables, after.memory.tables)


def test_background_match_index_equals_the_sequential_walk(monkeypatch):
    """The GPU path builds match pointers on a thread, block by block, while it counts."""
    import cheaplm.kernels.match as match
    from cheaplm.train import IndexAhead

    monkeypatch.setattr(match, "MIN_SEGMENT", 1000)  # several segments per block even on 2 cores
    monkeypatch.setattr(IndexAhead, "FIRST_BLOCK", 2500)
    monkeypatch.setattr(IndexAhead, "MAX_BLOCK", 7000)
    rng = np.random.default_rng(3)
    words = [bytes(rng.integers(97, 123, rng.integers(2, 9), dtype=np.uint8)) for _ in range(300)]
    d = np.frombuffer(b" ".join(words[i] for i in rng.integers(0, 300, 9000)), dtype=np.uint8).copy()
    ml = np.array([8, 4], np.int64)
    want_last = np.full((2, 1 << 10), -1, np.int32)
    want = np.full((2, len(d)), -9, np.int32)
    match.match_index(d, 0, len(d), ml, 10, want_last, want, 0)
    got_last = np.full_like(want_last, -1)
    got = np.full_like(want, -9)
    ahead = IndexAhead(d, 0, len(d), ml, 10, got_last, got, background=True)
    ahead.wait(len(d) // 2)
    assert ahead.done >= len(d) // 2
    ahead.wait(len(d))
    assert np.array_equal(got, want) and np.array_equal(got_last, want_last)


def test_resume_needs_no_budget_and_a_full_disk_is_one_clean_error(data_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(data_dir, run, CFG, small_tc(), log=lambda *a: None, stop_after_steps=5)
    done = train(data_dir, run, None, TrainConfig(device="cpu"), resume=True, log=lambda *a: None)
    straight = train(data_dir, tmp_path / "straight", CFG, small_tc(), log=lambda *a: None)
    assert done["stopped"] is None  # it ran on the run's own budget to the same end
    assert (done["steps"], done["counted_bytes"]) == (straight["steps"], straight["counted_bytes"])

    import cheaplm.checkpoint as ckpt

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    run2 = tmp_path / "run2"
    train(data_dir, run2, CFG, small_tc(), log=lambda *a: None, stop_after_steps=5)
    before = sorted(p.name for p in run2.iterdir())
    monkeypatch.setattr(ckpt, "_write_npz", full_disk)  # model.npz, the first file written
    with pytest.raises(TrainError, match="No space left on device") as err:
        train(data_dir, run2, None, TrainConfig(device="cpu"), resume=True, log=lambda *a: None)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in run2.iterdir() if not p.name.endswith(".tmp")) == before
    assert not list(run2.glob("*.tmp"))


def test_auto_mix_steps_draw_about_one_chunk_and_fit_the_time_left():
    tc = TrainConfig(batch=4096, count_chunk=1 << 17)
    assert mix_steps_for(tc, None, 100, None, None) == 16  # bytes budget: at most MIX_STEPS_MAX
    assert mix_steps_for(TrainConfig(batch=4096, count_chunk=1 << 14), None, 100, None, None) == 4  # a chunk's worth
    assert mix_steps_for(TrainConfig(batch=4096, count_chunk=1 << 17, mix_steps=3), 1.0, 100, 9.0, 9.0) == 3
    assert mix_steps_for(tc, 100.0, 10, None, None) == 1  # nothing measured yet
    assert mix_steps_for(tc, 50.0, 10, 0.5, 2.0) == 6  # 5 s per chunk: 2 s counting, 3 s of updates
    assert mix_steps_for(tc, 1e6, 10, 0.5, 2.0) == 16  # plenty of time: still no more than the cap
    assert mix_steps_for(tc, 5.0, 10, 0.5, 2.0) == 1  # behind schedule: at least one update


def test_holdout_blocks_spread_over_the_data_and_counting_steps_over_them():
    blocks = holdout_blocks(1000, 100, 30)
    assert blocks == [(151, 181), (485, 515), (818, 848)]  # centred at 1/6, 3/6, 5/6 of the data
    spans, at = [], 0
    while (span := next_chunk(at, blocks, 64, 1000)) is not None:
        spans.append(span)
        at = span[1]
    counted = set().union(*(range(a, b) for a, b in spans))
    held = set().union(*(range(a, b) for a, b in blocks))
    assert counted | held == set(range(1000)) and not counted & held  # every byte once, in one role
    assert all(b - a <= 64 for a, b in spans) and spans == sorted(spans)
    assert holdout_blocks(10, 40, 64) == [(0, 10)]  # tiny data: one block, clipped
    pos = draw_positions(np.random.default_rng(0), blocks, 5000)
    assert len(pos) == 90 and set(pos.tolist()) <= held  # min(batch, bytes); only held-out bytes
    rng = np.random.default_rng(1)
    seen = set().union(*(draw_positions(rng, blocks, 90).tolist() for _ in range(50)))
    assert seen == held  # every held-out byte gets drawn


READER = ModelConfig(**{**CFG.__dict__, "reader": {"on": True, "window": 3, "dim": 8, "ctx_bits": 8,
                                                     "hidden": [32, 16], "batch": 64, "contexts": [[0, 2], [1, 1]]}})


def test_reader_resume_equals_straight_and_the_reader_earns_its_place(data_dir, tmp_path):
    """Interrupted in the reader's phase and resumed == straight (reader weights, Adam moments, mix,
    val); and the reader with the memory beats the memory alone on val."""
    straight = train(data_dir, tmp_path / "a", READER, small_tc(), log=lambda *a: None)
    first = train(data_dir, tmp_path / "b", READER, small_tc(), log=lambda *a: None, stop_after_reader_steps=200)
    assert first["stopped"] == "stop_after_steps"
    mid, _, ck = load_model(tmp_path / "b")
    assert mid.reader.step == 200 and ck.name.startswith("ckpt-")
    second = train(data_dir, tmp_path / "b", None, small_tc(), resume=True, log=lambda *a: None)
    ma, _, _ = load_model(tmp_path / "a")
    mb, _, _ = load_model(tmp_path / "b")
    assert ma.reader.step == mb.reader.step > 200
    assert np.array_equal(ma.reader.params, mb.reader.params)
    assert np.array_equal(ma.reader.mix, mb.reader.mix)
    assert np.array_equal(ma.memory.tables, mb.memory.tables) and np.array_equal(ma.memory.params, mb.memory.params)
    assert second["val_bpb"] == straight["val_bpb"]
    memory_only = train(data_dir, tmp_path / "c", ModelConfig(**{**CFG.__dict__, "reader": {"on": False}}),
                        small_tc(), log=lambda *a: None)
    assert straight["val_bpb"] < memory_only["val_bpb"]


def test_reader_with_a_scan_resumes_as_straight(data_dir, tmp_path):
    """The scan's lane states are part of the checkpoint: stopped mid-phase and resumed == straight."""
    cfg = ModelConfig(**{**READER.__dict__, "reader": {**READER.reader, "scan": 8, "scan_chunk": 8}})
    straight = train(data_dir, tmp_path / "a", cfg, small_tc(), log=lambda *a: None)
    train(data_dir, tmp_path / "b", cfg, small_tc(), log=lambda *a: None, stop_after_reader_steps=150)
    second = train(data_dir, tmp_path / "b", None, small_tc(), resume=True, log=lambda *a: None)
    ma, _, _ = load_model(tmp_path / "a")
    mb, _, _ = load_model(tmp_path / "b")
    assert ma.reader.cfg.scan == 8 and ma.reader.step == mb.reader.step > 150
    assert np.array_equal(ma.reader.params, mb.reader.params) and np.array_equal(ma.reader.mix, mb.reader.mix)
    assert second["val_bpb"] == straight["val_bpb"]


def test_reader_phase_stops_after_max_epochs_and_the_table_after_table_epochs(data_dir, tmp_path):
    one_pass = ModelConfig(**{**READER.__dict__, "reader": {**READER.reader, "max_epochs": 1.0}})
    cfg = ModelConfig(**{**READER.__dict__, "reader": {**READER.reader, "max_epochs": 0.5}})
    train(data_dir, tmp_path / "r", cfg, small_tc(), log=lambda *a: None)
    m, _, _ = load_model(tmp_path / "r")
    train(data_dir, tmp_path / "one", one_pass, small_tc(), log=lambda *a: None)
    one, _, _ = load_model(tmp_path / "one")
    n = 60_000  # the budget's bytes, of which a quarter is held out of the tables
    assert 0.6 * n / 64 < one.reader.step <= 0.75 * n / 64 + 1  # one pass over the counted bytes
    assert abs(m.reader.step - one.reader.step / 2) <= 1
    # two passes, rows learning in the first half pass only: the table stops, the dense layers go on
    frozen = ModelConfig(**{**READER.__dict__, "reader": {**READER.reader, "max_epochs": 2.0, "table_epochs": 0.5}})
    train(data_dir, tmp_path / "f", frozen, small_tc(), log=lambda *a: None)
    tables, dense = [], []
    for name, steps in (("early", one.reader.step * 2 // 5), ("late", one.reader.step * 3 // 5)):
        train(data_dir, tmp_path / name, frozen, small_tc(), log=lambda *a: None, stop_after_reader_steps=steps)
        mid, _, _ = load_model(tmp_path / name)
        tables.append(mid.reader.view(mid.reader.params, 0).copy())
        dense.append(mid.reader.view(mid.reader.params, 1).copy())
    end, _, _ = load_model(tmp_path / "f")
    assert end.reader.step >= 2 * one.reader.step - 2
    assert np.array_equal(end.reader.view(end.reader.params, 0), tables[1])  # no row moved after half a pass
    assert not np.array_equal(tables[0], tables[1])
    assert not np.array_equal(end.reader.view(end.reader.params, 1), dense[1])


def test_stream_positions_cover_each_byte_once_per_stretch():
    from cheaplm.lanes import stream_positions

    ranges = [(0, 1000), (1500, 2500), (3000, 3048)]
    n = 16
    total = 2048
    seen = np.concatenate([stream_positions(ranges, n, s) for s in range(total // n)])
    inside = np.concatenate([np.arange(a, b) for a, b in ranges])
    assert np.array_equal(np.sort(seen), inside)
    first, second = stream_positions(ranges, n, 0), stream_positions(ranges, n, 1)
    assert np.array_equal(second, first + 1)  # no cursor starts at the last byte of a range here
