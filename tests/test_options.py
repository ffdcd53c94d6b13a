"""Options that do what they say (issue 11): device defaults owned by the library, train's --config merged
with the flags, a checkpoint directory accepted as RUN_DIR, --resume of a finished run, the licence metadata."""

from pathlib import Path

from cheaplm.model import ModelConfig

REPO = Path(__file__).resolve().parent.parent


def test_the_library_owns_the_device_defaults():
    assert ModelConfig.for_device("cpu").table_bits == 20 == ModelConfig().table_bits
    assert ModelConfig.for_device("cuda").table_bits == 24
    assert ModelConfig.for_device("cuda", {"table_bits": 18, "words": 2}).table_bits == 18
    assert ModelConfig.for_device("cuda", {"words": 2}).words == 2
    # the callers ask the library (the CLI through train.run_configs) instead of repeating the number
    for caller in ("cheaplm/cli.py", "bench/wikibench.py"):
        assert "24 if" not in (REPO / caller).read_text(), caller
    assert "ModelConfig.for_device" in (REPO / "bench/wikibench.py").read_text()


# --- train's options: flags over the --config file over the defaults, in one merge (train.run_configs)

import json  # noqa: E402

import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from cheaplm.cli import main  # noqa: E402
from cheaplm.options import read_config  # noqa: E402
from cheaplm.shards import write_raw_split_dir  # noqa: E402
from cheaplm.train import TrainConfig, run_configs  # noqa: E402

# a model small enough to train in a second on the CPU (tests/test_sample.py's, without the reader)
TINY = {"orders": [0, 1, 2, 3, 4, 6], "words": 2, "sparse": [2], "table_bits": 12, "match_bits": 14, "apm2_bits": 6,
        "reader": {"on": False}}
FILE_TRAIN = {"lr": 0.001, "seed": 7, "warmup": 10, "tail_passes": 2}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("opts")
    text = (REPO / "data" / "sample-pages-articles.xml").read_bytes()[:40_000]
    write_raw_split_dir(d / "data", {"train": text, "val": text[:2000], "test": text[2000:4000]}, "options test data")
    return d / "data"


def write_config(path, cfg):
    path.write_text(json.dumps(cfg))
    return path


def test_file_values_are_used_and_flags_win_over_them():
    model, tc = run_configs({"model": {"table_bits": 14, "words": 2}, "train": {**FILE_TRAIN, "device": "cpu"}},
                            model_flags={"words": 1}, train_flags={"seed": 3})
    assert (tc.lr, tc.seed, tc.warmup, tc.tail_passes) == (0.001, 3, 10, 2)  # file, flag, file, file
    assert (model.table_bits, model.words) == (14, 1)
    assert model.orders == ModelConfig().orders and tc.batch == TrainConfig().batch  # defaults where neither
    model, tc = run_configs(None, train_flags={"device": "cpu"})
    # the tables' size is left to the training text (ModelConfig.sized_for, in the Trainer)
    assert model == ModelConfig.for_device("cpu", {"table_bits": None, "match_bits": None}) and tc == TrainConfig(device="cpu")
    # on resume the run's own model config is used unless model options are given
    assert run_configs({"train": {"device": "cpu"}}, resume=True)[0] is None
    assert run_configs({"model": {"words": 2}, "train": {"device": "cpu"}}, resume=True)[0].words == 2


def test_the_device_defaults_come_under_the_file_and_the_flags(monkeypatch):
    import cheaplm.train as train_mod

    monkeypatch.setattr(train_mod, "pick_device", lambda name: "cuda")  # no GPU needed to resolve options
    assert run_configs(None)[0].table_bits is None  # sized to the text, at most the device's 24:
    assert run_configs(None)[0].sized_for(10**9, "cuda").table_bits == 24
    assert run_configs({"model": {"table_bits": 18}})[0].table_bits == 18
    assert run_configs({"model": {"table_bits": 18}}, model_flags={"table_bits": 16})[0].table_bits == 16


# --- a new run's sizes follow its training text (issue 24 item 6: 2.75 MB of text wrote a 621 MiB run)


def test_the_tables_and_the_reader_rows_follow_the_training_text():
    from cheaplm.model import (MIN_MATCH_BITS, MIN_READER_BITS, MIN_TABLE_BITS, TEXT_PER_MATCH_ROW,
                               TEXT_PER_READER_ROW, TEXT_PER_ROW)
    from cheaplm.reader import ReaderConfig

    open_ = ModelConfig(table_bits=None, match_bits=None)
    for device in ("cpu", "cuda"):
        full = (ModelConfig.for_device(device).table_bits, ModelConfig.for_device(device).match_bits,
                ReaderConfig.for_device(device).ctx_bits)
        texts = (0, 26_000, 2_750_701, 154_850_983, 2**31)  # nothing, the sample, the 2.75 MB dump, wikibench
        sizes = [(c.table_bits, c.match_bits, c.reader["ctx_bits"]) for c in (open_.sized_for(n, device) for n in texts)]
        # wikibench's train split (154,850,983 bytes): the defaults of before, unchanged (a GPU's 24 / 22 / 20)
        assert sizes[3] == sizes[4] == full == ((24, 22, 20) if device == "cuda" else (20, 22, 16))
        # the small dump: the CPU's 2^20 table rows (2^18 cost 0.026 bpb), half the match rows, 1/4
        # (CPU) or 1/64 (GPU) of the reader's (bench/RESULTS.md, "measured part by part")
        assert sizes[2] == (20, 21, 14)
        assert sizes[0] == sizes[1] == (MIN_TABLE_BITS, MIN_MATCH_BITS, MIN_READER_BITS)  # the floor
        assert all(sorted(col) == list(col) for col in zip(*sizes))  # more text never gets fewer rows
    for n in (10**6, 3 * 10**6):  # below the caps: a row per TEXT_PER_ROW text bytes, and so on
        c = open_.sized_for(n, "cuda")
        assert 2 ** c.table_bits >= n / TEXT_PER_ROW > 2 ** (c.table_bits - 1)
        assert 2 ** c.match_bits >= n / TEXT_PER_MATCH_ROW > 2 ** (c.match_bits - 1)
        assert 2 ** c.reader["ctx_bits"] >= n / TEXT_PER_READER_ROW > 2 ** (c.reader["ctx_bits"] - 1)
    n = 10**7
    assert open_.sized_for(n, "cpu").table_bits == 20  # the CPU's 20 caps 10 MB's 22
    # a reader turned off gets no rows; a model can only be built from a sized config
    assert "ctx_bits" not in ModelConfig(table_bits=None, reader={"on": False}).sized_for(10**6, "cpu").reader
    with pytest.raises(ValueError, match="sized_for"):
        open_.table_rows()
    with pytest.raises(ValueError, match="sized_for"):
        ModelConfig(match_bits=None).match_spec()


def test_given_sizes_win_over_the_text():
    sized = lambda m: m.sized_for(2_750_701, "cpu")  # noqa: E731
    flag, _ = run_configs(None, model_flags={"table_bits": 20}, train_flags={"device": "cpu"})
    assert (sized(flag).table_bits, sized(flag).reader["ctx_bits"]) == (20, 14)  # --table-bits 20
    file, _ = run_configs({"model": {"table_bits": 19, "reader": {"ctx_bits": 16}}}, train_flags={"device": "cpu"})
    assert (sized(file).table_bits, sized(file).reader["ctx_bits"]) == (19, 16)  # a --config file's
    both, _ = run_configs({"model": {"table_bits": 19}}, model_flags={"table_bits": 17}, train_flags={"device": "cpu"})
    assert sized(both).table_bits == 17
    assert sized(flag).match_bits == 21  # the match index left open: sized to the text
    kept, _ = run_configs({"model": {"match_bits": 22}}, train_flags={"device": "cpu"})
    assert (sized(kept).table_bits, sized(kept).match_bits) == (20, 22)  # given in a --config: kept


# TINY with its sizes left to the text: table_bits null (as a --config may say) and a reader small
# enough for the tests without ctx_bits
OPEN_SIZES = {**TINY, "table_bits": None,
              "reader": {"on": True, "window": 2, "dim": 4, "hidden": [8], "batch": 64, "scan": 0}}


def test_a_new_run_stores_the_sizes_for_its_text_and_reloads_with_them(data_dir, tmp_path):
    from cheaplm.checkpoint import load_model
    from cheaplm.model import MIN_READER_BITS, MIN_TABLE_BITS, Model
    from cheaplm.train import TrainError, train

    cfg = write_config(tmp_path / "cfg.json", {"model": OPEN_SIZES, "train": {"batch": 256, "count_chunk": 2048}})
    written = {}
    for name, flags in (("sized", []), ("given", ["--table-bits", "17"])):
        run = tmp_path / name
        result = CliRunner().invoke(main, ["train", str(data_dir), "--out", str(run), "--bytes", "20K", "--device",
                                           "cpu", "--config", str(cfg), *flags])
        assert result.exit_code == 0, result.output
        written[name] = w = json.loads((run / "config.json").read_text())["model"]
        assert f"table_bits {w['table_bits']}," in result.output  # the log says the size chosen
        model, _, _ = load_model(run, "cpu")  # the checkpoint loads with the sizes it was saved with
        assert (model.cfg.table_bits, model.reader.cfg.ctx_bits) == (w["table_bits"], w["reader"]["ctx_bits"])
        assert model.memory.tables.shape[0] == model.cfg.table_rows()
    assert (written["sized"]["table_bits"], written["sized"]["reader"]["ctx_bits"]) == (MIN_TABLE_BITS, MIN_READER_BITS)
    assert (written["given"]["table_bits"], written["given"]["reader"]["ctx_bits"]) == (17, MIN_READER_BITS)
    # loading never sizes: a saved reader without ctx_bits (stored before runs resolved it) gets the
    # device's default, as it did when it was saved
    assert Model(ModelConfig.from_dict({**TINY, "reader": OPEN_SIZES["reader"]})).reader.cfg.ctx_bits == 16
    # resume: the run's own options, left open, are resolved for the same text and accepted; others refused
    run = tmp_path / "resumed"
    train(data_dir, run, ModelConfig.from_dict(OPEN_SIZES), tiny_tc(), log=lambda *a: None, stop_after_steps=3)
    with pytest.raises(TrainError, match="model options differ"):
        train(data_dir, run, ModelConfig.from_dict({**OPEN_SIZES, "table_bits": 17}), tiny_tc(), resume=True,
              log=lambda *a: None)
    done = train(data_dir, run, ModelConfig.from_dict(OPEN_SIZES), tiny_tc(), resume=True, log=lambda *a: None)
    assert done["stopped"] is None and load_model(run, "cpu")[0].cfg.table_bits == MIN_TABLE_BITS


@pytest.mark.parametrize("cfg, needle", [
    ({"train": {"lrr": 0.1}}, "unknown train option(s): lrr"),
    ({"model": {"tablebits": 12}}, "unknown model option(s): tablebits"),
    ({"trian": {}}, "unknown section(s) trian"),
    ({"train": {"lr": "fast"}}, "train option lr: 'fast' is not float"),
    ({"train": {"seed": 1.5}}, "train option seed: 1.5 is not int"),
    ({"train": {"device": "gpu"}}, "train option device: 'gpu'"),
    ({"train": [1]}, "'train' must be a JSON object"),
])
def test_a_bad_config_key_is_an_error_naming_it(tmp_path, cfg, needle):
    path = write_config(tmp_path / "cfg.json", cfg)
    with pytest.raises(ValueError) as exc:
        run_configs(read_config(path))
    assert needle in str(exc.value)
    result = CliRunner().invoke(main, ["train", str(tmp_path), "--out", str(tmp_path / "run"), "--bytes", "10K",
                                       "--config", str(path)])
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and needle in last and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_train_uses_the_file_and_writes_the_resolved_config(data_dir, tmp_path):
    cfg = write_config(tmp_path / "cfg.json", {"model": TINY, "train": {**FILE_TRAIN, "batch": 256,
                                                                        "count_chunk": 2048}})
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(data_dir), "--out", str(run), "--bytes", "20K", "--device", "cpu",
                                       "--config", str(cfg), "--seed", "3"])
    assert result.exit_code == 0, result.output
    written = json.loads((run / "config.json").read_text())
    t = written["train"]
    assert (t["lr"], t["seed"], t["warmup"], t["tail_passes"]) == (0.001, 3, 10, 2)
    assert (t["bytes"], t["batch"], t["count_chunk"], t["device"]) == (20_000, 256, 2048, "cpu")
    assert t["holdout_fraction"] > 0 and t["holdout_max"] > 0  # resolved, not the 0 = "the device's" of the dataclass
    assert {k: written["model"][k] for k in TINY} == TINY
    # the run's config.json is a config: passed back it gives the same run
    model, tc = run_configs(read_config(run / "config.json"))
    assert json.loads(model.to_json()) == written["model"] and tc.resolved("cpu") == TrainConfig(**t)


# --- eval, sample and chat read a given checkpoint, not only the latest


def tiny_tc(**kw):
    return TrainConfig(**{"device": "cpu", "bytes": 20_000, "batch": 256, "count_chunk": 2048, "log_seconds": 1e9,
                          "val_seconds": 1e9, "checkpoint_minutes": 0, **kw})


@pytest.fixture(scope="module")
def two_checkpoints(data_dir, tmp_path_factory):
    """A finished run with two checkpoints: one part way, and the final one."""
    from cheaplm.train import train

    run = tmp_path_factory.mktemp("ck") / "run"
    train(data_dir, run, ModelConfig.from_dict(TINY), tiny_tc(), log=lambda *a: None, stop_after_steps=3)
    first = run / (run / "latest").read_text().strip()
    train(data_dir, run, None, tiny_tc(), resume=True, log=lambda *a: None)
    last = run / (run / "latest").read_text().strip()
    assert first != last and first.is_dir()
    return run, first, last


def test_a_checkpoint_directory_is_accepted_where_a_run_directory_is(data_dir, two_checkpoints):
    from cheaplm.checkpoint import find_checkpoint

    run, first, last = two_checkpoints
    assert find_checkpoint(run) == last and find_checkpoint(first) == first and find_checkpoint(last) == last
    scores = {}
    for path in (run, first, last):
        result = CliRunner().invoke(main, ["eval", str(path), str(data_dir), "--split", "val", "--device", "cpu"])
        assert result.exit_code == 0, result.output
        assert f"{(first if path == first else last).name} on" in result.output  # the checkpoint it scored
        scores[path] = float(result.output.strip().splitlines()[-1])
    assert scores[run] == scores[last] != scores[first]
    result = CliRunner().invoke(main, ["sample", str(first), "--prompt", "The", "--max-bytes", "20", "--seed", "1"])
    assert result.exit_code == 0 and "The" in result.output, result.output


def test_a_missing_checkpoint_names_the_ones_there(data_dir, two_checkpoints):
    run, first, last = two_checkpoints
    gone = run / "ckpt-00009999"
    for args in (["eval", str(gone), str(data_dir), "--split", "val"], ["sample", str(gone), "--prompt", "A"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        line = result.output.strip().splitlines()[-1]
        assert line.startswith(f"Error: {gone}: no such checkpoint") and first.name in line and last.name in line
        assert "cheaplm train" not in line  # the old hint said to train into the checkpoint's path


# --- --resume of a finished run


def files_of(run):
    return {str(p.relative_to(run)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_resume_of_a_finished_run_says_so_and_writes_nothing(data_dir, tmp_path):
    from cheaplm.train import train

    run = tmp_path / "run"
    done = train(data_dir, run, ModelConfig.from_dict(TINY), tiny_tc(), log=lambda *a: None)
    before = files_of(run)
    result = CliRunner().invoke(main, ["train", str(data_dir), "--out", str(run), "--resume", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "the run is finished" in lines[0] and "nothing to do" in lines[0], result.output
    again = train(data_dir, run, None, tiny_tc(), resume=True, log=lambda *a: None)
    assert again["finished"] and again["steps"] == done["steps"] and again["counted_bytes"] == done["counted_bytes"]
    assert files_of(run) == before  # model.npz, state.npz, history.bin, metrics.jsonl, latest: untouched


# --- packaging: pip install printed "`project.license` as a TOML table is deprecated" three times


def test_pyproject_license_is_an_spdx_string_setuptools_takes_without_a_warning():
    """The licence is a PEP 639 SPDX string (the table form made pip warn three times), and the build
    asks for a setuptools that reads it (pip builds in an isolated environment with that setuptools;
    the test environment's own may be older, as in a fresh CI venv: then only the text is checked)."""
    import tomllib
    import warnings

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    assert "setuptools>=77" in project["build-system"]["requires"]
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        return
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), REPO / "pyproject.toml")
    assert not [w for w in caught if "license" in str(w.message).lower()], [str(w.message) for w in caught]
    assert dist.metadata.license_expression == "MIT"


def test_resume_with_the_run_s_own_model_options_is_accepted_and_others_refused(tmp_path):
    """A run with a reader stores its reader options resolved; --resume with model options compared
    them unresolved, so any model option on --resume was 'different'."""
    import dataclasses

    from cheaplm.train import TrainError, train
    from cheaplm.shards import write_raw_split_dir
    import numpy as np
    from test_hardening_train import CFG_READER, quiet, small_tc

    rng = np.random.default_rng(0)
    words = [b"river", b"stone", b"bridge", b"the", b"of", b"harbour"]
    text = b" ".join(words[i] for i in rng.integers(0, len(words), 5000))
    data = tmp_path / "data"
    write_raw_split_dir(data, {"train": text[:24_000], "val": text[24_000:26_000]}, "resume options")
    run = tmp_path / "run"
    train(data, run, CFG_READER, small_tc(), log=quiet, stop_after_steps=3)
    other = dataclasses.replace(CFG_READER, table_bits=CFG_READER.table_bits + 1)
    with pytest.raises(TrainError, match="model options differ"):
        train(data, run, other, small_tc(), resume=True, log=quiet)
    resumed = train(data, run, CFG_READER, small_tc(), resume=True, log=quiet)
    assert resumed["stopped"] is None
