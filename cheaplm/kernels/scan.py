"""The reader's recurrent state: a gated linear scan over the bytes of each lane.

For each lane (a run of consecutive text positions; a batch is `lanes` of them, T positions each,
row = lane * T + t) and each state unit d:

    a_t = sigmoid(proj[t, d] + bias[d])          # how much of the past the unit keeps
    s_t = a_t * s_{t-1} + (1 - a_t) * proj[t, D + d]
    s_{-1} = state_in[lane, d];  state_out[lane, d] = s_{T-1}

The gate and the input are read from the reader's first hidden layer (reader.py); s_t is fed to
its second layer beside that layer's usual input. Being linear in s, the recurrence needs no
activations kept but a_t and s_t, and its backward is one reverse sweep per (lane, d):

    g_t  = ds_t + a_{t+1} g_{t+1}                   # dL/ds_t, the future included
    dproj[t, d]     = g_t (s_{t-1} - v_t) a_t (1 - a_t)
    dproj[t, D + d] = g_t (1 - a_t)
    dbias[d]       += dproj[t, d]

Gradients stop at the lane's first position (truncated backpropagation through time: the state
that came in is a constant), while the forward state is carried on across batches, so a lane's
state can hold more than T bytes of its past.

Parallelisation: one thread per (lane, d), d fastest (a warp reads consecutive columns of a row).
One body per direction (`scan_forward_unit`, `scan_backward_unit`), called by the CPU twin's loop
and by the CUDA kernel; the bf16 copies the tensor-core products around the scan read are made by
a separate pass (reader_backend.py, gemm.to_bf16).
"""

import math

import numba
from numba import cuda

from .dual import for_kernels


@numba.njit(cache=True, inline="always")
def sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@numba.njit(cache=True, inline="always")
def scan_step(s, g, v, b):
    """One position of a unit: (a, the new state) from the state before, the gate's and the input's
    projections g and v and the unit's bias b. Every forward (training's lanes, the host's pieces)
    steps through this, so all read the same numbers."""
    a = sigmoid(g + b)
    return a, a * s + (1.0 - a) * v


@numba.njit(cache=True, inline="always")
def scan_forward_unit(lane, d, proj, bias, state_in, state_out, gate, s_out, T):
    n_d = bias.shape[1]
    s = state_in[lane, d]
    for t in range(T):
        r = lane * T + t
        a, s = scan_step(s, proj[r, d], proj[r, n_d + d], bias[0, d])
        gate[r, d] = a
        s_out[r, d] = s
    state_out[lane, d] = s


@numba.njit(cache=True, inline="always")
def scan_backward_unit(lane, d, proj, gate, s_out, state_in, ds, dproj, T):
    """Writes dproj's two columns of unit d for this lane; returns the lane's share of dbias[d]."""
    n_d = gate.shape[1]
    g = 0.0
    db = 0.0
    for t in range(T - 1, -1, -1):
        r = lane * T + t
        a = gate[r, d]
        g += ds[r, d]
        s_prev = s_out[r - 1, d] if t > 0 else state_in[lane, d]
        dp = g * (s_prev - proj[r, n_d + d]) * a * (1.0 - a)
        dproj[r, d] = dp
        dproj[r, n_d + d] = g * (1.0 - a)
        db += dp
        g *= a
    return db


@numba.njit(cache=True, parallel=True)
def scan_forward_cpu(proj, bias, state_in, state_out, gate, s_out, T):
    lanes, n_d = state_in.shape
    for lane in numba.prange(lanes):
        for d in range(n_d):
            scan_forward_unit(lane, d, proj, bias, state_in, state_out, gate, s_out, T)


@numba.njit(cache=True, parallel=True)
def scan_backward_cpu(proj, gate, s_out, state_in, ds, dproj, dbias, T):
    lanes, n_d = state_in.shape
    for d in numba.prange(n_d):  # by unit, so that each dbias sum is one thread's, in lane order
        for lane in range(lanes):
            dbias[0, d] += scan_backward_unit(lane, d, proj, gate, s_out, state_in, ds, dproj, T)


@numba.njit(cache=True, parallel=True)
def scan_pieces_cpu(proj, prow, seg_lo, seg_hi, seg_state, bias, state, s_out):
    """Forward only, for reading (no gate kept for a backward): segment k is rows seg_lo[k] ..
    seg_hi[k] - 1 of s_out, consecutive positions of one piece whose state before them is
    state[seg_state[k]] (moved on in place); row r reads the projections proj[prow[r]]. One thread
    per (segment, unit)."""
    n_d = bias.shape[1]
    n_seg = seg_lo.shape[0]
    for i in numba.prange(n_seg * n_d):
        k = i // n_d
        d = i - k * n_d
        s = state[seg_state[k], d]
        for r in range(seg_lo[k], seg_hi[k]):
            p = prow[r]
            a, s = scan_step(s, proj[p, d], proj[p, n_d + d], bias[0, d])
            s_out[r, d] = s
        state[seg_state[k], d] = s


scan_forward_unit_k = for_kernels(scan_forward_unit)
scan_backward_unit_k = for_kernels(scan_backward_unit)


@cuda.jit
def scan_forward_kernel(proj, bias, state_in, state_out, gate, s_out, T):
    """scan_forward_cpu's units, one thread each."""
    d, lane = cuda.grid(2)
    if lane < state_in.shape[0] and d < bias.shape[1]:
        scan_forward_unit_k(lane, d, proj, bias, state_in, state_out, gate, s_out, T)


@cuda.jit
def scan_backward_kernel(proj, gate, s_out, state_in, ds, dproj, dbias, T):
    """scan_backward_cpu's units, one thread each; a lane's share of dbias is added atomically
    (so dbias is not bit-reproducible run to run on the GPU; dproj is)."""
    d, lane = cuda.grid(2)
    if lane < state_in.shape[0] and d < gate.shape[1]:
        cuda.atomic.add(dbias, (0, d), scan_backward_unit_k(lane, d, proj, gate, s_out, state_in, ds, dproj, T))
