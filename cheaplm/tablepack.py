"""Count tables on disk: each row in the narrowest integer type that holds it.

The tables are uint32 so that training can add with atomics, but most counts are small: in the
10-minute CPU model (table_bits 20, 2.2 GiB) 17% of the rows are all zero, 75% never exceed 255
and under 0.1% exceed 65,535. A checkpoint stores

    tables_class  uint8 (rows,)       0: all zero, 1: fits uint8, 2: fits uint16, 3: needs uint32
    tables_u8     uint8 (n1, 32)      the rows of class 1, in row order
    tables_u16    uint16 (n2, 32)     class 2
    tables_u32    uint32 (n3, 32)     class 3

which is exact (a resumed run counts on from the same integers) and 4x smaller there. Unpacking
writes every row of a fresh dense table once, in parallel chunks whose start in each class is
counted first, so it costs about one pass of memory bandwidth, not a Python loop.

These run on the host, where the file's bytes are: they encode a file format, not the model's
arithmetic, so they have no CUDA twin.
"""

from __future__ import annotations

import numba
import numpy as np

from . import hostmem

WIDTH = 32
CLASS_DTYPES = (None, np.uint8, np.uint16, np.uint32)
NAMES = ("tables_class", "tables_u8", "tables_u16", "tables_u32")
CHUNKS = 256  # parallel pieces of the row range; their starts in each class are counted first


@numba.njit(parallel=True, cache=True)
def row_classes(tables, out):
    """out[r] = the class of row r (see the module docstring)."""
    for r in numba.prange(tables.shape[0]):
        top = np.uint32(0)
        for j in range(tables.shape[1]):
            top = max(top, tables[r, j])
        out[r] = 0 if top == 0 else (1 if top < 256 else (2 if top < 65536 else 3))


@numba.njit(cache=True)
def chunk_starts(cls, chunks):
    """starts[c, k] = how many rows of class k come before chunk c; the last line holds the totals.
    A class above 3 gives -1 in starts[0, 0] (a damaged file), checked by the caller."""
    n = cls.shape[0]
    starts = np.zeros((chunks + 1, 4), np.int64)
    seen = np.zeros(4, np.int64)
    for c in range(chunks):
        for k in range(4):
            starts[c, k] = seen[k]
        for r in range(c * n // chunks, (c + 1) * n // chunks):
            k = cls[r]
            if k > 3:
                starts[0, 0] = -1
                return starts
            seen[k] += 1
    for k in range(4):
        starts[chunks, k] = seen[k]
    return starts


@numba.njit(parallel=True, cache=True)
def _scatter(cls, starts, u8, u16, u32, out):
    n = out.shape[0]
    chunks = starts.shape[0] - 1
    for c in numba.prange(chunks):
        i1, i2, i3 = starts[c, 1], starts[c, 2], starts[c, 3]
        for r in range(c * n // chunks, (c + 1) * n // chunks):
            k = cls[r]
            if k == 1:  # class 0 is left alone: `out` is zero-filled, and its untouched pages cost nothing
                for j in range(WIDTH):
                    out[r, j] = u8[i1, j]
                i1 += 1
            elif k == 2:
                for j in range(WIDTH):
                    out[r, j] = u16[i2, j]
                i2 += 1
            elif k == 3:
                for j in range(WIDTH):
                    out[r, j] = u32[i3, j]
                i3 += 1


@numba.njit(parallel=True, cache=True)
def _gather_chunks(tables, cls, starts, c0, c1, k, out):
    """The rows of class k in chunks c0..c1-1, in order, into out (chunks in parallel: each knows
    from `starts` where its rows go)."""
    n = tables.shape[0]
    chunks = starts.shape[0] - 1
    for c in numba.prange(c0, c1):
        i = starts[c, k] - starts[c0, k]
        for r in range(c * n // chunks, (c + 1) * n // chunks):
            if cls[r] == k:
                for j in range(WIDTH):
                    out[i, j] = tables[r, j]
                i += 1


GROUP = 16  # chunks gathered at once before they are written: 1/16 of the rows per buffer at most


def write_packed(zf, tables: np.ndarray) -> None:
    """Write pack()'s four arrays into the open zipfile `zf` as .npy members, GROUP chunks of rows at
    a time: saving then needs a byte a row for the classes and one group's rows, not a packed copy
    of the tables (which can be as large as the tables: 33 GB on a GPU run)."""
    n = tables.shape[0]
    cls = np.empty(n, np.uint8)
    row_classes(tables, cls)
    starts = chunk_starts(cls, CHUNKS)
    with zf.open(NAMES[0] + ".npy", "w", force_zip64=True) as f:
        np.lib.format.write_array(f, cls, allow_pickle=False)
    for k in (1, 2, 3):
        dtype = np.dtype(CLASS_DTYPES[k])
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                  "shape": (int(starts[-1, k]), WIDTH)}
        groups = [(c, min(c + GROUP, CHUNKS)) for c in range(0, CHUNKS, GROUP)]
        biggest = max(int(starts[c1, k] - starts[c0, k]) for c0, c1 in groups)
        buf = np.empty((biggest, WIDTH), dtype)
        with zf.open(NAMES[k] + ".npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, header)
            for c0, c1 in groups:
                m = int(starts[c1, k] - starts[c0, k])
                if m:
                    _gather_chunks(tables, cls, starts, c0, c1, k, buf)
                    f.write(memoryview(buf[:m]).cast("B"))


def pack(tables: np.ndarray) -> dict:
    """The four arrays a checkpoint stores for a (rows, 32) uint32 table."""
    cls = np.empty(tables.shape[0], np.uint8)
    row_classes(tables, cls)
    starts = chunk_starts(cls, CHUNKS)
    total = starts[-1]
    u8 = np.empty((int(total[1]), WIDTH), np.uint8)
    u16 = np.empty((int(total[2]), WIDTH), np.uint16)
    u32 = np.empty((int(total[3]), WIDTH), np.uint32)
    for k, out in ((1, u8), (2, u16), (3, u32)):
        _gather_chunks(tables, cls, starts, 0, CHUNKS, k, out)
    return dict(zip(NAMES, (cls, u8, u16, u32)))


def unpack(arrays: dict) -> np.ndarray:
    """The dense (rows, 32) uint32 table of pack()'s arrays (any readable arrays: memory-mapped ones
    are read once). ValueError when they do not fit together (a damaged or mixed-up file)."""
    cls, u8, u16, u32 = (arrays[k] for k in NAMES)
    starts = chunk_starts(cls, CHUNKS)
    if starts[0, 0] < 0:
        raise ValueError("tables_class holds a class above 3")
    have = (len(u8), len(u16), len(u32))
    want = tuple(int(x) for x in starts[-1, 1:])
    if have != want:
        raise ValueError(f"the packed rows ({have[0]:,} / {have[1]:,} / {have[2]:,}) do not match tables_class "
                         f"({want[0]:,} / {want[1]:,} / {want[2]:,})")
    out = hostmem.zeros((len(cls), WIDTH), np.uint32)  # not huge-page advised (see hostmem); class 0 stays as is
    _scatter(cls, starts, u8, u16, u32, out)
    return out


def packed_bytes(arrays: dict) -> int:
    return sum(int(arrays[k].nbytes) for k in NAMES)
