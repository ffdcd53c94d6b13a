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
from .kernels.hashing import context_hash, mix64, slot_of
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

    def node_probs(self, buf, t: int, match_args: tuple, scratch: "NodeScratch", out, node_p1, prune=None) -> None:
        """Generation (host): out[y] = P(byte at t is y | buf[:t]), node_p1[c] = P(next bit = 1)
        at each node c of the byte tree (0.5 where pruned). match_args: MatchModel.args of the
        position's (minimum lengths, 1) pointers with prev_base t. prune: PRUNE unless given (tests)."""
        prev_t, _, minlens, mspec = match_args
        s = scratch
        byte_distribution(buf, t, prev_t, minlens, mspec, self.ctx, self.tables, self.params, self.lay, s.hashes,
                          s.cand, s.feat, s.idx, s.zk, s.mass, s.rows, s.luts[0], s.luts[1], out, node_p1,
                          PRUNE if prune is None else prune)

    def node_probs_top(self, buf, t: int, match_args: tuple, scratch: "NodeScratch", node_p1) -> None:
        """node_probs' first half (byte_tree_top): node_p1[1..15]; scratch.mass[16 + h] is high
        nibble h's probability under the memory."""
        prev_t, _, minlens, mspec = match_args
        s = scratch
        byte_tree_top(buf, t, prev_t, minlens, mspec, self.ctx, self.tables, self.params, self.lay, s.hashes, s.cand,
                      s.feat, s.idx, s.zk, s.mass, s.rows, s.luts[0], s.luts[1], node_p1)

    def node_probs_low(self, buf, t: int, scratch: "NodeScratch", out, node_p1, keep) -> None:
        """node_probs' second half after node_probs_top, expanding the high nibbles with keep[h]."""
        s = scratch
        byte_tree_low(buf, t, self.ctx, self.tables, self.params, self.lay, s.cand, s.feat, s.idx, s.zk, s.mass, s.rows,
                      s.luts[0], s.luts[1], out, node_p1, keep)

    def node_probs_reference(self, buf, t: int, match_args: tuple, scratch: "NodeScratch", out, node_p1,
                             prune=None) -> None:
        """node_probs through byte_tree_reference (tests)."""
        prev_t, _, minlens, mspec = match_args
        s = scratch
        byte_tree_reference(buf, t, prev_t, minlens, mspec, self.ctx, self.tables, self.params, self.lay, s.hashes,
                            s.cand, s.feat, s.qidx, s.idx, s.zk, s.mass, out, node_p1, PRUNE if prune is None else prune)


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
        self.rows = np.zeros((17, n_ctx), np.int64)  # each context's table row: nibble 0, then under each high nibble
        self.luts = _count_luts()


# High nibbles with less probability than this are not expanded (their bytes share it evenly).
# Exact for every byte under a kept nibble; the pruned mass is below 16 x PRUNE per byte.
PRUNE = 1e-6
# counts below this read their stretch from a table (count_features computes it per node)
SMALL_COUNT = 64


@numba.njit(cache=True)
def _count_lut_tables(small):
    stretch = np.empty((small, small), np.float32)
    for n0 in range(small):
        for n1 in range(small):
            # count_features' feat[2i], as float32 there
            a = math.log((n1 + 0.4) / (n0 + 0.4))
            if a > mixer.STRETCH_CLIP:
                a = mixer.STRETCH_CLIP
            elif a < -mixer.STRETCH_CLIP:
                a = -mixer.STRETCH_CLIP
            stretch[n0, n1] = a
    bucket = np.empty(mixer.Q_TOP, np.int64)
    for n in range(mixer.Q_TOP):
        bucket[n] = mixer.count_bucket(n)
    return stretch, bucket


_LUTS = None


def _count_luts():
    global _LUTS
    if _LUTS is None:
        _LUTS = _count_lut_tables(SMALL_COUNT)
    return _LUTS


@numba.njit(cache=True, inline="always")
def _node_logit(j, c, node, rows, cand, hist, tables, params, lay, stretch, bucket, feat, idx, zk):
    """mixer.mix_node's zf for generation (no left-out bit), the same arithmetic in the same order:
    the contexts' table rows come precomputed (`rows`: one set per high nibble, not one per node),
    small counts' stretch and buckets come from tables, and the selectors' dot products run side by
    side (each still sums its inputs in order, so each is bit-for-bit mix_selected's)."""
    n_ctx = lay[mixer.L_NCTX]
    sm = lay[mixer.L_SM]
    small = stretch.shape[0]
    nz = 0
    for i in range(n_ctx):
        row = rows[i]
        n0 = np.int64(tables[row, 2 * node])
        n1 = np.int64(tables[row, 2 * node + 1])
        if n0 < small and n1 < small:
            feat[2 * i] = stretch[n0, n1]
        else:
            a = math.log((n1 + 0.4) / (n0 + 0.4))
            if a > mixer.STRETCH_CLIP:
                a = mixer.STRETCH_CLIP
            elif a < -mixer.STRETCH_CLIP:
                a = -mixer.STRETCH_CLIP
            feat[2 * i] = a
        q0 = bucket[n0] if n0 < mixer.Q_TOP else mixer.N_Q - 1
        q1 = bucket[n1] if n1 < mixer.Q_TOP else mixer.N_Q - 1
        feat[2 * i + 1] = params[sm + i * mixer.N_Q * mixer.N_Q + q0 * mixer.N_Q + q1]
        if n0 + n1 > 0:
            nz += 1
    mstate, ebit, votes = mixer.match_features(j, c, cand, params, lay, feat, idx)
    # mixer.mix_selected, four selectors' sums at a time
    n_in = lay[mixer.L_K]
    n_sel = lay[mixer.L_NSEL]
    prev_byte = hist & 255
    for k in range(n_sel):
        kind = lay[mixer.L_SEL + 2 * k]
        if lay[mixer.L_FLAGS] & mixer.NO_WEIGHT_SETS:
            s = np.int64(0)
        elif kind == mixer.SEL_SEEN:
            s = (j * lay[mixer.L_NMB] + mstate) * (n_ctx + 1) + nz
        elif kind == mixer.SEL_PARTIAL:
            s = c
        elif kind == mixer.SEL_BYTE1:
            s = prev_byte * 8 + j
        elif kind == mixer.SEL_VOTES:
            s = j * mixer.VOTE_SIDE * mixer.VOTE_SIDE + votes
        else:
            s = ((mix64((hist & 0xFFFF) + 0x10000) >> 24) & (mixer.BYTE2_SETS - 1)) * 8 + j
        idx[k] = lay[mixer.L_SEL + 2 * k + 1] + s * n_in
    for k0 in range(0, n_sel, 4):
        b0 = idx[k0]
        b1 = idx[k0 + 1] if k0 + 1 < n_sel else b0
        b2 = idx[k0 + 2] if k0 + 2 < n_sel else b0
        b3 = idx[k0 + 3] if k0 + 3 < n_sel else b0
        z0 = 0.0
        z1 = 0.0
        z2 = 0.0
        z3 = 0.0
        w0 = params[b0:b0 + n_in]
        w1 = params[b1:b1 + n_in]
        w2 = params[b2:b2 + n_in]
        w3 = params[b3:b3 + n_in]
        for q in range(n_in):
            uq = np.uint64(q)  # unsigned: numba adds no negative-index wraparound (half this loop's time)
            f = feat[uq]
            z0 += w0[uq] * f
            z1 += w1[uq] * f
            z2 += w2[uq] * f
            z3 += w3[uq] * f
        zk[k0] = z0
        if k0 + 1 < n_sel:
            zk[k0 + 1] = z1
        if k0 + 2 < n_sel:
            zk[k0 + 2] = z2
        if k0 + 3 < n_sel:
            zk[k0 + 3] = z3
    if n_sel == 1:
        idx[n_sel] = -1
        z = zk[0]
    else:
        vrow = lay[mixer.L_V] + c * n_sel
        idx[n_sel] = vrow
        z = 0.0
        for k in range(n_sel):
            z += params[vrow + k] * zk[k]
    zf, _, _ = mixer.apm_stages(z, c, hist, mstate, ebit, params, lay, idx)
    return zf


@numba.njit(cache=True)
def byte_distribution(buf, t, prev_t, minlens, mspec, ctx, tables, params, lay, hashes, cand, feat, idx, zk,
                      mass, rows, stretch, bucket, out, node_p1, prune):
    """out[y] = P(byte at t is y | buf[:t]) under the memory; node_p1[c] = its P(next bit = 1) at tree
    node c (0.5 where pruned); prev_t: (n_match, 1) match pointers for position t. The 255 node
    probabilities of the byte tree are read from one position's hashes and match inputs; the
    low-nibble subtrees of high nibbles below `prune` (PRUNE) are not expanded, which saves most table
    reads. Equal, bit for bit, to byte_tree_reference (mixer.mix_node at every node); this walks the tree a
    high nibble at a time, each context's row found once per nibble (_node_logit): byte_tree_top, then
    byte_tree_low with the nibbles whose mass is at least `prune`."""
    byte_tree_top(buf, t, prev_t, minlens, mspec, ctx, tables, params, lay, hashes, cand, feat, idx, zk, mass, rows,
                  stretch, bucket, node_p1)
    keep = np.empty(16, np.bool_)
    for h in range(16):
        keep[h] = mass[16 + h] >= prune
    byte_tree_low(buf, t, ctx, tables, params, lay, cand, feat, idx, zk, mass, rows, stretch, bucket, out, node_p1,
                  keep)


@numba.njit(cache=True)
def _hist(buf, t):
    hist = np.int64(0)
    if t > 0:
        hist = np.int64(buf[t - 1])
    if t > 1:
        hist |= np.int64(buf[t - 2]) << 8
    return hist


@numba.njit(cache=True)
def _touch_apm(params, lay, hist, c0, c1):
    """Reads the hashed APM's curves of nodes c0..c1-1 (one row per node, 33 knots: 2 or 3 cache
    lines), so that their cache misses overlap before the nodes read them."""
    touch = np.int64(0)
    for r in range(lay[mixer.L_NAPM]):
        if lay[mixer.L_APM + 3 * r] == mixer.APM_BYTE2 and not lay[mixer.L_FLAGS] & mixer.NO_APM:
            at = lay[mixer.L_APM + 3 * r + 1]
            mask = lay[mixer.L_APM + 3 * r + 2]
            for c in range(c0, c1):
                a = at + ((mix64(((hist & 0xFFFF) << 8) + c + 0x3000000) >> 24) & mask) * mixer.APM_KNOTS
                touch += np.int64(params[a] + params[a + 16] + params[a + 32])
    return touch


@numba.njit(cache=True)
def _touch_rows(tables, rows, nib, n_ctx):
    touch = np.int64(0)
    for i in range(n_ctx):
        row = rows[nib, i]
        touch += tables[row, 0] + tables[row, 16] + tables[row, 31]
    return touch


@numba.njit(cache=True)
def byte_tree_top(buf, t, prev_t, minlens, mspec, ctx, tables, params, lay, hashes, cand, feat, idx, zk, mass, rows,
                  stretch, bucket, node_p1):
    """The byte tree's first half: the position's hashes, match inputs and every context's 17 rows
    (`rows`), and the high nibble's 15 nodes (node_p1[1..15], mass[1..31]: mass[16 + h] is high
    nibble h's). byte_tree_low expands the nibbles it is asked to."""
    n_ctx = lay[mixer.L_NCTX]
    for i in range(n_ctx):
        hashes[i] = context_hash(buf, t, ctx[i, 0], ctx[i, 1], i)
    match_inputs(buf, t, prev_t, 0, minlens, mspec, cand)
    hist = _hist(buf, t)
    mass[1] = 1.0
    for nib in range(17):
        for i in range(n_ctx):
            rows[nib, i] = slot_of(hashes[i], nib, ctx[i, 2], ctx[i, 3])
    # the rows and APM curves these nodes read, touched first so that their cache misses overlap
    # instead of coming one node at a time (mass[0] is no node: it keeps the reads)
    mass[0] = _touch_rows(tables, rows, 0, n_ctx) + _touch_apm(params, lay, hist, 1, 16)
    for c in range(1, 16):  # the high nibble's nodes: bits 0..3, all in row nibble 0
        j = 0
        while (c >> (j + 1)) > 0:
            j += 1
        zf = _node_logit(j, np.int64(c), np.int64(c), rows[0], cand, hist, tables, params, lay, stretch, bucket,
                         feat, idx, zk)
        p1 = 1.0 / (1.0 + math.exp(-zf))
        node_p1[c] = p1
        mass[2 * c + 1] = mass[c] * p1
        mass[2 * c] = mass[c] * (1.0 - p1)


@numba.njit(cache=True)
def byte_tree_low(buf, t, ctx, tables, params, lay, cand, feat, idx, zk, mass, rows, stretch, bucket, out, node_p1,
                  keep):
    """The byte tree's second half after byte_tree_top: the low-nibble subtree of each high nibble h
    with keep[h]; another's 15 nodes are not expanded (16 table rows per context saved) and its mass
    is spread evenly over its 16 bytes (node_p1 0.5)."""
    n_ctx = lay[mixer.L_NCTX]
    hist = _hist(buf, t)
    touch = np.int64(0)
    for h in range(16):
        if keep[h]:
            touch += _touch_rows(tables, rows, h + 1, n_ctx) + _touch_apm(params, lay, hist, (16 + h) << 3, (17 + h) << 3)
            touch += _touch_apm(params, lay, hist, (16 + h) << 2, (17 + h) << 2)
            touch += _touch_apm(params, lay, hist, (16 + h) << 1, (17 + h) << 1)
            touch += _touch_apm(params, lay, hist, 16 + h, 17 + h)
    mass[0] = touch
    for hi in range(16, 32):  # each high nibble's low-nibble subtree (nodes of bits 4..7)
        expand = keep[hi - 16]
        for j in range(4, 8):
            for low in range(1 << (j - 4)):
                c = (hi << (j - 4)) | low
                if not expand:
                    mass[2 * c + 1] = mass[c] * 0.5
                    mass[2 * c] = mass[c] * 0.5
                    node_p1[c] = 0.5
                    continue
                node = (np.int64(1) << (j - 4)) | low
                zf = _node_logit(j, np.int64(c), node, rows[hi - 15], cand, hist, tables, params, lay, stretch, bucket,
                                 feat, idx, zk)
                p1 = 1.0 / (1.0 + math.exp(-zf))
                node_p1[c] = p1
                mass[2 * c + 1] = mass[c] * p1
                mass[2 * c] = mass[c] * (1.0 - p1)
    for y in range(256):
        out[y] = mass[256 + y]


@numba.njit(cache=True)
def byte_tree_reference(buf, t, prev_t, minlens, mspec, ctx, tables, params, lay, hashes, cand, feat, qidx, idx,
                        zk, mass, out, node_p1, prune):
    """byte_distribution read the plain way, one mixer.mix_node (training's forward) per node in
    level order: the reference the tests hold the fast walk to."""
    for i in range(lay[mixer.L_NCTX]):
        hashes[i] = context_hash(buf, t, ctx[i, 0], ctx[i, 1], i)
    match_inputs(buf, t, prev_t, 0, minlens, mspec, cand)
    hist = _hist(buf, t)
    mass[1] = 1.0
    for c in range(1, 256):
        j = 0
        while (c >> (j + 1)) > 0:
            j += 1
        if j >= 4 and mass[c >> (j - 4)] < prune:
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
