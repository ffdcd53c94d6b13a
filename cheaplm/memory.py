"""The memory: count tables, the learned mixer over them and its APM stages.

It recalls what it has counted: one uint32 table of nibble rows per context (kernels/counts.py),
read through per-bit logistic mixers whose weights, count maps, match maps and APM curves are the
learned parameters (kernels/mixer.py). `mixer_blocks` is the parameters' size table: a name and a
size per block, in order; the kernels' layout vector is built from it, offsets computed and
checked, never hand-numbered.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from . import config
from .kernels import adam, counts, mixer
from .kernels.hashing import context_hash
from .kernels.match import match_inputs
from .match import MatchSpec

ROW_BYTES = 32 * 4  # one nibble row of 16 (n0, n1) uint32 pairs


def context_array(cfg) -> np.ndarray:
    """(C, 4) int64: kind, param, first row, row mask, as the kernels read them. A context's hash
    seed is its index here (kernels/hashing.py context_hash's `ident`): ModelConfig.contexts()'s
    order is part of a checkpoint's meaning (tests/test_model.py pins it)."""
    rows = cfg.rows_bits()
    ctx = np.zeros((len(rows), 4), dtype=np.int64)
    offset = 0
    for i, ((kind, param), bits) in enumerate(zip(cfg.contexts(), rows)):
        ctx[i] = (kind, param, offset, (1 << bits) - 1)
        offset += 1 << bits
    return ctx


def mixer_blocks(cfg, spec: MatchSpec) -> list[tuple[str, int]]:
    """The size table of the mixer's parameters, in buffer order: one weight block per selector
    (its weight sets x inputs), the final mixer (only with several selectors: 256 partial bytes x
    selectors), the count maps (contexts x N_Q x N_Q), the match maps (inputs x states x bits), one
    block of curves per APM (rows x knots)."""
    n_ctx = len(cfg.contexts())
    n_in = 2 * n_ctx + spec.inputs + 1
    out = [(f"selector:{name}", mixer.selector_sets(mixer.SELECTORS[name], n_ctx, spec.states) * n_in)
           for name in cfg.selectors]
    out.append(("final", 256 * len(cfg.selectors) if len(cfg.selectors) > 1 else 0))
    out.append(("count_maps", n_ctx * mixer.N_Q * mixer.N_Q))
    out.append(("match_maps", spec.inputs * spec.states * 8))
    for name in cfg.apms:
        out.append((f"apm:{name}", _apm_rows(cfg, name, spec) * mixer.APM_KNOTS))
    return out


def _apm_rows(cfg, name: str, spec: MatchSpec) -> int:
    kind = mixer.APMS[name]
    bits = cfg.apm2_bits if kind == mixer.APM_BYTE1 else cfg.apm_hash_bits
    return mixer.apm_rows(kind, bits, spec.states)


def block_offsets(blocks: list[tuple[str, int]]) -> dict[str, tuple[int, int]]:
    """name -> (start, end) in the flat buffer, blocks laid end to end in order."""
    out, at = {}, 0
    for name, size in blocks:
        if size < 0 or name in out:
            raise ValueError(f"mixer block {name!r}: size {size} or name repeated")
        out[name] = (at, at + size)
        at += size
    return out


def param_layout(cfg, spec: MatchSpec) -> np.ndarray:
    """The kernels' layout vector (kernels/mixer.py LAYOUT_SLOTS) from the size table."""
    n_ctx = len(cfg.contexts())
    blocks = mixer_blocks(cfg, spec)
    at = block_offsets(blocks)
    lay = np.zeros(mixer.L_LEN, dtype=np.int64)
    lay[mixer.L_NCTX], lay[mixer.L_K] = n_ctx, 2 * n_ctx + spec.inputs + 1
    lay[mixer.L_NSEL], lay[mixer.L_NAPM] = len(cfg.selectors), len(cfg.apms)
    lay[mixer.L_NMI], lay[mixer.L_NMB] = spec.inputs, spec.states
    lay[mixer.L_FLAGS] = (0 if cfg.weight_sets else mixer.NO_WEIGHT_SETS) | (0 if cfg.apm else mixer.NO_APM)
    lay[mixer.L_P] = sum(size for _, size in blocks)
    lay[mixer.L_V], lay[mixer.L_SM], lay[mixer.L_ML] = at["final"][0], at["count_maps"][0], at["match_maps"][0]
    for k, name in enumerate(cfg.selectors):
        lay[mixer.L_SEL + 2 * k], lay[mixer.L_SEL + 2 * k + 1] = mixer.SELECTORS[name], at[f"selector:{name}"][0]
    for r, name in enumerate(cfg.apms):
        lay[mixer.L_APM + 3 * r] = mixer.APMS[name]
        lay[mixer.L_APM + 3 * r + 1] = at[f"apm:{name}"][0]
        lay[mixer.L_APM + 3 * r + 2] = _apm_rows(cfg, name, spec) - 1
    assert max(hi for _, hi in at.values()) == lay[mixer.L_P]
    return lay


def init_params(cfg, spec: MatchSpec) -> np.ndarray:
    lay = param_layout(cfg, spec)
    at = block_offsets(mixer_blocks(cfg, spec))
    n_ctx, n_in, n_sel = int(lay[mixer.L_NCTX]), int(lay[mixer.L_K]), int(lay[mixer.L_NSEL])
    p = np.zeros(int(lay[mixer.L_P]), dtype=np.float32)
    for name in cfg.selectors:
        lo, hi = at[f"selector:{name}"]
        w = p[lo:hi].reshape(-1, n_in)
        w[:, 0:2 * n_ctx:2] = 2.0 / n_ctx  # trust in the raw count ratios, shared out over contexts
        w[:, 1:2 * n_ctx:2] = 1.0  # the learned count maps start at 0; a unit weight lets them learn
        w[:, 2 * n_ctx:2 * n_ctx + spec.inputs] = 1.0  # match inputs
    lo, hi = at["final"]
    p[lo:hi] = 1.0 / n_sel  # several mixers start equal: their average
    return p


class Memory:
    """Count tables and mixer parameters with their Adam moments, on one device."""

    def __init__(self, cfg, spec: MatchSpec, device, tables=None, params=None):
        self.device = device
        self.lay = param_layout(cfg, spec)
        self.ctx = context_array(cfg)
        host_tables = tables if tables is not None else np.zeros((cfg.table_rows(), 32), dtype=np.uint32)
        host_params = params if params is not None else init_params(cfg, spec)
        self.tables = device.put(host_tables)
        self.params = device.put(host_params)
        self.d_lay, self.d_ctx = device.put(self.lay), device.put(self.ctx)
        self.grad = device.zeros(self.n_params)
        self.adam_m = device.zeros(self.n_params)
        self.adam_v = device.zeros(self.n_params)
        self.grad_chunks = None

    @property
    def n_params(self) -> int:
        return int(self.lay[mixer.L_P])

    @property
    def n_ctx(self) -> int:
        return int(self.lay[mixer.L_NCTX])

    def count(self, data, start: int, end: int, delta: int = 1) -> None:
        """Add bytes data[start:end] to the count tables (data on the tables' device); delta -1
        takes them back out exactly."""
        counts.count_add(data, start, end, self.d_ctx, self.tables, delta)

    def caches(self, n_b: int, dtype=np.float32) -> mixer.Caches:
        lay = self.lay
        return mixer.Caches(n_b, self.n_ctx, int(lay[mixer.L_K]), int(lay[mixer.L_NSEL]), int(lay[mixer.L_NAPM]),
                            int(lay[mixer.L_NMI]), dtype=dtype, device=self.device.gpu)

    def forward(self, data, pos, match_args: tuple, caches: mixer.Caches, loo: bool = False) -> None:
        """Scores positions pos (their loss in bits and per-bit probabilities in caches).
        match_args: MatchModel.args for these positions' pointers."""
        prev, prev_base, minlens, mspec = match_args
        mixer.forward(data, pos, 1 if loo else 0, prev, prev_base, minlens, mspec, self.d_ctx, self.tables,
                      self.params, self.d_lay, caches)

    def backward(self, data, pos, caches: mixer.Caches, scale: float) -> None:
        if not self.device.gpu and self.grad_chunks is None:
            self.grad_chunks = np.zeros((config.CPU_GRAD_CHUNKS, self.n_params), dtype=np.float32)
        mixer.backward(data, pos, self.params, self.d_lay, caches, scale, self.grad, self.grad_chunks)

    def update(self, step: int, lr: float) -> None:
        adam.adam_step(self.params, self.grad, self.adam_m, self.adam_v, step, lr)

    def new_node_scratch(self) -> "NodeScratch":
        return NodeScratch(self.lay)

    def node_probs(self, buf, t: int, match_args: tuple, scratch: "NodeScratch", out, node_p1) -> None:
        """Generation (host): out[y] = P(byte at t is y | buf[:t]), node_p1[c] = P(next bit = 1)
        at each node c of the byte tree (0.5 where pruned). match_args: MatchModel.args of the
        position's (minimum lengths, 1) pointers with prev_base t."""
        prev_t, _, minlens, mspec = match_args
        s = scratch
        byte_distribution(buf, t, prev_t, minlens, mspec, self.ctx, self.tables, self.params, self.lay, s.hashes,
                          s.cand, s.feat, s.qidx, s.idx, s.zk, s.mass, out, node_p1)


class NodeScratch:
    """Work arrays of one generation stream's byte tree."""

    def __init__(self, lay: np.ndarray):
        n_ctx, n_in = int(lay[mixer.L_NCTX]), int(lay[mixer.L_K])
        n_sel, n_apm, n_mi = int(lay[mixer.L_NSEL]), int(lay[mixer.L_NAPM]), int(lay[mixer.L_NMI])
        self.hashes = np.zeros(n_ctx, np.int64)
        self.feat = np.zeros(n_in, np.float32)
        self.qidx = np.zeros(n_ctx, np.int64)
        self.cand = np.zeros((n_mi, 2), np.int64)
        self.idx = np.zeros(mixer.idx_width(n_sel, n_apm, n_mi), np.int64)
        self.zk = np.zeros(n_sel, np.float32)
        self.mass = np.zeros(512, np.float64)


# High nibbles with less probability than this are not expanded (their bytes share it evenly).
# Exact for every byte under a kept nibble; the pruned mass is below 16 x PRUNE per byte.
PRUNE = 1e-6


@numba.njit(cache=True)
def byte_distribution(buf, t, prev_t, minlens, mspec, ctx, tables, params, lay, hashes, cand, feat, qidx, idx, zk,
                      mass, out, node_p1):
    """out[y] = P(byte at t is y | buf[:t]) under the memory; node_p1[c] = its P(next bit = 1) at tree
    node c (0.5 where pruned); prev_t: (n_match, 1) match pointers for position t. The 255 node
    probabilities of the byte tree are read from one position's hashes and match inputs; the
    low-nibble subtrees of high nibbles below PRUNE are not expanded, which saves most table reads."""
    for i in range(lay[mixer.L_NCTX]):
        hashes[i] = context_hash(buf, t, ctx[i, 0], ctx[i, 1], i)
    match_inputs(buf, t, prev_t, 0, minlens, mspec, cand)
    hist = np.int64(0)
    if t > 0:
        hist = np.int64(buf[t - 1])
    if t > 1:
        hist |= np.int64(buf[t - 2]) << 8
    mass[1] = 1.0
    for c in range(1, 256):
        j = 0
        while (c >> (j + 1)) > 0:
            j += 1
        if j >= 4 and mass[c >> (j - 4)] < PRUNE:
            # a high nibble this unlikely: skip its 15 low-nibble nodes (16 table rows per context)
            # and spread its mass evenly over its 16 bytes
            mass[2 * c + 1] = mass[c] * 0.5
            mass[2 * c] = mass[c] * 0.5
            node_p1[c] = 0.5
            continue
        z, zf, sl, f = mixer.mix_node(j, np.int64(c), -1, hashes, cand, hist, ctx, tables, params, lay,
                                      feat, qidx, idx, zk)
        p1 = 1.0 / (1.0 + math.exp(-zf))
        node_p1[c] = p1
        mass[2 * c + 1] = mass[c] * p1
        mass[2 * c] = mass[c] * (1.0 - p1)
    for y in range(256):
        out[y] = mass[256 + y]
