"""Compute kernels: each op has a `numba.cuda.jit` kernel and a `numba.njit` CPU twin with the same
signature, plus a dispatcher that picks one by where the arrays live."""
