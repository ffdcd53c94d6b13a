"""Compute kernels: each op has a `numba.njit` CPU twin and a `numba.cuda.jit` kernel, one body where
the two differ only in how they add (dual.py), and a dispatcher that picks one by where the arrays
live. Only the model's parts (memory.py, match.py, reader.py, reader_backend.py) and device.py use
this package; the commands go through model.Model."""
