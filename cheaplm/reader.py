"""The reader: a learned network over the bytes, mixed with the memory's prediction.

The memory (count tables + match model, model.py) recalls what it has seen; the reader generalises:
its rows are learned vectors shared by every context that hashes to them, and an MLP turns the
recent bytes into a distribution over the next byte. No attention: a batch is a few large matrix
products (tensor cores, kernels/gemm.py), gathers/scatters of rows (memory bandwidth) and, with
`scan` > 0, a recurrent state carried along the text (kernels/scan.py: a gated linear scan, one
memory-bound sweep per lane), which is what lets the reader see past its W bytes.

    x      = [E[byte t-1 at offset 1], ..., E[byte t-W at offset W],      # W byte slots
              E[hash of context c] for c in contexts,                       # hashed, learned rows
              E[match candidate k: (k, state, predicted byte)] for each k,  # what memory recalls
              E[constant]]                                                  # the first layer's bias
    h1     = relu(x @ W1^T)
    [g; v] = h1 @ Wi^T;  a = sigmoid(g + b);  s_t = a * s_{t-1} + (1 - a) * v    # the scan's state
    h2     = relu(h1 @ W2^T + s_t @ Wo^T);  logits = h2 @ W3^T                     # (B, 256)
    logits[predicted byte of k] += C[k, state of k]  for each candidate k in play   # copy path
    p_r    = softmax(logits)

The match candidates are the memory's own (kernels/mixer.py's match_inputs: for each minimum
length the most recent earlier occurrence of the context, its verified length and how far back it
is). They are causal by construction: the index at position t holds only positions before t, in
training as in evaluation, so the reader learns to read the match model as it will meet it on new
text (a first reader without them over-fitted the text it had read: bench/NOTES.md §11).

The mix ("reading the memory"): for each bit j of the byte, with z_m = stretch(the memory's
p(bit)) and z_r = stretch(the reader's p(bit | bits before j), from p_r),
    z = w[s, 0] z_m + w[s, 1] z_r + w[s, 2],   s = (j, |z_m| bucket, |z_r| bucket)
so the weights say, per confidence of each side, how far to trust memory and how far the reader.
A third input, the document's own words (docwords.py: which words of the current article the word
being written could be), adds w_d[j, c] z_d with c a small confidence context; z_d = 0 where it
has nothing to say, and a run from before it has w_d = 0, so its predictions are unchanged.
The mix is fitted on held-out bytes the count tables have not seen (train.py), as the memory's
own mixer is: on counted bytes the memory would look better than it will be on new text.

Parameters live in one flat buffer with named blocks from a size table (`blocks`); each block has
its own learning-rate factor; the embedding table is updated lazily (only rows with a gradient,
kernels/adam.py) so its size costs memory, not time.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

import numba
import numpy as np

from .device import Device
from . import docwords
from .docwords import CONTEXTS, DOC_SETS, stretch
from .kernels import adam, reader_ops
from .kernels.match import SPEC_LEN
from .match import match_at
from .reader_backend import Operand, ops_for
from .lanes import RangeSchedule
from .reader_host import range_probs_host
from .kernels.hashing import ORDER, SKIP, WORD
from .options import check_keys

MIX_SETS = 8 * 4 * 4
SCAN_WARM = 2048  # bytes a lane reads before the bytes it scores (range_probs)


@dataclass
class ReaderConfig:
    window: int = 8  # byte slots: the last W bytes, each through its own row per byte value
    contexts: list = field(default_factory=lambda: [[ORDER, 2], [ORDER, 3], [ORDER, 4], [ORDER, 6],
                                                    [WORD, 1], [WORD, 2], [WORD, 3], [SKIP, 2]])
    dim: int = 64  # width of every slot's row
    match_inputs: int = 0  # match candidates read (the memory's; filled in from its config)
    match_states: int = 0  # states of one candidate (length x recency; from the memory's config)
    ctx_bits: int = 20  # rows per hashed context
    hidden: list = field(default_factory=lambda: [2048, 1024])
    # positions read at once, in lanes of scan_chunk consecutive bytes with a scan (training's
    # batch, and evaluation's lanes); how the reader is trained is the run's (schedule.py)
    batch: int = 16384
    # the recurrent state (kernels/scan.py): units of a gated linear scan over the first hidden
    # layer, read by the second; 0: none (every position independent). Gradients reach scan_chunk
    # positions back (a batch is batch / scan_chunk lanes of that many consecutive bytes). H200, val,
    # 2 minutes: 1.3797 with 512 units against 1.3942 without; CPU, 3 MB: 1.8051 with 64 against
    # 1.8130 (bench/NOTES.md §12)
    scan: int = 512
    scan_layers: int = 1  # stacked scans: layer l > 0 reads layer l - 1's states; every layer feeds the second layer
    scan_chunk: int = 64
    seed: int = 0

    @property
    def width(self) -> int:
        return self.slots * self.dim

    @property
    def slots(self) -> int:
        return self.window + len(self.contexts) + self.match_inputs + 1

    def validate(self) -> None:
        if not (1 <= self.window <= 32) or self.dim < 1 or not (4 <= self.ctx_bits <= 26):
            raise ValueError("reader: window must be in 1..32, dim >= 1, ctx_bits in 4..26")
        if not self.hidden or any(h < 1 for h in self.hidden) or len(self.hidden) > 4:
            raise ValueError("reader: hidden must list 1..4 positive layer widths")
        if self.batch < 1:
            raise ValueError("reader: batch must be positive")
        for kind, _ in self.contexts:
            if kind not in (ORDER, WORD, SKIP):
                raise ValueError("reader: contexts are [kind, param] with kind ORDER, WORD or SKIP")
        if self.scan < 0 or self.scan_chunk < 1 or not (1 <= self.scan_layers <= 8):
            raise ValueError("reader: scan must be >= 0, scan_chunk >= 1 and scan_layers in 1..8")
        if self.scan and self.batch % self.scan_chunk:
            raise ValueError("reader: a scan needs a batch that is a multiple of scan_chunk")

    def gpu_shapes_ok(self) -> bool:
        return (self.width % 64 == 0 and all(h % 64 == 0 for h in self.hidden) and self.batch % 64 == 0
                and self.scan % 64 == 0)

    @property
    def lanes(self) -> int:
        """Lanes of consecutive positions in a batch (1 position each without a scan)."""
        return self.batch // self.scan_chunk if self.scan else self.batch

    @classmethod
    def for_device(cls, device: str, minutes: float | None = None, **over) -> "ReaderConfig":
        """Defaults by device: the GPU's fill an H200's minutes; the CPU's fit 2 cores. On the GPU a
        longer budget buys a wider reader (hidden widths x WIDEN(minutes)) rather than more passes,
        which memorise (bench/NOTES.md §12): one pass of the widened reader about fills the time."""
        if device == "cuda":
            f = widen(minutes)
            cfg = cls(hidden=[int(2048 * f), int(1024 * f)])
        else:
            cfg = cls(window=6, dim=16, ctx_bits=16, hidden=[256, 128], batch=1024, scan=64, scan_chunk=16)
        cfg = dataclasses.replace(cfg, **check_keys(cls, over, "reader"))
        cfg.validate()
        return cfg

    @classmethod
    def from_dict(cls, d: dict) -> "ReaderConfig":
        cfg = cls(**check_keys(cls, d, "reader"))
        cfg.validate()
        return cfg


def widen(minutes: float | None) -> float:
    """The GPU reader's width factor for a minutes budget: one pass over the wikibench train split
    (124 MB read) about fills the reader's time (the budget less 10% of memory and 5% of mix).
    Reader positions/s on an H200 with the block tile (bench/RESULTS.md, 2026-12-03): 1.78 / 1.8 /
    1.30 M at factor 1 / 1.25 / 2 (probes); 0.49 M at factor 5 in a whole 8-minute run, where the
    pass ended at 300 s of the 449 s it had: 231 TFLOP/s over the products (468 MFLOP a position).
    At that rate a pass takes ~190 s at 4 (324 MFLOP), ~254 s at 5 (a 5-minute run has ~250 s) and
    ~390 s at 6.5 (732 MFLOP; an 8-minute run has ~400 s)."""
    if minutes is None or minutes < 1.5:
        return 1
    if minutes < 3:
        return 1.25
    if minutes < 4:
        return 2
    if minutes < 5:
        return 4
    return 5 if minutes < 8 else 6.5


def blocks(cfg: ReaderConfig) -> list[tuple[str, tuple[int, int], bool]]:
    """The size table: (name, shape, lazy) of each parameter block, in order (the table's Adam is
    lazy: only rows with a gradient move)."""
    rows = cfg.window * 256 + (len(cfg.contexts) << cfg.ctx_bits) + cfg.match_inputs * cfg.match_states * 256 + 1
    out = [("table", (rows, cfg.dim), True)]
    fan_in = cfg.width
    for i, h in enumerate(cfg.hidden):
        out.append((f"w{i + 1}", (h, fan_in), False))
        fan_in = h
    out.append(("out", (256, fan_in), False))
    out.append(("copy", (max(1, cfg.match_inputs), max(1, cfg.match_states)), False))
    if cfg.scan:  # layer 0 reads the first hidden layer, layer l > 0 layer l - 1; all feed the layer after it
        widths = list(cfg.hidden) + [256]
        for layer in range(cfg.scan_layers):
            fan_in = widths[0] if layer == 0 else cfg.scan
            out.append((scan_block_name("in", layer), (2 * cfg.scan, fan_in), False))
            out.append((scan_block_name("bias", layer), (1, cfg.scan), False))
            out.append((scan_block_name("out", layer), (widths[1], cfg.scan), False))
    return out


def touched_rows_max(cfg: ReaderConfig, n: int) -> int:
    """The most distinct table rows n positions can read: per slot kind, its positions' rows or
    the rows of its part of the table, whichever is fewer (bytes, hashed contexts, match
    candidates), and the constant row. The length of a rank's list of touched rows (parallel.py)."""
    n_ctx, n_mi = len(cfg.contexts), cfg.match_inputs
    return (min(n * cfg.window, cfg.window * 256) + min(n * n_ctx, n_ctx << cfg.ctx_bits)
            + min(n * n_mi, n_mi * cfg.match_states * 256) + 1)


def decayed(name: str) -> bool:
    """Blocks that weight decay shrinks: the dense layers' weights and the scan's products (not the
    table, the copy path's values or the scan's gate biases)."""
    return name.startswith("w") or name == "out" or (name.startswith("scan") and not name.endswith("_bias"))


def scan_block_name(part: str, layer: int) -> str:
    """The block name of a scan layer's part: scan_in, scan_bias, scan_out for the first layer (the
    names checkpoints of one layer hold), scan1_in, ... for the layers stacked on it."""
    return f"scan_{part}" if layer == 0 else f"scan{layer}_{part}"


def param_count(cfg: ReaderConfig) -> int:
    """Floats in all of the reader's parameter blocks."""
    return sum(shape[0] * shape[1] for _, shape, _ in blocks(cfg))


def init_params(cfg: ReaderConfig) -> np.ndarray:
    rng = np.random.default_rng(cfg.seed)
    parts = []
    for name, shape, _ in blocks(cfg):
        if name == "table":
            w = np.zeros(shape, np.float32)
            w[: cfg.window * 256] = rng.standard_normal((cfg.window * 256, cfg.dim))
            w[-1] = rng.standard_normal(cfg.dim)  # the constant row; hashed rows start at 0 (unseen = nothing)
        elif name == "copy":
            w = np.zeros(shape)
        elif name.startswith("scan") and name.endswith("_in"):
            w = rng.standard_normal(shape) * math.sqrt(1.0 / shape[1])
        elif name.startswith("scan") and name.endswith("_bias"):
            # units keep their past for 2 .. 2000 bytes (a = 1 - 1/tau, bias = logit(a) = log(tau - 1)),
            # log-spaced: from the word being read to the paragraph
            w = np.log(np.exp(np.linspace(math.log(2.0), math.log(2000.0), shape[1])) - 1.0)[None, :]
        elif name.startswith("scan") and name.endswith("_out"):
            w = rng.standard_normal(shape) * (0.5 / math.sqrt(shape[1] * cfg.scan_layers))
        elif name == "out":
            w = rng.standard_normal(shape) * (0.5 / math.sqrt(shape[1]))
        else:
            w = rng.standard_normal(shape) * math.sqrt(2.0 / shape[1])  # relu layers
        parts.append(np.asarray(w, np.float32).ravel())
    return np.concatenate(parts)


def init_mix() -> np.ndarray:
    """The mix starts as the memory alone: the reader has to earn its weight on held-out bytes (on
    26 KB of text a reader of a few steps, started at 0.6 of the weight, made the demo's test
    4.86 bpb against the memory's 3.4)."""
    w = np.zeros((MIX_SETS, 3), np.float32)
    w[:, 0] = 1.0
    return w


def _bits(op: Operand) -> tuple:
    return op.b16, op.b16_t


class Reader:
    """Parameters, optimizer state and batch work space of one reader, on the CPU or the GPU."""

    def __init__(self, cfg: ReaderConfig, device: str = "cpu", params=None, mix=None, mix_doc=None):
        cfg.validate()
        self.cfg = cfg
        self.dev = Device(device)
        if self.dev.gpu and not cfg.gpu_shapes_ok():
            raise ValueError("reader on the GPU: the input width, hidden widths and batch must be multiples of 64")
        self.device = self.dev.name
        self.blocks = blocks(cfg)
        self.offsets = []
        at = 0
        for _, shape, _ in self.blocks:
            self.offsets.append(at)
            at += shape[0] * shape[1]
        self.n_params = at
        host = params if params is not None else init_params(cfg)
        if len(host) != self.n_params:
            raise ValueError(f"reader: {len(host)} parameters, its config needs {self.n_params}")
        self.mix = (mix if mix is not None else init_mix()).astype(np.float32)
        # the document words' weights in the mix (docwords.py); zero (a run from before them): D is
        # not read and every prediction is as it was
        self.mix_doc = (mix_doc if mix_doc is not None else np.zeros(DOC_SETS)).astype(np.float32)
        self.ctx = np.asarray(cfg.contexts, dtype=np.int64).reshape(-1, 2)
        self.base_ctx = cfg.window * 256
        self.base_match = self.base_ctx + (len(cfg.contexts) << cfg.ctx_bits)
        self.n_layers = len(cfg.hidden) + 1  # dense layers: blocks 1 .. n_layers
        self.k = {name: i for i, (name, _, _) in enumerate(self.blocks)}
        self.const_row = self.blocks[0][1][0] - 1
        self.ops = ops_for(self.dev)
        self.params = self.dev.own(np.ascontiguousarray(host, np.float32))
        self.d_ctx = self.dev.put(self.ctx)
        self.grad = self._zeros(self.n_params)
        self.adam_m = self._zeros(self.n_params)
        self.adam_v = self._zeros(self.n_params)
        self.step = 0
        self.ws = None
        self.train_state = None

    # ---- arrays ----------------------------------------------------------------------------------
    def _zeros(self, n):
        return self.dev.zeros(n)

    def view(self, buf, k: int):
        """Block k of a flat buffer (params, grad, moments) as its 2-D shape."""
        shape = self.blocks[k][1]
        lo = self.offsets[k]
        return buf[lo: lo + shape[0] * shape[1]].reshape(shape)

    def host(self, arr) -> np.ndarray:
        return self.dev.host(arr)

    def _workspace(self, n_b: int):
        """Work space of a batch of n_b positions (host or GPU operands: reader_backend.py)."""
        if self.ws is not None and self.ws["n"] == n_b:
            return self.ws
        cfg, ops = self.cfg, self.ops
        widths = [cfg.width] + list(cfg.hidden) + [256]
        pre = [ops.floats(n_b, w) for w in widths[1:]]  # the products' outputs (a hidden layer's relu in place)
        d = [ops.floats(n_b, w) for w in widths]  # gradients w.r.t. each layer's input, and the logits'
        if ops.gpu:
            act = [ops.operand(n_b, w, keep_float=False) for w in widths[:-1]]
            dpre = [Operand(d[k + 1], *_bits(ops.operand(n_b, widths[k + 1], keep_float=False)))
                    for k in range(self.n_layers)]
        else:
            act = [ops.operand(n_b, widths[0])] + [Operand(f=p) for p in pre[:-1]]
            dpre = [Operand(f=d[k + 1]) for k in range(self.n_layers)]
        ws = {"n": n_b, "rows": self.dev.empty((n_b, cfg.slots), np.int64),
              "cand": self.dev.empty((n_b, cfg.match_inputs, 2), np.int64), "act": act, "pre": pre, "d": d,
              "dpre": dpre, "loss": ops.floats(n_b), "bitp": ops.floats(n_b, 8),
              "no_keep": self.dev.put(np.ones((0, 0), np.float32)), "keep_rows": None}
        layers, S = range(cfg.scan_layers if cfg.scan else 0), cfg.scan
        ws.update(proj=[ops.floats(n_b, 2 * S) for _ in layers], gate=[ops.floats(n_b, S) for _ in layers],
                  s=[ops.operand(n_b, S) for _ in layers], ds=[ops.floats(n_b, S) for _ in layers],
                  dproj=[ops.operand(n_b, 2 * S) for _ in layers])
        self.ws = ws
        return ws

    def scan_block(self, buf, part: str, layer: int):
        """Scan layer `layer`'s block `part` (in, bias, out) of a flat buffer."""
        return self.view(buf, self.k[scan_block_name(part, layer)])

    def _state_in(self, ws, state) -> None:
        """The scan's state before the batch, kept (s0) for backward; `state` is moved on in place."""
        if state is None or ws["n"] % state.shape[0] or state.shape[1] != self.cfg.scan * self.cfg.scan_layers:
            raise ValueError("a reader with a scan needs its state: (lanes, scan x layers) with batch = lanes x chunk")
        ws["T"] = ws["n"] // state.shape[0]
        ws["state"] = state
        if ws.get("s0") is None or ws["s0"].shape != state.shape:
            ws["s0"] = self.dev.empty(state.shape, np.float32)
        if self.dev.gpu:
            ws["s0"].copy_to_device(state)
        else:
            ws["s0"][:] = state

    # ---- forward / backward ----------------------------------------------------------------------
    def forward(self, data, pos, match=None, scale: float = 0.0, state=None, drop: float = 0.0):
        """Scores positions `pos` of `data` (both on the reader's device): per-position loss (bits)
        and per-bit probabilities in the work space; with scale > 0 also d(loss * scale)/d(logits).
        match: MatchModel.args of the memory's match pointers for these positions (prev[k, t -
        prev_base]); required when the reader reads match candidates. state: with a scan, the
        (lanes, scan x layers) state before the batch (new_state()); pos then holds lanes runs of
        consecutive positions, lane-major, and the state is moved on in place. drop: training's
        dropout of hashed rows (ReaderSchedule.ctx_dropout): each hashed context's row is left out
        of a position's input with this probability, the kept ones scaled by 1 / (1 - drop), drawn
        afresh each update (reader_ops.keep_position); backward reads the same draw."""
        cfg, ops = self.cfg, self.ops
        ws = self._workspace(pos.shape[0])
        ws["keep"] = ws["no_keep"]
        if drop > 0.0:
            if ws["keep_rows"] is None:
                ws["keep_rows"] = self.dev.empty((ws["n"], cfg.slots), np.float32)
            ops.keep(pos, cfg.seed * 1_000_003 + self.step, drop, cfg.window, len(cfg.contexts), ws["keep_rows"])
            ws["keep"] = ws["keep_rows"]
        if cfg.scan:
            self._state_in(ws, state)
        if cfg.match_inputs and match is None:
            raise ValueError("this reader reads the match model: pass match=MatchModel.args(prev, prev_base)")
        ops.rows(data, pos, self, ws["rows"], match if match is not None else self._no_match(), ws["cand"])
        ops.gather(self.view(self.params, 0), ws["rows"], ws["act"][0], ws["keep"])
        for k in range(self.n_layers):
            ops.matmul(ws["act"][k], ops.weights(self.view(self.params, k + 1), k + 1), ws["pre"][k])
            if k == 1:  # pre[1] += s_l @ W_out_l^T for each scan layer
                for layer in range(len(ws["s"])):
                    w_out = ops.weights(self.scan_block(self.params, "out", layer), ("out", layer))
                    ops.matmul(ws["s"][layer], w_out, ws["pre"][1], accumulate=True)
            if k + 1 < self.n_layers:
                ops.relu(ws["pre"][k], ws["act"][k + 1])
            if k == 0:
                self._scan_forward(ws)
        ops.softmax(ws, data, pos, scale, self.view(self.params, self.k["copy"]), self.view(self.grad, self.k["copy"]),
                    ws["dpre"][-1])
        return ws

    def _scan_forward(self, ws) -> None:
        """Scan layer l reads the first hidden layer (l = 0) or layer l - 1's state sequence."""
        ops, S = self.ops, self.cfg.scan
        for layer in range(len(ws["s"])):
            x = ws["act"][1] if layer == 0 else ws["s"][layer - 1]
            w_in = ops.weights(self.scan_block(self.params, "in", layer), ("in", layer))
            ops.matmul(x, w_in, ws["proj"][layer])
            cols = slice(layer * S, (layer + 1) * S)
            ops.scan_forward(ws["proj"][layer], self.scan_block(self.params, "bias", layer), ws["s0"][:, cols],
                             ws["state"][:, cols], ws["gate"][layer], ws["s"][layer], ws["T"])

    def _no_match(self):
        if not hasattr(self, "_nm"):
            arrs = tuple(self.dev.put(a) for a in (np.full((1, 1), -1, np.int32), np.zeros(1, np.int64),
                                                   np.zeros(SPEC_LEN, np.int64)))
            self._nm = (arrs[0], 0, arrs[1], arrs[2])
        return self._nm

    def backward(self, skip_table: bool = False) -> None:
        """Adds d(loss * scale)/d(params) into self.grad (forward must have run with scale > 0):
        the literal reverse of forward, layer by layer."""
        ws, ops = self.ws, self.ops
        for k in range(self.n_layers - 1, -1, -1):
            dpre = ws["dpre"][k]
            # pre[k] = act[k] @ W^T  =>  dW += dpre^T @ act ;  dact = dpre @ W
            ops.grad_w(dpre, ws["act"][k], self.view(self.grad, k + 1))
            if k > 0 or not skip_table:
                ops.grad_x(dpre, ops.weights(self.view(self.params, k + 1), k + 1, fresh=False), ws["d"][k])
            if k == 1:
                self._scan_backward(ws, dpre)
            if k > 0:  # act[k] = relu(pre[k - 1])
                ops.relu_backward(ws["d"][k], ws["pre"][k - 1], ws["act"][k], ws["dpre"][k - 1])
        if not skip_table:
            ops.scatter(ws["d"][0], ws["rows"], self.view(self.grad, 0), ws["keep"])

    def _scan_backward(self, ws, dpre) -> None:
        """pre[1] += s_l @ W_out_l^T ; s_l = scan(x_l @ W_in_l^T), x_0 = act[1], x_l = s_(l-1):
        the reverse, from the last layer to the first; act[1] gets the first layer's share."""
        ops, S = self.ops, self.cfg.scan
        n_layers = len(ws["s"])
        for layer in range(n_layers):
            ops.grad_w(dpre, ws["s"][layer], self.scan_block(self.grad, "out", layer))
            w_out = ops.weights(self.scan_block(self.params, "out", layer), ("out", layer), fresh=False)
            ops.grad_x(dpre, w_out, ws["ds"][layer])
        for layer in range(n_layers - 1, -1, -1):
            cols = slice(layer * S, (layer + 1) * S)
            ops.scan_backward(ws["proj"][layer], ws["gate"][layer], ws["s"][layer], ws["s0"][:, cols], ws["ds"][layer],
                              ws["dproj"][layer], self.scan_block(self.grad, "bias", layer), ws["T"])
            x = ws["act"][1] if layer == 0 else ws["s"][layer - 1]
            ops.grad_w(ws["dproj"][layer], x, self.scan_block(self.grad, "in", layer))
            w_in = ops.weights(self.scan_block(self.params, "in", layer), ("in", layer), fresh=False)
            ops.grad_x(ws["dproj"][layer], w_in, ws["d"][1] if layer == 0 else ws["ds"][layer - 1], accumulate=True)

    def update(self, lr: float, frozen: tuple = (), table_lr: float = 1.0, weight_decay: float = 0.0,
               rows=None) -> None:
        """An Adam step of every block but those named in `frozen` (only the table can be: backward
        then leaves its gradient at zero, as the last step left it); the table's rate is lr x table_lr.
        weight_decay: decoupled (AdamW) on the dense weights (DECAYED), not the table or biases.
        rows: the table rows with a gradient, when not the batch's own (every rank's, on several GPUs)."""
        self.step += 1
        for k, (name, shape, lazy) in enumerate(self.blocks):
            if name in frozen:
                continue
            lo, hi = self.offsets[k], self.offsets[k] + shape[0] * shape[1]
            if name == "table" and self.ops.table_update(self.params[lo:hi], self.grad[lo:hi], self.adam_m[lo:hi],
                                                         self.adam_v[lo:hi], shape[1],
                                                         self.ws["rows"] if rows is None else rows, self.step,
                                                         lr * table_lr):
                continue  # the GPU's: the rows the batch read only
            adam.adam_step(self.params[lo:hi], self.grad[lo:hi], self.adam_m[lo:hi], self.adam_v[lo:hi],
                           self.step, lr * (table_lr if name == "table" else 1.0), lazy=lazy,
                           wd=weight_decay if decayed(name) else 0.0)

    def train_step(self, data, pos, lr: float, match=None, state=None, frozen: tuple = (),
                   table_lr: float = 1.0, ctx_dropout: float = 0.0, weight_decay: float = 0.0, comm=None) -> float:
        """One update at rate lr on positions pos; returns the batch's mean loss in bits per byte
        (with ctx_dropout > 0: of the inputs with rows dropped). comm (comm.py), with several ranks:
        pos is this rank's share of a global batch of comm.size x len(pos) positions; the gradient
        of the global mean loss is summed over ranks before every rank takes the same step, and the
        global mean loss is returned (parallel.py)."""
        world = 1 if comm is None else comm.size
        n = pos.shape[0] * world
        self.forward(data, pos, match, scale=1.0 / n, state=state, drop=ctx_dropout)
        self.backward(skip_table="table" in frozen)
        if world == 1:
            self.update(lr, frozen, table_lr, weight_decay)
            return float(np.mean(self.host(self.ws["loss"]), dtype=np.float64))
        comm.all_reduce(self.grad[self.offsets[1]:])  # the dense weights' gradient, summed over ranks
        rows = None if "table" in frozen else self._exchange_rows(comm)  # the table's: the rows read only
        self.update(lr, frozen, table_lr, weight_decay, rows=rows)
        total = np.array([np.sum(self.host(self.ws["loss"]), dtype=np.float64)])
        comm.all_reduce(total)
        return float(total[0] / n)

    def _exchange_rows(self, comm):
        """The table's gradient summed over ranks, touching only the rows the step read: this
        rank's distinct rows and their gradient rows (a list of touched_rows_max entries, -1 past
        the count: kernels/table_rows.py) are all-gathered, and every rank adds every rank's list
        back into its zeroed rows in rank order, so the replicas' sums are the same to the bit.
        Returns the lists' rows ((ranks x entries, 1), -1 padded), which the GPU's row-wise Adam
        visits."""
        ws, ops = self.ws, self.ops
        g = self.view(self.grad, 0)
        p, w = touched_rows_max(self.cfg, ws["n"]), comm.size
        x = ws.get("exchange")
        if x is None or x["all_ids"].shape[0] != w * p:
            x = ws["exchange"] = {"ids": self.dev.empty(p, np.int64), "vals": self.dev.empty((p, self.cfg.dim)),
                                  "all_ids": self.dev.empty(w * p, np.int64),
                                  "all_vals": self.dev.empty((w * p, self.cfg.dim))}
        ops.take_rows(ws["rows"], g, x["ids"], x["vals"])
        comm.all_gather(x["ids"], x["all_ids"])
        comm.all_gather(x["vals"], x["all_vals"])
        for r in range(w):  # rank order: the sums every rank makes alike
            ops.add_rows(x["all_ids"][r * p: (r + 1) * p], x["all_vals"][r * p: (r + 1) * p], g)
        return x["all_ids"].reshape(w * p, 1)

    def new_state(self, lanes: int):
        """A zero scan state for `lanes` lanes, on the reader's device (None without a scan)."""
        if not self.cfg.scan:
            return None
        width = self.cfg.scan * self.cfg.scan_layers
        return self._zeros(lanes * width).reshape(lanes, width)

    def range_probs(self, data, ranges, match=None, warm: int = SCAN_WARM) -> np.ndarray:
        """(bytes in ranges, 8) host array: the reader's p(bit j = 1 | the byte's bits before j) for
        the true bytes of data[a:b] for each (a, b) in ranges, end to end. With a scan, each range is
        read in pieces (lanes.range_pieces: a piece's state starts at zero up to `warm` bytes before
        the bytes it scores, never before its range's start); on the host by reader_host.py's
        forward-only sweep, on a GPU in training's lanes (range_probs_lanes): the same numbers."""
        if not self.dev.gpu:
            return range_probs_host(self, data, ranges, match, warm)
        return self.range_probs_lanes(data, ranges, match, warm)

    def range_probs_lanes(self, data, ranges, match=None, warm: int = SCAN_WARM) -> np.ndarray:
        """range_probs by training's forward: the pieces dealt to lanes of consecutive bytes
        (lanes.RangeSchedule), a batch of the reader's size at a time."""
        if not self.cfg.scan:
            return self.bit_probs(data, np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in ranges]), match)
        sched = RangeSchedule(ranges, self.cfg.lanes, self.cfg.scan_chunk, warm)
        out = np.empty((sched.text.total, 8), np.float32)
        state = self.new_state(self.cfg.lanes)
        for pos, v, scored, fresh in sched.steps():
            if fresh.any():  # a lane starts a new piece: from a zero state
                host = self.host(state)
                host[fresh] = 0.0
                state = self.dev.put(host)
            ws = self.forward(data, self.dev.put(pos), match_at(match, pos), state=state)
            out[v[scored]] = self.host(ws["bitp"])[scored]
        return out

    def bit_probs(self, data, pos: np.ndarray, match=None) -> np.ndarray:
        """(len(pos), 8) host array: the reader's p(bit j = 1 | the byte's bits before j) for the true
        bytes at host positions pos, in batches of the reader's own size (the last one padded, as
        the GPU's products need whole batches). Positions are independent: no scan."""
        if self.cfg.scan:
            raise ValueError("a reader with a scan reads runs of bytes: use range_probs")
        rb = self.cfg.batch
        out = np.empty((len(pos), 8), np.float32)
        for lo in range(0, len(pos), rb):
            chunk = pos[lo: lo + rb]
            k = len(chunk)
            if k < rb:
                chunk = np.resize(chunk, rb)
            ws = self.forward(data, self.dev.put(chunk), match_at(match, chunk))
            out[lo: lo + k] = self.host(ws["bitp"])[:k]
        return out

    def next_byte_probs(self, data, pos, match=None, state=None) -> np.ndarray:
        """P(byte at pos[0] = y) over y (float64) by training's forward (one position); with a scan,
        `state` (new_state(1)) must have read every position before pos[0] and is moved on. The
        reference that generation's serial step (reader_host.HostReader.next_probs) is tested against."""
        ws = self.forward(data, pos, match, state=state)
        z = ws["pre"][-1][0].astype(np.float64)  # the logits, the copy path added
        z = np.exp(z - z.max())
        return z / z.sum()

    # ---- checkpoints -----------------------------------------------------------------------------
    def arrays(self) -> dict:
        return {"reader_params": self.host(self.params), "reader_mix": self.mix, "reader_mix_doc": self.mix_doc,
                "reader_step": np.array(self.step, np.int64)}

    @property
    def reads_doc(self) -> bool:
        """Whether the mix reads the document words (some of its weights are not zero)."""
        return bool(np.any(self.mix_doc != 0))

    def doc_mix(self, zd, cd):
        """mix_loss's `doc` argument for D's inputs zd, cd; None when the mix does not read D."""
        return (zd, cd, self.mix_doc) if self.reads_doc else None

    def training_state(self):
        """The scan's state of the training lanes (None without a scan), carried across steps."""
        if self.cfg.scan and self.train_state is None:
            self.train_state = self.new_state(self.cfg.lanes)
        return self.train_state

    def state_arrays(self) -> dict:
        out = {"reader_m": self.host(self.adam_m), "reader_v": self.host(self.adam_v)}
        if self.cfg.scan:
            out["reader_scan_state"] = self.host(self.training_state())
        return out

    def load_state(self, z: dict) -> None:
        self.adam_m, self.adam_v = self.dev.own(z["reader_m"]), self.dev.own(z["reader_v"])
        if self.cfg.scan and "reader_scan_state" in z:
            st = np.ascontiguousarray(z["reader_scan_state"], np.float32)
            want = (self.cfg.lanes, self.cfg.scan * self.cfg.scan_layers)
            if st.shape != want:
                raise ValueError(f"reader scan state {st.shape}, the config needs {want}")
            self.train_state = self.dev.own(st)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self.cfg), sort_keys=True)


# ---- the memory-reader mix (host: (B, 8) numbers per batch) ------------------------------------

NO_DOC = (np.zeros((0, 8), np.float32), np.zeros(0, np.int64), np.zeros(DOC_SETS, np.float32))
_NO_PD = np.zeros(0)


def mix_loss(pm, pr, y, w, grad, doc=None, doc_grad=None):
    """Mixed loss (bits) per position of bit probabilities pm (memory) and pr (reader) for true bytes
    y; adds d(mean loss in nats)/dw into grad when grad has rows. doc: the document words' inputs
    and weights (zd (B, 8), cd (B,), w_d (DOC_SETS,): docwords.py), or None for none; doc_grad:
    where d/dw_d is added (with grad)."""
    zd, cd, wd = NO_DOC if doc is None else doc
    gd = np.zeros(0, np.float32) if doc_grad is None else doc_grad
    return mix_loss_doc(pm, pr, y, w, grad, zd, cd, wd, gd)


@numba.njit(cache=True)
def mix_loss_doc(pm, pr, y, w, grad, zd, cd, wd, gd):
    """mix_loss's body: for bit j, z = mix_bit(z_m, z_r) + w_d[j * CONTEXTS + c] * z_d when zd has
    rows (z_d = 0 where D abstains: no effect)."""
    n = pm.shape[0]
    doc = zd.shape[0] > 0
    loss = np.zeros(n, np.float64)
    for b in range(n):
        tot = 0.0
        for j in range(8):
            bit = (y[b] >> (7 - j)) & 1
            zm = stretch(pm[b, j])
            zr = stretch(pr[b, j])
            z, row = reader_ops.mix_bit(zm, zr, j, w)
            rd = 0
            if doc:
                rd = j * CONTEXTS + cd[b]
                z += wd[rd] * zd[b, j]
            p = 1.0 / (1.0 + math.exp(-z))
            p = min(max(p, 1e-9), 1.0 - 1e-9)
            tot += -math.log(p if bit == 1 else 1.0 - p)
            if grad.shape[0] > 0:
                dz = (p - bit) / n
                grad[row, 0] += dz * zm
                grad[row, 1] += dz * zr
                grad[row, 2] += dz
                if doc and gd.shape[0] > 0:
                    gd[rd] += dz * zd[b, j]
        loss[b] = tot / math.log(2.0)
    return loss


def mixed_distribution(node_pm, pr, w, mass, out, doc=None):
    """out[y] = P(y) when every node c of the byte tree mixes the memory's P(bit = 1) there
    (node_pm[c]) with the reader's (its distribution pr summed over the subtree) as mix_loss does;
    doc: (p_D over the next byte, context, w_d) of the document words (docwords.py), or None when
    there are none or D abstains."""
    if doc is None or doc[0] is None:
        mixed_distribution_doc(node_pm, pr, w, mass, out, _NO_PD, 0, NO_DOC[2])
    else:
        mixed_distribution_doc(node_pm, pr, w, mass, out, doc[0], doc[1], doc[2])


def mixed_nibble_masses(node_pm, pr, w, mass, doc=None):
    """mass[16 + h]: high nibble h's probability under the mix of mixed_distribution, from the
    memory's first 15 nodes (node_pm[1..15]) alone."""
    if doc is None or doc[0] is None:
        mixed_nibbles(node_pm, pr, w, mass, _NO_PD, 0, NO_DOC[2])
    else:
        mixed_nibbles(node_pm, pr, w, mass, doc[0], doc[1], doc[2])


@numba.njit(cache=True)
def mixed_distribution_doc(node_pm, pr, w, mass, out, pd, cd, wd):
    """mixed_distribution's body; pd: p_D over 256 bytes, or empty for none."""
    _mix_tree(node_pm, pr, w, mass, pd, cd, wd, 256)
    for y in range(256):
        out[y] = mass[256 + y]


@numba.njit(cache=True)
def mixed_nibbles(node_pm, pr, w, mass, pd, cd, wd):
    """The mixed tree's first 15 nodes only (node_pm[1..15] needed): mass[16 + h] is then high
    nibble h's probability under the mix, the most any byte under it can have."""
    _mix_tree(node_pm, pr, w, mass, pd, cd, wd, 16)


@numba.njit(cache=True)
def _mix_tree(node_pm, pr, w, mass, pd, cd, wd, c_end):
    """mass[c] for the mixed tree's nodes 1..c_end-1 and their children."""
    sums = np.zeros(512)
    for y in range(256):
        sums[256 + y] = pr[y]
    for c in range(255, 0, -1):
        sums[c] = sums[2 * c] + sums[2 * c + 1]
    doc = pd.shape[0] > 0
    dsums = np.zeros(512)
    if doc:
        for y in range(256):
            dsums[256 + y] = pd[y]
        for c in range(255, 0, -1):
            dsums[c] = dsums[2 * c] + dsums[2 * c + 1]
    mass[1] = 1.0
    for c in range(1, c_end):
        j = 0
        while (c >> (j + 1)) > 0:
            j += 1
        zm = stretch(node_pm[c])
        zr = stretch(sums[2 * c + 1] / max(sums[c], 1e-300))
        z, row = reader_ops.mix_bit(zm, zr, j, w)
        if doc:
            z += wd[j * CONTEXTS + cd] * docwords.stretch(dsums[2 * c + 1] / max(dsums[c], 1e-300))
        p1 = 1.0 / (1.0 + math.exp(-z))
        mass[2 * c + 1] = mass[c] * p1
        mass[2 * c] = mass[c] * (1.0 - p1)


class MixFit:
    """Adam on the mix weights, batch by batch; the rate falls linearly to a tenth over `steps`.
    With wd (the document words' weights, DOC_SETS) it fits those too, on steps given D's inputs."""

    def __init__(self, w: np.ndarray, lr: float = 0.02, steps: int = 1000, wd: np.ndarray | None = None):
        self.w, self.lr, self.steps = w.copy(), lr, max(1, steps)
        self.wd = None if wd is None else np.asarray(wd, np.float32).copy()
        self.m = np.zeros_like(w)
        self.v = np.zeros_like(w)
        self.md = None if wd is None else np.zeros_like(self.wd)
        self.vd = None if wd is None else np.zeros_like(self.wd)
        self.t = 0

    def step(self, pm, pr, y, doc=None) -> float:
        """doc: (zd, cd) of these positions (docwords.py), when fitting wd."""
        g = np.zeros_like(self.w)
        gd = None
        if self.wd is not None and doc is not None:
            gd = np.zeros_like(self.wd)
            loss = mix_loss(pm, pr, y, self.w, g, (doc[0], doc[1], self.wd), gd)
        else:
            loss = mix_loss(pm, pr, y, self.w, g)
        lr = self.lr * (1.0 - 0.9 * min(1.0, self.t / self.steps))
        self.t += 1
        c1, c2 = 1 - 0.9**self.t, 1 - 0.999**self.t
        self.m = 0.9 * self.m + 0.1 * g
        self.v = 0.999 * self.v + 0.001 * g * g
        self.w -= (lr * (self.m / c1) / (np.sqrt(self.v / c2) + 1e-8)).astype(np.float32)
        if gd is not None:
            self.md = 0.9 * self.md + 0.1 * gd
            self.vd = 0.999 * self.vd + 0.001 * gd * gd
            self.wd -= (lr * (self.md / c1) / (np.sqrt(self.vd / c2) + 1e-8)).astype(np.float32)
        return float(loss.mean())


def describe(cfg: ReaderConfig) -> str:
    n = param_count(cfg)
    dense = sum(s[0] * s[1] for name, s, _ in blocks(cfg) if name != "table")
    return (f"reader: {cfg.window} byte slots + {len(cfg.contexts)} hashed contexts + {cfg.match_inputs} match "
            f"candidates x {cfg.dim}, MLP "
            f"{cfg.width}->{'->'.join(map(str, cfg.hidden))}->256"
            + (f", {cfg.scan_layers} stacked {cfg.scan}-unit scan layer(s) over its first layer" if cfg.scan else "")
            + f"; {dense / 1e6:.1f}M dense + "
            f"{(n - dense) / 1e6:.0f}M table parameters")


def flops_per_position(cfg: ReaderConfig) -> float:
    """Multiply-adds x2 of the dense products, forward + backward (3x forward)."""
    dims = [cfg.width] + list(cfg.hidden) + [256]
    scan_macs = cfg.scan * (2 * dims[1] + dims[2]) + (cfg.scan_layers - 1) * cfg.scan * (2 * cfg.scan + dims[2])
    return 3 * (sum(2.0 * a * b for a, b in zip(dims, dims[1:])) + 2.0 * scan_macs)



def reader_bpb(reader: Reader, data, start: int, end: int, host_data: np.ndarray, match=None) -> float:
    """The reader's own bits per byte on data[start:end] (no memory): for ablations and probes.
    host_data: the same bytes on the host (the true bytes of each position)."""
    p = reader.range_probs(data, [(start, end)], match)
    y = host_data[start:end].astype(np.int64)
    bits = (y[:, None] >> (7 - np.arange(8))) & 1
    q = np.clip(np.where(bits == 1, p, 1.0 - p), 1e-9, 1.0)
    return float(-np.log2(q).sum() / max(1, end - start))
