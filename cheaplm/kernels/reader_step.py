"""The reader's forward for one position on the host, for generation: one thread, no work space.

Generation reads one position at a time. Training's forward (reader.py with reader_backend's
HostOps) runs a position as a batch of one through ~15 numba parallel regions and BLAS calls: tens
of microseconds each on an idle machine, milliseconds on a busy one (each region waits for every
thread), and its work space is rebuilt whenever the batch size changes. These kernels do the same
arithmetic on vectors, serially: the same row indices (rows_position), the scan's step
(scan.scan_step), the copy path and the softmax; the dense products as sums over the input in the
input's order, on the weights transposed (`wt` (fan_in, fan_out), made once per stream), so the
inner loop runs along contiguous outputs. Skipping an input that relu made zero changes nothing.
The probabilities equal training's forward's to float rounding (tests/test_sample.py).
No CUDA twin: generation runs on the CPU (stream.py).
"""

import math

import numba
import numpy as np

from .reader_ops import rows_position
from .scan import scan_step


@numba.njit(cache=True)
def first_layer_one(data, t, window, ctx, bits, base_ctx, const_row, prev, prev_base, minlens, mspec, base_match,
                    table, rows, cand, wt, out):
    """out = W1 x for the position t (x: its table rows, rows_position's), relu'd; cand: its match
    candidates (rows (1, slots), cand (1, n_mi, 2) scratch)."""
    pos = np.empty(1, np.int64)
    pos[0] = t
    rows_position(0, data, pos, window, ctx, bits, base_ctx, const_row, rows, prev, prev_base, minlens, mspec,
                  base_match, cand)
    dim = table.shape[1]
    out[:] = 0.0
    for s in range(rows.shape[1]):
        r = rows[0, s]
        for e in range(dim):
            xk = table[r, e]
            if xk != 0.0:
                k = s * dim + e
                for j in range(out.shape[0]):
                    out[j] += xk * wt[k, j]
    for j in range(out.shape[0]):
        if out[j] < 0.0:
            out[j] = 0.0


@numba.njit(cache=True)
def dense_one(x, wt, out, accumulate):
    """out (+)= W x with wt = W^T (fan_in, fan_out)."""
    if not accumulate:
        out[:] = 0.0
    for k in range(x.shape[0]):
        xk = x[k]
        if xk != 0.0:
            for j in range(out.shape[0]):
                out[j] += xk * wt[k, j]


@numba.njit(cache=True)
def relu_one(h):
    for j in range(h.shape[0]):
        if h[j] < 0.0:
            h[j] = 0.0


@numba.njit(cache=True)
def scan_one(proj, bias, state, s_out):
    """One position of every unit: state (moved on in place) and s_out = the state after it."""
    n_d = state.shape[0]
    for d in range(n_d):
        a, s = scan_step(state[d], proj[d], proj[n_d + d], bias[0, d])
        state[d] = s
        s_out[d] = s


@numba.njit(cache=True)
def probs_one(logits, cand, copy, out):
    """out = softmax(logits) in float64 after the copy path (softmax_position's: each candidate in
    play adds copy[k, its state] to the logit of the byte it predicts; logits changed in place)."""
    for k in range(cand.shape[1]):
        if cand[0, k, 1] > 0 and cand[0, k, 0] >= 0:
            logits[cand[0, k, 0]] += copy[k, cand[0, k, 1]]
    mx = np.float64(logits[0])
    for v in range(1, logits.shape[0]):
        mx = max(mx, np.float64(logits[v]))
    tot = 0.0
    for v in range(logits.shape[0]):
        e = math.exp(np.float64(logits[v]) - mx)
        out[v] = e
        tot += e
    for v in range(logits.shape[0]):
        out[v] /= tot
