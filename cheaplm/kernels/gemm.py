"""Dense products of the reader: C (+)= A @ B^T, A (M, K) and B (N, K) both contiguous along K.

Every product the reader needs has this form once its operands are stored the right way round
(reader.py keeps transposed copies where a product needs them): forward Y = X @ W^T with W stored
(out, in); dX = dY @ (W^T)^T with the transposed copy of W; dW = dY^T @ (X^T)^T with transposed
copies of dY and X.

GPU: bf16 operands (uint16 bit patterns), fp32 accumulation. A block of 256 threads computes a
128x128 tile of C with tensor-core mma.sync instructions in a small linked CUDA C device function
(tile.cu: operands staged through shared memory by cp.async three K-steps deep, fragments loaded by
ldmatrix); the numba kernel chooses the tile and passes raw addresses (numba hands C only pointers).
A product with few tiles and a long K (the weight gradients: K = positions) is split along K
(`split_plan`) so that every multiprocessor has work: each split writes its own float32 partial,
and a second kernel adds them in a fixed order (deterministic, no atomics).
Simulator (NUMBA_ENABLE_CUDASIM, no linked C there): the same grid, tiles and K splits, each thread
computing its share of the tile from the bf16 bits in plain numba.
CPU twin: float32 operands and NumPy's np.dot (no bf16 rounding: tests compare with a tolerance).
Shapes: M and N multiples of 64, K a multiple of 16.
"""

import os

import numba
import numpy as np
from numba import cuda

from .. import config
from ..device import TILE_T, TILE_T_PAD, TILE_T_ROWS, launch_tiles
from .dual import SIMULATOR

BLOCK = 128  # a block's tile of C is BLOCK x BLOCK
THREADS = 256  # 8 warps
SPLIT_MAX = 8  # K splits at most
SPLIT_MIN_K = 512  # a split reads at least this much of K

_TILE_CU = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tile.cu")

if not SIMULATOR:
    mma_block_tile = cuda.declare_device(
        "mma_block_tile", "int32(uint64, uint64, uint64, int32, int32, int32, int32, int32, int32, int32, int32, "
        "int32, int32)", link=_TILE_CU)

    @cuda.jit(launch_bounds=(THREADS, 2))
    def gemm_mma_kernel(a_addr, b_addr, c_addr, m, n, k_chunk, k, lda, ldb, ldc, accumulate):
        """Block (x, y, z): the tile at rows 128 y, columns 128 x, of K split z (k_chunk wide),
        written to the z-th (m, n) plane after c_addr (one plane when there is no split)."""
        z = cuda.blockIdx.z
        k0 = z * k_chunk
        k_len = min(k_chunk, k - k0)
        a = a_addr + np.uint64(2 * k0)
        b = b_addr + np.uint64(2 * k0)
        c = c_addr + np.uint64(4 * z * m * ldc)
        mma_block_tile(a, b, c, m, n, k_len, lda, ldb, ldc, accumulate, cuda.blockIdx.y * BLOCK,
                       cuda.blockIdx.x * BLOCK, cuda.threadIdx.x)


@cuda.jit
def gemm_sim_kernel(a, b, c, k_chunk, accumulate):
    """Simulator stand-in for gemm_mma_kernel: same grid and K splits; thread t of a block computes
    row t % 128 of its tile, columns 64 (t // 128) .. + 63, over its split's K range, into plane z
    of c (m, n) or (splits, m, n): one NumPy product of the decoded bf16 bits in float32 (the
    simulator runs a kernel as Python: a loop per multiply-add took minutes per reader check)."""
    t = cuda.threadIdx.x
    z = cuda.blockIdx.z
    r = cuda.blockIdx.y * BLOCK + t % BLOCK
    c0 = cuda.blockIdx.x * BLOCK + (t // BLOCK) * 64
    k0 = z * k_chunk
    k1 = min(k0 + k_chunk, a.shape[1])
    if r < a.shape[0] and c0 < b.shape[0]:
        c1 = min(c0 + 64, b.shape[0])
        s = bf16_sim(b[c0:c1, k0:k1]) @ bf16_sim(a[r, k0:k1])
        if c.ndim == 3:
            c[z, r, c0:c1] = s
        elif accumulate:
            c[r, c0:c1] = s + c[r, c0:c1].astype(np.float32)
        else:
            c[r, c0:c1] = s


@cuda.jit
def add_splits_kernel(parts, c, accumulate):
    """c (+)= the sum of the K splits' partials, added in split order (the same sum every run)."""
    i, j = cuda.grid(2)
    if i < c.shape[0] and j < c.shape[1]:
        s = c[i, j] if accumulate else np.float32(0.0)
        for z in range(parts.shape[0]):
            s += parts[z, i, j]
        c[i, j] = s


def bf16_sim(bits):
    """bf16 bit patterns (an array inside a simulated kernel) -> float32, in NumPy."""
    return (np.asarray(bits).astype(np.uint32) << np.uint32(16)).view(np.float32)


def address(arr) -> int:
    return arr.__cuda_array_interface__["data"][0]


def multiprocessors() -> int:
    n = _SMS.get("n")
    if n is None:
        n = _SMS["n"] = 132 if SIMULATOR else int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
    return n


def split_plan(m: int, n: int, k: int, sms: int) -> int:
    """How many K splits a product gets: the fewest that minimise the busiest multiprocessor's
    share of the work (two blocks run on each), each split reading SPLIT_MIN_K of K or more.
    The weight gradient of the 256-wide output layer (2 x 8 tiles, K = 16384) gets 8; a
    16384-row forward product (hundreds of tiles) gets 1."""
    tiles = -(-m // BLOCK) * -(-n // BLOCK)
    best, best_cost = 1, float(-(-tiles // (2 * sms)))
    for s in range(2, SPLIT_MAX + 1):
        if k // s < SPLIT_MIN_K:
            break
        cost = -(-tiles * s // (2 * sms)) / s
        if cost < best_cost * 0.9:  # a split must win clearly: the partials cost a pass over C each
            best, best_cost = s, cost
    return best


def gemm_nt(a, b, c, accumulate: bool = False, splits: int | None = None) -> None:
    """c (+)= a @ b.T. GPU: a, b uint16 bf16 device arrays, c float32; CPU: all float32.
    `splits` overrides split_plan (tests)."""
    m, k = a.shape
    n = b.shape[0]
    if b.shape[1] != k or c.shape != (m, n):
        raise ValueError(f"gemm_nt shapes: a {a.shape}, b {b.shape}, c {c.shape}")
    if isinstance(a, np.ndarray):
        gemm_cpu(a, b, c, accumulate)
        return
    if m % 64 or n % 64 or k % 16:
        raise ValueError(f"gemm_nt on the GPU needs M, N multiples of 64 and K of 16 (got {m}, {n}, {k})")
    if not SIMULATOR and (address(a) % 16 or address(b) % 16):
        raise ValueError("gemm_nt on the GPU needs 16-byte aligned operands (cp.async copies 16 bytes)")
    s = split_plan(m, n, k, multiprocessors()) if splits is None else max(1, int(splits))
    k_chunk = -(-k // (s * 32)) * 32  # whole K-steps of the tile
    s = -(-k // k_chunk)
    grid = (-(-n // BLOCK), -(-m // BLOCK), s)
    out = c if s == 1 else _partials(s, m, n)
    acc = 1 if accumulate and s == 1 else 0
    if SIMULATOR:
        gemm_sim_kernel[grid, THREADS](a, b, out, k_chunk, acc)
    else:
        gemm_mma_kernel[grid, THREADS](np.uint64(address(a)), np.uint64(address(b)), np.uint64(address(out)),
                                       m, n, k_chunk, k, k, k, n, acc)
    if s > 1:
        tpb = config.TILE_2D
        add_splits_kernel[(-(-m // tpb[0]), -(-n // tpb[1])), tpb](out, c, 1 if accumulate else 0)


def _partials(s: int, m: int, n: int):
    """A reused (s, m, n) float32 device buffer for K splits' partial products."""
    buf = _SPLIT_BUF.get("b")
    if buf is None or buf.size < s * m * n:
        buf = _SPLIT_BUF["b"] = cuda.device_array(s * m * n, dtype=np.float32)
    return buf[: s * m * n].reshape((s, m, n))


_SMS: dict = {}
_SPLIT_BUF: dict = {}


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
    """out[i, j] = bf16(x[i, j]); out_t[j, i] too when it has rows (else skipped). A block per
    32 x 32 tile (device.launch_tiles), the transposed writes through shared memory."""
    tile = cuda.shared.array((TILE_T, TILE_T_PAD), numba.uint16)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    r0, c0 = cuda.blockIdx.y * TILE_T, cuda.blockIdx.x * TILE_T
    for i in range(ty, TILE_T, TILE_T_ROWS):
        if r0 + i < x.shape[0] and c0 + tx < x.shape[1]:
            bits = bf16_bits_dev(x[r0 + i, c0 + tx])
            out[r0 + i, c0 + tx] = bits
            tile[i, tx] = bits
    cuda.syncthreads()
    if out_t.shape[0] > 0:
        for i in range(ty, TILE_T, TILE_T_ROWS):
            if c0 + i < x.shape[1] and r0 + tx < x.shape[0]:
                out_t[c0 + i, r0 + tx] = tile[tx, i]


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
    if out_t is None:
        out_t = _EMPTY.get("t")
        if out_t is None:
            out_t = _EMPTY["t"] = cuda.device_array((0, 0), dtype=np.uint16)
    grid, blk = launch_tiles(x.shape[0], x.shape[1])
    to_bf16_kernel[grid, blk](x, out, out_t)


_EMPTY: dict = {}
