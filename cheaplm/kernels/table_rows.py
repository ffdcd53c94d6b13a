"""The table's gradient as the rows a batch touched: listed, taken out of the gradient, added back.

Processes that share a reader (parallel.py) exchange only these rows instead of summing the whole
table's gradient: each rank lists the distinct rows its part of the batch read, with their gradient
rows, in a list of fixed length (a known maximum, reader.touched_rows_max; entries past the count
are -1); the lists are all-gathered and every rank adds them back, one rank's list after another.

list:  ids[j] = the j-th distinct row of rows (B, slots); ids[j] = -1 past the count. The host lists
       rows in the order they are first read (position, then slot); the GPU claims each row by an
       atomic exchange of its mark (as kernels/adam.py's row-wise Adam does) and takes an entry by an
       atomic count, so its order changes from run to run; the sums do not (a list names a row once).
take:  vals[j] = grad[ids[j]] and grad[ids[j]] = 0 (vals[j] = 0 past the count).
add:   grad[ids[j]] += vals[j]. A list names each row once, so its adds never meet: no atomics, and
       every rank that adds the same lists in the same order gets the same sums, to the bit.
Parallelisation: a thread per (position, slot) to list rows (GPU); a thread per (entry, element) to
move them, x the fast axis (take_element / add_element: one body for both targets).
"""

import numba
from numba import cuda

from ..device import launch, launch_2d
from .adam import mark_rows_kernel
from .dual import for_kernels, on_device


@numba.njit(cache=True)
def list_rows_cpu(rows, marks, ids) -> int:
    """The host's list, in order of first reading; the count, or -1 when ids is too short. marks:
    int32 per table row, zero, and zero again on return."""
    n = 0
    for b in range(rows.shape[0]):
        for s in range(rows.shape[1]):
            r = rows[b, s]
            if marks[r] == 0:
                if n == ids.shape[0]:
                    n = -1
                    break
                marks[r] = 1
                ids[n] = r
                n += 1
        if n < 0:
            break
    for j in range(ids.shape[0]):
        if j >= n >= 0:
            ids[j] = -1
        elif ids[j] >= 0:
            marks[ids[j]] = 0
    return n


@cuda.jit
def claim_rows_kernel(rows, marks, count, ids):
    """Each marked row once: the thread whose atomic exchange finds the mark set clears it and
    takes the next entry of ids (ids: -1 beforehand, count: 0)."""
    i = cuda.grid(1)
    if i < rows.shape[0] * rows.shape[1]:
        r = rows[i // rows.shape[1], i % rows.shape[1]]
        if cuda.atomic.exch(marks, r, 0) == 1:
            j = cuda.atomic.add(count, 0, 1)
            if j < ids.shape[0]:
                ids[j] = r


@cuda.jit
def reset_list_kernel(ids, count):
    j = cuda.grid(1)
    if j < ids.shape[0]:
        ids[j] = -1
    if j == 0:
        count[0] = 0


@numba.njit(cache=True, inline="always")
def take_element(j, e, ids, grad, vals):
    r = ids[j]
    if r >= 0:
        vals[j, e] = grad[r, e]
        grad[r, e] = 0.0
    else:
        vals[j, e] = 0.0


@numba.njit(cache=True, inline="always")
def add_element(j, e, ids, vals, grad):
    r = ids[j]
    if r >= 0:
        grad[r, e] += vals[j, e]


take_element_k = for_kernels(take_element)
add_element_k = for_kernels(add_element)


@numba.njit(cache=True, parallel=True)
def take_rows_cpu(ids, grad, vals):
    for j in numba.prange(ids.shape[0]):
        for e in range(vals.shape[1]):
            take_element(j, e, ids, grad, vals)


@numba.njit(cache=True, parallel=True)
def add_rows_cpu(ids, vals, grad):
    for j in numba.prange(ids.shape[0]):  # a list names a row once: the entries never meet
        for e in range(vals.shape[1]):
            add_element(j, e, ids, vals, grad)


@cuda.jit
def take_rows_kernel(ids, grad, vals):
    e, j = cuda.grid(2)
    if j < ids.shape[0] and e < vals.shape[1]:
        take_element_k(j, e, ids, grad, vals)


@cuda.jit
def add_rows_kernel(ids, vals, grad):
    e, j = cuda.grid(2)
    if j < ids.shape[0] and e < vals.shape[1]:
        add_element_k(j, e, ids, vals, grad)


def take_rows(rows, marks, grad, ids, vals, count=None) -> None:
    """List the distinct rows of rows (B, slots) into ids and move their gradient rows out of grad
    (R, dim) into vals (len(ids), dim). marks: int32 per table row, all zero (zero again after);
    count: the GPU's int32 work space of one. ValueError when ids cannot hold the rows (the host
    checks; the GPU's ids are sized by the same bound and its kernel never writes past them)."""
    if on_device(grad):
        reset_list_kernel[launch(ids.shape[0])](ids, count)
        grid = launch(rows.shape[0] * rows.shape[1])
        mark_rows_kernel[grid](rows, marks)
        claim_rows_kernel[grid](rows, marks, count, ids)
        grid, blk = launch_2d(vals.shape[1], ids.shape[0])
        take_rows_kernel[grid, blk](ids, grad, vals)
        return
    if list_rows_cpu(rows, marks, ids) < 0:
        raise ValueError(f"a batch reads more distinct table rows than the {ids.shape[0]} its list holds")
    take_rows_cpu(ids, grad, vals)


def add_rows(ids, vals, grad) -> None:
    """grad[ids[j]] += vals[j] for the listed rows (ids naming each row once)."""
    if on_device(grad):
        grid, blk = launch_2d(vals.shape[1], ids.shape[0])
        add_rows_kernel[grid, blk](ids, vals, grad)
    else:
        add_rows_cpu(ids, vals, grad)
