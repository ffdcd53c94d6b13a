"""Dense products of the reader: C (+)= A @ B^T, A (M, K) and B (N, K) both contiguous along K.

Every product the reader needs has this form once its operands are stored the right way round
(reader.py keeps transposed copies where a product needs them): forward Y = X @ W^T with W stored
(out, in); dX = dY @ (W^T)^T with the transposed copy of W; dW = dY^T @ (X^T)^T with transposed
copies of dY and X.

GPU: bf16 operands (uint16 bit patterns), fp32 accumulation. One warp computes a 64x64 tile of C
with tensor-core mma.sync instructions in a small linked CUDA C device function (tile.cu); a block
holds 2x2 warps (a 128x128 tile), so neighbouring warps share rows of A and B in L1. The numba
kernel chooses the tile and passes raw addresses (numba hands C only pointers, not arrays).
Simulator (NUMBA_ENABLE_CUDASIM, no linked C there): the same grid and warp tiles, each lane
computing its share of the tile from the bf16 bits in plain numba.
CPU twin: float32 operands and NumPy's np.dot (no bf16 rounding: tests compare with a tolerance).
Shapes: M and N multiples of 64, K a multiple of 16.
"""

import os

import numpy as np
from numba import cuda

from .. import config
from .dual import SIMULATOR

TILE = 64  # one warp's tile of C
WARPS = 2  # per block side: 2x2 warps, 128 threads

_TILE_CU = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tile.cu")

if not SIMULATOR:
    mma_warp_tile = cuda.declare_device(
        "mma_warp_tile", "int32(uint64, uint64, uint64, int32, int32, int32, int32, int32, int32)", link=_TILE_CU)

    @cuda.jit
    def gemm_mma_kernel(a_addr, b_addr, c_addr, m, n, k, lda, ldb, ldc, accumulate):
        lane = cuda.threadIdx.x & 31
        warp = cuda.threadIdx.x >> 5
        m0 = (cuda.blockIdx.y * WARPS + (warp >> 1)) * TILE
        n0 = (cuda.blockIdx.x * WARPS + (warp & 1)) * TILE
        if m0 < m and n0 < n:  # whole warps drop out together, as mma.sync requires
            a = a_addr + np.uint64(2 * m0 * lda)
            b = b_addr + np.uint64(2 * n0 * ldb)
            c = c_addr + np.uint64(4 * (m0 * ldc + n0))
            mma_warp_tile(a, b, c, lda, ldb, ldc, k, accumulate, lane)


@cuda.jit
def gemm_sim_kernel(a, b, c, accumulate):
    """Simulator stand-in for gemm_mma_kernel: same grid; lane l of a warp computes rows
    l, l + 32 of its 64x64 tile from the bf16 bits, a row at a time in NumPy with float32 sums (the
    simulator runs a kernel as Python: a loop per multiply-add took minutes per reader check on 2 cores)."""
    lane = cuda.threadIdx.x & 31
    warp = cuda.threadIdx.x >> 5
    m0 = (cuda.blockIdx.y * WARPS + (warp >> 1)) * TILE
    n0 = (cuda.blockIdx.x * WARPS + (warp & 1)) * TILE
    if m0 < c.shape[0] and n0 < c.shape[1]:
        w = bf16_sim(b[n0: n0 + TILE])  # (TILE, K)
        for r in (lane, lane + 32):
            s = w @ bf16_sim(a[m0 + r])  # (TILE,)
            if accumulate:
                s += bf16_f32_sim(c[m0 + r, n0: n0 + TILE])
            c[m0 + r, n0: n0 + TILE] = s


def bf16_sim(bits):
    """bf16 bit patterns (an array inside a simulated kernel) -> float32, in NumPy."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def bf16_f32_sim(x):
    """A float32 array inside a simulated kernel as a NumPy copy."""
    return x.astype(np.float32)


def address(arr) -> int:
    return arr.__cuda_array_interface__["data"][0]


def gemm_nt(a, b, c, accumulate: bool = False) -> None:
    """c (+)= a @ b.T. GPU: a, b uint16 bf16 device arrays, c float32; CPU: all float32."""
    m, k = a.shape
    n = b.shape[0]
    if b.shape[1] != k or c.shape != (m, n):
        raise ValueError(f"gemm_nt shapes: a {a.shape}, b {b.shape}, c {c.shape}")
    if isinstance(a, np.ndarray):
        gemm_cpu(a, b, c, accumulate)
        return
    if m % TILE or n % TILE or k % 16:
        raise ValueError(f"gemm_nt on the GPU needs M, N multiples of {TILE} and K of 16 (got {m}, {n}, {k})")
    grid = ((n + WARPS * TILE - 1) // (WARPS * TILE), (m + WARPS * TILE - 1) // (WARPS * TILE))
    if SIMULATOR:
        gemm_sim_kernel[grid, 32 * WARPS * WARPS](a, b, c, 1 if accumulate else 0)
    else:
        gemm_mma_kernel[grid, 32 * WARPS * WARPS](np.uint64(address(a)), np.uint64(address(b)),
                                                  np.uint64(address(c)), m, n, k, k, k, n,
                                                  1 if accumulate else 0)


def gemm_cpu(a, b, c, accumulate):
    """CPU twin: the float32 product by NumPy's BLAS (numba's np.dot inside njit would need scipy
    for the same BLAS call; a product gains nothing from being compiled)."""
    if accumulate:
        c += np.dot(a, b.T)
    else:
        np.dot(a, b.T, out=c)


# ---- float32 -> bf16 bits (round to nearest even), plain and transposed --------------------------

@cuda.jit
def to_bf16_kernel(x, out, out_t):
    """out[i, j] = bf16(x[i, j]); out_t[j, i] too when it has rows (else skipped)."""
    i, j = cuda.grid(2)
    if i < x.shape[0] and j < x.shape[1]:
        bits = bf16_bits_dev(x[i, j])
        out[i, j] = bits
        if out_t.shape[0] > 0:
            out_t[j, i] = bits


def _bf16_bits_gpu(v):
    u = np.uint32(cuda.libdevice.float_as_int(v))
    return np.uint16((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))


def _bf16_bits_sim(v):
    u = np.uint32(np.array([v], dtype=np.float32).view(np.uint32)[0])
    return np.uint16((int(u) + 0x7FFF + ((int(u) >> 16) & 1)) >> 16)


bf16_bits_dev = _bf16_bits_sim if SIMULATOR else cuda.jit(device=True)(_bf16_bits_gpu)


def bf16_bits_host(x: np.ndarray) -> np.ndarray:
    """Host reference of the rounding (tests)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_to_float(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits).astype(np.uint32) << 16).view(np.float32)


def to_bf16(x, out, out_t=None) -> None:
    """Device float32 (R, C) -> bf16 bits in `out` (R, C) and, if given, `out_t` (C, R)."""
    tpb = config.TILE_2D
    if out_t is None:
        out_t = _EMPTY.get("t")
        if out_t is None:
            out_t = _EMPTY["t"] = cuda.device_array((0, 0), dtype=np.uint16)
    grid = ((x.shape[0] + tpb[0] - 1) // tpb[0], (x.shape[1] + tpb[1] - 1) // tpb[1])
    to_bf16_kernel[grid, tpb](x, out, out_t)


_EMPTY: dict = {}
