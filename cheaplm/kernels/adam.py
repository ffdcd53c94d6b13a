"""Adam over the flat parameter buffer; also zeroes the gradient for the next step.

One element-wise body (`adam_element`) serves the CPU loop and the CUDA kernel (one thread per
parameter). Parameters are float32 master values; moments are float32. Decoupled weight decay (AdamW: each
step also takes lr x wd x the parameter away) where wd > 0; at wd 0 the arithmetic is the plain
Adam's to the bit (x + 0.0 * p is x).
Lazy Adam (the reader's embedding table): an element whose gradient is exactly 0 (a row no
position of the batch read) keeps its value and moments, so a large table costs one read of its
gradient per step, not a full update, and rows unseen for a while do not drift on old momentum.
On the GPU even that read was 15% of a reader step (537 M table parameters, H200): there the
table's step visits only the rows the batch read (`adam_rows_step`): one kernel marks each row the
batch's positions read, and one thread per (position, slot) claims a marked row (an atomic exchange
clears the mark, so each row is updated once) and runs the same element body over its elements. Elements and their
arithmetic are those of the full lazy pass: a row outside the batch has a zero gradient, so the
full pass would skip it too.
"""

import math

import numba
from numba import cuda

from ..device import launch
from .dual import for_kernels, on_device


@numba.njit(cache=True, inline="always")
def adam_element(i, params, grad, m, v, lr, beta1, beta2, eps, bc1, bc2, lazy, wd):
    g = grad[i]
    if lazy and g == 0.0:
        return
    m[i] = beta1 * m[i] + (1.0 - beta1) * g
    v[i] = beta2 * v[i] + (1.0 - beta2) * g * g
    params[i] -= lr * ((m[i] / bc1) / (math.sqrt(v[i] / bc2) + eps) + wd * params[i])
    grad[i] = 0.0


@numba.njit(cache=True, parallel=True)
def adam_cpu(params, grad, m, v, lr, beta1, beta2, eps, bc1, bc2, lazy, wd=0.0):
    for i in numba.prange(params.shape[0]):
        adam_element(i, params, grad, m, v, lr, beta1, beta2, eps, bc1, bc2, lazy, wd)


adam_element_k = for_kernels(adam_element)


@cuda.jit(cache=True)
def adam_kernel(params, grad, m, v, lr, beta1, beta2, eps, bc1, bc2, lazy, wd):
    i = cuda.grid(1)
    if i < params.shape[0]:
        adam_element_k(i, params, grad, m, v, lr, beta1, beta2, eps, bc1, bc2, lazy, wd)


def adam_step(params, grad, m, v, step: int, lr: float, beta1=0.9, beta2=0.99, eps=1e-8, lazy=False,
              wd: float = 0.0) -> None:
    """step counts from 1 (bias correction); wd: decoupled weight decay (0: none)."""
    lazy = 1 if lazy else 0
    bc1 = 1.0 - beta1**step
    bc2 = 1.0 - beta2**step
    if on_device(params):
        adam_kernel[launch(params.shape[0])](params, grad, m, v, lr, beta1, beta2, eps, bc1, bc2, lazy, wd)
    else:
        adam_cpu(params, grad, m, v, lr, beta1, beta2, eps, bc1, bc2, lazy, wd)


@cuda.jit
def mark_rows_kernel(rows, marks):
    """marks[r] = 1 for every row r of rows (n_b, slots): the table rows this batch's gradient touched
    (an entry < 0 names none: a list padded to its fixed length, kernels/table_rows.py)."""
    i = cuda.grid(1)
    if i < rows.shape[0] * rows.shape[1]:
        r = rows[i // rows.shape[1], i % rows.shape[1]]
        if r >= 0:
            marks[r] = 1


@cuda.jit
def adam_rows_kernel(rows, marks, dim, params, grad, m, v, lr, beta1, beta2, eps, bc1, bc2):
    """Lazy Adam over the marked rows of a table held flat (row r: elements r*dim .. r*dim+dim-1),
    each row once: the thread whose atomic exchange finds the mark set clears it and updates the row."""
    i = cuda.grid(1)
    if i < rows.shape[0] * rows.shape[1]:
        r = rows[i // rows.shape[1], i % rows.shape[1]]
        if r >= 0 and cuda.atomic.exch(marks, r, 0) == 1:
            for e in range(r * dim, (r + 1) * dim):
                adam_element_k(e, params, grad, m, v, lr, beta1, beta2, eps, bc1, bc2, 1, 0.0)


def adam_rows_step(rows, marks, dim: int, params, grad, m, v, step: int, lr: float, beta1=0.9, beta2=0.99,
                   eps=1e-8) -> None:
    """GPU: adam_step(..., lazy=True) of a flat (R * dim) table, visiting only the rows listed in
    rows (n_b, slots), each once (the same elements change, by the same arithmetic; entries < 0 are
    skipped: the padding of the rows every rank touched, parallel.py). marks: int32
    per table row, all zero, and zero again on return."""
    bc1 = 1.0 - beta1**step
    bc2 = 1.0 - beta2**step
    grid = launch(rows.shape[0] * rows.shape[1])
    mark_rows_kernel[grid](rows, marks)
    adam_rows_kernel[grid](rows, marks, dim, params, grad, m, v, lr, beta1, beta2, eps, bc1, bc2)
