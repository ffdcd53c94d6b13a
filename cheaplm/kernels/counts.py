"""Count tables: the model's memory, filled by one scatter-add pass over the training bytes.

Every context owns a block of rows in one uint32 table of shape (rows, 32). A row holds the bit
counts of one nibble: the 15 nodes of the nibble's binary tree, node n at columns (2n, 2n+1) =
(times the next bit was 0, times it was 1); columns 0-1 are unused. A byte touches two rows per
context: the high nibble's row (from the context hash) and the low nibble's row (from the context
hash and the high nibble), as lpaq1 does, so a lookup costs two cache lines, not eight.

Parallelisation: the CPU twin runs contexts in parallel (each context owns its rows, so no races);
the CUDA kernel runs one thread per (context, position) and adds with atomics. Counts are integers,
so both give identical tables whatever the order of the additions.

The CPU twin is memory-bound: every byte adds into two random rows per context. It works in
blocks: first the rows of a block of positions are computed (order-k hashes rolled, one multiply in
and one out per byte, instead of k), then the adds run as a tight loop whose cache misses overlap.
Measured on 2 cores, table_bits 20: 0.78 MB/s one loop, 1.8 MB/s in blocks.
"""

import numba
import numpy as np
from numba import cuda

from ..device import launch
from .dual import accumulate, for_kernels, on_device
from .hashing import M1, M2, M3, ORDER, context_hash, mix64, slot_of

context_hash_k = for_kernels(context_hash)
slot_of_k = for_kernels(slot_of)


@numba.njit(cache=True, inline="always")
def add_byte(tables, row_hi, row_lo, y, d):
    """Count byte y in the two nibble rows: adds of d, a uint32 (1 counts, 2**32 - 1 takes a count
    back exactly, by wrap-around); plain on the CPU, atomic in the CUDA kernel (`accumulate`)."""
    hi = y >> 4
    node = 1
    for j in range(4):
        bit = (hi >> (3 - j)) & 1
        accumulate(tables, (row_hi, 2 * node + bit), d)
        node = 2 * node + bit
    lo = y & 15
    node = 1
    for j in range(4):
        bit = (lo >> (3 - j)) & 1
        accumulate(tables, (row_lo, 2 * node + bit), d)
        node = 2 * node + bit


add_byte_k = for_kernels(add_byte)

M3_INV = np.int64(-1833609384515406417)  # M3 * M3_INV = 1 modulo 2**64
BLOCK = 4096  # positions whose rows are computed before their adds run


@numba.njit(cache=True, parallel=True)
def count_add_cpu(data, start, end, ctx, tables, d):
    """Add the bytes data[start:end] to every context's rows. ctx: (C, 4) kind, param, offset, mask."""
    n_ctx = ctx.shape[0]
    for i in numba.prange(n_ctx):
        kind, param, offset, mask = ctx[i, 0], ctx[i, 1], ctx[i, 2], ctx[i, 3]
        rows = np.empty(2 * BLOCK, dtype=np.int64)
        rolled = kind == ORDER and param >= 4
        top = np.int64(1)  # M3 ** param
        for _ in range(param if rolled else 0):
            top = top * M3
        # poly = sum over j = 1..param of (data[t-j] + 1) * M3**(param-j+1): context_hash's newest-first
        # Horner sum without its seed; one step forward drops the oldest byte and divides by M3
        poly = np.int64(0)
        have = False
        for b0 in range(start, end, BLOCK):
            b1 = min(b0 + BLOCK, end)
            for t in range(b0, b1):
                y = np.int64(data[t])
                if rolled and t > param:
                    if not have:
                        poly = np.int64(0)
                        for s in range(t - 1, t - 1 - param, -1):
                            poly = (poly + np.int64(data[s]) + 1) * M3
                        have = True
                    else:
                        poly = (poly - (np.int64(data[t - 1 - param]) + 1) * M3) * M3_INV + (np.int64(data[t - 1]) + 1) * top
                    h = mix64((i + 1) * M2 * top + poly + param * M1)
                else:
                    h = context_hash(data, t, kind, param, i)
                rows[2 * (t - b0)] = slot_of(h, 0, offset, mask)
                rows[2 * (t - b0) + 1] = slot_of(h, (y >> 4) + 1, offset, mask)
            for t in range(b0, b1):
                add_byte(tables, rows[2 * (t - b0)], rows[2 * (t - b0) + 1], np.int64(data[t]), d)


@cuda.jit(cache=True)
def count_add_kernel(data, start, end, ctx, tables, d):
    # context-major: the threads of a warp take neighbouring positions of one context, so they run
    # the same hash code (no divergence between context kinds) and read neighbouring bytes
    k = cuda.grid(1)
    n_pos = end - start
    i = k // n_pos
    t = start + k % n_pos
    if i >= ctx.shape[0]:
        return
    kind, param, offset, mask = ctx[i, 0], ctx[i, 1], ctx[i, 2], ctx[i, 3]
    y = np.int64(data[t])
    h = context_hash_k(data, t, kind, param, i)
    add_byte_k(tables, slot_of_k(h, 0, offset, mask), slot_of_k(h, (y >> 4) + 1, offset, mask), y, d)


def count_add(data, start: int, end: int, ctx, tables, delta: int = 1) -> None:
    """Add delta (1, or -1 to take counts back) per byte of data[start:end]; dispatch on where
    `tables` lives."""
    if end <= start:
        return
    d = np.uint32(delta & 0xFFFFFFFF)
    if on_device(tables):
        n = (end - start) * ctx.shape[0]
        count_add_kernel[launch(n)](data, start, end, ctx, tables, d)
    else:
        count_add_cpu(data, start, end, ctx, tables, d)
