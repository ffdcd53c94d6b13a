"""Count tables: the model's memory, filled by one scatter-add pass over the training bytes.

Every context owns a block of rows in one uint32 table of shape (rows, 32). A row holds the bit
counts of one nibble: the 15 nodes of the nibble's binary tree, node n at columns (2n, 2n+1) =
(times the next bit was 0, times it was 1); columns 0-1 are unused. A byte touches two rows per
context: the high nibble's row (from the context hash) and the low nibble's row (from the context
hash and the high nibble), as lpaq1 does, so a lookup costs two cache lines, not eight.

Parallelisation: the CPU twin runs contexts in parallel (each context owns its rows, so no races);
the CUDA kernel runs one thread per (position, context) and adds with atomics. Counts are integers,
so both give identical tables whatever the order of the additions.
"""

import numba
import numpy as np
from numba import cuda

from .. import config
from .dual import for_kernels, on_device
from .hashing import context_hash, slot_of

context_hash_k = for_kernels(context_hash)
slot_of_k = for_kernels(slot_of)


@numba.njit(cache=True, inline="always")
def add_byte(tables, row_hi, row_lo, y):
    """Count byte y in the two nibble rows (CPU: plain adds)."""
    hi = y >> 4
    node = 1
    for j in range(4):
        bit = (hi >> (3 - j)) & 1
        tables[row_hi, 2 * node + bit] += 1
        node = 2 * node + bit
    lo = y & 15
    node = 1
    for j in range(4):
        bit = (lo >> (3 - j)) & 1
        tables[row_lo, 2 * node + bit] += 1
        node = 2 * node + bit


@numba.njit(cache=True, parallel=True)
def count_add_cpu(data, start, end, ctx, tables):
    """Add the bytes data[start:end] to every context's rows. ctx: (C, 4) kind, param, offset, mask."""
    n_ctx = ctx.shape[0]
    for i in numba.prange(n_ctx):
        kind, param, offset, mask = ctx[i, 0], ctx[i, 1], ctx[i, 2], ctx[i, 3]
        for t in range(start, end):
            y = np.int64(data[t])
            h = context_hash(data, t, kind, param, i)
            add_byte(tables, slot_of(h, 0, offset, mask), slot_of(h, (y >> 4) + 1, offset, mask), y)


@cuda.jit(cache=True)
def count_add_kernel(data, start, end, ctx, tables):
    k = cuda.grid(1)
    n_ctx = ctx.shape[0]
    t = start + k // n_ctx
    i = k % n_ctx
    if t >= end:
        return
    kind, param, offset, mask = ctx[i, 0], ctx[i, 1], ctx[i, 2], ctx[i, 3]
    y = np.int64(data[t])
    h = context_hash_k(data, t, kind, param, i)
    row = slot_of_k(h, 0, offset, mask)
    node = 1
    for j in range(4):
        bit = ((y >> 4) >> (3 - j)) & 1
        cuda.atomic.add(tables, (row, 2 * node + bit), np.uint32(1))
        node = 2 * node + bit
    row = slot_of_k(h, (y >> 4) + 1, offset, mask)
    node = 1
    for j in range(4):
        bit = ((y & 15) >> (3 - j)) & 1
        cuda.atomic.add(tables, (row, 2 * node + bit), np.uint32(1))
        node = 2 * node + bit


def count_add(data, start: int, end: int, ctx, tables) -> None:
    """Dispatch on where `tables` lives."""
    if end <= start:
        return
    if on_device(tables):
        n = (end - start) * ctx.shape[0]
        tpb = config.THREADS_PER_BLOCK
        count_add_kernel[(n + tpb - 1) // tpb, tpb](data, start, end, ctx, tables)
    else:
        count_add_cpu(data, start, end, ctx, tables)
