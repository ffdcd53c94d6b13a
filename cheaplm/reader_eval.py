"""The reader's reading of ranges on the host: forward only, each position's own layers once.

Evaluation (and the mix's fitting) asks for the reader's bit probabilities of every byte of some
ranges (Reader.range_probs). The numbers are fixed by the pieces they are read in
(lanes.range_pieces: each piece from a zero state `warm` bytes before the bytes it scores); on a
GPU the pieces are dealt to training's lanes and read by training's forward. On the host that
costs three times what it must (issue 24: eval read 3.6 kB/s where training reads 10 kB/s):

- a piece's warm-up reads again bytes its neighbour scores (64 lanes x 2048 bytes: 131 K extra
  positions, 2.2x the positions of a 106 KB split), though everything before the scan (rows, the
  table's gather, the first layer, the scan's input projection) depends on the position alone;
- the warm-up's positions went through the layers after the scan and the softmax, unread;
- a step was 1,024 positions in ~20 kernel launches, each a parallel region of its own, with the
  backward's work space allocated beside it.

Here the text is swept once, a window of WINDOW positions at a time (lanes.PieceSweep): the
position-wise layers run once per position on the whole window; the scan runs per piece over its
rows in the window (kernels/scan.py scan_pieces_cpu, its state carried from window to window);
the layers after the scan and the softmax run once per position, for the piece that scores it.
Products are NumPy's BLAS on all cores, the rest numba parallel loops. The arithmetic is
training's forward's (the same njit bodies; the products' sums may round differently with the
batch's shape), so the probabilities equal the lanes' to float rounding (tests/test_scan.py).
"""

from __future__ import annotations

import numpy as np

from .kernels import gemm, reader_ops, scan
from .lanes import PieceSweep

WINDOW = 8192  # positions per window: large products, ~50 MB of work space for the CPU default


def range_probs_host(reader, data, ranges, match, warm: int, window: int = WINDOW) -> np.ndarray:
    """Reader.range_probs on the host: (bytes in ranges, 8) float32."""
    cfg = reader.cfg
    n_scan = cfg.scan_layers if cfg.scan else 0
    lanes = cfg.lanes if cfg.scan else 1
    sweep = PieceSweep(ranges, lanes, warm if cfg.scan else 0, window)
    out = np.empty((sweep.text.total, 8), np.float32)
    p = reader.params
    w = [reader.view(p, k + 1) for k in range(reader.n_layers)]
    table, copy = reader.view(p, 0), reader.view(p, reader.k["copy"])
    w_in = [reader.scan_block(p, "in", layer) for layer in range(n_scan)]
    w_out = [reader.scan_block(p, "out", layer) for layer in range(n_scan)]
    bias = [np.ascontiguousarray(reader.scan_block(p, "bias", layer)) for layer in range(n_scan)]
    state = [np.zeros((sweep.n_pieces, cfg.scan), np.float32) for _ in range(n_scan)]  # every piece starts at zero
    if match is None:
        match = reader._no_match()
    prev, prev_base, minlens, mspec = match
    widths = [cfg.width] + list(cfg.hidden) + [256]
    n_w = min(sweep.window, max(1, sweep.text.total))
    rows = np.empty((n_w, cfg.slots), np.int64)
    cand = np.empty((n_w, cfg.match_inputs, 2), np.int64)
    act0 = np.empty((n_w, widths[0]), np.float32)
    pre = [np.empty((n_w, h), np.float32) for h in widths[1:]]
    proj0 = np.empty((n_w, 2 * cfg.scan), np.float32) if n_scan else None
    loss, dl, bitp = np.empty(n_w, np.float32), np.empty((n_w, 256), np.float32), np.empty((n_w, 8), np.float32)
    for v0, v1, srows, seg_lo, seg_hi, live, scored in sweep.windows():
        n = v1 - v0
        pos = sweep.text.to_data(np.arange(v0, v1, dtype=np.int64))
        # the layers that read the position alone: rows, the table, the first layer, the scan's input
        reader_ops.rows_cpu(data, pos, cfg.window, reader.ctx, cfg.ctx_bits, reader.base_ctx, reader.const_row,
                            rows[:n], prev, prev_base, minlens, mspec, reader.base_match, cand[:n])
        reader_ops.gather_cpu(table, rows[:n], act0[:n])
        gemm.gemm_cpu(act0[:n], w[0], pre[0][:n], False)
        if reader.n_layers > 1:
            reader_ops.relu_cpu(pre[0][:n])
        # the scan, piece by piece over its rows; s[l][i]: layer l's state after the position i scores
        s = []
        if n_scan:
            gemm.gemm_cpu(pre[0][:n], w_in[0], proj0[:n], False)
            prow = srows
            proj = proj0
            for layer in range(n_scan):
                s_rows = np.empty((len(srows), cfg.scan), np.float32)
                if layer:
                    proj = np.empty((len(srows), 2 * cfg.scan), np.float32)
                    gemm.gemm_cpu(s_prev, w_in[layer], proj, False)
                    prow = np.arange(len(srows), dtype=np.int64)
                scan.scan_pieces_cpu(proj, prow, seg_lo, seg_hi, live, bias[layer], state[layer], s_rows)
                s.append(s_rows[scored])
                s_prev = s_rows
        # the layers after the scan, once per position, and the softmax
        for k in range(1, reader.n_layers):
            gemm.gemm_cpu(pre[k - 1][:n], w[k], pre[k][:n], False)
            if k == 1:
                for layer in range(n_scan):
                    gemm.gemm_cpu(s[layer], w_out[layer], pre[1][:n], True)
            if k + 1 < reader.n_layers:
                reader_ops.relu_cpu(pre[k][:n])
        reader_ops.softmax_cpu(pre[-1][:n], data[pos], 0.0, loss[:n], dl[:n], bitp[:n], cand[:n], copy)
        out[v0:v1] = bitp[:n]
    return out
