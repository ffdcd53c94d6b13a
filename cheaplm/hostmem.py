"""Large host arrays that are quick to create in a process that has just started.

numpy advises the kernel to back every large array with huge pages (madvise MADV_HUGEPAGE). Where
the kernel's transparent-huge-page defrag setting is `madvise` (a common default), each fault in
such an array may first compact memory to find a free huge page, and a fresh process that fills a
2 GiB table then stalls: `sample` on the 10-minute CPU model loaded in 1.3-2.6 s with numpy's
arrays and in 0.66-0.85 s with these (bench/startup.py). An anonymous mapping made here is not
advised, so the kernel still uses huge pages where they are free, without stalling for them.
"""

from __future__ import annotations

import mmap

import numpy as np


def zeros(shape, dtype) -> np.ndarray:
    """A writable, zero-filled array in its own anonymous mapping (freed with the array). Its pages
    are the kernel's zero page until written: a page nothing writes costs nothing."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    if count == 0:
        return np.zeros(shape, dtype)
    buf = mmap.mmap(-1, count * dtype.itemsize)
    return np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)


def copy(arr: np.ndarray) -> np.ndarray:
    out = zeros(arr.shape, arr.dtype)
    out[...] = arr
    return out
