"""Count tables on disk: each row in the narrowest form that holds it.

The tables are uint32 so that training can add with atomics, but most counts are small: in the
10-minute CPU model (table_bits 20, 2.2 GiB) 17% of the rows are all zero, 75% never exceed 255
and under 0.1% exceed 65,535. And a row seen a few times holds a few counts among its 32: on
2.75 MB of text in 2^20-row tables most rows that fit a byte hold under 8 that are not zero. A
checkpoint stores

    tables_class  uint8 (rows,)       0: all zero, 1: fits uint8, 2: fits uint16, 3: needs uint32,
                                      4: fits uint8 with at most SPARSE_MOST counts not zero
    tables_u8     uint8 (n1, 32)      the rows of class 1, in row order
    tables_u16    uint16 (n2, 32)     class 2
    tables_u32    uint32 (n3, 32)     class 3
    tables_mask   uint32 (n4,)        class 4: bit j set where count j is not zero
    tables_sparse uint8 (nv,)         class 4: those counts, row after row, j ascending

which is exact (a resumed run counts on from the same integers). Class 4 takes 4 + (counts not
zero) bytes a row instead of 32 (format 3; format 2 files have no class 4, tables_mask or tables_sparse).
Unpacking writes every row of a fresh dense table once, in parallel chunks whose start in each
class (and in tables_sparse) is counted first, so it costs about one pass of memory bandwidth, not
a Python loop.

These run on the host, where the file's bytes are: they encode a file format, not the model's
arithmetic, so they have no CUDA twin.
"""

from __future__ import annotations

import numba
import numpy as np

from . import hostmem

WIDTH = 32
CLASS_DTYPES = (None, np.uint8, np.uint16, np.uint32)
DENSE_NAMES = ("tables_class", "tables_u8", "tables_u16", "tables_u32")  # format 2
NAMES = DENSE_NAMES + ("tables_mask", "tables_sparse")  # format 3
SPARSE = 4  # the class of sparse byte rows
SPARSE_MOST = WIDTH - 5  # at most this many counts not zero: 4 + 27 bytes < 32
CHUNKS = 256  # parallel pieces of the row range; their starts in each class are counted first


@numba.njit(parallel=True, cache=True)
def row_classes(tables, out):
    """out[r] = the class of row r (see the module docstring)."""
    for r in numba.prange(tables.shape[0]):
        top = np.uint32(0)
        nz = 0
        for j in range(tables.shape[1]):
            top = max(top, tables[r, j])
            nz += tables[r, j] != 0
        if top == 0:
            out[r] = 0
        elif top < 256:
            out[r] = SPARSE if nz <= SPARSE_MOST else 1
        else:
            out[r] = 2 if top < 65536 else 3


@numba.njit(cache=True)
def chunk_starts(cls, chunks):
    """starts[c, k] = how many rows of class k come before chunk c; the last line holds the totals.
    A class above 4 gives -1 in starts[0, 0] (a damaged file), checked by the caller."""
    n = cls.shape[0]
    starts = np.zeros((chunks + 1, 5), np.int64)
    seen = np.zeros(5, np.int64)
    for c in range(chunks):
        for k in range(5):
            starts[c, k] = seen[k]
        for r in range(c * n // chunks, (c + 1) * n // chunks):
            k = cls[r]
            if k > 4:
                starts[0, 0] = -1
                return starts
            seen[k] += 1
    for k in range(5):
        starts[chunks, k] = seen[k]
    return starts


@numba.njit(cache=True)
def _popcount(x):
    n = 0
    while x:
        x &= x - np.uint32(1)
        n += 1
    return n


@numba.njit(parallel=True, cache=True)
def sparse_starts_of_masks(mask, starts):
    """out[c] = how many sparse counts come before chunk c (the last: the total), from the masks."""
    chunks = starts.shape[0] - 1
    per = np.zeros(chunks + 1, np.int64)
    for c in numba.prange(chunks):
        m = 0
        for i in range(starts[c, SPARSE], starts[c + 1, SPARSE]):
            m += _popcount(mask[i])
        per[c + 1] = m
    return np.cumsum(per)


@numba.njit(parallel=True, cache=True)
def sparse_starts_of_tables(tables, cls):
    """As sparse_starts_of_masks, from the dense tables and their classes."""
    n = tables.shape[0]
    chunks = CHUNKS
    per = np.zeros(chunks + 1, np.int64)
    for c in numba.prange(chunks):
        m = 0
        for r in range(c * n // chunks, (c + 1) * n // chunks):
            if cls[r] == SPARSE:
                for j in range(WIDTH):
                    m += tables[r, j] != 0
        per[c + 1] = m
    return np.cumsum(per)


@numba.njit(parallel=True, cache=True)
def _scatter(cls, starts, vstarts, u8, u16, u32, mask, values, out):
    n = out.shape[0]
    chunks = starts.shape[0] - 1
    for c in numba.prange(chunks):
        i1, i2, i3, i4, v = starts[c, 1], starts[c, 2], starts[c, 3], starts[c, SPARSE], vstarts[c]
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
            elif k == SPARSE:
                m = mask[i4]
                for j in range(WIDTH):
                    if (m >> np.uint32(j)) & np.uint32(1):
                        out[r, j] = values[v]
                        v += 1
                i4 += 1


@numba.njit(parallel=True, cache=True)
def _gather_chunks(tables, cls, starts, c0, c1, k, out):
    """The rows of class k (1 to 3) in chunks c0..c1-1, in order, into out (chunks in parallel: each
    knows from `starts` where its rows go)."""
    n = tables.shape[0]
    chunks = starts.shape[0] - 1
    for c in numba.prange(c0, c1):
        i = starts[c, k] - starts[c0, k]
        for r in range(c * n // chunks, (c + 1) * n // chunks):
            if cls[r] == k:
                for j in range(WIDTH):
                    out[i, j] = tables[r, j]
                i += 1


@numba.njit(parallel=True, cache=True)
def _gather_sparse(tables, cls, starts, vstarts, c0, c1, mask_out, values_out):
    """The sparse rows of chunks c0..c1-1: their masks into mask_out, their counts into values_out."""
    n = tables.shape[0]
    chunks = starts.shape[0] - 1
    for c in numba.prange(c0, c1):
        i = starts[c, SPARSE] - starts[c0, SPARSE]
        v = vstarts[c] - vstarts[c0]
        for r in range(c * n // chunks, (c + 1) * n // chunks):
            if cls[r] == SPARSE:
                m = np.uint32(0)
                for j in range(WIDTH):
                    if tables[r, j] != 0:
                        m |= np.uint32(1) << np.uint32(j)
                        values_out[v] = tables[r, j]
                        v += 1
                mask_out[i] = m
                i += 1


GROUP = 16  # chunks gathered at once before they are written: 1/16 of the rows per buffer at most


def _write_header(f, dtype, shape) -> None:
    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                             "fortran_order": False, "shape": shape})


def write_packed(zf, tables: np.ndarray) -> None:
    """Write pack()'s six arrays into the open zipfile `zf` as .npy members, GROUP chunks of rows at
    a time: saving then needs a byte a row for the classes and one group's rows, not a packed copy
    of the tables (which can be as large as the tables: 33 GB on a GPU run)."""
    n = tables.shape[0]
    cls = np.empty(n, np.uint8)
    row_classes(tables, cls)
    starts = chunk_starts(cls, CHUNKS)
    vstarts = sparse_starts_of_tables(tables, cls)
    with zf.open(NAMES[0] + ".npy", "w", force_zip64=True) as f:
        np.lib.format.write_array(f, cls, allow_pickle=False)
    groups = [(c, min(c + GROUP, CHUNKS)) for c in range(0, CHUNKS, GROUP)]
    for k in (1, 2, 3):
        biggest = max(int(starts[c1, k] - starts[c0, k]) for c0, c1 in groups)
        buf = np.empty((biggest, WIDTH), CLASS_DTYPES[k])
        with zf.open(NAMES[k] + ".npy", "w", force_zip64=True) as f:
            _write_header(f, CLASS_DTYPES[k], (int(starts[-1, k]), WIDTH))
            for c0, c1 in groups:
                m = int(starts[c1, k] - starts[c0, k])
                if m:
                    _gather_chunks(tables, cls, starts, c0, c1, k, buf)
                    f.write(memoryview(buf[:m]).cast("B"))
    mask = np.empty(max(int(starts[c1, SPARSE] - starts[c0, SPARSE]) for c0, c1 in groups), np.uint32)
    values = np.empty(max(int(vstarts[c1] - vstarts[c0]) for c0, c1 in groups), np.uint8)
    # zipfile writes one member at a time: the sparse rows are gathered twice, for the masks, then the counts
    with zf.open(NAMES[4] + ".npy", "w", force_zip64=True) as f:
        _write_header(f, np.uint32, (int(starts[-1, SPARSE]),))
        for c0, c1 in groups:
            m = int(starts[c1, SPARSE] - starts[c0, SPARSE])
            if m:
                _gather_sparse(tables, cls, starts, vstarts, c0, c1, mask, values)
                f.write(memoryview(mask[:m]).cast("B"))
    with zf.open(NAMES[5] + ".npy", "w", force_zip64=True) as f:
        _write_header(f, np.uint8, (int(vstarts[-1]),))
        for c0, c1 in groups:
            m = int(vstarts[c1] - vstarts[c0])
            if m:
                _gather_sparse(tables, cls, starts, vstarts, c0, c1, mask, values)
                f.write(memoryview(values[:m]).cast("B"))


def pack(tables: np.ndarray) -> dict:
    """The six arrays a checkpoint stores for a (rows, 32) uint32 table."""
    cls = np.empty(tables.shape[0], np.uint8)
    row_classes(tables, cls)
    starts = chunk_starts(cls, CHUNKS)
    vstarts = sparse_starts_of_tables(tables, cls)
    total = starts[-1]
    u8 = np.empty((int(total[1]), WIDTH), np.uint8)
    u16 = np.empty((int(total[2]), WIDTH), np.uint16)
    u32 = np.empty((int(total[3]), WIDTH), np.uint32)
    for k, out in ((1, u8), (2, u16), (3, u32)):
        _gather_chunks(tables, cls, starts, 0, CHUNKS, k, out)
    mask, values = np.empty(int(total[SPARSE]), np.uint32), np.empty(int(vstarts[-1]), np.uint8)
    _gather_sparse(tables, cls, starts, vstarts, 0, CHUNKS, mask, values)
    return dict(zip(NAMES, (cls, u8, u16, u32, mask, values)))


def unpack(arrays: dict) -> np.ndarray:
    """The dense (rows, 32) uint32 table of pack()'s arrays (any readable arrays: memory-mapped ones
    are read once; format 2's four, without the sparse class, too). ValueError when they do not fit
    together (a damaged or mixed-up file)."""
    cls, u8, u16, u32 = (arrays[k] for k in DENSE_NAMES)
    mask = arrays.get(NAMES[4], np.zeros(0, np.uint32))
    values = arrays.get(NAMES[5], np.zeros(0, np.uint8))
    starts = chunk_starts(cls, CHUNKS)
    if starts[0, 0] < 0:
        raise ValueError("tables_class holds a class above 4")
    have = (len(u8), len(u16), len(u32), len(mask))
    want = tuple(int(x) for x in starts[-1, 1:])
    if have != want:
        raise ValueError(f"the packed rows ({' / '.join(f'{x:,}' for x in have)}) do not match tables_class "
                         f"({' / '.join(f'{x:,}' for x in want)})")
    vstarts = sparse_starts_of_masks(mask, starts)
    if int(vstarts[-1]) != len(values):
        raise ValueError(f"tables_sparse holds {len(values):,} counts, its masks name {int(vstarts[-1]):,}")
    out = hostmem.zeros((len(cls), WIDTH), np.uint32)  # not huge-page advised (see hostmem); class 0 stays as is
    _scatter(cls, starts, vstarts, u8, u16, u32, mask, values, out)
    return out


def packed_bytes(arrays: dict) -> int:
    return sum(int(arrays[k].nbytes) for k in NAMES if k in arrays)
