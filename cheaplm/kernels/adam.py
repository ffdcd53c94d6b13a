"""Adam over the flat parameter buffer; also zeroes the gradient for the next step.

One element-wise body (`adam_element`) serves the CPU loop and the CUDA kernel (one thread per
parameter). Parameters are float32 master values; moments are float32.
Lazy Adam (the reader's embedding table): an element whose gradient is exactly 0 (a row no
position of the batch read) keeps its value and moments, so a large table costs one read of its
gradient per step, not a full update, and rows unseen for a while do not drift on old momentum.
"""

import math

import numba
from numba import cuda

from ..device import launch
from .dual import for_kernels, on_device


@numba.njit(cache=True, inline="always")
def adam_element(i, params, grad, m, v, lr, beta1, beta2, eps, bc1, bc2, lazy):
    g = grad[i]
    if lazy and g == 0.0:
        return
    m[i] = beta1 * m[i] + (1.0 - beta1) * g
    v[i] = beta2 * v[i] + (1.0 - beta2) * g * g
    params[i] -= lr * (m[i] / bc1) / (math.sqrt(v[i] / bc2) + eps)
    grad[i] = 0.0


@numba.njit(cache=True, parallel=True)
def adam_cpu(params, grad, m, v, lr, beta1, beta2, eps, bc1, bc2, lazy):
    for i in numba.prange(params.shape[0]):
        adam_element(i, params, grad, m, v, lr, beta1, beta2, eps, bc1, bc2, lazy)


adam_element_k = for_kernels(adam_element)


@cuda.jit(cache=True)
def adam_kernel(params, grad, m, v, lr, beta1, beta2, eps, bc1, bc2, lazy):
    i = cuda.grid(1)
    if i < params.shape[0]:
        adam_element_k(i, params, grad, m, v, lr, beta1, beta2, eps, bc1, bc2, lazy)


def adam_step(params, grad, m, v, step: int, lr: float, beta1=0.9, beta2=0.99, eps=1e-8, lazy=False) -> None:
    """step counts from 1 (bias correction)."""
    lazy = 1 if lazy else 0
    bc1 = 1.0 - beta1**step
    bc2 = 1.0 - beta2**step
    if on_device(params):
        adam_kernel[launch(params.shape[0])](params, grad, m, v, lr, beta1, beta2, eps, bc1, bc2, lazy)
    else:
        adam_cpu(params, grad, m, v, lr, beta1, beta2, eps, bc1, bc2, lazy)
