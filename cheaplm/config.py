"""Launch tunables in one place; tests patch them to odd values so that partial blocks get exercised."""

THREADS_PER_BLOCK = 256
# CPU twins split a batch into this many chunks, each with its own gradient buffer. A fixed number
# (not the thread count) keeps the float summation order, and so the results, the same on any machine.
CPU_GRAD_CHUNKS = 8
# 2-D element-wise kernels of the reader (x: the fast axis); tests patch it to odd sizes too
TILE_2D = (32, 8)
