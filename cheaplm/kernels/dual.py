"""One body, two targets: njit helpers that CUDA kernels call too.

numba-cuda compiles an `numba.njit` function for the GPU when a kernel calls it, so a helper is
written once and both the CPU twin and the CUDA kernel call the same code. Under the CUDA simulator
(NUMBA_ENABLE_CUDASIM=1, used by the CI tests) kernels run as Python and pass simulator arrays,
which njit cannot take; `for_kernels` then wraps the helper to hand it the underlying NumPy arrays.
Kernels call helpers through the name `for_kernels` returns; CPU twins call the njit function.
"""

import os

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


def for_kernels(njit_fn):
    if not SIMULATOR:
        return njit_fn

    def call(*args):
        return njit_fn(*[getattr(a, "_ary", a) for a in args])

    call.__name__ = getattr(njit_fn, "__name__", "helper")
    return call


def on_device(arr) -> bool:
    """True for GPU arrays (numba device arrays, the simulator's stand-ins, anything CUDA-interfaced)."""
    return hasattr(arr, "__cuda_array_interface__") or type(arr).__name__ == "FakeCUDAArray"
