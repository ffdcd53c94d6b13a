"""Issue 12, training side: a signal during a checkpoint write (item 2), two trains into one run
directory (item 4), NaN or damaged parameters in a checkpoint (item 8)."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from cheaplm import checkpoint
from cheaplm.checkpoint import CheckpointError, load_model
from cheaplm.model import Model, ModelConfig
from cheaplm.shards import write_raw_split_dir
from cheaplm.train import TrainConfig, TrainError, train

from conftest import REPO

# memory only: the tests here are about the run directory, not the reader
CFG = ModelConfig(orders=[0, 1, 2, 3], words=1, sparse=[0b10], skips=[2], table_bits=12, match_bits=14, apm2_bits=6,
                  reader={"on": False})
# a tiny reader, for its arrays in a checkpoint
CFG_READER = ModelConfig(orders=[0, 1, 2], words=1, sparse=[], skips=[], table_bits=10, match_bits=10, apm2_bits=6,
                         reader={"on": True, "window": 2, "dim": 4, "ctx_bits": 6, "hidden": [8], "batch": 64})


def small_tc(**kw):
    base = dict(device="cpu", bytes=20_000, batch=256, count_chunk=2048, lr=0.01, log_seconds=1e9,
                val_seconds=1e9, checkpoint_minutes=0)
    base.update(kw)
    return TrainConfig(**base)


def quiet(*a):
    pass


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    words = [b"river", b"stone", b"bridge", b"the", b"of", b"lighthouse", b"harbour", b"north", b"built", b"in"]
    rng = np.random.default_rng(0)
    text = b" ".join(words[i] for i in rng.integers(0, len(words), 5000))
    d = tmp_path_factory.mktemp("hardening-train") / "data"
    write_raw_split_dir(d, {"train": text[:24_000], "val": text[24_000:26_000], "test": text[26_000:28_000]}, "test data")
    return d


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "cheaplm.cli", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)


def one_line_error(proc, needle):
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and needle in last, proc.stderr
    assert "Traceback" not in proc.stderr


def saved_run(run, cfg=CFG, steps=(1,)):
    model = Model(cfg, device="cpu")
    history = np.frombuffer(b"the river and the stone bridge " * 40, np.uint8)
    for step in steps:
        checkpoint.save(run, model, {"step": step}, history)
    return model, history


# ---- item 8: NaN or damaged parameters -----------------------------------------------------------

def rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    np.savez(path, **arrays)


@pytest.mark.parametrize("key,value", [("params", np.nan), ("params", np.inf), ("reader_params", np.nan),
                                       ("reader_mix", -np.inf)])
def test_a_checkpoint_with_non_finite_parameters_is_refused(tmp_path, key, value):
    run = tmp_path / "run"
    saved_run(run, CFG_READER)
    path = run / "ckpt-00000001" / "model.npz"
    with np.load(path) as z:
        arr = z[key].copy()
    arr.reshape(-1)[arr.size // 2] = value
    rewrite(path, **{key: arr})
    with pytest.raises(CheckpointError, match=f"'{key}' holds 1 NaN or infinite values") as err:
        load_model(run)
    assert "\n" not in str(err.value)


def test_a_damaged_match_index_or_table_dtype_is_refused(tmp_path):
    run = tmp_path / "run"
    saved_run(run)
    path = run / "ckpt-00000001" / "model.npz"
    with np.load(path) as z:
        last_pos, rows8 = z["last_pos"].copy(), z["tables_u8"]
    bad = last_pos.copy()
    bad[0, 5] = 10**9
    rewrite(path, last_pos=bad)
    with pytest.raises(CheckpointError, match="match index points outside"):
        load_model(run)
    rewrite(path, last_pos=last_pos, tables_u8=rows8.astype(np.float32))
    with pytest.raises(CheckpointError, match="the config needs uint8"):
        load_model(run)
    rewrite(path, tables_u8=rows8)
    load_model(run)


def test_eval_of_a_nan_checkpoint_is_one_error_line(data_dir, tmp_path):
    run = tmp_path / "run"
    saved_run(run)
    path = run / "ckpt-00000001" / "model.npz"
    with np.load(path) as z:
        params = z["params"].copy()
    params[:] = np.nan
    rewrite(path, params=params)
    one_line_error(run_cli("eval", str(run), str(data_dir)), "NaN or infinite")


NAN_FORWARD = textwrap.dedent("""
    import json, sys
    import numpy as np
    from cheaplm.kernels import mixer, reader_ops
    from cheaplm.model import Model, ModelConfig

    model = Model(ModelConfig.from_dict(json.loads(sys.argv[1])), device="cpu")
    lay, n_p = model.memory.lay, model.memory.n_params
    params = np.full(n_p, np.nan, np.float32)  # every mixer output NaN
    n_ctx, n_mi = int(lay[mixer.L_NCTX]), int(lay[mixer.L_NMI])
    n_sel, n_apm = int(lay[mixer.L_NSEL]), int(lay[mixer.L_NAPM])
    cand = np.zeros((n_mi, 2), np.int64)
    cand[:, 0] = -1
    bad = []
    for j in range(8):
        idx = np.zeros(mixer.idx_width(n_sel, n_apm, n_mi), np.int64)
        z, zf, slope, f = mixer.mix_node(j, np.int64(1 << j), -1, np.arange(n_ctx, dtype=np.int64), cand,
                                         np.int64(0x6874), model.memory.ctx, model.memory.tables, params, lay,
                                         np.zeros(int(lay[mixer.L_K]), np.float32), np.zeros(n_ctx, np.int64),
                                         idx, np.zeros(n_sel, np.float32))
        apm = idx[n_sel + 1 + 2 * n_mi:]
        bad += [int(a) for a in apm if not 0 <= a < n_p - 1]
    w = np.zeros((8 * 16, 3), np.float32)
    rows = [reader_ops.mix_bit(zm, zr, j, w)[1] for j in range(8)
            for zm, zr in ((np.nan, 1.0), (1.0, np.nan), (np.nan, np.inf), (-np.inf, 0.5))]
    bad += [int(r) for r in rows if not 0 <= r < 128]
    print(json.dumps({"bad": bad}))
""")


def test_a_nan_parameter_indexes_in_bounds(tmp_path):
    """A NaN logit picked an APM knot (and a NaN/inf reader or memory logit a mix row) far out of
    bounds: eval segfaulted. Checked with bounds checks on, in a child (a crash must not end the
    tests) with its own kernel cache (bounds-checked code must not land in the shared one)."""
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    proc = subprocess.run([sys.executable, "-c", NAN_FORWARD, CFG.to_json()], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"bad": []}


# ---- item 4: one run directory, one train --------------------------------------------------------

def test_a_second_train_into_the_same_run_directory_is_refused(data_dir, tmp_path):
    run = tmp_path / "run"
    started, release = threading.Event(), threading.Event()
    result = {}

    def held_log(*a):
        started.set()
        release.wait(120)

    def first():
        try:
            result["summary"] = train(data_dir, run, CFG, small_tc(), log=held_log)
        except BaseException as exc:  # reported by the asserts below
            result["error"] = exc

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert started.wait(120), result
        with pytest.raises(TrainError, match=re.escape(str(run)) + ".*another cheaplm train") as err:
            train(data_dir, run, CFG, small_tc(), log=quiet)
        assert f"pid {os.getpid()}" in str(err.value)
        with pytest.raises(TrainError, match="another cheaplm train"):
            train(data_dir, run, None, small_tc(), resume=True, log=quiet)
        proc = run_cli("train", str(data_dir), "--out", str(run), "--bytes", "20000", "--reader", "off",
                       "--device", "cpu", "--table-bits", "12")
        one_line_error(proc, f"{run}: another cheaplm train")
    finally:
        release.set()
        thread.join(300)
    assert result.get("summary", {}).get("stopped", "no summary") is None, result
    # the first run's directory is whole and unlocked again: it resumes (and is finished)
    again = train(data_dir, run, None, small_tc(), resume=True, log=quiet)
    assert again["losses"] == [] and again["steps"] == result["summary"]["steps"]


def test_a_refused_or_failed_start_leaves_no_directory(data_dir, tmp_path):
    with pytest.raises(TrainError, match="budget"):
        train(data_dir, tmp_path / "a" / "run", CFG, small_tc(bytes=None), log=quiet)
    assert not (tmp_path / "a" / "run").exists()
    with pytest.raises(TrainError, match="no such run directory"):
        train(data_dir, tmp_path / "b", None, small_tc(), resume=True, log=quiet)
    assert not (tmp_path / "b").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(TrainError, match="exists and is not a directory"):
        train(data_dir, tmp_path / "file", CFG, small_tc(), log=quiet)


# ---- item 2: a signal during the checkpoint write ------------------------------------------------

class Interrupted(Exception):
    pass


@pytest.fixture
def raising_handlers():
    """SIGINT and SIGTERM raise Interrupted (not KeyboardInterrupt, which would end pytest)."""
    def handler(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, h in old.items():
        signal.signal(s, h)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_save_takes_effect_after_the_checkpoint_is_complete(tmp_path, monkeypatch, raising_handlers,
                                                                            sig):
    run = tmp_path / "run"
    model, history = saved_run(run)
    real = checkpoint._write_npz  # model.npz's writer

    def signalled(path, *a, **k):
        os.kill(os.getpid(), sig)  # arrives mid-write, before model.npz and state.npz
        return real(path, *a, **k)

    monkeypatch.setattr(checkpoint, "_write_npz", signalled)
    with pytest.raises(Interrupted, match=signal.Signals(sig).name):
        checkpoint.save(run, model, {"step": 2}, history)
    # delivered, but only once the new checkpoint was complete and named by 'latest'
    assert (run / "latest").read_text().strip() == "ckpt-00000002"
    assert not list(run.glob("*.tmp"))
    monkeypatch.setattr(checkpoint, "_write_npz", real)
    _, _, ckpt = load_model(run)
    assert ckpt.name == "ckpt-00000002" and (ckpt / "state.npz").exists()


def test_a_second_ctrl_c_during_the_final_checkpoint_does_not_lose_the_run(data_dir, tmp_path, monkeypatch,
                                                                           raising_handlers):
    import cheaplm.memory as memory_mod

    real_update, real_write = memory_mod.Memory.update, checkpoint._write_npz
    calls = {"update": 0, "write": 0}

    def update(self, step, lr):
        calls["update"] += 1
        if calls["update"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C: stop and checkpoint
        real_update(self, step, lr)

    def write(path, *a, **k):  # model.npz's writer
        calls["write"] += 1
        if calls["write"] == 1:
            os.kill(os.getpid(), signal.SIGINT)  # the second, during the final checkpoint write
        return real_write(path, *a, **k)

    monkeypatch.setattr(memory_mod.Memory, "update", update)
    monkeypatch.setattr(checkpoint, "_write_npz", write)
    run = tmp_path / "run"
    summary = train(data_dir, run, CFG, small_tc(), log=quiet)
    assert summary["stopped"] == "SIGINT" and calls["write"] == 1  # one checkpoint, the final one
    name = (run / "latest").read_text().strip()
    assert name == f"ckpt-{summary['steps']:08d}" and not list(run.glob("*.tmp"))
    monkeypatch.setattr(checkpoint, "_write_npz", real_write)
    monkeypatch.setattr(memory_mod.Memory, "update", real_update)
    load_model(run)
    resumed = train(data_dir, run, None, small_tc(), resume=True, log=quiet)
    assert resumed["stopped"] is None


def test_ctrl_c_outside_the_training_loop_is_one_line_and_exit_130(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import cheaplm.train
    from cheaplm.cli import main

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cheaplm.train, "train", interrupted)
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(tmp_path), "--out", str(run), "--bytes", "1M", "--device", "cpu"])
    assert result.exit_code == 130, result.output
    assert "Interrupted before the first checkpoint" in result.output and "Aborted" not in result.output
    saved_run(run)
    result = CliRunner().invoke(main, ["train", str(tmp_path), "--out", str(run), "--resume", "--device", "cpu"])
    assert result.exit_code == 130 and f"{run}/ckpt-00000001 is the latest complete checkpoint" in result.output


def test_bad_budget_and_option_values_are_refused(tmp_path):
    """issue 12 item 17: lr 1e6 / negative / nan, minutes nan / inf, checkpoint minutes nan were accepted;
    eval --max-bytes -1 scored the whole split; --bytes inf was an OverflowError traceback."""
    from cheaplm.train import TrainConfig, TrainError, train

    data = tmp_path / "data"
    write_raw_split_dir(data, {"train": b"the river flows into the sea. " * 100}, "tiny")
    small = ModelConfig(orders=[0, 1, 2], words=1, sparse=[], skips=[], table_bits=8, match_bits=10,
                        reader={"on": False})
    for i, kw in enumerate(({"lr": 1e6}, {"lr": -0.1}, {"lr": float("nan")}, {"minutes": float("nan")},
                            {"minutes": float("inf")}, {"checkpoint_minutes": float("nan")})):
        tc = TrainConfig(**{"device": "cpu", "bytes": 2000, "batch": 64, "count_chunk": 512, **kw})
        with pytest.raises(TrainError, match="lr|budget|checkpoint_minutes"):
            train(data, tmp_path / f"run{i}", small, tc, log=lambda *a: None)
    for args in (["eval", str(tmp_path / "run"), str(tmp_path), "--max-bytes", "-1"],
                 ["train", str(tmp_path), "--out", str(tmp_path / "r2"), "--bytes", "inf"]):
        r = subprocess.run([sys.executable, "-m", "cheaplm.cli", *args], capture_output=True, text=True)
        assert r.returncode == 2 and "Traceback" not in r.stderr and "size" in r.stderr, r.stderr
