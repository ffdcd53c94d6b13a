"""The training text as one byte array mapped from its shards: no copy in memory, none on disk.

Counting, the match model and the reader index the training text by absolute position, so it must
be one array; a run used to read every shard into memory and write the bytes again into its run
directory (history.bin). Here each shard is mapped where it lies in the array (private and
copy-on-write: nothing ever writes a shard), so the text costs page cache, which the kernel reads
on demand and may drop again, not anonymous memory, and opening a run reads nothing.

A mapping of a file starts on a page boundary, so the shards are laid out at page boundaries:
shard k's first byte is at `Piece.start`, a multiple of the page size. The bytes between one
shard's end and the next shard's start (fewer than a page: at most 4095 bytes after each 64 MiB
shard, 0.006%) are NUL, the article separator, so the text reads "article, NUL, a few NULs,
article". One shard lays out exactly as `shards.load_split` concatenates; several gain those gaps.

The run directory records what it needs in `text.json` (`record`): the data directory, and for
each shard its name, size, sha256, mtime and inode. `open_record` checks it: a missing shard or a
different size is an error at once; the same size, mtime and inode (or the data directory's
.verified.json stamp, shards.py) is taken as the same file; anything else is hashed again and must
give the recorded sha256. A stat per shard is microseconds, hashing 20 GB is a minute: chat starts
in the first time, and a shard edited behind the run's back is still caught.

Where mapping at fixed addresses is unavailable (not Linux), the same layout is read into memory.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import hostmem
from .shards import ShardError, read_manifest, shard_checker, split_info

PAGE = mmap.PAGESIZE
RECORD = "text.json"
FORMAT = "cheaplm-text"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Piece:
    """One shard's part of the text: `used` bytes of file `name` from its start, at `start`."""

    name: str
    start: int  # where its first byte lies in the text (a multiple of PAGE)
    used: int  # bytes of it in the text (the last shard may be cut by a --bytes budget)
    size: int  # the file's size
    sha256: str
    mtime_ns: int = 0
    inode: int = 0


def align(n: int) -> int:
    return -(-n // PAGE) * PAGE


def text_length(pieces: list[Piece]) -> int:
    return pieces[-1].start + pieces[-1].used if pieces else 0


def layout(data_dir: Path, split: str = "train", limit: int | None = None, verify: bool | None = None) -> list[Piece]:
    """The pieces of `split` (its first `limit` bytes of text, gaps not counted), each shard checked
    against the manifest as load_split checks it (size; sha256 unless verify is False)."""
    data_dir = Path(data_dir)
    info = split_info(data_dir, read_manifest(data_dir), split)
    pieces, at, total = [], 0, 0
    with shard_checker(data_dir, verify) as check:
        for shard in info["shards"]:
            if limit is not None and total >= limit:
                break
            path = check(shard)
            st = path.stat()
            used = shard["bytes"] if limit is None else min(shard["bytes"], limit - total)
            if used == 0:
                continue
            pieces.append(Piece(shard["name"], at, used, shard["bytes"], shard["sha256"], st.st_mtime_ns, st.st_ino))
            at, total = align(at + used), total + used
    return pieces


# ---- mapping ---------------------------------------------------------------------------------------
_LINUX = sys.platform.startswith("linux")
_MAP_PRIVATE, _MAP_FIXED, _MAP_ANONYMOUS, _MAP_NORESERVE = 0x02, 0x10, 0x20, 0x4000
_PROT_RW = 0x1 | 0x2
if _LINUX:
    _libc = ctypes.CDLL(None, use_errno=True)
    _libc.mmap.restype = ctypes.c_void_p
    _libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    _libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_FAILED = ctypes.c_void_p(-1).value


class Mapping:
    """One address range: the pieces' files mapped at their starts, anonymous zeros elsewhere
    (gaps, and room after the text). Unmapped when the last array over it is gone."""

    def __init__(self, data_dir: Path, pieces: list[Piece], length: int):
        self.data_dir, self.pieces, self.length, self.addr = Path(data_dir), pieces, length, None
        size = align(max(length, 1))
        addr = _libc.mmap(None, size, _PROT_RW, _MAP_PRIVATE | _MAP_ANONYMOUS | _MAP_NORESERVE, -1, 0)
        if addr in (None, _FAILED):
            raise OSError(ctypes.get_errno(), f"cannot reserve {size:,} bytes of address space")
        self.addr, self.size = addr, size
        for p in pieces:
            with open(self.data_dir / p.name, "rb") as f:
                got = _libc.mmap(addr + p.start, align(p.used), _PROT_RW, _MAP_PRIVATE | _MAP_FIXED, f.fileno(), 0)
            if got != addr + p.start:
                raise OSError(ctypes.get_errno(), f"{self.data_dir / p.name}: cannot map it")
        cbuf = (ctypes.c_ubyte * length).from_address(addr)
        cbuf._cheaplm_mapping = self  # the arrays keep the buffer alive, the buffer this mapping
        self.array = np.frombuffer(cbuf, dtype=np.uint8)

    def __del__(self):
        if self.addr is not None:
            _libc.munmap(self.addr, self.size)
            self.addr = None


def _mapping_of(arr: np.ndarray) -> Mapping | None:
    base = arr
    while base is not None:
        m = getattr(base, "_cheaplm_mapping", None)
        if m is not None:
            return m
        base = getattr(base, "base", None) if not isinstance(base, memoryview) else base.obj
    return None


def map_text(data_dir: Path, pieces: list[Piece], length: int | None = None, room: int = 0) -> np.ndarray:
    """The text of `pieces` cut to `length` bytes (default: all of it), followed by `room` zero
    bytes, as one writable array (a write changes this process's copy only). Mapped on Linux,
    read elsewhere."""
    full = text_length(pieces)
    length = full if length is None else length
    if not 0 <= length <= full:
        raise ValueError(f"length {length} outside the text's {full} bytes")
    pieces = cut(pieces, length)
    total = length + room
    if total == 0:
        return np.zeros(0, np.uint8)
    if not _LINUX:
        out = np.zeros(total, np.uint8)
        for p in pieces:
            out[p.start: p.start + p.used] = np.fromfile(Path(data_dir) / p.name, np.uint8, count=p.used)
        return out
    arr = Mapping(data_dir, pieces, total).array
    if pieces:  # the last page of the last piece holds file bytes past `length`: zeros there, as anywhere after
        last = pieces[-1]
        arr[length: min(total, last.start + align(last.used))] = 0
    return arr


def cut(pieces: list[Piece], length: int) -> list[Piece]:
    """The pieces holding text[:length], the last one cut there."""
    out = []
    for p in pieces:
        if p.start >= length:
            break
        out.append(p if p.start + p.used <= length else Piece(**{**asdict(p), "used": length - p.start}))
    return out


def with_room(text: np.ndarray, room: int, reserve: int = 0) -> np.ndarray:
    """An array of len(text) + room bytes: text, then zeros; its own, free to write. A mapped
    text gets a mapping of its own (nothing copied, nothing read; `reserve` more bytes of address
    space after it let `grow` lengthen it in place); any other is copied, as np.concatenate would."""
    m = _mapping_of(text)
    if m is not None and _LINUX and text.ctypes.data == m.addr:
        return map_text(m.data_dir, m.pieces, len(text), room + reserve)[: len(text) + room]
    out = hostmem.zeros(len(text) + room, np.uint8)  # see hostmem: a fresh process fills it quicker
    out[: len(text)] = text
    return out


def grow(buf: np.ndarray, length: int) -> np.ndarray | None:
    """buf lengthened to `length` in place, when it is a mapping's start and with_room reserved
    the room (bytes past len(buf) are zero unless written through another view); else None."""
    m = _mapping_of(buf)
    if m is None or buf.ctypes.data != m.addr or length > m.length:
        return None
    return m.array[:length]


# ---- the run directory's record ---------------------------------------------------------------------------
def record(run_dir: Path, data_dir: Path, split: str, pieces: list[Piece]) -> None:
    """text.json: where the run's text lies (written to a temporary name and renamed)."""
    path = Path(run_dir) / RECORD
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "data_dir": str(Path(data_dir).resolve()),
                               "split": split, "length": text_length(pieces), "page": PAGE,
                               "pieces": [asdict(p) for p in pieces]}, indent=1))
    os.replace(tmp, path)


class TextError(Exception):
    """The run's recorded text is missing, moved or changed; one line naming the path."""


def read_record(run_dir: Path) -> tuple[Path, list[Piece]]:
    path = Path(run_dir) / RECORD
    try:
        rec = json.loads(path.read_text())
        if rec.get("format") != FORMAT or rec.get("version") != FORMAT_VERSION:
            raise ValueError("not a cheaplm text record")
        pieces = [Piece(**p) for p in rec["pieces"]]
        data_dir = Path(rec["data_dir"])
        if rec.get("page", PAGE) != PAGE and len(pieces) > 1:
            raise TextError(f"{path}: laid out for pages of {rec['page']} bytes, this machine's are {PAGE}")
    except FileNotFoundError:
        raise TextError(f"{Path(run_dir)}: no {RECORD} and no history.bin; not a complete run directory") from None
    except TextError:
        raise
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise TextError(f"{path}: damaged ({exc})") from None
    return data_dir, pieces


def check_pieces(data_dir: Path, pieces: list[Piece], run_dir: Path) -> None:
    """Each piece's file is there and is the one trained on (see the module docstring)."""
    hint = f"the run {run_dir} reads its training text from {data_dir}; put those shards back there"
    with shard_checker(data_dir) as check:  # CHEAPLM_VERIFY_SHARDS=0: sizes, mtimes only
        for p in pieces:
            path = data_dir / p.name
            try:
                st = path.stat()
            except OSError:
                raise TextError(f"{path}: missing ({hint})") from None
            if st.st_size != p.size:
                raise TextError(f"{path}: {st.st_size:,} bytes, the run was trained on {p.size:,} (the shard changed; {hint})")
            if (st.st_mtime_ns, st.st_ino) == (p.mtime_ns, p.inode):
                continue
            try:
                check({"name": p.name, "bytes": p.size, "sha256": p.sha256})
            except ShardError:
                raise TextError(f"{path}: its sha256 differs from the shard the run was trained on ({hint})") from None


def open_record(run_dir: Path, length: int, room: int = 0) -> np.ndarray:
    """The run's text[:length] (mapped; then `room` zero bytes), its shards checked first."""
    data_dir, pieces = read_record(run_dir)
    if length > text_length(pieces):
        raise TextError(f"{Path(run_dir) / RECORD}: records {text_length(pieces):,} bytes, the checkpoint needs {length:,}")
    needed = cut(pieces, length)
    check_pieces(data_dir, needed, run_dir)
    try:
        return map_text(data_dir, needed, length, room)
    except OSError as exc:
        raise TextError(f"{exc.filename or data_dir}: cannot map the training text ({exc.strerror or exc})") from None
