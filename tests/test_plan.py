"""The plan (plan.py): memory as the most that is alive at once, phase by phase, an upper bound
in the runs that happen; and the code facts it rests on (what pointers.py keeps while a
checkpoint walks, what tablepack.py buffers while it packs)."""

import os

import numpy as np
import pytest

from cheaplm import plan as planmod, tablepack
from cheaplm.device import Device
from cheaplm.match import MatchModel, MatchSpec
from cheaplm.model import Model, ModelConfig
from cheaplm.plan import counted_most, format_plan, pack_buffer_bytes, run_plan
from cheaplm.pointers import WindowedPointers
from cheaplm.schedule import ReaderSchedule
from cheaplm.train import TrainConfig, Trainer, widen, with_resolved_reader

N10 = 9_856_601_287  # issue 25's 10 GB run


def _gpu_plan(monkeypatch, n=N10, **train):
    """run_plan of a new GPU run over n bytes with the default config, on a 16-core host."""
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    tc = TrainConfig(**train).resolved("cuda")
    cfg = with_resolved_reader(ModelConfig(table_bits=None).sized_for(n, "cuda"), "cuda", tc.minutes)
    sched = ReaderSchedule.for_device("cuda", tc.minutes, tc.reader, widen(tc.minutes))
    trainer = Trainer.__new__(Trainer)
    trainer.tc = tc
    return run_plan(cfg, tc, n, "cuda", sched, None, trainer.holdout_of(n)), cfg, tc


def test_the_plan_is_its_largest_phase_and_names_it(monkeypatch):
    p, cfg, _ = _gpu_plan(monkeypatch, minutes=5, checkpoint_minutes=0)
    for where in ("host", "gpu"):
        assert sum(p[where].values()) == max(p[f"{where}_phases"].values())
        assert p[f"{where}_phases"][p[f"{where}_phase"]] == sum(p[where].values())
    assert p["host_phase"] == "final checkpoint" and p["gpu_phase"] == "validation"
    # no checkpoint while counting: the builder's per-thread tables are not beside the tables' host copy
    assert "checkpoint while counting" not in p["host_phases"]
    assert "builder's walk (per-thread tables)" not in p["host"] and p["host"]["tables (host copy)"] == cfg.table_bytes()
    lines = "\n".join(format_plan(p))
    assert "at its peak, in final checkpoint" in lines and "at its peak, in validation" in lines
    assert "checkpoints while counting: none" in lines


def test_a_windowed_run_that_checkpoints_while_counting_plans_both_walks_beside_the_tables(monkeypatch):
    for train in ({"bytes": N10, "checkpoint_minutes": 5}, {"minutes": 120, "checkpoint_minutes": 1}):
        p, cfg, _ = _gpu_plan(monkeypatch, **train)
        assert p["checkpoints_while_counting"] and p["host_phase"] == "checkpoint while counting"
        peak = p["host"]
        assert {"builder's walk (per-thread tables)", "match pointers (counting)", "tables (host copy)"} <= set(peak)
        walk = len(cfg.match_minlens) * 16 * (8 << cfg.match_bits)  # int64 positions, 16 threads
        assert peak["builder's walk (per-thread tables)"] == walk
        assert p["host_phases"]["checkpoint while counting"] > p["host_phases"]["final checkpoint"]
        assert p["checkpoint_copies"] == 3  # keep 2, and the one being written


def test_validation_copies_what_can_have_been_counted_not_the_text(monkeypatch):
    p, _, tc = _gpu_plan(monkeypatch, minutes=5, checkpoint_minutes=0)
    copy = p["gpu"]["counted text and validation bytes (validation's copy)"]
    assert copy == p["counted_most"] + tc.val_bytes
    assert 275_119_923 < p["counted_most"] < N10 // 10  # the run counted 275 MB in its 5 minutes
    short, _, _ = _gpu_plan(monkeypatch, n=200_000_000, minutes=5, checkpoint_minutes=0)
    assert short["counted_most"] == 200_000_000  # never more than the text
    bytes_budget, _, _ = _gpu_plan(monkeypatch, n=50_000_000, bytes=50_000_000)
    assert bytes_budget["counted_most"] == 50_000_000
    tc5 = TrainConfig(minutes=5).resolved("cuda")
    assert counted_most(N10, tc5, "cuda", 10.0, 0) < counted_most(N10, tc5, "cuda", 20.0, 0)


def test_the_10gb_runs_plan_is_within_ten_percent_above_what_it_measured(monkeypatch):
    """bench/results/h200-scale-10gb-e88d66a.json: peak RSS 48,477,085,696 B; GPU 59,700,674,560 B
    used at the peak, 552,599,552 before the run."""
    p, _, _ = _gpu_plan(monkeypatch, minutes=5, checkpoint_minutes=0)
    host, gpu = sum(p["host"].values()) / 48_477_085_696, sum(p["gpu"].values()) / (59_700_674_560 - 552_599_552)
    assert 1.0 <= host < 1.1 and 1.0 <= gpu < 1.1, (host, gpu)


def test_a_text_in_one_window_plans_every_pointer_and_one_walk_at_a_time(monkeypatch):
    p, cfg, _ = _gpu_plan(monkeypatch, n=150_000_000, minutes=5, checkpoint_minutes=0)
    k = len(cfg.match_minlens)
    assert not p["pointers"]["windowed"]
    assert p["host"]["match pointers"] == 150_000_000 * k * 4
    assert "checkpoint's walk (a block of pointers)" not in p["host"]  # the walk writes into the pointers held


def test_disk_counts_one_checkpoint_when_none_comes_while_counting(monkeypatch):
    once, _, _ = _gpu_plan(monkeypatch, n=50_000_000, minutes=5, checkpoint_minutes=0)
    often, _, _ = _gpu_plan(monkeypatch, n=50_000_000, minutes=5, checkpoint_minutes=0.25)
    assert once["checkpoint_copies"] == 1 and often["checkpoint_copies"] == 3
    assert often["disk"]["checkpoints"] == 3 * once["disk"]["checkpoints"]
    assert "tables as dense" in "\n".join(format_plan(once))


def test_a_windowed_builder_keeps_its_per_thread_tables_until_counting_ends():
    """What the plan's 'checkpoint while counting' rests on: a checkpoint's walk (index_to) makes its
    own tables while the builder's are still held."""
    rng = np.random.default_rng(0)
    d = rng.integers(97, 100, 20_000, dtype=np.uint8)
    match = MatchModel(MatchSpec((6, 3), 10, 32, (1024,), True), Device("cpu"))
    w = WindowedPointers(match, d, len(d), Device("cpu"), False, window=8 * 1000, held=[(4000, 4500)])
    w.start(0)
    w.ready(0, 700)
    assert w.work is not None and w.work.shape[::2] == (2, 1 << 10)
    made = []
    real = match.workspace
    match.workspace = lambda: made.append(real()) or made[-1]
    w.index_to(600)
    assert len(made) == 1 and w.work is not None  # both alive during the checkpoint's walk
    w.ensure([(4000, 4500)])  # counting is over: the builder's tables are freed
    assert w.work is None


def test_packing_buffers_stay_within_the_plans_bound():
    """tablepack.write_packed holds one class's rows of a group of chunks at a time: the plan
    bounds them by the bytes counted (a byte adds 8 to the counts of 2 rows per context)."""
    cfg = ModelConfig(table_bits=12)
    model = Model(cfg, device="cpu")
    rng = np.random.default_rng(1)
    words = [bytes(rng.integers(97, 123, rng.integers(1, 6), dtype=np.uint8)) for _ in range(40)]
    text = np.frombuffer(b" ".join(words[i] for i in rng.integers(0, 40, 60_000)), np.uint8).copy()
    model.count(text, 0, len(text))
    tables = model.memory.tables
    cls = np.empty(tables.shape[0], np.uint8)
    tablepack.row_classes(tables, cls)
    starts = tablepack.chunk_starts(cls, tablepack.CHUNKS)
    assert starts[-1, 2] > 0 and starts[-1, 3] > 0  # rows that need uint16 and uint32
    groups = [(c, min(c + tablepack.GROUP, tablepack.CHUNKS)) for c in range(0, tablepack.CHUNKS, tablepack.GROUP)]
    item = {1: 1, 2: 2, 3: 4}
    used = max(max(int(starts[c1, k] - starts[c0, k]) for c0, c1 in groups) * tablepack.WIDTH * item[k] for k in (1, 2, 3))
    bound = pack_buffer_bytes(tables.shape[0], len(text), len(cfg.contexts()))
    assert used <= bound
    assert pack_buffer_bytes(tables.shape[0], 1000, len(cfg.contexts())) < bound  # fewer bytes, fewer wide rows


@pytest.mark.parametrize("minutes", [0.3, None])
def test_a_cpu_plan_is_one_phase_as_before(minutes):
    cfg = ModelConfig(table_bits=12)
    tc = TrainConfig(minutes=minutes, bytes=None if minutes else 100_000).resolved("cpu")
    p = run_plan(cfg, tc, 100_000, "cpu", ReaderSchedule.for_device("cpu", minutes, tc.reader, widen(minutes)))
    assert list(p["host_phases"]) == ["training"] and p["gpu"] == {}
    assert "at its peak" not in "\n".join(format_plan(p))
    assert planmod.COUNT_RATE["cpu"] == 1.2e6
