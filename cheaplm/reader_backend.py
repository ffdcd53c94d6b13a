"""How the reader's step runs on each device: one ops object per device, one forward and backward.

reader.py writes its forward and backward once, as a sequence of operations on matrices; this
module says what each operation is on the host (`HostOps`: float32 arrays, numba.njit twins and
numpy's products) and on the GPU (`GpuOps`: numba.cuda kernels, products on the tensor cores of
bf16 copies, kernels/gemm.py). Chosen over llm.c's pair of files (a reference and a CUDA file in
the same function order) because here the two differ only in how an operand is held (float32, or
bf16 bits plain and transposed for the tensor-core tile) and which kernel runs: a reference file
and a GPU file would restate the same 60 lines of layer wiring, and every change to the wiring
(a scan layer, a block) would have to be made twice.

An operand (`Operand`) is what a product reads: on the host a float32 array; on the GPU the float32
array (where one is kept) with its bf16 bits and their transpose. Products compute
out (+)= x @ w^T with both operands row-major (gemm_nt).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .device import launch, launch_2d, launch_tiles
from .kernels import adam, gemm, reader_ops, scan, table_rows


@dataclass
class Operand:
    f: object = None  # float32 (rows, cols), or None where only bf16 is kept
    b16: object = None  # GPU: bf16 bits (rows, cols)
    b16_t: object = None  # GPU: bf16 bits (cols, rows)


class HostOps:
    """The reader's operations on the host: float32, numba.njit twins, numpy products."""

    gpu = False

    def __init__(self, dev):
        self.dev = dev
        self.marks = None  # int32 per table row, zero between steps (the row-wise work of adam.py, table_rows.py)

    def row_marks(self, n_rows: int):
        if self.marks is None or self.marks.shape[0] != n_rows:
            self.marks = self.dev.put(np.zeros(n_rows, np.int32))
        return self.marks

    def operand(self, rows: int, cols: int, keep_float: bool = True) -> Operand:
        return Operand(f=np.zeros((rows, cols), np.float32))

    def floats(self, *shape):
        return np.zeros(shape, np.float32)

    def weights(self, w, slot, fresh: bool = True) -> Operand:
        """A parameter block as a product's operand (the host reads the float32 block itself; the
        GPU a bf16 copy, made again unless `fresh` is False: backward reads forward's copy)."""
        return Operand(f=w)

    def matmul(self, x: Operand, w: Operand, out, accumulate: bool = False) -> None:
        gemm.gemm_nt(x.f, w.f, out, accumulate)

    def relu(self, pre, act: Operand) -> None:
        reader_ops.relu_cpu(pre)  # in place: the host's act[k + 1] is pre[k] itself

    def grad_w(self, dy: Operand, x: Operand, gw) -> None:
        """gw += dy^T @ x (the weight's gradient of y = x @ w^T)."""
        gw += np.dot(dy.f.T, x.f)

    def grad_x(self, dy: Operand, w: Operand, dx, accumulate: bool = False) -> None:
        """dx (+)= dy @ w (the input's gradient of y = x @ w^T)."""
        if accumulate:
            dx += np.dot(dy.f, w.f)
        else:
            np.dot(dy.f, w.f, out=dx)

    def relu_backward(self, d, pre, act: Operand, dpre: Operand) -> None:
        """d (the gradient of relu(pre)) becomes dpre in place, masked where the unit was off."""
        reader_ops.relu_bwd_cpu(d, act.f)

    def rows(self, data, pos, reader, rows, match, cand) -> None:
        prev, prev_base, minlens, mspec = match
        cfg = reader.cfg
        reader_ops.rows_cpu(data, pos, cfg.window, reader.ctx, cfg.ctx_bits, reader.base_ctx, reader.const_row,
                            rows, prev, prev_base, minlens, mspec, reader.base_match, cand)

    def keep(self, pos, seed: int, p: float, window: int, n_ctx: int, keep) -> None:
        """Training's dropout of hashed rows: keep (B, slots) factors (reader_ops.keep_position)."""
        reader_ops.keep_cpu(pos, seed, p, window, n_ctx, keep)

    def gather(self, table, rows, act: Operand, keep) -> None:
        reader_ops.gather_cpu(table, rows, act.f, keep)

    def table_update(self, table, grad, m, v, dim: int, rows, step: int, lr: float) -> bool:
        """The table's Adam (flat blocks, rows of dim) over the rows a batch read only: the GPU's
        (GpuOps); the host's table is small and takes the full lazy pass (False)."""
        return False

    def scatter(self, d, rows, table_grad, keep) -> None:
        reader_ops.scatter_cpu(d, rows, table_grad, keep)

    def take_rows(self, rows, table_grad, ids, vals) -> None:
        """The distinct rows of rows into ids (-1 past the count), their gradient rows out of
        table_grad (R, dim) into vals (kernels/table_rows.py; several processes, parallel.py)."""
        table_rows.take_rows(rows, self.row_marks(table_grad.shape[0]), table_grad, ids, vals)

    def add_rows(self, ids, vals, table_grad) -> None:
        """table_grad[ids[j]] += vals[j] for one rank's list."""
        table_rows.add_rows(ids, vals, table_grad)

    def scan_forward(self, proj, bias, s0, state, gate, s: Operand, T: int) -> None:
        scan.scan_forward_cpu(proj, bias, s0, state, gate, s.f, T)

    def scan_backward(self, proj, gate, s: Operand, s0, ds, dproj: Operand, dbias, T: int) -> None:
        scan.scan_backward_cpu(proj, gate, s.f, s0, ds, dproj.f, dbias, T)

    def softmax(self, ws, data, pos, scale, copy, copy_grad, dlogits: Operand) -> None:
        reader_ops.softmax_cpu(ws["pre"][-1], data[pos], scale, ws["loss"], dlogits.f, ws["bitp"], ws["cand"], copy)
        if scale != 0.0:
            reader_ops.copy_grad_cpu(dlogits.f, ws["cand"], copy_grad)


class GpuOps(HostOps):
    """The reader's operations on the GPU: numba.cuda kernels; the products read bf16 copies on the
    tensor cores (kernels/gemm.py), accumulating in float32."""

    gpu = True

    def __init__(self, dev):
        super().__init__(dev)
        self._w16: dict = {}  # slot -> Operand: bf16 copies of parameter blocks, remade each step
        self.count = None  # int32 of one: table_rows.take_rows's work space

    def operand(self, rows: int, cols: int, keep_float: bool = True) -> Operand:
        e = self.dev.empty
        return Operand(f=e((rows, cols), np.float32) if keep_float else None, b16=e((rows, cols), np.uint16),
                       b16_t=e((cols, rows), np.uint16))

    def floats(self, *shape):
        return self.dev.empty(shape, np.float32)

    def weights(self, w, slot, fresh: bool = True) -> Operand:
        op = self._w16.get(slot)
        if op is not None and not fresh:
            return op
        if op is None or op.b16.shape != w.shape:
            op = self._w16[slot] = self.operand(*w.shape, keep_float=False)
        gemm.to_bf16(w, op.b16, op.b16_t)
        return op

    def matmul(self, x: Operand, w: Operand, out, accumulate: bool = False) -> None:
        gemm.gemm_nt(x.b16, w.b16, out, accumulate)

    def relu(self, pre, act: Operand) -> None:
        grid, blk = launch_tiles(pre.shape[0], pre.shape[1])
        reader_ops.relu_kernel[grid, blk](pre, act.b16, act.b16_t)

    def grad_w(self, dy: Operand, x: Operand, gw) -> None:
        gemm.gemm_nt(dy.b16_t, x.b16_t, gw, accumulate=True)

    def grad_x(self, dy: Operand, w: Operand, dx, accumulate: bool = False) -> None:
        gemm.gemm_nt(dy.b16, w.b16_t, dx, accumulate)

    def relu_backward(self, d, pre, act: Operand, dpre: Operand) -> None:
        grid, blk = launch_tiles(d.shape[0], d.shape[1])
        reader_ops.relu_bwd_kernel[grid, blk](d, pre, dpre.b16, dpre.b16_t)

    def rows(self, data, pos, reader, rows, match, cand) -> None:
        prev, prev_base, minlens, mspec = match
        cfg = reader.cfg
        reader_ops.rows_kernel[launch(pos.shape[0])](data, pos, cfg.window, reader.d_ctx, cfg.ctx_bits,
                                                     reader.base_ctx, reader.const_row, rows, prev, prev_base,
                                                     minlens, mspec, reader.base_match, cand)

    def keep(self, pos, seed: int, p: float, window: int, n_ctx: int, keep) -> None:
        reader_ops.keep_kernel[launch(pos.shape[0])](pos, seed, p, window, n_ctx, keep)

    def gather(self, table, rows, act: Operand, keep) -> None:
        grid, blk = launch_tiles(rows.shape[0], act.b16.shape[1])
        reader_ops.gather_kernel[grid, blk](table, rows, act.b16, act.b16_t, keep)

    def scatter(self, d, rows, table_grad, keep) -> None:
        grid, blk = launch_2d(d.shape[1], d.shape[0])
        reader_ops.scatter_kernel[grid, blk](d, rows, table_grad, keep)

    def table_update(self, table, grad, m, v, dim: int, rows, step: int, lr: float) -> bool:
        """The table's lazy Adam over the rows the batch read (its only rows with a gradient)."""
        adam.adam_rows_step(rows, self.row_marks(table.shape[0] // dim), dim, table, grad, m, v, step, lr)
        return True

    def take_rows(self, rows, table_grad, ids, vals) -> None:
        if self.count is None:
            self.count = self.dev.zeros(1, np.int32)
        table_rows.take_rows(rows, self.row_marks(table_grad.shape[0]), table_grad, ids, vals, self.count)

    def scan_forward(self, proj, bias, s0, state, gate, s: Operand, T: int) -> None:
        grid, blk = launch_2d(state.shape[1], state.shape[0])
        scan.scan_forward_kernel[grid, blk](proj, bias, s0, state, gate, s.f, T)
        gemm.to_bf16(s.f, s.b16, s.b16_t)

    def scan_backward(self, proj, gate, s: Operand, s0, ds, dproj: Operand, dbias, T: int) -> None:
        grid, blk = launch_2d(s0.shape[1], s0.shape[0])
        scan.scan_backward_kernel[grid, blk](proj, gate, s.f, s0, ds, dproj.f, dbias, T)
        gemm.to_bf16(dproj.f, dproj.b16, dproj.b16_t)

    def softmax(self, ws, data, pos, scale, copy, copy_grad, dlogits: Operand) -> None:
        n_b = pos.shape[0]
        if "targets" not in ws or ws["targets"].shape[0] != n_b:
            ws["targets"] = self.dev.empty(n_b, np.uint8)
        reader_ops.take_kernel[launch(n_b)](data, pos, ws["targets"])
        reader_ops.softmax_kernel[n_b, reader_ops.SOFTMAX_THREADS](ws["pre"][-1], ws["targets"], scale, ws["loss"],
                                                                   dlogits.f, ws["bitp"], ws["cand"], copy, copy_grad,
                                                                   dlogits.b16, dlogits.b16_t)


def ops_for(dev) -> HostOps:
    return GpuOps(dev) if dev.gpu else HostOps(dev)
