"""One body, two targets: njit helpers that CUDA kernels call too.

numba-cuda compiles an `numba.njit` function for the GPU when a kernel calls it, so a helper is
written once and both the CPU twin and the CUDA kernel call the same code. Under the CUDA simulator
(NUMBA_ENABLE_CUDASIM=1, used by the CI tests) kernels run as Python and pass simulator arrays,
which njit cannot take; `for_kernels` then wraps the helper to hand it the underlying NumPy arrays.
Kernels call helpers through the name `for_kernels` returns; CPU twins call the njit function.
Where the two differ only in how they add into a shared array, the body calls `accumulate`.
"""

import os

from numba.core.extending import overload

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


def accumulate(arr, index, value):
    """arr[index] += value: a plain add in njit code (CPU twins, and the simulator, which runs a
    kernel's threads as Python threads and njit code under the GIL), an atomic add when the same
    body is compiled for a CUDA kernel. A body written once with this serves both targets (the
    mixer's backward, the count tables' adds)."""
    arr[index] += value


@overload(accumulate)
def _accumulate_cpu(arr, index, value):
    def impl(arr, index, value):
        arr[index] += value

    return impl


if not SIMULATOR:
    from numba import cuda
    from numba.cuda.extending import overload as cuda_overload

    @cuda_overload(accumulate, target="cuda")
    def _accumulate_gpu(arr, index, value):
        def impl(arr, index, value):
            cuda.atomic.add(arr, index, value)

        return impl
