"""The learned mixer: count lookups -> per-bit logistic mixers -> a final mixer -> APM stages -> loss.

Forward, for one byte position t and each of its 8 bits j (partial byte c = 1 followed by the bits
already known), per context i:
    (n0, n1)   = counts at node c in the context's nibble row (leave-one-out: minus t's own bit)
    a_i        = clip(ln((n1 + .4) / (n0 + .4)), -8, 8)          # what the counts say
    b_i        = SM[i, q(n0), q(n1)]                               # learned count -> logit map
match state:  s_m = 0 without a match (or once the partial byte leaves the predicted byte), else
              L(n) + n_len * r, where n is the verified length (at most the cap), L(n) its bucket:
              1 below 8, 2 below 12, 3 below 16, 4 below 20, 5 below 24, 6 below 32, then
              7 + (n - 32) // 16 (n_len = L(cap)); r = how many recency thresholds the distance back
              to the match reaches (0 = nearer than all)
match inputs: one candidate per minimum length (each verified on its own, so the most recent
              occurrence of a short context rides beside the longest match), or, in the older
              layout, one: the first (longest) that verifies. Candidate k has a match state ms_k
              (as s_m, from its own length and distance) and
              m_k = ML[k, ms_k, j] * (+1 if its predicted byte's next bit is 1 else -1),
              0 when it has no match or the partial byte has left its predicted byte. s_m, the
              state the selectors and the match APM use, is that of the first candidate still in
              play.
features:     x = (a_0, b_0, ..., a_C-1, b_C-1, m_0, ..., m_M-1, 1)
mixers:       one per selector k, each with its own weight set s_k chosen by a small context:
                seen:    (j, s_m, number of contexts with any count)
                partial: c
                byte1:   (previous byte, j)
                byte2:   (hash of the previous two bytes to 512 values, j)
                votes:   (j, match inputs in play that expect a 1, those that expect a 0; each
                          count at most 7)
              z_k = W_k[s_k] . x
final mixer:  z = sum_k V[c, k] z_k        (one selector: z = z_0, no V)
APM stages:   zf = z + sum_r A_r[row_r](z)  (33-knot piecewise-linear curves), rows chosen by:
                partial: c;  byte1: (previous byte * 256 + c) masked;
                byte2:   hash(previous two bytes, c) masked;  match: (s_m, expected bit, c)
    p  = sigmoid(zf);  loss = -log2 p(bit)

Forward caches everything backward needs (features, each mixer's output and weight row, count-map
indices, APM rows, knot fraction, slope dzf/dz). Backward adds into gradients; the CPU twin gives
each of a fixed number of chunks its own gradient buffer (deterministic sums), the CUDA kernel adds
with atomics (gradient sums are then not bit-reproducible run to run; the forward is).

Parallelisation: one position per CUDA thread / prange iteration; its 8 bits run in order.
"""

import math

import numba
import numpy as np
from numba import cuda

from .. import config
from ..device import launch
from .hashing import context_hash, mix64, slot_of
from .dual import accumulate, for_kernels, on_device
from .match import match_inputs, pointer_column

N_Q = 16  # count buckets of the learned count map
Q_TOP = 3 << (N_Q // 2 - 2)  # counts from here on share the last bucket (192 for 16 buckets)
APM_KNOTS = 33
APM_LO = -12.0
APM_STEP = 0.75
STRETCH_CLIP = 8.0

# The layout vector: the mixer's sizes and where each parameter block starts in the flat buffer,
# as the kernels read them. Built by cheaplm/memory.py from its size table (`mixer_blocks`); the
# slots are named here and numbered by their order, so a new slot is one name, not a renumbering.
MAX_SEL = 8
MAX_APM = 8
LAYOUT_SLOTS = (("n_ctx", "n_in", "n_sel", "n_apm", "n_mi", "n_mb", "flags", "n_params",
                 "final", "count_maps", "match_maps")
                + tuple(f"sel{k}_{f}" for k in range(MAX_SEL) for f in ("kind", "at"))
                + tuple(f"apm{k}_{f}" for k in range(MAX_APM) for f in ("kind", "at", "mask")))
L_NCTX, L_K, L_NSEL, L_NAPM, L_NMI, L_NMB, L_FLAGS, L_P, L_V, L_SM, L_ML, L_SEL, L_APM = (
    LAYOUT_SLOTS.index(n) for n in ("n_ctx", "n_in", "n_sel", "n_apm", "n_mi", "n_mb", "flags", "n_params",
                                    "final", "count_maps", "match_maps", "sel0_kind", "apm0_kind"))
L_LEN = len(LAYOUT_SLOTS)
# selector k: kind at L_SEL + 2k, its weight block at L_SEL + 2k + 1; APM k: kind at L_APM + 3k,
# its block at + 1, its row mask at + 2 (the order of LAYOUT_SLOTS)
# L_FLAGS bits, for ablations: one weight set for every bit (no selection); no APM stages
NO_WEIGHT_SETS = 1
NO_APM = 2

SELECTORS = {"seen": 0, "partial": 1, "byte1": 2, "byte2": 3, "votes": 4}
SEL_SEEN, SEL_PARTIAL, SEL_BYTE1, SEL_BYTE2, SEL_VOTES = range(5)
VOTE_SIDE = 8  # votes for each bit value are counted up to 7
BYTE2_SETS = 512
APMS = {"partial": 0, "byte1": 1, "byte2": 2, "match": 3}
APM_PARTIAL, APM_BYTE1, APM_BYTE2, APM_MATCH = range(4)


def selector_sets(kind: int, n_ctx: int, n_mb: int) -> int:
    """Weight sets of a selector kind."""
    return {SEL_SEEN: 8 * n_mb * (n_ctx + 1), SEL_PARTIAL: 256, SEL_BYTE1: 256 * 8, SEL_BYTE2: BYTE2_SETS * 8,
            SEL_VOTES: 8 * VOTE_SIDE * VOTE_SIDE}[kind]


def apm_rows(kind: int, bits: int, n_mb: int) -> int:
    """Curves of an APM kind (`bits`: rows of the hashed/masked kinds)."""
    return {APM_PARTIAL: 256, APM_BYTE1: 1 << bits, APM_BYTE2: 1 << bits, APM_MATCH: n_mb * 2 * 256}[kind]


def idx_width(n_sel: int, n_apm: int, n_mi: int = 1) -> int:
    """Columns of the per-bit index cache: mixer rows, final row, (match index, sign) per match
    input, APM rows."""
    return n_sel + 1 + 2 * n_mi + n_apm


@numba.njit(cache=True, inline="always")
def count_bucket(n):
    """0,1,2,3 exactly, then two buckets per power of two (integer math: the GPU's log2 rounds
    differently at powers of two, and a bucket index must not depend on the device). A negative n
    (not a count: a damaged table) takes bucket 0 rather than an index before the map."""
    if n < 4:
        return max(n, 0)
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


@numba.njit(cache=True, inline="always")
def count_features(j, c, bit, hashes, ctx, tables, params, lay, feat, qidx):
    """feat[2i], feat[2i + 1] for each context i: the count ratio at node c of bit j and its learned
    count map; qidx[i] = the map entry read. Returns how many contexts have any count there."""
    if j < 4:
        node = c
        nib = np.int64(0)
    else:
        nib = ((c >> (j - 4)) & 15) + 1
        node = (np.int64(1) << (j - 4)) | (c & ((np.int64(1) << (j - 4)) - 1))
    nz = 0
    for i in range(lay[L_NCTX]):
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
    return nz


@numba.njit(cache=True, inline="always")
def match_features(j, c, cand, params, lay, feat, idx):
    """feat[2C + k] for each match input k still in play at node c (its learned value, signed by
    the bit it expects), and the bias input; idx holds each one's map entry and sign. Returns the
    first input's state and expected bit, and the votes (VOTE_SIDE x inputs expecting 1 + those
    expecting 0, each at most VOTE_SIDE - 1)."""
    n_ctx = lay[L_NCTX]
    n_sel = lay[L_NSEL]
    n_mi = lay[L_NMI]
    mstate = 0
    ebit = 0
    votes = np.int64(0)
    for k in range(n_mi):
        e = cand[k, 0]
        s = cand[k, 1]
        feat[2 * n_ctx + k] = 0.0
        idx[n_sel + 1 + 2 * k] = -1
        idx[n_sel + 2 + 2 * k] = 0
        if s > 0 and (e >> (8 - j)) == (c ^ (np.int64(1) << j)):
            eb = (e >> (7 - j)) & 1
            if eb == 1 and votes < VOTE_SIDE * (VOTE_SIDE - 1):
                votes += VOTE_SIDE
            elif eb == 0 and votes % VOTE_SIDE < VOTE_SIDE - 1:
                votes += 1
            if mstate == 0:
                mstate = s
                ebit = eb
            mi = lay[L_ML] + (k * lay[L_NMB] + s) * 8 + j
            sign = 1.0 if eb == 1 else -1.0
            feat[2 * n_ctx + k] = params[mi] * sign
            idx[n_sel + 1 + 2 * k] = mi
            idx[n_sel + 2 + 2 * k] = 1 if sign > 0 else -1
    feat[2 * n_ctx + n_mi] = 1.0
    return mstate, ebit, votes


@numba.njit(cache=True, inline="always")
def mix_selected(j, c, hist, nz, mstate, votes, params, lay, feat, idx, zk):
    """Each selector's mixer with the weight set its context picks (zk[k], idx[k] = the set's
    row), then the final mixer chosen by the partial byte (idx[n_sel]: its row, -1 with one)."""
    n_in = lay[L_K]
    n_sel = lay[L_NSEL]
    n_ctx = lay[L_NCTX]
    prev_byte = hist & 255
    for k in range(n_sel):
        kind = lay[L_SEL + 2 * k]
        if lay[L_FLAGS] & NO_WEIGHT_SETS:
            s = np.int64(0)
        elif kind == SEL_SEEN:
            s = (j * lay[L_NMB] + mstate) * (n_ctx + 1) + nz
        elif kind == SEL_PARTIAL:
            s = c
        elif kind == SEL_BYTE1:
            s = prev_byte * 8 + j
        elif kind == SEL_VOTES:
            s = j * VOTE_SIDE * VOTE_SIDE + votes
        else:
            s = ((mix64((hist & 0xFFFF) + 0x10000) >> 24) & (BYTE2_SETS - 1)) * 8 + j
        base = lay[L_SEL + 2 * k + 1] + s * n_in
        idx[k] = base
        zz = 0.0
        for q in range(n_in):
            zz += params[base + q] * feat[q]
        zk[k] = zz
    if n_sel == 1:
        idx[n_sel] = -1
        return zk[0]
    vrow = lay[L_V] + c * n_sel
    idx[n_sel] = vrow
    z = 0.0
    for k in range(n_sel):
        z += params[vrow + k] * zk[k]
    return z


@numba.njit(cache=True, inline="always")
def apm_stages(z, c, hist, mstate, ebit, params, lay, idx):
    """zf = z + the APM curves at z, one per APM row (idx: each row's knot entry, -1 when the APMs
    are off). Returns (zf, dzf/dz, the knot fraction)."""
    n_apm = lay[L_NAPM]
    at = lay[L_NSEL] + 1 + 2 * lay[L_NMI]  # the APM rows' columns in idx
    if lay[L_FLAGS] & NO_APM:
        n_apm = 0
    if n_apm == 0:
        for r in range(lay[L_NAPM]):  # APMs switched off: backward skips their rows
            idx[at + r] = -1
        return z, 1.0, 0.0
    # APM stages: piecewise-linear corrections of z, one curve per context row, shared knots.
    # zc = min(max(z, APM_LO), -APM_LO), written so a NaN z (every comparison false) takes the
    # first knot: int(NaN) is undefined and indexed far out of bounds (issue 12 item 8)
    zc = z
    if not zc > APM_LO:
        zc = APM_LO
    elif zc > -APM_LO:
        zc = -APM_LO
    u = (zc - APM_LO) / APM_STEP
    kk = np.int64(u)
    if kk > APM_KNOTS - 2:
        kk = APM_KNOTS - 2
    f = u - kk
    v = 0.0
    rise = 0.0
    prev_byte = hist & 255
    for r in range(n_apm):
        kind = lay[L_APM + 3 * r]
        mask = lay[L_APM + 3 * r + 2]
        if kind == APM_PARTIAL:
            row = c
        elif kind == APM_BYTE1:
            row = (prev_byte * 256 + c) & mask
        elif kind == APM_BYTE2:
            row = (mix64(((hist & 0xFFFF) << 8) + c + 0x3000000) >> 24) & mask
        else:
            row = (mstate * 2 + ebit) * 256 + c
        a = lay[L_APM + 3 * r + 1] + row * APM_KNOTS + kk
        idx[at + r] = a
        v += params[a] * (1 - f) + params[a + 1] * f
        rise += params[a + 1] - params[a]
    if z < APM_LO or z > -APM_LO:
        slope = 1.0
    else:
        slope = 1.0 + rise / APM_STEP
    return z + v, slope, f


@numba.njit(cache=True)
def mix_node(j, c, bit, hashes, cand, hist, ctx, tables, params, lay, feat, qidx, idx, zk):
    """Logit of bit j at partial byte c (1 followed by the j known bits) for one position.

    cand: the match inputs (kernels/match.py match_inputs). hist holds the two bytes before the
    position (previous byte in the low 8 bits). Fills feat (K inputs), qidx (C count-map indices),
    zk (each mixer's output) and idx (see idx_width); returns (z, zf, dzf/dz, APM fraction). `bit`
    is the true bit for leave-one-out, or -1 for none (test time, generation). Shared by training
    (forward_position) and generation (memory.py byte_distribution).
    """
    nz = count_features(j, c, bit, hashes, ctx, tables, params, lay, feat, qidx)
    mstate, ebit, votes = match_features(j, c, cand, params, lay, feat, idx)
    z = mix_selected(j, c, hist, nz, mstate, votes, params, lay, feat, idx, zk)
    zf, slope, f = apm_stages(z, c, hist, mstate, ebit, params, lay, idx)
    return z, zf, slope, f


@numba.njit(cache=True)
def forward_position(b, data, pos, loo, prev, prev_base, minlens, mspec, ctx, tables, params, lay,
                     hashes, cand, feat, qidx, zmix, zk, idx, frac, slope, prob, loss):
    """Forward for position pos[b]; writes row b of every cache array and loss[b] (bits)."""
    t = pos[b]
    y = np.int64(data[t])
    for i in range(lay[L_NCTX]):
        hashes[b, i] = context_hash(data, t, ctx[i, 0], ctx[i, 1], i)
    match_inputs(data, t, prev, pointer_column(b, t, prev_base), minlens, mspec, cand[b])
    hist = np.int64(0)
    if t > 0:
        hist = np.int64(data[t - 1])
    if t > 1:
        hist |= np.int64(data[t - 2]) << 8
    c = np.int64(1)
    total = 0.0
    for j in range(8):
        bit = (y >> (7 - j)) & 1
        z, zf, sl, f = mix_node(j, c, bit if loo else -1, hashes[b], cand[b], hist, ctx, tables, params,
                                lay, feat[b, j], qidx[b, j], idx[b, j], zk[b, j])
        zmix[b, j] = z
        slope[b, j] = sl
        frac[b, j] = f
        prob[b, j] = 1.0 / (1.0 + math.exp(-zf))
        # loss = -ln p(bit), p = sigmoid(zf)
        total += softplus(-zf) if bit == 1 else softplus(zf)
        c = 2 * c + bit
    loss[b] = total / math.log(2.0)


@numba.njit(cache=True, parallel=True)
def forward_cpu(data, pos, loo, prev, prev_base, minlens, mspec, ctx, tables, params, lay,
                hashes, cand, feat, qidx, zmix, zk, idx, frac, slope, prob, loss):
    for b in numba.prange(pos.shape[0]):
        forward_position(b, data, pos, loo, prev, prev_base, minlens, mspec, ctx, tables, params, lay,
                         hashes, cand, feat, qidx, zmix, zk, idx, frac, slope, prob, loss)


forward_position_k = for_kernels(forward_position)


@cuda.jit(cache=True)
def forward_kernel(data, pos, loo, prev, prev_base, minlens, mspec, ctx, tables, params, lay,
                   hashes, cand, feat, qidx, zmix, zk, idx, frac, slope, prob, loss):
    b = cuda.grid(1)
    if b < pos.shape[0]:
        forward_position_k(b, data, pos, loo, prev, prev_base, minlens, mspec, ctx, tables, params, lay,
                           hashes, cand, feat, qidx, zmix, zk, idx, frac, slope, prob, loss)


@numba.njit(cache=True)
def backward_position(b, data, pos, params, lay, feat, qidx, zk, idx, frac, slope, prob, scale, grad):
    """Adds d(scale * loss_nats[b]) / d params into grad (`accumulate`: plain adds on the CPU,
    atomic adds in the CUDA kernel)."""
    n_ctx = lay[L_NCTX]
    n_in = lay[L_K]
    n_sel = lay[L_NSEL]
    n_mi = lay[L_NMI]
    y = np.int64(data[pos[b]])
    for j in range(8):
        bit = (y >> (7 - j)) & 1
        # p = sigmoid(zf), loss = -ln p(bit)  =>  dloss/dzf = p - bit
        dzf = (prob[b, j] - bit) * scale
        f = frac[b, j]
        for r in range(lay[L_NAPM]):
            a = idx[b, j, n_sel + 1 + 2 * n_mi + r]
            if a >= 0:
                accumulate(grad, a, dzf * (1 - f))
                accumulate(grad, a + 1, dzf * f)
        # zf = z + sum of APM curves at z
        dz = dzf * slope[b, j]
        vrow = idx[b, j, n_sel]
        for k in range(n_sel):
            # z = sum_k V[k] z_k (or z = z_0)
            dzk = dz
            if vrow >= 0:
                dzk = dz * params[vrow + k]
                accumulate(grad, vrow + k, dz * zk[b, j, k])
            base = idx[b, j, k]
            for q in range(n_in):
                accumulate(grad, base + q, dzk * feat[b, j, q])
            # feat[2i+1] = SM[q]; feat[2C+m] = ML[mi_m] * sign_m
            for i in range(n_ctx):
                accumulate(grad, qidx[b, j, i], dzk * params[base + 2 * i + 1])
            for m in range(n_mi):
                mi = idx[b, j, n_sel + 1 + 2 * m]
                if mi >= 0:
                    accumulate(grad, mi, dzk * params[base + 2 * n_ctx + m] * idx[b, j, n_sel + 2 + 2 * m])


@numba.njit(cache=True, parallel=True)
def backward_cpu(data, pos, params, lay, feat, qidx, zk, idx, frac, slope, prob, scale, grads):
    """grads: (chunks, P); chunk k handles a fixed slice of the batch. Caller sums over chunks."""
    n_b = pos.shape[0]
    n_chunks = grads.shape[0]
    for ch in numba.prange(n_chunks):
        lo = ch * n_b // n_chunks
        hi = (ch + 1) * n_b // n_chunks
        for b in range(lo, hi):
            backward_position(b, data, pos, params, lay, feat, qidx, zk, idx, frac, slope, prob, scale, grads[ch])


backward_position_k = for_kernels(backward_position)


@cuda.jit(cache=True)
def backward_kernel(data, pos, params, lay, feat, qidx, zk, idx, frac, slope, prob, scale, grad):
    """backward_position, one thread a position, adding atomically (gradient sums are then not
    bit-reproducible run to run on the GPU)."""
    b = cuda.grid(1)
    if b < pos.shape[0]:
        backward_position_k(b, data, pos, params, lay, feat, qidx, zk, idx, frac, slope, prob, scale, grad)


class Caches:
    """Forward caches for a batch of B positions, on the host or the device."""

    def __init__(self, n_b: int, n_ctx: int, n_in: int, n_sel: int = 1, n_apm: int = 2, n_mi: int = 1,
                 dtype=np.float32, device: bool = False):
        alloc = cuda.device_array if device else np.zeros
        self.n_b = n_b
        self.hashes = alloc((n_b, n_ctx), dtype=np.int64)
        self.cand = alloc((n_b, n_mi, 2), dtype=np.int64)
        self.feat = alloc((n_b, 8, n_in), dtype=dtype)
        self.qidx = alloc((n_b, 8, n_ctx), dtype=np.int64)
        self.idx = alloc((n_b, 8, idx_width(n_sel, n_apm, n_mi)), dtype=np.int64)
        self.zmix = alloc((n_b, 8), dtype=dtype)
        self.zk = alloc((n_b, 8, n_sel), dtype=dtype)
        self.frac = alloc((n_b, 8), dtype=dtype)
        self.slope = alloc((n_b, 8), dtype=dtype)
        self.prob = alloc((n_b, 8), dtype=dtype)
        self.loss = alloc(n_b, dtype=dtype)

    def forward_args(self):
        return (self.hashes, self.cand, self.feat, self.qidx, self.zmix, self.zk, self.idx, self.frac, self.slope, self.prob,
                self.loss)

    def backward_args(self):
        return (self.feat, self.qidx, self.zk, self.idx, self.frac, self.slope, self.prob)


def forward(data, pos, loo, prev, prev_base, minlens, mspec, ctx, tables, params, lay, caches: Caches) -> None:
    """Dispatch on where `params` lives. Fills caches (loss in bits per position)."""
    args = (data, pos, loo, prev, prev_base, minlens, mspec, ctx, tables, params, lay) + caches.forward_args()
    if on_device(params):
        forward_kernel[launch(pos.shape[0])](*args)
    else:
        forward_cpu(*args)


def backward(data, pos, params, lay, caches: Caches, scale: float, grad, grad_chunks=None) -> None:
    """Adds scale * d(sum of loss in nats)/d params into grad."""
    if on_device(params):
        backward_kernel[launch(pos.shape[0])](data, pos, params, lay, *caches.backward_args(), scale, grad)
    else:
        if grad_chunks is None:
            grad_chunks = np.zeros((config.CPU_GRAD_CHUNKS, grad.shape[0]), dtype=grad.dtype)
        else:
            grad_chunks[:] = 0
        backward_cpu(data, pos, params, lay, *caches.backward_args(), scale, grad_chunks)
        grad += grad_chunks.sum(axis=0)
