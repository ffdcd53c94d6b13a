"""Where arrays live: picking the device, its free memory, making and moving arrays, launch sizes.

Every part of the model holds a `Device` and asks it, instead of comparing device names: a run is
on "cpu" (numba.njit twins on host arrays) or "cuda" (numba.cuda kernels on device arrays). This is
the one module that imports numba.cuda for arrays; it does so lazily, so a CPU-only process never
pays for it unless it asks whether a GPU exists.
"""

from __future__ import annotations

import os

import numpy as np

from . import config

NAMES = ("auto", "cpu", "cuda")


class DeviceError(Exception):
    """A device was asked for that this machine does not have (one line for the user)."""


def pick(name: str) -> str:
    """'cpu' or 'cuda' for a requested name: auto takes the GPU when numba sees one."""
    if name not in NAMES:
        raise DeviceError(f"device {name!r} is not one of {', '.join(NAMES)}")
    if name == "cpu":
        return "cpu"
    from numba import cuda

    try:
        available = cuda.is_available()
    except Exception:
        available = False
    if name == "cuda" and not available:
        raise DeviceError("--device cuda: no CUDA GPU is available here (numba.cuda.is_available() is False); "
                          "use --device cpu")
    return "cuda" if available else "cpu"


def launch(n: int, tpb: int | None = None) -> tuple[int, int]:
    """(blocks, threads) covering n items, one thread each."""
    tpb = tpb or config.THREADS_PER_BLOCK
    return (n + tpb - 1) // tpb, tpb


TILE_T = 32  # a transposing kernel's tile: TILE_T x TILE_T elements, TILE_T x TILE_T_ROWS threads
TILE_T_ROWS = 8
TILE_T_PAD = 33  # shared-memory tile rows padded by one element (bank conflicts); a literal, as shared.array needs


def launch_tiles(rows: int, cols: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(grid, block) of a kernel that writes a rows x cols matrix plain and transposed through a
    shared-memory tile: a block per TILE_T x TILE_T tile (x: the columns), so that reads, plain
    writes and transposed writes all go to consecutive addresses across a warp."""
    return ((cols + TILE_T - 1) // TILE_T, (rows + TILE_T - 1) // TILE_T), (TILE_T, TILE_T_ROWS)


def launch_2d(n0: int, n1: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(grid, block) covering an n0 x n1 index space in config.TILE_2D tiles (x: the fast axis)."""
    t0, t1 = config.TILE_2D
    return ((n0 + t0 - 1) // t0, (n1 + t1 - 1) // t1), (t0, t1)


class Device:
    """One device's array operations. `gpu` is the only question callers ask of it."""

    def __init__(self, name: str = "cpu"):
        if name not in ("cpu", "cuda"):
            raise DeviceError(f"a model runs on 'cpu' or 'cuda', not {name!r} (pick() resolves 'auto')")
        self.name = name
        self.gpu = name == "cuda"
        self._cuda = None
        if self.gpu:
            from numba import cuda

            self._cuda = cuda

    def __repr__(self) -> str:
        return f"Device({self.name!r})"

    def zeros(self, shape, dtype=np.float32):
        if self.gpu:
            return self._cuda.to_device(np.zeros(shape, dtype))
        return np.zeros(shape, dtype)

    def empty(self, shape, dtype=np.float32):
        """Uninitialised on the GPU (device_array), zeros on the host."""
        if self.gpu:
            return self._cuda.device_array(shape, dtype)
        return np.zeros(shape, dtype)

    def put(self, arr: np.ndarray):
        """arr on this device: a device copy on the GPU, arr itself on the host."""
        return self._cuda.to_device(arr) if self.gpu else arr

    def own(self, arr: np.ndarray):
        """A copy of arr on this device that the caller may write (a host copy on the CPU)."""
        return self._cuda.to_device(arr) if self.gpu else np.array(arr, copy=True)

    def host(self, arr) -> np.ndarray:
        """arr on the host (copied from the GPU; the same array on the CPU)."""
        return arr.copy_to_host() if self.gpu else arr

    def free_memory(self) -> int:
        """Bytes free for new arrays: the GPU's free memory, or the host's available pages."""
        if self.gpu:
            free, _ = self._cuda.current_context().get_memory_info()
            return int(free)
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return 1 << 62

    def synchronize(self) -> None:
        if self.gpu:
            self._cuda.synchronize()
