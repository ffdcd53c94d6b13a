"""Run directories: checkpoints written atomically, loaded without pickle.

    RUN_DIR/
      config.json            model + training config of the run (human-readable copy)
      text.json              where the training text lies: the data directory and each shard's name,
                             size and sha256 (corpus.py); the text is mapped from the shards, not copied
      titles.tsv             the articles of the text by title (recall.py; for chat's recall)
      metrics.jsonl          one JSON object per progress line
      latest                 name of the newest complete checkpoint
      ckpt-00001234/
        model.npz            params, count tables (packed: tablepack.py), match index, meta (format/code version, config)
        state.npz            Adam moments, step, data cursor, RNG state, elapsed time

A checkpoint is written into `ckpt-N.tmp/` and renamed when complete; `latest` is replaced by
rename too, so a crash at any moment leaves the previous checkpoint intact and `latest` pointing
to a complete one. The last `keep` checkpoints are kept. SIGINT and SIGTERM are held back while a
checkpoint is written (a second Ctrl-C during the final write used to leave only `ckpt-N.tmp`) and
delivered once it is complete.

model.npz is an uncompressed zip: its large arrays are memory-mapped where they lie in the file
(`_npz_arrays`), so loading copies nothing it does not need; the packed tables are unpacked once.
Format 1 (dense uint32 tables, before packing) and format 2 (packed, without tablepack's sparse
rows) still load.

A checkpoint is checked when it is loaded: array shapes and dtypes against its config (from the
.npy headers, before any data is read), every float array finite (a NaN parameter made eval index out of bounds), match pointers inside the history.

The history (the training bytes counted so far, the match model's memory) is the first
`history_len` bytes of the text text.json records, mapped from the shards (corpus.open_record: a
missing, resized or changed shard is one error line). A run without text.json (written before
it, or saved by a caller that records no text) keeps a copy of those bytes as history.bin; such a
run still loads, and a resumed one keeps appending to it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import threading
import zipfile
from pathlib import Path

import numpy as np

from . import __version__, corpus, recall, tablepack
from .memory import mixer_blocks
from .model import LEGACY, Model, ModelConfig

FORMAT = "cheaplm-run"
FORMAT_VERSION = 3  # 3: sparse rows among the packed tables; 2: packed count tables; 1: dense (all still read)
READABLE_VERSIONS = (1, 2, 3)


class CheckpointError(Exception):
    """A missing, corrupt or mismatched run directory; one line naming the path."""


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGINT/SIGTERM back for the duration and deliver them (once each) at the end.

    Inside, a signal is only recorded; on leaving, the previous handlers are restored and each
    recorded signal is raised again, so it acts as it would have (KeyboardInterrupt, a training
    loop's stop flag, SIGTERM's default exit), just after the critical section. Only the main thread
    can set handlers; elsewhere this does nothing (Python runs handlers in the main thread anyway).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []

    def hold(signum, frame):
        if signum not in got:
            got.append(signum)
            with contextlib.suppress(OSError):
                os.write(2, f"{signal.Signals(signum).name}: finishing the checkpoint first\n".encode())

    old = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is not None:  # None: a handler set outside Python, left alone
                old[sig] = signal.signal(sig, hold)
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for sig in got:
            signal.raise_signal(sig)


def save(run_dir: Path, model: Model, state: dict, history: np.ndarray, keep: int = 2) -> Path:
    """Write checkpoint for state['step']; `history` = the counted training bytes. SIGINT/SIGTERM
    arriving meanwhile take effect when the checkpoint is complete and `latest` names it."""
    with signals_deferred():
        return _save(Path(run_dir), model, state, history, keep)


def _save(run_dir: Path, model: Model, state: dict, history: np.ndarray, keep: int) -> Path:
    step = int(state["step"])
    name = f"ckpt-{step:08d}"
    final = run_dir / name
    tmp = run_dir / (name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
        if not (run_dir / corpus.RECORD).exists():  # no record of where the text lies: keep a copy
            _write_history(run_dir, history)
        # chat's recall looks articles up by title; a stale or missing index is rebuilt on load
        recall.write_index(run_dir, recall.build_index(history))
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "code_version": __version__,
                "config": json.loads(model.cfg.to_json()), "history_len": int(len(history)),
                "history_fingerprint": history_fingerprint(history)}
        _write_npz(tmp / "model.npz", dict(meta=np.array(json.dumps(meta)), **model.arrays()),
                   tables=model.host(model.memory.tables))
        np.savez(tmp / "state.npz", state=np.array(json.dumps(dict(state))), **model.optimizer_arrays())
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        need = model.cfg.table_bytes() + 12 * model.memory.n_params + (0 if (run_dir / corpus.RECORD).exists() else len(history))
        if model.reader is not None:
            need += 12 * model.reader.n_params  # weights and two moments
        size = f"{need / 2**30:.1f} GiB" if need >= 2**30 else f"{need / 2**20:.0f} MiB"
        earlier = ("earlier checkpoints are intact" if any(p.is_dir() and not p.name.endswith(".tmp")
                                                          for p in run_dir.glob("ckpt-*"))
                   else "no earlier checkpoint exists")
        raise CheckpointError(f"{run_dir}: could not write checkpoint {name} ({exc.strerror or exc}); it needs about "
                              f"{size}; {earlier}") from None
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _atomic_write_text(run_dir / "latest", name + "\n")
    ckpts = sorted(p for p in run_dir.glob("ckpt-*") if p.is_dir() and not p.name.endswith(".tmp"))
    for old in ckpts[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _write_npz(path: Path, arrays: dict, tables: np.ndarray) -> None:
    """An uncompressed .npz, as np.savez writes it, of `arrays` and the packed `tables`
    (tablepack.write_packed: streamed, so saving holds no packed copy of the tables)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)
        tablepack.write_packed(zf, tables)


def _write_history(run_dir: Path, history: np.ndarray) -> None:
    """history.bin grows by appending; a resumed run may first have cut it back."""
    path = run_dir / "history.bin"
    have = path.stat().st_size if path.exists() else 0
    if have > len(history):
        with open(path, "r+b") as f:
            f.truncate(len(history))
        have = len(history)
    with open(path, "ab") as f:
        f.write(np.ascontiguousarray(history[have:]).tobytes())
        f.flush()
        os.fsync(f.fileno())


def latest_checkpoint(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise CheckpointError(f"{run_dir}: no such run directory")
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: not a directory")
    pointer = run_dir / "latest"
    if not pointer.exists():
        raise CheckpointError(f"{run_dir}: no checkpoint yet (no 'latest' file); train with `cheaplm train DATA --out {run_dir}`")
    ckpt = run_dir / pointer.read_text().strip()
    if not (ckpt / "model.npz").exists():
        raise CheckpointError(f"{ckpt}: checkpoint named by 'latest' is missing")
    return ckpt


def find_checkpoint(path: Path) -> Path:
    """The checkpoint `eval`, `sample` and `chat` read: PATH itself when it is a checkpoint directory
    (RUN/ckpt-N, holding model.npz), else the latest checkpoint of the run directory PATH."""
    path = Path(path)
    if path.is_dir() and (path / "model.npz").is_file() and not path.name.endswith(".tmp"):  # .tmp: half written
        return path
    run = path.parent
    if not path.exists() and path.name.startswith("ckpt-") and (run / "latest").exists():
        have = sorted(p.name for p in run.glob("ckpt-*") if p.is_dir() and not p.name.endswith(".tmp"))
        raise CheckpointError(f"{path}: no such checkpoint; {run} has {', '.join(have) or 'none'} "
                              f"(the last {len(have)} are kept; give {run} for the latest)")
    if path.is_dir() and not (path / "latest").exists():
        have = sorted(p.name for p in path.glob("ckpt-*") if p.is_dir() and not p.name.endswith(".tmp"))
        if have:
            raise CheckpointError(f"{path}: no 'latest' file; give one of its checkpoints, e.g. {path / have[-1]}")
    return latest_checkpoint(path)


def history_fingerprint(history) -> str:
    """A hash of the history's length and 16 blocks of 4 KiB spread over it: ties a checkpoint to
    its history.bin (a foreign or truncated one is caught) without reading hundreds of MB at load."""
    h = hashlib.sha256(str(len(history)).encode())
    n = len(history)
    for i in range(16):
        lo = (n - 4096) * i // 15 if n > 4096 else 0
        h.update(bytes(history[lo: lo + 4096]))
    return h.hexdigest()[:32]


def npz_headers(path: Path) -> dict:
    """{name: (shape, dtype)} of each array in an .npz, read from the member headers alone, so that a
    small file that would inflate to gigabytes is refused before any data is read (issue 12, 15)."""
    out = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            with zf.open(info) as f:
                shape, _, dtype = _npy_header(f, name)
            out[name] = (tuple(shape), dtype)
    return out


def _npy_header(f, name: str) -> tuple:
    """(shape, fortran_order, dtype) of the .npy at f's position; f is left at the array's data."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    raise ValueError(f"array '{name}' has .npy format {version}")


@contextlib.contextmanager
def _reading(path: Path):
    """What a missing, damaged or truncated .npz raises, as one CheckpointError line."""
    try:
        yield
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except CheckpointError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, ValueError, JSONDecodeError, EOFError, OSError ...
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({type(exc).__name__}: {exc})") from None


def _refuse(path: Path, problem: str | None) -> None:
    if problem:
        raise CheckpointError(f"{path}: {problem} (mismatched or damaged checkpoint)")


def _load_npz(path: Path, check=None) -> dict:
    """The arrays of an .npz; with `check(headers)` -> error text or None, the headers are checked
    first (shapes and dtypes against the config) and nothing is read when they are wrong."""
    with _reading(path):
        if check is not None:
            _refuse(path, check(npz_headers(path)))
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}


# arrays of model.npz that are memory-mapped rather than read: the large ones. The reader's weights
# (2.5 GB on the H200 default) are copied by the Reader anyway: read first, they were copied twice
# (bench/load_time.py --big-reader: 20-40 s read, 1-6 s mapped on the 2-core CPU)
MAPPED = frozenset(("tables", "last_pos", "reader_params") + tablepack.NAMES)


def _npz_arrays(path: Path, mapped=MAPPED) -> dict:
    """The arrays of an .npz. Members named in `mapped` that are stored uncompressed (np.savez
    stores) are mapped copy-on-write where they lie in the file: nothing is read until used, and a
    write changes this process's copy only. The rest are read as np.load reads them."""
    out = {}
    size = os.path.getsize(path)
    with zipfile.ZipFile(path) as zf, open(path, "rb") as raw:
        for info in zf.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if name not in mapped or info.compress_type != zipfile.ZIP_STORED:
                with zf.open(info) as f:
                    out[name] = np.lib.format.read_array(f, allow_pickle=False)
                continue
            raw.seek(info.header_offset)
            local = raw.read(30)  # the member's local header: its name and extra field come next
            if len(local) < 30 or local[:4] != b"PK\x03\x04":
                raise ValueError(f"'{name}': bad zip entry")
            start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
            raw.seek(start)
            shape, fortran, dtype = _npy_header(raw, name)
            if dtype.hasobject:
                raise ValueError(f"'{name}' holds Python objects")
            offset = raw.tell()
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            # a mapping past the file's end faults when read (SIGBUS): a truncated file is an error here
            if offset + nbytes > min(size, start + info.file_size):
                raise ValueError(f"'{name}' is truncated")
            if nbytes == 0:
                out[name] = np.zeros(shape, dtype)
                continue
            arr = np.memmap(path, dtype=dtype, mode="c", offset=offset, shape=tuple(shape),
                            order="F" if fortran else "C")
            out[name] = arr.view(np.ndarray)
    return out


META_MAX_CHARS = 1 << 20  # the meta and state JSON strings: far below this


def _small_text(headers, key) -> str | None:
    if key not in headers:
        return f"no '{key}' array; not a cheaplm checkpoint"
    shape, dtype = headers[key]
    if shape != () or dtype.kind != "U" or dtype.itemsize > 4 * META_MAX_CHARS:
        return f"'{key}' is not a short text"
    return None


class UpTo(int):
    """An expected dimension that may be anything from 0 to this (the packed tables' row counts)."""

    def __repr__(self) -> str:
        return f"<={int(self)}"


def _table_names(version: int) -> tuple:
    """The arrays that hold the count tables in a model.npz of this format version."""
    return ("tables",) if version < 2 else (tablepack.DENSE_NAMES if version == 2 else tablepack.NAMES)


def _expected_model_arrays(cfg: ModelConfig, version: int = FORMAT_VERSION) -> dict:
    """name -> (shape, dtype) of every array model.npz of this format version may hold for this config."""
    rows = cfg.table_rows()
    out = {"params": ((sum(size for _, size in mixer_blocks(cfg, cfg.match_spec())),), np.float32),
           # int64 for a history of 1.75 GiB or more (match.position_dtype)
           "last_pos": ((len(cfg.match_minlens), 1 << cfg.match_bits), (np.int32, np.int64))}
    if version >= 2:
        out["tables_class"] = ((rows,), np.uint8)
        for name, dtype in zip(tablepack.DENSE_NAMES[1:], tablepack.CLASS_DTYPES[1:]):
            out[name] = ((UpTo(rows), tablepack.WIDTH), dtype)
        if version >= 3:
            out["tables_mask"] = ((UpTo(rows),), np.uint32)
            out["tables_sparse"] = ((UpTo(rows * tablepack.SPARSE_MOST),), np.uint8)
    else:
        out["tables"] = ((rows, 32), np.uint32)
    rcfg = cfg.reader_config("cpu")
    if rcfg is not None:
        from .reader import DOC_SETS, MIX_SETS, param_count

        # reader_mix_doc: optional (runs from before the document words have none: zero weights)
        out.update(reader_params=((param_count(rcfg),), np.float32), reader_mix=((MIX_SETS, 3), np.float32),
                   reader_mix_doc=((DOC_SETS,), np.float32),
                   reader_step=((), np.int64))
    return out


def _check_arrays(headers: dict, expected: dict) -> str | None:
    for name, (shape, dtype) in headers.items():
        if name in ("meta", "state"):
            continue
        if name not in expected:
            return f"unexpected array '{name}'"
        want_shape, want_dtype = expected[name]
        fits = len(shape) == len(want_shape) and all(
            0 <= s <= w if isinstance(w, UpTo) else s == w for s, w in zip(shape, want_shape))
        dtype_ok = dtype in tuple(np.dtype(d) for d in (want_dtype if isinstance(want_dtype, tuple) else (want_dtype,)))
        if not fits or not dtype_ok:
            want = want_dtype[0] if isinstance(want_dtype, tuple) else want_dtype
            return f"'{name}' is {dtype}{list(shape)}, the config needs {np.dtype(want)}{list(want_shape)}"
    return None


def _count_nonfinite(arr: np.ndarray, chunk: int = 1 << 22) -> int:
    """NaN and infinite values in arr, counted a slice at a time (the reader's table is GBs)."""
    flat = arr.reshape(-1)
    return sum(int(flat[i:i + chunk].size - np.count_nonzero(np.isfinite(flat[i:i + chunk])))
               for i in range(0, flat.size, chunk))


def load_model(run_dir: Path, device: str = "cpu", ckpt: Path | None = None) -> tuple[Model, np.ndarray, Path]:
    """Model and its history bytes from the latest (or given) checkpoint."""
    ckpt = ckpt or latest_checkpoint(run_dir)
    path = ckpt / "model.npz"
    # the meta first, alone (after its header is checked): the config it holds says what the other
    # arrays must be, and they are checked against it before any of them is read
    with _reading(path):
        headers = npz_headers(path)
        problem = _small_text(headers, "meta")
        if problem:
            raise CheckpointError(f"{path}: {problem}")
        with np.load(path, allow_pickle=False) as zm:
            meta = json.loads(str(zm["meta"]))
        if not isinstance(meta, dict):
            raise ValueError("meta is not a JSON object")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{ckpt}: not a cheaplm checkpoint")
    if meta.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(f"{ckpt}: checkpoint format {meta.get('version')}, this cheaplm "
                              f"({__version__}) reads formats {', '.join(map(str, READABLE_VERSIONS))}; retrain or use cheaplm {meta.get('code_version')}")
    try:
        cfg = ModelConfig.from_dict({**LEGACY, **meta["config"]})
        expected = _expected_model_arrays(cfg, meta["version"])
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{ckpt}: bad model config ({exc})") from None
    _refuse(path, _check_arrays(headers, expected))  # shapes and dtypes, before any data is read
    with _reading(path):
        z = _npz_arrays(path, MAPPED)
    for key in ("params", "last_pos") + _table_names(meta["version"]):
        if key not in z:
            raise CheckpointError(f"{ckpt / 'model.npz'}: no '{key}' array; not a cheaplm checkpoint")
    if meta["version"] >= 2:
        try:
            z["tables"] = tablepack.unpack(z)
        except ValueError as exc:
            raise CheckpointError(f"{ckpt / 'model.npz'}: {exc} (damaged checkpoint)") from None
        for key in _table_names(meta["version"]):
            del z[key]
    for key, arr in z.items():
        if arr.dtype.kind == "f" and (bad := _count_nonfinite(arr)):
            raise CheckpointError(f"{ckpt / 'model.npz'}: '{key}' holds {bad:,} NaN or infinite values of {arr.size:,} "
                                  "(damaged checkpoint); use an earlier checkpoint or retrain")
    reader_on = cfg.reader.get("on", True)
    if reader_on and ("reader_params" not in z or "reader_mix" not in z):
        raise CheckpointError(f"{ckpt / 'model.npz'}: the config has a reader but the checkpoint holds no reader arrays")
    try:
        model = Model(cfg, device=device, tables=z["tables"], params=z["params"], last_pos=z["last_pos"],
                      reader_params=z.get("reader_params"), reader_mix=z.get("reader_mix"),
                      reader_mix_doc=z.get("reader_mix_doc"))
    except ValueError as exc:
        raise CheckpointError(f"{ckpt}: {exc}") from None
    if model.reader is not None and "reader_step" in z:
        model.reader.step = int(z["reader_step"])
    try:
        n = int(meta["history_len"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{ckpt}: the checkpoint's meta has no history length (damaged checkpoint)") from None
    last_pos = z["last_pos"]
    if last_pos.size and (int(last_pos.min()) < -1 or int(last_pos.max()) >= n):
        # the match model reads history[p] for these pointers: one outside it reads out of bounds
        raise CheckpointError(f"{ckpt / 'model.npz'}: match index points outside the {n:,} bytes of history (damaged checkpoint)")
    history, source = load_history(Path(ckpt).parent, n)
    if "history_fingerprint" in meta and history_fingerprint(history) != meta["history_fingerprint"]:
        raise CheckpointError(f"{source}: not the history this checkpoint was trained on (its fingerprint "
                              "differs: a file from another run?)")
    model.history_len = n
    return model, history, ckpt


def load_history(run_dir: Path, n: int) -> tuple[np.ndarray, Path]:
    """The run's first n training bytes, and where they come from: mapped from the shards text.json
    records, or (a run from before it) from history.bin. Nothing is read here but a few headers."""
    hist_path = run_dir / "history.bin"
    if hist_path.exists() or not (run_dir / corpus.RECORD).exists():
        if not hist_path.exists() or hist_path.stat().st_size < n:
            raise CheckpointError(f"{hist_path}: missing or shorter than the {n:,} bytes the checkpoint needs")
        # read-only and mapped: nothing writes the history in place, and 100+ MB need not be copied
        return (np.memmap(hist_path, dtype=np.uint8, mode="r", shape=(n,)) if n else np.zeros(0, np.uint8)), hist_path
    try:
        return corpus.open_record(run_dir, n), run_dir / corpus.RECORD
    except corpus.TextError as exc:
        raise CheckpointError(str(exc)) from None


def read_config(ckpt: Path) -> ModelConfig:
    """The model config a checkpoint holds (its meta alone: none of the arrays is read)."""
    path = ckpt / "model.npz"
    with _reading(path):
        _refuse(path, _small_text(npz_headers(path), "meta"))
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CheckpointError(f"{ckpt}: not a cheaplm checkpoint")
        return ModelConfig.from_dict(meta["config"])


def read_state(ckpt: Path) -> dict:
    """The training state JSON of a checkpoint (step, cursor, whether the run finished, ...) alone:
    none of the arrays, so a finished run can be recognised without loading gigabytes."""
    path = ckpt / "state.npz"
    with _reading(path):
        _refuse(path, _small_text(npz_headers(path), "state"))
        with np.load(path, allow_pickle=False) as z:
            state = json.loads(str(z["state"]))
        if not isinstance(state, dict):
            raise ValueError("the state is not a JSON object")
    return state


def load_state(ckpt: Path, model: Model) -> dict:
    n = model.memory.n_params
    expected = {"adam_m": ((n,), np.float32), "adam_v": ((n,), np.float32)}
    if model.reader is not None:
        r = model.reader
        expected.update(reader_m=((r.n_params,), np.float32), reader_v=((r.n_params,), np.float32))
        if r.cfg.scan:
            expected["reader_scan_state"] = ((r.cfg.lanes, r.cfg.scan), np.float32)

    def expect(headers):
        return _small_text(headers, "state") or _check_arrays(headers, expected)

    z = _load_npz(ckpt / "state.npz", expect)
    for key, arr in z.items():
        if arr.dtype.kind == "f" and (bad := _count_nonfinite(arr)):
            raise CheckpointError(f"{ckpt / 'state.npz'}: '{key}' holds {bad:,} NaN or infinite values (damaged "
                                  "checkpoint); use an earlier checkpoint")
    try:
        state = json.loads(str(z["state"]))
        if not isinstance(state, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        raise CheckpointError(f"{ckpt / 'state.npz'}: bad training state ({exc})") from None
    if "adam_m" not in z or "adam_v" not in z:
        raise CheckpointError(f"{ckpt}: optimizer state does not match the model")
    if model.reader is not None and "reader_m" not in z:
        raise CheckpointError(f"{ckpt}: no reader optimizer state in state.npz")
    try:
        model.load_optimizer(z)
    except ValueError as exc:
        raise CheckpointError(f"{ckpt / 'state.npz'}: {exc}") from None
    return state
