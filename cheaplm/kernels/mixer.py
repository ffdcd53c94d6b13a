"""The learned mixer: count lookups -> per-bit logistic mixing -> two APM stages -> loss.

Forward, for one byte position t and each of its 8 bits j (partial byte c = 1 followed by the bits
already known), per context i:
    (n0, n1)   = counts at node c in the context's nibble row (leave-one-out: minus t's own bit)
    a_i        = clip(ln((n1 + .4) / (n0 + .4)), -8, 8)          # what the counts say
    b_i        = SM[i, q(n0), q(n1)]                               # learned count -> logit map
match model:  m = ML[len bucket, j] * (+1 if the predicted byte's next bit is 1 else -1)
weight set:   s = (j, match bucket, number of contexts with any count)
    z  = sum_i W[s,2i] a_i + W[s,2i+1] b_i + W[s,2C] m + W[s,2C+1]
    zf = z + A1[c](z) + A2[prev byte, c](z)                        # APM: 33-knot interpolation
    p  = sigmoid(zf);  loss = -log2 p(bit)

Forward caches everything backward needs (features, weight-set index, count-map indices, APM
knot and fraction, slope dzf/dz). Backward adds into gradients; the CPU twin gives each of a fixed
number of chunks its own gradient buffer (deterministic sums), the CUDA kernel adds with atomics
(gradient sums are then not bit-reproducible run to run; the forward is).

Parallelisation: one position per CUDA thread / prange iteration; its 8 bits run in order.
"""

import math

import numba
import numpy as np
from numba import cuda

from .. import config
from .hashing import context_hash, slot_of
from .dual import for_kernels, on_device
from .match import match_lookup

N_Q = 16  # count buckets of the learned count map
Q_TOP = 3 << (N_Q // 2 - 2)  # counts from here on share the last bucket (192 for 16 buckets)
APM_KNOTS = 33
APM_LO = -12.0
APM_STEP = 0.75
N_MB = 8  # match length buckets (0 = no match)
STRETCH_CLIP = 8.0

# layout vector: where each parameter block starts in the flat buffer
L_NCTX, L_K, L_W, L_SM, L_ML, L_A1, L_A2, L_A2MASK, L_P, L_FLAGS = range(10)
# L_FLAGS bits, for ablations: one weight set for every bit (no selection); no APM stages
NO_WEIGHT_SETS = 1
NO_APM = 2


@numba.njit(cache=True, inline="always")
def count_bucket(n):
    """0,1,2,3 exactly, then two buckets per power of two (integer math: the GPU's log2 rounds
    differently at powers of two, and a bucket index must not depend on the device)."""
    if n < 4:
        return n
    if n >= Q_TOP:
        return N_Q - 1
    k = 0
    m = n
    while m > 1:
        m >>= 1
        k += 1
    q = 2 * k + ((n >> (k - 1)) & 1)
    if q > N_Q - 1:
        q = N_Q - 1
    return q


@numba.njit(cache=True, inline="always")
def softplus(x):
    if x > 0:
        return x + math.log1p(math.exp(-x))
    return math.log1p(math.exp(x))


@numba.njit(cache=True)
def mix_node(j, c, bit, hashes, e, mb, prev_byte, ctx, tables, params, lay, feat, qidx, idx):
    """Logit of bit j at partial byte c (1 followed by the j known bits) for one position.

    Fills feat (K inputs), qidx (C count-map indices) and idx = (weight row, match-map index or
    -1, match sign, APM row 1, APM row 2); returns (z, zf, dzf/dz, APM fraction). `bit` is the true
    bit for leave-one-out, or -1 for no leave-one-out (test time, generation).
    Shared by training (forward_position) and generation (sample.byte_distribution).
    """
    n_ctx = lay[L_NCTX]
    n_in = lay[L_K]
    if j < 4:
        node = c
        nib = np.int64(0)
    else:
        nib = ((c >> (j - 4)) & 15) + 1
        node = (np.int64(1) << (j - 4)) | (c & ((np.int64(1) << (j - 4)) - 1))
    nz = 0
    for i in range(n_ctx):
        row = slot_of(hashes[i], nib, ctx[i, 2], ctx[i, 3])
        n0 = np.int64(tables[row, 2 * node])
        n1 = np.int64(tables[row, 2 * node + 1])
        if bit == 1 and n1 > 0:
            n1 -= 1
        elif bit == 0 and n0 > 0:
            n0 -= 1
        a = math.log((n1 + 0.4) / (n0 + 0.4))
        if a > STRETCH_CLIP:
            a = STRETCH_CLIP
        elif a < -STRETCH_CLIP:
            a = -STRETCH_CLIP
        q = lay[L_SM] + i * N_Q * N_Q + count_bucket(n0) * N_Q + count_bucket(n1)
        feat[2 * i] = a
        feat[2 * i + 1] = params[q]
        qidx[i] = q
        if n0 + n1 > 0:
            nz += 1
    mstate = 0
    feat[2 * n_ctx] = 0.0
    idx[1] = -1
    idx[2] = 0
    if mb > 0 and (e >> (8 - j)) == (c ^ (np.int64(1) << j)):
        mstate = mb
        mi = lay[L_ML] + mb * 8 + j
        sign = 1.0 if ((e >> (7 - j)) & 1) == 1 else -1.0
        feat[2 * n_ctx] = params[mi] * sign
        idx[1] = mi
        idx[2] = 1 if sign > 0 else -1
    feat[2 * n_ctx + 1] = 1.0
    s = (j * N_MB + mstate) * (n_ctx + 1) + nz
    if lay[L_FLAGS] & NO_WEIGHT_SETS:
        s = 0
    base = lay[L_W] + s * n_in
    idx[0] = base
    z = 0.0
    for k in range(n_in):
        z += params[base + k] * feat[k]
    if lay[L_FLAGS] & NO_APM:
        idx[3] = -1
        idx[4] = -1
        return z, z, 1.0, 0.0
    # APM stages: piecewise-linear corrections of z, one curve per context
    zc = min(max(z, APM_LO), -APM_LO)
    u = (zc - APM_LO) / APM_STEP
    kk = np.int64(u)
    if kk > APM_KNOTS - 2:
        kk = APM_KNOTS - 2
    f = u - kk
    r1 = lay[L_A1] + c * APM_KNOTS + kk
    r2 = lay[L_A2] + ((prev_byte * 256 + c) & lay[L_A2MASK]) * APM_KNOTS + kk
    idx[3] = r1
    idx[4] = r2
    v = params[r1] * (1 - f) + params[r1 + 1] * f + params[r2] * (1 - f) + params[r2 + 1] * f
    if z < APM_LO or z > -APM_LO:
        slope = 1.0
    else:
        slope = 1.0 + (params[r1 + 1] - params[r1] + params[r2 + 1] - params[r2]) / APM_STEP
    return z, z + v, slope, f


@numba.njit(cache=True)
def forward_position(b, data, pos, loo, prev, prev_base, minlens, ctx, tables, params, lay,
                     hashes, feat, qidx, zmix, idx, frac, slope, prob, loss):
    """Forward for position pos[b]; writes row b of every cache array and loss[b] (bits)."""
    t = pos[b]
    y = np.int64(data[t])
    for i in range(lay[L_NCTX]):
        hashes[b, i] = context_hash(data, t, ctx[i, 0], ctx[i, 1], i)
    e, mb = match_lookup(data, t, prev, t - prev_base, minlens)
    prev_byte = np.int64(data[t - 1]) if t > 0 else np.int64(0)
    c = np.int64(1)
    total = 0.0
    for j in range(8):
        bit = (y >> (7 - j)) & 1
        z, zf, sl, f = mix_node(j, c, bit if loo else -1, hashes[b], e, mb, prev_byte, ctx, tables, params,
                                lay, feat[b, j], qidx[b, j], idx[b, j])
        zmix[b, j] = z
        slope[b, j] = sl
        frac[b, j] = f
        prob[b, j] = 1.0 / (1.0 + math.exp(-zf))
        # loss = -ln p(bit), p = sigmoid(zf)
        total += softplus(-zf) if bit == 1 else softplus(zf)
        c = 2 * c + bit
    loss[b] = total / math.log(2.0)


@numba.njit(cache=True, parallel=True)
def forward_cpu(data, pos, loo, prev, prev_base, minlens, ctx, tables, params, lay,
                hashes, feat, qidx, zmix, idx, frac, slope, prob, loss):
    for b in numba.prange(pos.shape[0]):
        forward_position(b, data, pos, loo, prev, prev_base, minlens, ctx, tables, params, lay,
                         hashes, feat, qidx, zmix, idx, frac, slope, prob, loss)


forward_position_k = for_kernels(forward_position)


@cuda.jit(cache=True)
def forward_kernel(data, pos, loo, prev, prev_base, minlens, ctx, tables, params, lay,
                   hashes, feat, qidx, zmix, idx, frac, slope, prob, loss):
    b = cuda.grid(1)
    if b < pos.shape[0]:
        forward_position_k(b, data, pos, loo, prev, prev_base, minlens, ctx, tables, params, lay,
                         hashes, feat, qidx, zmix, idx, frac, slope, prob, loss)


@numba.njit(cache=True)
def backward_position(b, data, pos, params, lay, feat, qidx, idx, frac, slope, prob, scale, grad):
    """Adds d(scale * loss_nats[b]) / d params into grad (plain adds: CPU)."""
    n_ctx = lay[L_NCTX]
    n_in = lay[L_K]
    y = np.int64(data[pos[b]])
    for j in range(8):
        bit = (y >> (7 - j)) & 1
        # p = sigmoid(zf), loss = -ln p(bit)  =>  dloss/dzf = p - bit
        dzf = (prob[b, j] - bit) * scale
        f = frac[b, j]
        for r in range(2):
            if idx[b, j, 3 + r] >= 0:
                grad[idx[b, j, 3 + r]] += dzf * (1 - f)
                grad[idx[b, j, 3 + r] + 1] += dzf * f
        # zf = z + apm(z)
        dz = dzf * slope[b, j]
        base = idx[b, j, 0]
        for k in range(n_in):
            grad[base + k] += dz * feat[b, j, k]
        # feat[2i+1] = SM[q]
        for i in range(n_ctx):
            grad[qidx[b, j, i]] += dz * params[base + 2 * i + 1]
        mi = idx[b, j, 1]
        if mi >= 0:
            # feat[2C] = ML[mi] * sign
            grad[mi] += dz * params[base + 2 * n_ctx] * idx[b, j, 2]


@numba.njit(cache=True, parallel=True)
def backward_cpu(data, pos, params, lay, feat, qidx, idx, frac, slope, prob, scale, grads):
    """grads: (chunks, P); chunk k handles a fixed slice of the batch. Caller sums over chunks."""
    n_b = pos.shape[0]
    n_chunks = grads.shape[0]
    for ch in numba.prange(n_chunks):
        lo = ch * n_b // n_chunks
        hi = (ch + 1) * n_b // n_chunks
        for b in range(lo, hi):
            backward_position(b, data, pos, params, lay, feat, qidx, idx, frac, slope, prob, scale, grads[ch])


@cuda.jit(cache=True)
def backward_kernel(data, pos, params, lay, feat, qidx, idx, frac, slope, prob, scale, grad):
    b = cuda.grid(1)
    if b >= pos.shape[0]:
        return
    n_ctx = lay[L_NCTX]
    n_in = lay[L_K]
    y = np.int64(data[pos[b]])
    for j in range(8):
        bit = (y >> (7 - j)) & 1
        dzf = (prob[b, j] - bit) * scale
        f = frac[b, j]
        for r in range(2):
            if idx[b, j, 3 + r] >= 0:
                cuda.atomic.add(grad, idx[b, j, 3 + r], dzf * (1 - f))
                cuda.atomic.add(grad, idx[b, j, 3 + r] + 1, dzf * f)
        dz = dzf * slope[b, j]
        base = idx[b, j, 0]
        for k in range(n_in):
            cuda.atomic.add(grad, base + k, dz * feat[b, j, k])
        for i in range(n_ctx):
            cuda.atomic.add(grad, qidx[b, j, i], dz * params[base + 2 * i + 1])
        mi = idx[b, j, 1]
        if mi >= 0:
            cuda.atomic.add(grad, mi, dz * params[base + 2 * n_ctx] * idx[b, j, 2])


class Caches:
    """Forward caches for a batch of B positions, on the host or the device."""

    def __init__(self, n_b: int, n_ctx: int, n_in: int, dtype=np.float32, device: bool = False):
        alloc = cuda.device_array if device else np.zeros
        self.n_b = n_b
        self.hashes = alloc((n_b, n_ctx), dtype=np.int64)
        self.feat = alloc((n_b, 8, n_in), dtype=dtype)
        self.qidx = alloc((n_b, 8, n_ctx), dtype=np.int64)
        self.idx = alloc((n_b, 8, 5), dtype=np.int64)  # weight row, match index, sign, APM rows
        self.zmix = alloc((n_b, 8), dtype=dtype)
        self.frac = alloc((n_b, 8), dtype=dtype)
        self.slope = alloc((n_b, 8), dtype=dtype)
        self.prob = alloc((n_b, 8), dtype=dtype)
        self.loss = alloc(n_b, dtype=dtype)

    def forward_args(self):
        return (self.hashes, self.feat, self.qidx, self.zmix, self.idx, self.frac, self.slope, self.prob,
                self.loss)

    def backward_args(self):
        return (self.feat, self.qidx, self.idx, self.frac, self.slope, self.prob)


def _blocks(n: int) -> tuple[int, int]:
    tpb = config.THREADS_PER_BLOCK
    return (n + tpb - 1) // tpb, tpb


def forward(data, pos, loo, prev, prev_base, minlens, ctx, tables, params, lay, caches: Caches) -> None:
    """Dispatch on where `params` lives. Fills caches (loss in bits per position)."""
    args = (data, pos, loo, prev, prev_base, minlens, ctx, tables, params, lay) + caches.forward_args()
    if on_device(params):
        forward_kernel[_blocks(pos.shape[0])](*args)
    else:
        forward_cpu(*args)


def backward(data, pos, params, lay, caches: Caches, scale: float, grad, grad_chunks=None) -> None:
    """Adds scale * d(sum of loss in nats)/d params into grad."""
    if on_device(params):
        backward_kernel[_blocks(pos.shape[0])](data, pos, params, lay, *caches.backward_args(), scale, grad)
    else:
        if grad_chunks is None:
            grad_chunks = np.zeros((config.CPU_GRAD_CHUNKS, grad.shape[0]), dtype=grad.dtype)
        else:
            grad_chunks[:] = 0
        backward_cpu(data, pos, params, lay, *caches.backward_args(), scale, grad_chunks)
        grad += grad_chunks.sum(axis=0)
