"""Several processes, on the CPU: the communication interface (comm.py), the launcher's checks
(launch.py) and data-parallel training (parallel.py) with the single-process stand-in (Lockstep).

The real NCCL path runs only on a machine with several GPUs: tests/gpu_parity_multi.py."""

import subprocess
import sys
import time

import numpy as np
import pytest

from cheaplm import launch
from cheaplm.checkpoint import load_model
from cheaplm.comm import CommError, Solo, World, bf16_to_f32, broadcast_json, f32_to_bf16, run_ranks
from cheaplm.evaluate import stream_bpb
from cheaplm.kernels import table_rows
from cheaplm.reader import blocks, touched_rows_max
from cheaplm.model import ModelConfig
from cheaplm.prepare import PrepareOptions, prepare
from cheaplm.train import TrainError, train

from conftest import SAMPLE_DUMP
from test_kernels import text
from test_pinned import CFG, TC  # the pinned run's model: a small memory, a 16-unit scan, 8 lanes of 16
from test_reader import SMALL, pointers, small_model

QUIET = dict(log=lambda *a: None)


# ---- where the processes are ---------------------------------------------------------------------

def test_the_world_is_read_from_torchrun_then_slurm_and_is_one_without_either():
    assert World.from_env({}) == World(0, 1, 0, "127.0.0.1", 29500)
    w = World.from_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "node7", "MASTER_PORT": "1234",
                        "SLURM_PROCID": "0", "SLURM_NTASKS": "2"})
    assert w == World(3, 8, 1, "node7", 1234)  # torchrun's names win over SLURM's
    assert World.from_env({"SLURM_PROCID": "5", "SLURM_NTASKS": "6", "SLURM_LOCALID": "1"}) == World(5, 6, 1, "127.0.0.1",
                                                                                                    29500)
    assert World.from_env({"RANK": "2", "WORLD_SIZE": "4"}).local_rank == 2  # no LOCAL_RANK: one node
    for bad in ({"RANK": "4", "WORLD_SIZE": "4"}, {"WORLD_SIZE": "two"}, {"WORLD_SIZE": "0"},
                {"RANK": "-1", "WORLD_SIZE": "2"}, {"WORLD_SIZE": "2", "MASTER_PORT": "70000"}):
        with pytest.raises(CommError) as err:
            World.from_env(bad)
        assert "\n" not in str(err.value)


def test_gpus_values_and_a_missing_cupy_are_one_line_errors(monkeypatch):
    assert launch.parse_gpus("1", 0) == 1 and launch.parse_gpus("4", 8) == 4 and launch.parse_gpus("all", lambda: 8) == 8
    for value, have, needle in (("0", 8, "1 or more"), ("-2", 8, "1 or more"), ("two", 8, "'all'"), ("1.5", 8, "'all'"),
                               ("3", 2, "only 2 CUDA GPUs"), ("all", 0, "no CUDA GPU")):
        with pytest.raises(CommError, match=needle) as err:
            launch.parse_gpus(value, have)
        assert "\n" not in str(err.value)
    monkeypatch.setattr(launch.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CommError, match=r"CuPy with NCCL.*pip install 'cheaplm\[multigpu\]'"):
        launch.world_for("2", None, env={}, visible=lambda: 2)
    with pytest.raises(CommError, match="CuPy"):  # under a launcher too
        launch.world_for(None, None, env={"RANK": "0", "WORLD_SIZE": "2"})
    assert launch.world_for("1", None, env={})[1] == 0  # one GPU: no NCCL, no processes started
    assert launch.world_for(None, "cpu", env={}) == (World(), 0)
    monkeypatch.setattr(launch.importlib.util, "find_spec", lambda name: object())
    assert launch.world_for("all", None, env={}, visible=lambda: 4)[1] == 4
    with pytest.raises(CommError, match="not with --device cpu"):
        launch.world_for("2", "cpu", env={}, visible=lambda: 2)
    with pytest.raises(CommError, match="WORLD_SIZE is 4"):
        launch.world_for("2", None, env={"RANK": "0", "WORLD_SIZE": "4"})
    env = launch.child_env(2, 4, 4321, base={})
    assert World.from_env(env) == World(2, 4, 2, "127.0.0.1", 4321) and env["NCCL_NVLS_ENABLE"] == "0"


def test_the_command_line_says_so_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cheaplm.cli", "train", str(tmp_path), "--out", str(tmp_path / "r"),
                           "--bytes", "1k", "--gpus", "zero"], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        "Error: --gpus 'zero': give a number of GPUs (1 or more) or 'all'"]
    assert not (tmp_path / "r").exists()


def test_the_launcher_stops_the_world_when_a_rank_dies_and_names_it():
    """A dead peer leaves the others waiting in NCCL forever: the launcher kills them and says which
    rank died (plain processes here, as the launcher starts them)."""
    lines = []
    body = "import os, sys, time; r = int(os.environ['RANK']); {}"
    t0 = time.monotonic()
    code = launch.launch(3, [], poll=0.05, say=lines.append,
                         cmd=[sys.executable, "-c", body.format("sys.exit(3) if r == 1 else time.sleep(120)")])
    assert code == 3 and time.monotonic() - t0 < 60
    assert lines == ["Error: rank 1 of 3 exited with status 3; stopped the 2 still running"]
    lines.clear()  # rank 0 done, rank 2 waiting for it forever: stopped after the grace period
    code = launch.launch(3, [], poll=0.05, grace=0.5, say=lines.append,
                         cmd=[sys.executable, "-c", body.format("time.sleep(120) if r == 2 else None")])
    assert code == 1 and lines == ["Error: rank 0 finished but rank 2 of 3 was still running 0.5 s later; "
                                   "stopped the 1 still running"]
    lines.clear()
    assert launch.launch(2, [], poll=0.05, say=lines.append, cmd=[sys.executable, "-c", "pass"]) == 0 and not lines


# ---- the collectives of the stand-in -------------------------------------------------------------

def test_stand_in_collectives_sum_in_rank_order_and_repeat_bit_for_bit():
    parts = [np.float32(1e8), np.float32(1.0), np.float32(-1e8), np.float32(1.0)]  # order decides the sum

    def body(c):
        x = np.full(3, parts[c.rank], np.float32)
        c.all_reduce(x)
        b = np.array([c.rank * 10.0], np.float64)
        c.broadcast(b, root=2)
        g = np.empty((4, 2), np.int64)
        c.all_gather(np.array([[c.rank, -c.rank]], np.int64), g)
        h = f32_to_bf16(np.array([1.0 + c.rank / 128], np.float32))
        c.all_reduce(h)
        c.barrier()
        return x, b, g, h, broadcast_json(c, {"from": c.rank} if c.rank == 0 else None)

    first, again = run_ranks(4, body), run_ranks(4, body)
    want = np.float32(np.float32(np.float32(parts[0] + parts[1]) + parts[2]) + parts[3])
    assert want != np.float32(sum(sorted(parts)))  # the order does matter here
    for (x, b, g, h, msg), (x2, *_) in zip(first, again):
        assert np.array_equal(x, np.full(3, want)) and np.array_equal(x, x2)
        assert b[0] == 20.0 and np.array_equal(g[:, 0], np.arange(4)) and msg == {"from": 0}
        assert bf16_to_f32(h)[0] == pytest.approx(4 + 6 / 128, abs=2 ** -5)
    s = Solo()
    y = np.ones(2, np.float32)
    s.all_reduce(y)
    s.broadcast(y)
    assert np.array_equal(y, np.ones(2)) and (s.rank, s.size) == (0, 1)


def test_a_failing_rank_fails_the_world_instead_of_hanging():
    def body(c):
        if c.rank == 1:
            raise ValueError("rank 1 broke")
        c.barrier()

    with pytest.raises(ValueError, match="rank 1 broke"):
        run_ranks(3, body, timeout=60)


# ---- data-parallel training ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data") / "sample"
    prepare([str(SAMPLE_DUMP)], d, PrepareOptions(val_fraction=0.1, test_fraction=0.1))
    return d


def run_world(n, data_dir, run_dir, cfg=CFG, **kw):
    """train() on a stand-in world of n; ranks > 0 get their own --out, which must stay unwritten."""
    out = run_ranks(n, lambda c: train(data_dir, run_dir if c.rank == 0 else run_dir.parent / f"rank{c.rank}", cfg,
                                       TC, comm=c, **QUIET, **kw))
    for r in range(1, n):
        assert not (run_dir.parent / f"rank{r}").exists()
    return out


def reader_of(run_dir):
    model, _, _ = load_model(run_dir)
    return model


@pytest.fixture(scope="module")
def one(data_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("one") / "run"
    return train(data_dir, run, CFG, TC, **QUIET), reader_of(run)


@pytest.fixture(scope="module")
def two(data_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("two") / "run"
    return run_world(2, data_dir, run), run


def close(a, b, tol=1e-5):
    return np.allclose(a.reader.params, b.reader.params, rtol=0, atol=tol)


def test_two_and_four_ranks_train_the_model_one_rank_does(data_dir, tmp_path, one, two):
    """The same global batches, split over ranks: the same reader within float32 rounding (the
    gradient's sums run in another order), the memory bit for bit (rank 0 counts as one process
    does), and rank 0 alone writes a run directory that a one-process eval reads."""
    s1, m1 = one
    for n in (2, 4):
        out, run = two if n == 2 else (run_world(n, data_dir, tmp_path / f"w{n}"), tmp_path / f"w{n}")
        s, m = out[0], reader_of(run)
        assert [o["reader_steps"] for o in out[1:]] == [s["reader_steps"]] * (n - 1) == [s1["reader_steps"]] * (n - 1)
        assert m.reader.step == m1.reader.step > 50
        assert close(m, m1) and not np.array_equal(m.reader.params, m1.reader.params * 0)
        assert np.array_equal(m.memory.tables, m1.memory.tables) and np.array_equal(m.memory.params, m1.memory.params)
        assert s["val_bpb"] == pytest.approx(s1["val_bpb"], abs=1e-6)
        for o in out[1:]:  # every rank ends with the same reader
            assert np.array_equal(o["reader"].params, m.reader.params)
        model, history, _ = load_model(run)  # as eval, sample and chat read it
        assert 0 < stream_bpb(model, history, np.frombuffer(b"The lighthouse keeper", np.uint8))["bpb"] < 8


def test_the_stand_in_world_repeats_bit_for_bit(data_dir, tmp_path, two):
    run_world(2, data_dir, tmp_path / "b")
    a, b = reader_of(two[1]), reader_of(tmp_path / "b")
    assert np.array_equal(a.reader.params, b.reader.params) and np.array_equal(a.reader.mix, b.reader.mix)


def test_resume_with_another_world_size_continues_as_straight(data_dir, tmp_path, one):
    """Stopped mid-reader with 2 ranks and resumed with 1, and the other way round: the checkpoint
    holds every lane's scan state, the global step and the data cursor, so both end where an
    uninterrupted run does (within float32 rounding)."""
    s1, m1 = one
    run_world(2, data_dir, tmp_path / "two_one", stop_after_reader_steps=40)
    mid, _, _ = load_model(tmp_path / "two_one")
    assert mid.reader.step == 40
    s = train(data_dir, tmp_path / "two_one", None, TC, resume=True, **QUIET)
    train(data_dir, tmp_path / "one_two", CFG, TC, stop_after_reader_steps=40, **QUIET)
    out = run_ranks(2, lambda c: train(data_dir, tmp_path / "one_two" if c.rank == 0 else tmp_path / "x", None, TC,
                                       resume=True, comm=c, **QUIET))
    assert out[1]["reader_steps"] == m1.reader.step - 40
    for run, summary in (("two_one", s), ("one_two", out[0])):
        m = reader_of(tmp_path / run)
        assert m.reader.step == m1.reader.step and close(m, m1)
        assert summary["val_bpb"] == pytest.approx(s1["val_bpb"], abs=1e-6)


def test_a_batch_that_does_not_split_and_a_run_without_reader_release_the_other_ranks(data_dir, tmp_path):
    with pytest.raises(TrainError, match="8 lanes .* do not split evenly over 3 processes"):
        run_world(3, data_dir, tmp_path / "three")
    memory_only = ModelConfig(**{**CFG.__dict__, "reader": {"on": False}})
    out = run_world(2, data_dir, tmp_path / "mem", cfg=memory_only)
    assert out[1] == {"rank": 1, "reader_steps": 0} and out[0]["val_bpb"] is not None


# ---- the table's gradient as touched rows -----------------------------------------------------------

def test_touched_rows_are_listed_once_in_reading_order_moved_out_and_added_back():
    rng = np.random.default_rng(3)
    rows = rng.integers(0, 30, (9, 4)).astype(np.int64)  # repeats
    grad = np.zeros((30, 3), np.float32)
    grad[np.unique(rows)] = rng.standard_normal((len(np.unique(rows)), 3))
    before, marks = grad.copy(), np.zeros(30, np.int32)
    ids, vals = np.full(40, 7, np.int64), np.full((40, 3), 5.0, np.float32)
    table_rows.take_rows(rows, marks, grad, ids, vals)
    first = list(dict.fromkeys(rows.ravel().tolist()))  # position, then slot
    n = len(first)
    assert ids[:n].tolist() == first and np.all(ids[n:] == -1)
    assert np.array_equal(vals[:n], before[first]) and not vals[n:].any()
    assert not grad.any() and not marks.any()
    table_rows.add_rows(ids, vals, grad)
    table_rows.add_rows(ids[:0], vals[:0], grad)  # an empty list
    assert np.array_equal(grad, before)
    with pytest.raises(ValueError, match="more distinct table rows than the 5"):
        table_rows.take_rows(rows, marks, grad, ids[:5], vals[:5])
    assert not marks.any()


def test_the_touched_rows_bound_is_each_slot_kinds_rows_or_its_part_of_the_table():
    m = small_model({**SMALL, "batch": 64})
    cfg = m.reader.cfg
    assert cfg.match_inputs > 0 and cfg.slots == cfg.window + len(cfg.contexts) + cfg.match_inputs + 1
    assert touched_rows_max(cfg, 1) == cfg.slots and touched_rows_max(cfg, 3) == 3 * cfg.slots - 2
    assert touched_rows_max(cfg, 10**9) == blocks(cfg)[0][1][0]  # the regions make up the whole table
    data = text(3000, seed=4)
    prev = pointers(m, data)
    for n in (1, 64, 2000):
        pos = np.arange(900, 900 + n, dtype=np.int64)
        ws = m.reader.forward(data, pos, m.match.args(prev, 0))
        assert len(np.unique(ws["rows"])) <= touched_rows_max(cfg, n)


def test_the_exchange_sums_each_ranks_rows_in_rank_order_on_every_rank():
    """Each rank's table gradient after the exchange is g_0 + g_1 + ... (float32, rank order) of the
    ranks' own gradients, on every rank bit for bit: what the whole table's all_reduce gave."""
    data = text(3000, seed=5)
    pos = np.arange(1000, 1048, dtype=np.int64)

    def local(rank, world):
        m = small_model({**SMALL, "batch": 48}, seed=2)
        r = m.reader
        part = pos[rank * 48 // world: (rank + 1) * 48 // world]
        r.forward(data, part, m.match.args(pointers(m, data), 0), scale=1.0 / 48)
        r.backward()
        return r

    for world in (2, 3):
        mine = [local(rank, world) for rank in range(world)]
        want = np.zeros_like(mine[0].view(mine[0].grad, 0))
        for r in mine:
            want += r.view(r.grad, 0)

        def body(c):
            r = local(c.rank, world)
            listed = r._exchange_rows(c)
            return r.view(r.grad, 0).copy(), listed.ravel()

        out = run_ranks(world, body)
        assert np.any(want != 0) and all(np.array_equal(g, want) for g, _ in out)
        touched = set(np.concatenate([r.ws["rows"].ravel() for r in mine]).tolist())
        assert set(out[0][1][out[0][1] >= 0].tolist()) == touched and np.array_equal(out[0][1], out[1][1])


def test_the_volume_bench_counts_the_whole_buffer_for_a_and_the_padded_lists_for_b():
    """bench/multi_gpu_volume.py at the GPU default (x5): the whole-gradient all-reduce sends the
    flat buffer once at 2 GPUs (2 (N-1)/N = 1); the touched-rows exchange adds (N-1) lists of
    touched_rows_max rows (id + dim floats) to the dense all-reduce."""
    import importlib.util

    from cheaplm.reader import param_count

    spec = importlib.util.spec_from_file_location("multi_gpu_volume", launch.__file__.replace(
        "cheaplm/launch.py", "bench/multi_gpu_volume.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    s = bench.shapes(5.0)
    assert s["cfg"].hidden == [10240, 5120] and s["table_bytes"] + s["dense_bytes"] == 4 * param_count(s["cfg"])
    for n in (2, 8):
        v = bench.volumes(s, n)
        ring = 2 * (n - 1) / n
        message = v["a"][0] - ring * (s["table_bytes"] + s["dense_bytes"])
        assert 0 < message < 1e6
        rows = touched_rows_max(s["cfg"], s["batch"] // n)
        assert v["b"][0] == pytest.approx(message + ring * s["dense_bytes"] + (n - 1) * rows * (8 + 4 * s["dim"]))
        assert v["b"][0] < v["a"][0] / 5
