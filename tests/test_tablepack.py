"""Packed count tables (issue 11): exact round trips, damaged files refused, format 1 still read,
large arrays memory-mapped copy-on-write, and a checkpoint several times smaller than dense."""

import io
import zipfile

import numpy as np
import pytest

from cheaplm import checkpoint, tablepack
from cheaplm.checkpoint import CheckpointError, load_model
from cheaplm.model import Model

from test_hardening_train import CFG, rewrite, saved_run  # noqa: F401


def mixed_table(rows=5000, seed=0):
    """Rows of every class, with the values at each class's edges."""
    rng = np.random.default_rng(seed)
    t = np.zeros((rows, 32), np.uint32)
    kind = rng.integers(0, 4, rows)
    top = np.array([0, 255, 65535, 2**32 - 1], np.uint64)
    for r in np.flatnonzero(kind):
        t[r] = rng.integers(0, int(top[kind[r]]) + 1, 32, dtype=np.uint64)
        t[r, rng.integers(32)] = top[kind[r]]  # the class's largest value
    t[7:11] = 0
    t[8, 3], t[9, 4], t[10, 5] = 256, 65536, 1  # one past an edge: the next class
    for r in range(11, rows, 3):  # sparse byte rows: 1 to 28 counts not zero, at most 255
        t[r] = 0
        nz = 1 + r % 28
        t[r, rng.choice(32, nz, replace=False)] = rng.integers(1, 256, nz)
    t[12, 31] = 255  # a count in the last column
    return t


def classes(t):
    """The class of each row, as the module docstring defines them."""
    top, nz = t.max(axis=1), (t != 0).sum(axis=1)
    byte = np.where(nz <= tablepack.SPARSE_MOST, 4, 1)
    return np.where(top == 0, 0, np.where(top < 256, byte, np.where(top < 65536, 2, 3)))


def test_pack_then_unpack_is_exact_and_picks_the_narrowest_class():
    t = mixed_table()
    p = tablepack.pack(t)
    back = tablepack.unpack(p)
    assert back.dtype == np.uint32 and np.array_equal(back, t)
    cls = p["tables_class"]
    want = classes(t)
    assert np.array_equal(cls, want)
    assert cls[8] == 2 and cls[9] == 3 and cls[10] == 4 and cls[7] == 0
    assert {1, 2, 3, 4} <= set(cls[11:].tolist())  # 28 counts not zero: a dense byte row
    assert [len(p[k]) for k in tablepack.NAMES[1:5]] == [int((want == k).sum()) for k in (1, 2, 3, 4)]
    assert len(p["tables_sparse"]) == int((t[want == 4] != 0).sum())
    assert all(p[k].size == 0 for k in tablepack.NAMES[1:]) == (not t.any())
    # the sparse rows take 4 bytes and one a count: a table of rows seen once or twice packs small
    once = np.zeros((1000, 32), np.uint32)
    once[:, [0, 1, 3, 7]] = 1
    assert tablepack.packed_bytes(tablepack.pack(once)) == 1000 * (1 + 4 + 4)


def test_unpack_refuses_arrays_that_do_not_fit_together():
    p = tablepack.pack(mixed_table())
    bad = dict(p, tables_class=p["tables_class"].copy())
    bad["tables_class"][3] = 9
    with pytest.raises(ValueError, match="class above 4"):
        tablepack.unpack(bad)
    with pytest.raises(ValueError, match="do not match tables_class"):
        tablepack.unpack(dict(p, tables_u8=p["tables_u8"][:-1]))
    with pytest.raises(ValueError, match="do not match tables_class"):
        tablepack.unpack(dict(p, tables_mask=p["tables_mask"][:-1]))
    with pytest.raises(ValueError, match="tables_sparse holds"):
        tablepack.unpack(dict(p, tables_sparse=p["tables_sparse"][:-1]))


def test_a_checkpoint_stores_packed_tables_and_loads_them_exactly(tmp_path):
    model = Model(CFG, device="cpu")
    rng = np.random.default_rng(1)
    # a sparsely counted table, as a small corpus leaves it: most rows empty, a few large counts
    hit = rng.random(model.memory.tables.shape[0]) < 0.3
    model.memory.tables[hit] = rng.integers(0, 40, (int(hit.sum()), 32), dtype=np.uint32)
    model.memory.tables[5, 6] = 70_000
    history = np.frombuffer(b"the river and the stone bridge " * 40, np.uint8)
    ckpt = checkpoint.save(tmp_path / "run", model, {"step": 1}, history)
    with zipfile.ZipFile(ckpt / "model.npz") as zf:
        sizes = {i.filename: i.file_size for i in zf.infolist()}
    assert "tables.npy" not in sizes and {n + ".npy" for n in tablepack.NAMES} <= set(sizes)
    # 30% of the rows, at a byte a count, and a byte a row for the classes: under a tenth of dense
    assert sum(sizes[n + ".npy"] for n in tablepack.NAMES) < model.memory.tables.nbytes / 10
    loaded, _, _ = load_model(tmp_path / "run")
    assert np.array_equal(loaded.memory.tables, model.memory.tables) and loaded.memory.tables.flags.writeable


def test_format_1_dense_checkpoints_still_load(tmp_path):
    run = tmp_path / "run"
    model, _ = saved_run(run)
    model.memory.tables[::7, 3] = 300
    checkpoint.save(run, model, {"step": 2}, np.frombuffer(b"the river and the stone bridge " * 40, np.uint8))
    packed, _, _ = load_model(run)
    path = run / "ckpt-00000002" / "model.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k not in tablepack.NAMES}
    meta = str(arrays["meta"]).replace(f'"version": {checkpoint.FORMAT_VERSION}', '"version": 1')
    np.savez(path, **dict(arrays, meta=np.array(meta), tables=model.memory.tables))
    dense, _, _ = load_model(run)
    assert np.array_equal(dense.memory.tables, packed.memory.tables) and np.array_equal(dense.memory.tables, model.memory.tables)
    np.savez(path, **dict(arrays, meta=np.array(meta)))  # format 1 without its dense table
    with pytest.raises(CheckpointError, match="no 'tables' array"):
        load_model(run)


def test_format_2_checkpoints_without_sparse_rows_still_load(tmp_path):
    """Format 2 packed every row that fits a byte as 32 bytes, and had no tables_mask or tables_sparse."""
    run = tmp_path / "run"
    model, _ = saved_run(run)
    t = model.memory.tables
    t[::7, 3] = 300
    t[1::7, 2] = 1  # rows sparse in format 3, dense bytes in format 2
    checkpoint.save(run, model, {"step": 2}, np.frombuffer(b"the river and the stone bridge " * 40, np.uint8))
    path = run / "ckpt-00000002" / "model.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k not in tablepack.NAMES}
        assert len(z["tables_mask"]) > 0
    top = t.max(axis=1)
    cls = np.where(top == 0, 0, np.where(top < 256, 1, np.where(top < 65536, 2, 3))).astype(np.uint8)
    dense = {"tables_class": cls, "tables_u8": t[cls == 1].astype(np.uint8),
             "tables_u16": t[cls == 2].astype(np.uint16), "tables_u32": t[cls == 3]}
    meta = str(arrays["meta"]).replace(f'"version": {checkpoint.FORMAT_VERSION}', '"version": 2')
    np.savez(path, **dict(arrays, meta=np.array(meta), **dense))
    loaded, _, _ = load_model(run)
    assert np.array_equal(loaded.memory.tables, t)
    np.savez(path, **dict(arrays, meta=np.array(meta), **dense, tables_mask=np.zeros(0, np.uint32)))
    with pytest.raises(CheckpointError, match="unexpected array 'tables_mask'"):
        load_model(run)


def test_damaged_packed_tables_are_one_error_not_a_crash(tmp_path):
    run = tmp_path / "run"
    saved_run(run)
    path = run / "ckpt-00000001" / "model.npz"
    with np.load(path) as z:
        cls = z["tables_class"].copy()
        rows8 = z["tables_u8"].copy()
    bad = cls.copy()
    bad[0] = 7
    rewrite(path, tables_class=bad)
    with pytest.raises(CheckpointError, match="class above 4.*damaged checkpoint"):
        load_model(run)
    rewrite(path, tables_class=cls, tables_u8=np.zeros((len(rows8) + 1, 32), np.uint8))
    with pytest.raises(CheckpointError, match="do not match tables_class"):
        load_model(run)


def test_a_member_shorter_than_its_header_is_refused_before_it_is_mapped(tmp_path):
    """A mapping past a member's data would read its neighbours (or fault past the file's end)."""
    run = tmp_path / "run"
    saved_run(run)
    path = run / "ckpt-00000001" / "model.npz"
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<i4", "fortran_order": False,
                                                "shape": (len(CFG.match_minlens), 1 << CFG.match_bits)})
    members["last_pos.npy"] = head.getvalue() + b"\0" * 64
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    with pytest.raises(CheckpointError, match="'last_pos' is truncated"):
        load_model(run)


def test_loaded_arrays_are_private_copies_on_write(tmp_path):
    """The match index is mapped from the file, not read; writing the loaded one leaves the file alone."""
    run = tmp_path / "run"
    saved_run(run)
    model, history, _ = load_model(run)
    assert isinstance(history, np.memmap) and not history.flags.writeable
    before = int(model.match.last_pos[0, 0])
    model.match.last_pos[0, 0] = before + 12345
    again, _, _ = load_model(run)
    assert int(again.match.last_pos[0, 0]) == before


def test_the_streamed_writer_stores_what_pack_returns():
    t = mixed_table(rows=3 * tablepack.CHUNKS + 17, seed=2)  # chunks of uneven size
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        tablepack.write_packed(zf, t)
    buf.seek(0)
    with np.load(buf) as z:
        stored = {k: z[k] for k in z.files}
    for name, arr in tablepack.pack(t).items():
        assert stored[name].dtype == arr.dtype and np.array_equal(stored[name], arr), name


def test_hostmem_arrays_are_zeroed_writable_and_copy_exactly():
    from cheaplm import hostmem

    z = hostmem.zeros((1000, 32), np.uint32)
    assert z.shape == (1000, 32) and z.dtype == np.uint32 and not z.any() and z.flags.writeable
    z[3, 4] = 7
    assert z.sum() == 7
    assert hostmem.zeros((0, 32), np.uint8).shape == (0, 32)
    a = np.arange(-50, 50, dtype=np.int32).reshape(4, 25)
    c = hostmem.copy(a)
    assert np.array_equal(c, a) and c.dtype == a.dtype
    c[0, 0] = 1
    assert a[0, 0] == -50
