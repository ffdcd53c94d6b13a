"""The model's structure (issue 21): who may use the kernels, named blocks, the config traps, depth."""

import ast
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from cheaplm import memory
from cheaplm.kernels import match as kmatch
from cheaplm.kernels import mixer
from cheaplm.kernels.hashing import ORDER, SKIP, SPARSE, WORD
from cheaplm.model import LEGACY, Model, ModelConfig

from conftest import REPO

PACKAGE = REPO / "cheaplm"
# the model's own parts and the device module: the only package modules that may import kernels
MODEL_PARTS = {"model.py", "memory.py", "match.py", "reader.py", "reader_backend.py", "reader_host.py", "device.py"}


def _imports(path: Path) -> set:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            out.add(("." * node.level) + (node.module or ""))
            out.update(("." * node.level) + (node.module or "") + "." + a.name for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_only_the_models_parts_import_kernels():
    users = {p.name for p in PACKAGE.glob("*.py") if any("kernels" in m for m in _imports(p))}
    assert users <= MODEL_PARTS, users - MODEL_PARTS


def test_eval_sample_and_chat_do_not_import_the_trainer():
    for name in ("evaluate.py", "sample.py", "chat.py", "stream.py", "checkpoint.py"):
        assert not any(m.endswith("train") for m in _imports(PACKAGE / name)), name


def _device_comparisons(path: Path) -> int:
    n = 0
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            parts = [node.left] + list(node.comparators)
            if any(isinstance(p, ast.Constant) and p.value == "cuda" for p in parts):
                n += 1
    return n


def test_device_names_are_compared_in_device_py_only():
    found = {p.name: _device_comparisons(p) for p in PACKAGE.rglob("*.py") if p.name != "device.py"}
    assert sum(found.values()) <= 4, {k: v for k, v in found.items() if v}


def test_default_context_order_is_pinned():
    """A context's hash seed is its index in ModelConfig.contexts(): this list is what every saved
    table means. Change it only with a new checkpoint format."""
    assert ModelConfig().contexts() == (
        [(ORDER, k) for k in (0, 1, 2, 3, 4, 5, 6, 8, 12, 16, 24)] + [(WORD, n) for n in (1, 2, 3)]
        + [(SPARSE, 0b10), (SPARSE, 0b1100)] + [(SKIP, n) for n in (2, 3, 4, 5)])
    ctx = memory.context_array(ModelConfig(table_bits=12))
    assert [tuple(r[:2]) for r in ctx] == ModelConfig().contexts()


def test_every_later_field_declares_what_old_checkpoints_mean():
    """One declaration per field: its default for new runs, and (unless the first format had it)
    what a checkpoint saved before it holds. A field added without one fails here."""
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    first = set(ModelConfig.FIRST_FORMAT)
    assert first <= names
    assert set(LEGACY) == names - first
    old = ModelConfig.from_dict({**LEGACY, **{k: getattr(ModelConfig(), k) for k in first}})
    assert old.selectors == ["seen"] and old.reader == {"on": False} and not old.match_each


def test_mixer_blocks_are_named_laid_end_to_end_and_match_the_layout():
    cfg = ModelConfig(table_bits=10, match_bits=10)
    spec = cfg.match_spec()
    blocks = memory.mixer_blocks(cfg, spec)
    at = memory.block_offsets(blocks)
    lay = memory.param_layout(cfg, spec)
    assert [n for n, _ in blocks][:4] == [f"selector:{s}" for s in cfg.selectors]
    assert lay[mixer.L_P] == sum(size for _, size in blocks) == len(memory.init_params(cfg, spec))
    assert lay[mixer.L_SM] == at["count_maps"][0] and lay[mixer.L_ML] == at["match_maps"][0]
    for k, name in enumerate(cfg.apms):
        assert lay[mixer.L_APM + 3 * k + 1] == at[f"apm:{name}"][0]
    ends = sorted(at.values())
    assert all(a[1] == b[0] for a, b in zip(ends, ends[1:]))
    with pytest.raises(ValueError):
        memory.block_offsets([("a", 3), ("a", 4)])
    assert len(set(mixer.LAYOUT_SLOTS)) == len(mixer.LAYOUT_SLOTS) == mixer.L_LEN
    assert len(set(kmatch.SPEC_SLOTS)) == kmatch.SPEC_LEN
    arr = spec.array()
    assert arr[kmatch.M_CAP] == cfg.match_cap and arr[kmatch.M_STATES] == spec.states
    assert list(arr[kmatch.M_REC: kmatch.M_REC + arr[kmatch.M_NREC]]) == cfg.match_recency


SMALL_READER = {"on": True, "batch": 64, "scan": 8, "scan_chunk": 8, "hidden": [16, 8], "dim": 4, "ctx_bits": 8,
                "window": 3}


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_scan_layers_is_a_number(layers):
    cfg = ModelConfig.from_dict({"table_bits": 10, "match_bits": 12, "reader": {**SMALL_READER, "scan_layers": layers}})
    model = Model(cfg)
    r = model.reader
    names = [b[0] for b in r.blocks]
    assert sum(n.startswith("scan") and n.endswith("_in") for n in names) == layers
    assert r.new_state(4).shape == (4, 8 * layers)
    rng = np.random.default_rng(layers)
    data = rng.integers(97, 123, 600).astype(np.uint8)
    prev = model.match.pointers(len(data))
    model.match.index(data, 0, len(data), prev, 0, last_pos=model.match.last_pos.copy())
    pos = (np.array([50, 300])[:, None] + np.arange(32)).ravel().astype(np.int64)
    state = r.new_state(2)
    r.forward(data, pos, model.match.args(prev, 0), scale=1.0 / len(pos), state=state)
    r.backward()
    for k, (name, shape, _) in enumerate(r.blocks):
        if name.startswith("scan"):
            assert np.abs(r.view(r.grad, k)).max() > 0, f"{name} got no gradient"
    assert np.abs(state[:, -8:]).max() > 0  # the last layer's state moved


def test_two_scan_layers_from_a_config_file_train_resume_and_generate(tmp_path):
    """{"model": {"reader": {"scan_layers": 2}}} through the CLI's --config: trains, checkpoints,
    resumes and generates on the CPU."""
    from click.testing import CliRunner

    from cheaplm.checkpoint import load_model
    from cheaplm.cli import main
    from cheaplm.sample import Generator, Sampling, generate
    from cheaplm.shards import write_raw_split_dir

    rng = np.random.default_rng(0)
    words = [b"the ", b"light ", b"house ", b"keeper ", b"sea ", b"ship ", b"night ", b"of ", b"a "]
    text = b"".join(words[i] for i in rng.integers(0, len(words), 9000))
    write_raw_split_dir(tmp_path / "d", {"train": text[:40000], "val": text[40000:42000]}, "t")
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"model": {"table_bits": 10, "match_bits": 12,
                                          "reader": {**SMALL_READER, "scan_layers": 2}},
                                "train": {"bytes": 40000, "batch": 128, "count_chunk": 4096}}))
    run = tmp_path / "run"
    args = ["train", str(tmp_path / "d"), "--out", str(run), "--device", "cpu", "--config", str(conf)]
    res = CliRunner().invoke(main, args + ["--checkpoint-minutes", "0"])
    assert res.exit_code == 0, res.output
    model, history, _ = load_model(run)
    assert model.reader.cfg.scan_layers == 2 and "scan1_in" in model.reader.k
    g = Generator(model, history)
    g.feed(b"the light")
    drawn_from = g.t
    out = "".join(generate(g, np.random.default_rng(1), 40, Sampling(temperature=0.5)))
    assert g.t - drawn_from >= 40 and len(out.encode()) <= 44  # drawn to the limit, shown up to a word end
    res = CliRunner().invoke(main, args + ["--resume"])
    assert res.exit_code == 0 and "finished" in res.output
