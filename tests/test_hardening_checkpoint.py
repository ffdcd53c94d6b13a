"""Issue 12, checkpoints: arrays checked from their headers before any data is read (item 15), a
checkpoint tied to its history.bin (item 16), bad meta or training state as one error line (item
10), NaN optimizer state refused, and --checkpoint-minutes honoured on --resume (item 17)."""

import io
import shutil
import zipfile

import numpy as np
import pytest

from cheaplm import checkpoint
from cheaplm.checkpoint import CheckpointError, load_model, load_state
from cheaplm.train import train

from test_hardening_train import CFG, CFG_READER, data_dir, quiet, rewrite, saved_run, small_tc  # noqa: F401


def replace_member(path, name, header_shape, dtype="<u4"):
    """Rewrites the .npz at path with member `name` holding only an .npy header that claims
    header_shape (and a few bytes): what a small file that inflates to gigabytes looks like."""
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist() if i.filename != name + ".npy"}
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": dtype, "fortran_order": False, "shape": header_shape})
    members[name + ".npy"] = head.getvalue() + b"\0" * 64
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in members.items():
            zf.writestr(k, v)


def test_an_array_claiming_gigabytes_is_refused_from_its_header(tmp_path):
    run = tmp_path / "run"
    saved_run(run, CFG_READER)
    path = run / "ckpt-00000001" / "model.npz"
    replace_member(path, "tables_u8", (1 << 31, 32), "|u1")
    with pytest.raises(CheckpointError, match=r"'tables_u8' is uint8\[2147483648, 32\], the config needs uint8\[<="):
        load_model(run)


def test_an_unexpected_or_huge_meta_array_is_refused(tmp_path):
    run = tmp_path / "run"
    saved_run(run)
    path = run / "ckpt-00000001" / "model.npz"
    shutil.copy(path, tmp_path / "good.npz")
    replace_member(path, "extra", (1 << 30,), "<f4")
    with pytest.raises(CheckpointError, match="unexpected array 'extra'"):
        load_model(run)
    shutil.copy(tmp_path / "good.npz", path)
    replace_member(path, "meta", (1 << 30,), "<U8")
    with pytest.raises(CheckpointError, match="'meta' is not a short text"):
        load_model(run)
    shutil.copy(tmp_path / "good.npz", path)
    rewrite(path, meta=np.array("{not json"))
    with pytest.raises(CheckpointError, match="corrupt or truncated checkpoint .JSONDecodeError") as err:
        load_model(run)
    assert "\n" not in str(err.value)
    rewrite(path, meta=np.array('{"format": "cheaplm-run", "version": 1, "config": {"table_bits": "x"}}'))
    with pytest.raises(CheckpointError, match="bad model config"):
        load_model(run)


def test_a_foreign_history_is_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    saved_run(a)
    model = checkpoint.Model(CFG, device="cpu")
    other = np.frombuffer(b"a lighthouse on the north harbour" * 40, np.uint8)[: 31 * 40]
    checkpoint.save(b, model, {"step": 1}, other)
    load_model(a)
    shutil.copy(b / "history.bin", a / "history.bin")
    with pytest.raises(CheckpointError, match="not the history this checkpoint was trained on"):
        load_model(a)


def test_nan_optimizer_state_and_bad_state_json_are_refused(tmp_path):
    run = tmp_path / "run"
    saved_run(run, CFG_READER)
    model, _, ckpt = load_model(run)
    assert load_state(ckpt, model)["step"] == 1
    path = ckpt / "state.npz"
    with np.load(path) as z:
        m = z["reader_m"].copy()
    m[3] = np.nan
    rewrite(path, reader_m=m)
    with pytest.raises(CheckpointError, match="'reader_m' holds 1 NaN or infinite values"):
        load_state(ckpt, model)
    rewrite(path, reader_m=np.zeros_like(m), state=np.array("[1, 2"))
    with pytest.raises(CheckpointError, match="bad training state"):
        load_state(ckpt, model)
    rewrite(path, state=np.array("{}"), adam_m=np.zeros(3, np.float32))
    with pytest.raises(CheckpointError, match="'adam_m' is float32\\[3\\], the config needs"):
        load_state(ckpt, model)


def test_checkpoint_minutes_is_this_invocations_on_resume(data_dir, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    first = train(data_dir, run, CFG, small_tc(), log=quiet, stop_after_steps=3)
    assert first["stopped"] == "stop_after_steps"
    assert len(list(run.glob("ckpt-*"))) == 1
    # every step now writes one (kept: 50): the saved run said 0 (none but the last)
    train(data_dir, run, None, small_tc(checkpoint_minutes=1e-9, keep=50), resume=True, log=quiet)
    assert len(list(run.glob("ckpt-*"))) > 3
