"""The reader's forward-only paths on the host: ranges for evaluation, one position for generation.

Training's forward (reader.py, reader_backend's HostOps) reads a batch of lanes and keeps what its
backward needs. Reading needs less, and on the host these paths do only that:

`range_probs_host`: evaluation (and the mix's fitting) asks for the reader's bit probabilities of
every byte of some ranges (Reader.range_probs). The numbers are fixed by the pieces they are read
in (lanes.range_pieces: each piece from a zero state `warm` bytes before the bytes it scores); on
a GPU the pieces are dealt to training's lanes and read by training's forward. On the host that
cost three times what it must (issue 24: eval read 3.6 kB/s where training reads 10 kB/s):
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
Products are NumPy's BLAS on all cores, the rest numba parallel loops.

`HostReader.advance`: a generation stream fed a run of bytes (a prompt, a recalled article) needs
only the scan's state after them: the position-wise layers and the scan, nothing after it.

`HostReader.next_probs`: generation's next-byte distribution, one position through
kernels/reader_step.py's serial kernels (a batch of one through training's forward was ~15
parallel regions per byte).

The arithmetic is training's forward's (the same njit bodies; sums may round differently), so the
numbers equal it to float rounding (tests/test_scan.py, tests/test_sample.py).
"""

from __future__ import annotations

import numpy as np

from .kernels import gemm, reader_ops, reader_step, scan
from .lanes import PieceSweep
from .match import match_at

WINDOW = 8192  # positions per window: large products, ~50 MB of work space for the CPU default


NO_KEEP = np.ones((0, 0), np.float32)  # gather without dropout (reader_ops.gather_cpu)


class HostReader:
    """A reader's weights as the host's forward-only paths read them (made from its parameters
    when built: a stream builds one, so parameters changed later are not seen)."""

    def __init__(self, reader):
        self.reader = r = reader
        cfg = self.cfg = reader.cfg
        p = reader.params
        self.n_scan = cfg.scan_layers if cfg.scan else 0
        self.w = [r.view(p, k + 1) for k in range(r.n_layers)]
        self.table, self.copy = r.view(p, 0), r.view(p, r.k["copy"])
        self.w_in = [r.scan_block(p, "in", layer) for layer in range(self.n_scan)]
        self.w_out = [r.scan_block(p, "out", layer) for layer in range(self.n_scan)]
        self.bias = [np.ascontiguousarray(r.scan_block(p, "bias", layer)) for layer in range(self.n_scan)]
        self.widths = [cfg.width] + list(cfg.hidden) + [256]
        self.n_w = 0
        self._t = None  # transposed weights for next_probs, made at its first call

    def _space(self, n: int) -> None:
        if n <= self.n_w:
            return
        cfg, self.n_w = self.cfg, n
        self.rows = np.empty((n, cfg.slots), np.int64)
        self.cand = np.empty((n, cfg.match_inputs, 2), np.int64)
        self.act0 = np.empty((n, self.widths[0]), np.float32)
        self.pre = [np.empty((n, h), np.float32) for h in self.widths[1:]]
        self.proj0 = np.empty((n, 2 * cfg.scan), np.float32)

    def own_layers(self, data, pos, match) -> None:
        """The layers that read the position alone: rows, the table, the first layer (relu'd into
        pre[0]), the first scan layer's input projection (proj0)."""
        cfg, r, n = self.cfg, self.reader, len(pos)
        self._space(n)
        prev, prev_base, minlens, mspec = match
        reader_ops.rows_cpu(data, pos, cfg.window, r.ctx, cfg.ctx_bits, r.base_ctx, r.const_row, self.rows[:n], prev,
                            prev_base, minlens, mspec, r.base_match, self.cand[:n])
        reader_ops.gather_cpu(self.table, self.rows[:n], self.act0[:n], NO_KEEP)
        gemm.gemm_cpu(self.act0[:n], self.w[0], self.pre[0][:n], False)
        reader_ops.relu_cpu(self.pre[0][:n])
        if self.n_scan:
            gemm.gemm_cpu(self.pre[0][:n], self.w_in[0], self.proj0[:n], False)

    def scan(self, srows, seg_lo, seg_hi, seg_state, state) -> list:
        """Each layer's scan over rows srows (positions of own_layers' batch), segment by segment
        from its state slot (state[layer]: (slots, scan), moved on); returns each layer's rows."""
        out, prow, proj = [], srows, self.proj0
        for layer in range(self.n_scan):
            s_rows = np.empty((len(srows), self.cfg.scan), np.float32)
            if layer:
                proj = np.empty((len(srows), 2 * self.cfg.scan), np.float32)
                gemm.gemm_cpu(out[-1], self.w_in[layer], proj, False)
                prow = np.arange(len(srows), dtype=np.int64)
            scan.scan_pieces_cpu(proj, prow, seg_lo, seg_hi, seg_state, self.bias[layer], state[layer], s_rows)
            out.append(s_rows)
        return out

    def after_scan(self, data, pos, s) -> np.ndarray:
        """The layers after the scan for own_layers' positions, s[l]: layer l's state at each, and
        the softmax: (n, 8) bit probabilities of the true bytes (a view of the work space)."""
        n, r = len(pos), self.reader
        for k in range(1, r.n_layers):
            gemm.gemm_cpu(self.pre[k - 1][:n], self.w[k], self.pre[k][:n], False)
            if k == 1:
                for layer in range(self.n_scan):
                    gemm.gemm_cpu(s[layer], self.w_out[layer], self.pre[1][:n], True)
            if k + 1 < r.n_layers:
                reader_ops.relu_cpu(self.pre[k][:n])
        loss, dl, bitp = np.empty(n, np.float32), np.empty((n, 256), np.float32), np.empty((n, 8), np.float32)
        reader_ops.softmax_cpu(self.pre[-1][:n], data[pos], 0.0, loss, dl, bitp, self.cand[:n], self.copy)
        return bitp

    def advance(self, data, start: int, end: int, match, state, window: int = WINDOW) -> None:
        """Moves a generation stream's state (1, scan x layers) on over data[start:end] in place: the
        state after pushing those bytes one by one."""
        S = self.cfg.scan
        st = [np.ascontiguousarray(state[:, layer * S:(layer + 1) * S]) for layer in range(self.n_scan)]
        one = np.zeros(1, np.int64)
        for a in range(start, end, window):
            b = min(a + window, end)
            self.own_layers(data, np.arange(a, b, dtype=np.int64), match)
            self.scan(np.arange(b - a, dtype=np.int64), one, np.array([b - a], np.int64), one, st)
        for layer in range(self.n_scan):
            state[:, layer * S:(layer + 1) * S] = st[layer]

    def next_probs(self, data, t: int, match, state) -> np.ndarray:
        """P(byte at t = y) over y (float64) and the state (1, scan x layers) moved on past t in
        place, serially (kernels/reader_step.py)."""
        cfg, r = self.cfg, self.reader
        if self._t is None:
            self._t = [np.ascontiguousarray(w.T) for w in self.w]
            self._t_in = [np.ascontiguousarray(w.T) for w in self.w_in]
            self._t_out = [np.ascontiguousarray(w.T) for w in self.w_out]
            self.one_rows = np.empty((1, cfg.slots), np.int64)
            self.one_cand = np.empty((1, cfg.match_inputs, 2), np.int64)
            self.h = [np.empty(h, np.float32) for h in self.widths[1:]]
            self.one_proj = [np.empty(2 * cfg.scan, np.float32) for _ in range(self.n_scan)]
            self.one_s = [np.empty(cfg.scan, np.float32) for _ in range(self.n_scan)]
            self.probs = np.empty(256, np.float64)
        prev, prev_base, minlens, mspec = match
        reader_step.first_layer_one(data, t, cfg.window, r.ctx, cfg.ctx_bits, r.base_ctx, r.const_row, prev, prev_base,
                                    minlens, mspec, r.base_match, self.table, self.one_rows, self.one_cand,
                                    self._t[0], self.h[0])
        S = cfg.scan
        for layer in range(self.n_scan):
            x = self.h[0] if layer == 0 else self.one_s[layer - 1]
            reader_step.dense_one(x, self._t_in[layer], self.one_proj[layer], False)
            reader_step.scan_one(self.one_proj[layer], self.bias[layer], state[0, layer * S:(layer + 1) * S],
                                 self.one_s[layer])
        for k in range(1, r.n_layers):
            last = k + 1 == r.n_layers
            reader_step.dense_one(self.h[k - 1], self._t[k], self.h[k], False)
            if k == 1:
                for layer in range(self.n_scan):
                    reader_step.dense_one(self.one_s[layer], self._t_out[layer], self.h[1], True)
            if not last:
                reader_step.relu_one(self.h[k])
        reader_step.probs_one(self.h[-1], self.one_cand, self.copy, self.probs)
        return self.probs.copy()


def range_probs_host(reader, data, ranges, match, warm: int, window: int = WINDOW) -> np.ndarray:
    """Reader.range_probs on the host: (bytes in ranges, 8) float32."""
    cfg = reader.cfg
    host = HostReader(reader)
    lanes = cfg.lanes if cfg.scan else 1
    sweep = PieceSweep(ranges, lanes, warm if cfg.scan else 0, window)
    out = np.empty((sweep.text.total, 8), np.float32)
    state = [np.zeros((sweep.n_pieces, cfg.scan), np.float32) for _ in range(host.n_scan)]  # every piece from zero
    if match is None:
        match = reader._no_match()
    for v0, v1, srows, seg_lo, seg_hi, live, scored in sweep.windows():
        pos = sweep.text.to_data(np.arange(v0, v1, dtype=np.int64))
        host.own_layers(data, pos, match_at(match, pos))
        s = [rows[scored] for rows in host.scan(srows, seg_lo, seg_hi, live, state)]
        out[v0:v1] = host.after_scan(data, pos, s)
    return out
