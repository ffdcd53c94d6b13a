"""Element-wise and gather/scatter kernels of the reader (reader.py holds the model).

Each op has a CUDA kernel and a numba.njit CPU twin; where the arithmetic is per element it is
written once (an njit body both call). On the GPU the dense products take bf16 operands, so the
kernels that feed a product write bf16 bits, plain and transposed (gemm.py says why both); the CPU
twins keep float32 throughout.

rows:     per position, one embedding row per slot: the bytes t-1 .. t-W (a table row per offset
          and byte value), one hashed row per context (kernels/hashing.py's contexts), and one
          constant row (the first layer's bias, learned as an embedding).
gather:   x[b, s*E:(s+1)*E] = table[rows[b, s]]  (x keep[b, s] when training drops hashed rows)
keep:     training's dropout of hashed rows: keep[b, s] = 0 with probability p for a hashed-context
          slot, else 1 / (1 - p) (1 for every other slot); drawn from a hash of (seed, position,
          slot), so the CPU twin and the kernel drop the same rows
relu:     h = max(h_pre, 0)
softmax:  p = softmax(logits); loss = -log2 p[y]; dlogits = (p - onehot(y)) * scale; and the
          probability of each of y's bits given the bits before it (for the memory mix, reader.py)
relu_bwd: dh_pre = dh * (h > 0)
scatter:  grad_table[rows[b, s]] += dx[b, s*E:(s+1)*E] (x keep[b, s])  (CUDA: atomics, sums not
          bit-reproducible)
Parallelisation: one thread per position (rows), a block per position (softmax), a block per
32 x 32 tile where a kernel writes a transposed copy (its reads and both writes coalesced), or a
thread per element (the rest).
"""

import math

import numba
import numpy as np
from numba import cuda

from ..device import TILE_T, TILE_T_PAD, TILE_T_ROWS
from .dual import for_kernels
from .gemm import bf16_bits_dev
from .hashing import M1, M2, context_hash, mix64
from .match import M_STATES, match_inputs, pointer_column

context_hash_k = for_kernels(context_hash)


@numba.njit(cache=True, inline="always")
def rows_position(b, data, pos, window, ctx, bits, base_ctx, const_row, rows, prev, prev_base, minlens, mspec,
                  base_match, cand):
    t = pos[b]
    for i in range(window):
        s = t - 1 - i
        v = np.int64(data[s]) if s >= 0 else np.int64(0)
        rows[b, i] = i * 256 + v
    mask = (np.int64(1) << bits) - 1
    for c in range(ctx.shape[0]):
        h = context_hash(data, t, ctx[c, 0], ctx[c, 1], 100 + c)
        rows[b, window + c] = base_ctx + (np.int64(c) << bits) + ((h >> 16) & mask)
    # the match model's candidates (predicted byte, state: length x recency), one slot each
    n_mi = cand.shape[1]
    if n_mi > 0:
        match_inputs(data, t, prev, pointer_column(b, t, prev_base), minlens, mspec, cand[b])
        n_mb = mspec[M_STATES]
        for k in range(n_mi):
            e = cand[b, k, 0]
            st = cand[b, k, 1]
            if e < 0:
                e = 0
                st = 0
            rows[b, window + ctx.shape[0] + k] = base_match + (k * n_mb + st) * 256 + e
    rows[b, window + ctx.shape[0] + n_mi] = const_row


rows_position_k = for_kernels(rows_position)


@numba.njit(cache=True, parallel=True)
def rows_cpu(data, pos, window, ctx, bits, base_ctx, const_row, rows, prev, prev_base, minlens, mspec,
             base_match, cand):
    for b in numba.prange(pos.shape[0]):
        rows_position(b, data, pos, window, ctx, bits, base_ctx, const_row, rows, prev, prev_base, minlens, mspec,
                      base_match, cand)


@cuda.jit(cache=True)
def rows_kernel(data, pos, window, ctx, bits, base_ctx, const_row, rows, prev, prev_base, minlens, mspec,
                base_match, cand):
    b = cuda.grid(1)
    if b < pos.shape[0]:
        rows_position_k(b, data, pos, window, ctx, bits, base_ctx, const_row, rows, prev, prev_base, minlens,
                        mspec, base_match, cand)


@numba.njit(cache=True, inline="always")
def keep_position(b, pos, seed, p, window, n_ctx, keep):
    """keep[b, :] for the position pos[b]: each hashed-context slot (window .. window + n_ctx - 1)
    dropped (0) with probability p, else scaled by 1 / (1 - p) so that its expected input is the
    undropped one's (evaluation reads every row at 1); the other slots 1. The draw is a hash of
    (seed, position, slot): a new seed each step, the same draw on every target."""
    gain = 1.0 / (1.0 - p)
    for s in range(keep.shape[1]):
        keep[b, s] = 1.0
    for c in range(n_ctx):
        h = mix64((seed + 1) * M2 + (pos[b] + 1) * M1 + c)
        u = ((h >> 11) & ((np.int64(1) << 52) - 1)) * (1.0 / 4503599627370496.0)  # uniform in [0, 1)
        keep[b, window + c] = 0.0 if u < p else gain


keep_position_k = for_kernels(keep_position)


@numba.njit(cache=True, parallel=True)
def keep_cpu(pos, seed, p, window, n_ctx, keep):
    for b in numba.prange(pos.shape[0]):
        keep_position(b, pos, seed, p, window, n_ctx, keep)


@cuda.jit(cache=True)
def keep_kernel(pos, seed, p, window, n_ctx, keep):
    b = cuda.grid(1)
    if b < pos.shape[0]:
        keep_position_k(b, pos, seed, p, window, n_ctx, keep)


@numba.njit(cache=True, parallel=True)
def gather_cpu(table, rows, x, keep):
    """keep: (B, slots) factors of the rows (training's dropout), or no rows: every factor 1."""
    dim = table.shape[1]
    scaled = keep.shape[0] > 0
    for b in numba.prange(rows.shape[0]):
        for s in range(rows.shape[1]):
            r = rows[b, s]
            k = keep[b, s] if scaled else 1.0
            for e in range(dim):
                x[b, s * dim + e] = table[r, e] * k  # x 1.0 is exact: no dropout, the plain copy


@cuda.jit
def gather_kernel(table, rows, x, x_t, keep):
    """bf16 x (B, S*E) and x_t (S*E, B); a block per 32 x 32 tile of x (device.launch_tiles), a
    warp reading 32 consecutive elements of table rows, x_t written through shared memory. keep
    as gather_cpu's."""
    tile = cuda.shared.array((TILE_T, TILE_T_PAD), numba.uint16)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    r0, c0 = cuda.blockIdx.y * TILE_T, cuda.blockIdx.x * TILE_T
    dim = table.shape[1]
    for i in range(ty, TILE_T, TILE_T_ROWS):
        b, f = r0 + i, c0 + tx
        if b < rows.shape[0] and f < x.shape[1]:
            w = table[rows[b, f // dim], f % dim]
            if keep.shape[0] > 0:
                w *= keep[b, f // dim]
            v = bf16_bits_dev(w)
            x[b, f] = v
            tile[i, tx] = v
    cuda.syncthreads()
    for i in range(ty, TILE_T, TILE_T_ROWS):
        f, b = c0 + i, r0 + tx
        if b < rows.shape[0] and f < x.shape[1]:
            x_t[f, b] = tile[tx, i]


@cuda.jit
def take_kernel(data, pos, out):
    """out[b] = data[pos[b]]: the target bytes, gathered on the GPU (the CPU twin is data[pos])."""
    b = cuda.grid(1)
    if b < pos.shape[0]:
        out[b] = data[pos[b]]


@numba.njit(cache=True, parallel=True)
def relu_cpu(h):
    for b in numba.prange(h.shape[0]):
        for j in range(h.shape[1]):
            if h[b, j] < 0.0:
                h[b, j] = 0.0


@cuda.jit
def relu_kernel(h_pre, h, h_t):
    """bf16 relu(h_pre) into h (B, H) and h_t (H, B); a block per 32 x 32 tile (device.launch_tiles)."""
    tile = cuda.shared.array((TILE_T, TILE_T_PAD), numba.uint16)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    r0, c0 = cuda.blockIdx.y * TILE_T, cuda.blockIdx.x * TILE_T
    for i in range(ty, TILE_T, TILE_T_ROWS):
        b, j = r0 + i, c0 + tx
        if b < h_pre.shape[0] and j < h_pre.shape[1]:
            v = h_pre[b, j]
            if v < 0.0:
                v = 0.0
                h_pre[b, j] = 0.0  # relu_bwd reads the mask from here
            bits = bf16_bits_dev(v)
            h[b, j] = bits
            tile[i, tx] = bits
    cuda.syncthreads()
    for i in range(ty, TILE_T, TILE_T_ROWS):
        j, b = c0 + i, r0 + tx
        if b < h_pre.shape[0] and j < h_pre.shape[1]:
            h_t[j, b] = tile[tx, i]


@numba.njit(cache=True, inline="always")
def path_bit_prob(p, y, j):
    """P(bit j of the byte = 1 | its bits before j equal those of y) under the distribution p (256)."""
    width = 1 << (8 - j)
    lo = (y >> (8 - j)) << (8 - j)
    half = width >> 1
    s0 = 0.0
    s1 = 0.0
    for v in range(lo, lo + half):
        s0 += p[v]
    for v in range(lo + half, lo + width):
        s1 += p[v]
    return s1 / max(s0 + s1, 1e-30)


@numba.njit(cache=True, inline="always")
def softmax_position(b, logits, target, scale, loss, dl, bitp, cand, copy):
    """Softmax and cross-entropy of row b; dl[b] = (p - onehot) * scale; bitp[b, j] = P(bit j of
    the target = 1 | its bits before j). First the copy path: each match candidate in play adds
    copy[k, its state] to the logit of the byte it predicts."""
    n = logits.shape[1]
    for k in range(cand.shape[1]):
        if cand[b, k, 1] > 0 and cand[b, k, 0] >= 0:
            logits[b, cand[b, k, 0]] += copy[k, cand[b, k, 1]]
    mx = logits[b, 0]
    for v in range(1, n):
        if logits[b, v] > mx:
            mx = logits[b, v]
    tot = 0.0
    for v in range(n):
        e = math.exp(logits[b, v] - mx)
        dl[b, v] = e
        tot += e
    y = np.int64(target[b])
    for v in range(n):
        dl[b, v] = dl[b, v] / tot
    loss[b] = -math.log(max(dl[b, y], 1e-30)) / math.log(2.0)
    for j in range(8):
        bitp[b, j] = path_bit_prob(dl[b], y, j)
    for v in range(n):
        dl[b, v] = (dl[b, v] - (1.0 if v == y else 0.0)) * scale


@numba.njit(cache=True, parallel=True)
def softmax_cpu(logits, target, scale, loss, dl, bitp, cand, copy):
    for b in numba.prange(logits.shape[0]):
        softmax_position(b, logits, target, scale, loss, dl, bitp, cand, copy)


@numba.njit(cache=True)
def copy_grad_cpu(dl, cand, copy_grad):
    """copy path backward: d copy[k, s] += dlogits[b, predicted byte] (sequential: fixed sums)."""
    for b in range(dl.shape[0]):
        for k in range(cand.shape[1]):
            if cand[b, k, 1] > 0 and cand[b, k, 0] >= 0:
                copy_grad[k, cand[b, k, 1]] += dl[b, cand[b, k, 0]]


SOFTMAX_THREADS = 256  # one block per position, a thread per byte value


@cuda.jit
def softmax_kernel(logits, target, scale, loss, dl, bitp, cand, copy, copy_grad, dl16, dl16_t):
    """softmax_position for the GPU, one block of 256 threads per position (a thread per byte value;
    a thread per position left the GPU mostly idle). Reductions go through shared memory (the
    simulator has no warp shuffles). dl (float32) also goes out as bf16, plain and transposed; the
    copy path's gradient is added with atomics."""
    b = cuda.blockIdx.x
    v = cuda.threadIdx.x
    red = cuda.shared.array(SOFTMAX_THREADS, numba.float32)
    prob = cuda.shared.array(SOFTMAX_THREADS, numba.float32)
    if v == 0:
        for k in range(cand.shape[1]):
            if cand[b, k, 1] > 0 and cand[b, k, 0] >= 0:
                logits[b, cand[b, k, 0]] += copy[k, cand[b, k, 1]]
    cuda.syncthreads()
    z = logits[b, v]
    red[v] = z
    cuda.syncthreads()
    step = SOFTMAX_THREADS // 2
    while step > 0:
        if v < step and red[v + step] > red[v]:
            red[v] = red[v + step]
        cuda.syncthreads()
        step //= 2
    mx = red[0]
    cuda.syncthreads()
    e = math.exp(z - mx)
    red[v] = e
    cuda.syncthreads()
    step = SOFTMAX_THREADS // 2
    while step > 0:
        if v < step:
            red[v] += red[v + step]
        cuda.syncthreads()
        step //= 2
    p = e / red[0]
    prob[v] = p
    cuda.syncthreads()
    y = np.int64(target[b])
    if v == 0:
        loss[b] = -math.log(max(prob[y], 1e-30)) / math.log(2.0)
    if v < 8:
        # path_bit_prob over the shared array, written out: this is the form run on the H200
        # (3e24908); passing a shared array to the njit helper is not yet checked on a GPU
        j = v
        width = 1 << (8 - j)
        lo = (y >> (8 - j)) << (8 - j)
        half = width >> 1
        s0 = 0.0
        s1 = 0.0
        for u in range(lo, lo + half):
            s0 += prob[u]
        for u in range(lo + half, lo + width):
            s1 += prob[u]
        bitp[b, j] = s1 / max(s0 + s1, 1e-30)
    g = (p - (1.0 if v == y else 0.0)) * scale
    dl[b, v] = g
    bits = bf16_bits_dev(g)
    dl16[b, v] = bits
    dl16_t[v, b] = bits
    if scale != 0.0 and v < cand.shape[1]:
        if cand[b, v, 1] > 0 and cand[b, v, 0] >= 0:
            e_k = cand[b, v, 0]
            cuda.atomic.add(copy_grad, (v, cand[b, v, 1]), (prob[e_k] - (1.0 if e_k == y else 0.0)) * scale)


@numba.njit(cache=True, parallel=True)
def relu_bwd_cpu(dh, h):
    for b in numba.prange(dh.shape[0]):
        for j in range(dh.shape[1]):
            if h[b, j] <= 0.0:
                dh[b, j] = 0.0


@cuda.jit
def relu_bwd_kernel(dh, h_pre, d16, d16_t):
    """dh * (relu output > 0) as bf16, plain and transposed (h_pre holds relu's output); a block
    per 32 x 32 tile (device.launch_tiles)."""
    tile = cuda.shared.array((TILE_T, TILE_T_PAD), numba.uint16)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    r0, c0 = cuda.blockIdx.y * TILE_T, cuda.blockIdx.x * TILE_T
    for i in range(ty, TILE_T, TILE_T_ROWS):
        b, j = r0 + i, c0 + tx
        if b < dh.shape[0] and j < dh.shape[1]:
            bits = bf16_bits_dev(dh[b, j] if h_pre[b, j] > 0.0 else 0.0)
            d16[b, j] = bits
            tile[i, tx] = bits
    cuda.syncthreads()
    for i in range(ty, TILE_T, TILE_T_ROWS):
        j, b = c0 + i, r0 + tx
        if b < dh.shape[0] and j < dh.shape[1]:
            d16_t[j, b] = tile[tx, i]


@numba.njit(cache=True)
def scatter_cpu(dx, rows, grad, keep):
    """Sequential, so the sums are the same on every run and machine. keep: gather's factors (a
    dropped row gets 0 from that position: lazy Adam leaves a row nobody kept as it was)."""
    dim = grad.shape[1]
    scaled = keep.shape[0] > 0
    for b in range(rows.shape[0]):
        for s in range(rows.shape[1]):
            r = rows[b, s]
            k = keep[b, s] if scaled else 1.0
            for e in range(dim):
                # forward: x[b, s * dim + e] = table[r, e] * keep[b, s]
                grad[r, e] += dx[b, s * dim + e] * k


@cuda.jit
def scatter_kernel(dx, rows, grad, keep):
    f, b = cuda.grid(2)  # f fastest: a warp adds into one row
    if b < rows.shape[0] and f < dx.shape[1]:
        dim = grad.shape[1]
        g = dx[b, f]
        if keep.shape[0] > 0:
            g *= keep[b, f // dim]
        cuda.atomic.add(grad, (rows[b, f // dim], f % dim), g)


@numba.njit(cache=True, inline="always")
def mix_bit(zm, zr, j, w):
    """The memory-reader mix of one bit: weight set chosen by (bit, memory confidence, reader
    confidence); returns (z, set row)."""
    # cm = min(3, int(abs(zm) / 2)), written so NaN or inf (comparisons false, int() undefined)
    # takes the last bucket instead of an index far out of bounds (issue 12 item 8)
    cm = 3
    if abs(zm) < 6.0:
        cm = int(abs(zm) / 2.0)
    cr = 3
    if abs(zr) < 6.0:
        cr = int(abs(zr) / 2.0)
    row = (j * 4 + cm) * 4 + cr
    return w[row, 0] * zm + w[row, 1] * zr + w[row, 2], row


