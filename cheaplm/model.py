"""The cheaplm model: count tables (memory) + match index + a small learned mixer.

`ModelConfig` says which contexts exist and how large everything is; `Model` owns the arrays, on
the host (CPU) or on the GPU, and offers the three operations training and evaluation need:
count bytes into the tables, run the mixer forward/backward on a batch of positions, and update
the mixer's parameters.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

import numpy as np

from .kernels import adam, counts, mixer
from .options import check_keys
from .kernels.hashing import ORDER, SKIP, SPARSE, WORD

ROW_BYTES = 32 * 4
# the defaults that differ by device, over ModelConfig's own (the CPU's): a GPU's memory holds the
# 16x larger tables of table_bits 24 (31 GB at the default contexts)
DEVICE_DEFAULTS = {"cpu": {}, "cuda": {"table_bits": 24}}


@dataclass
class ModelConfig:
    orders: list = field(default_factory=lambda: [0, 1, 2, 3, 4, 5, 6, 8, 12, 16, 24])
    words: int = 3  # word contexts: partial word, + previous word, + the two previous words
    sparse: list = field(default_factory=lambda: [0b10, 0b1100])  # byte-offset masks
    skips: list = field(default_factory=lambda: [2, 3, 4, 5])  # skip-word contexts: partial word + the word n back
    table_bits: int = 20  # rows per context table (at most; low orders need fewer)
    match_minlens: list = field(default_factory=lambda: [24, 12, 8, 5, 3, 2])  # longest first
    match_bits: int = 22
    match_cap: int = 64  # verify a match at most this many bytes back (a multiple of 16, >= 32)
    # the match state also says how far back the match is: below 1 KiB, 8 KiB (mostly the same
    # article), 128 KiB, or further; [] = length only
    match_recency: list = field(default_factory=lambda: [1024, 8192, 131072])
    # one mixer input per minimum length, each candidate verified on its own (the most recent
    # occurrence of a short context beside the longest match); off = one input, the longest match
    match_each: bool = True
    apm2_bits: int = 12  # rows of the byte1 APM
    weight_sets: bool = True  # select mixer weights by each selector's context; off = one set per mixer
    apm: bool = True  # the APM/SSE stages after the mixer; off = none
    # one mixer per selector (kernels/mixer.py), combined by a final mixer when there are several
    selectors: list = field(default_factory=lambda: ["seen", "partial", "byte1", "votes"])
    apms: list = field(default_factory=lambda: ["partial", "byte1", "byte2", "match"])
    apm_hash_bits: int = 16  # rows of the byte2 APM
    # the learned reader (reader.py): {"on": true} takes the device's defaults (ReaderConfig.for_device),
    # other keys override them; a new run stores the resolved options here; {"on": false}: memory only
    reader: dict = field(default_factory=lambda: {"on": True})

    def contexts(self) -> list[tuple[int, int]]:
        return ([(ORDER, k) for k in self.orders] + [(WORD, n) for n in range(1, self.words + 1)]
                + [(SPARSE, m) for m in self.sparse] + [(SKIP, n) for n in self.skips])

    def rows_bits(self) -> list[int]:
        out = []
        for kind, param in self.contexts():
            if kind == ORDER:
                need = math.ceil(math.log2(17 * 256.0**param))
            elif kind == SPARSE:
                need = math.ceil(math.log2(17 * 256.0 ** bin(param).count("1")))
            else:
                need = 64
            out.append(min(self.table_bits, need))
        return out

    def table_rows(self) -> int:
        return sum(1 << b for b in self.rows_bits())

    def table_bytes(self) -> int:
        return self.table_rows() * ROW_BYTES

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        cfg = cls(**check_keys(cls, d, "model"))
        cfg.validate()
        return cfg

    @classmethod
    def for_device(cls, device: str, opts: dict | None = None) -> "ModelConfig":
        """The config of a new run on `device`: that device's defaults (DEVICE_DEFAULTS), `opts` over them."""
        return cls.from_dict({**DEVICE_DEFAULTS.get(device, {}), **(opts or {})})

    def validate(self) -> None:
        if not (4 <= self.table_bits <= 30):
            raise ValueError(f"table_bits must be in 4..30, not {self.table_bits}")
        if any(not (0 <= k <= 64) for k in self.orders):
            raise ValueError("orders must be in 0..64")
        if not (0 <= self.words <= 4):
            raise ValueError("words must be in 0..4")
        if any(not (2 <= n <= 6) for n in self.skips):
            raise ValueError("skips must be in 2..6 (skip 1 is the word bigram, words 2)")
        if not self.contexts():
            raise ValueError("the model needs at least one context")
        if any(m < 2 or m > 64 for m in self.match_minlens):
            raise ValueError("match_minlens must be in 2..64")
        if self.match_cap < 32 or self.match_cap > 256 or self.match_cap % 16:
            raise ValueError("match_cap must be a multiple of 16 in 32..256")
        if (len(self.match_recency) > mixer.MAX_REC or any(d < 1 for d in self.match_recency)
                or list(self.match_recency) != sorted(set(self.match_recency))):
            raise ValueError(f"match_recency: at most {mixer.MAX_REC} increasing distances >= 1")
        if not (8 <= self.match_bits <= 28) or not (0 <= self.apm2_bits <= 16):
            raise ValueError("match_bits must be in 8..28 and apm2_bits in 0..16")
        if not (0 <= self.apm_hash_bits <= 22):
            raise ValueError("apm_hash_bits must be in 0..22")
        for name, given, allowed, most in (("selectors", self.selectors, mixer.SELECTORS, mixer.MAX_SEL),
                                           ("apms", self.apms, mixer.APMS, mixer.MAX_APM)):
            bad = [x for x in given if x not in allowed]
            if bad or len(set(given)) != len(given) or len(given) > most:
                raise ValueError(f"{name}: {given!r}; give at most {most} distinct of {', '.join(allowed)}")
        if not self.selectors:
            raise ValueError("selectors: the model needs at least one mixer")
        if not isinstance(self.reader, dict) or not isinstance(self.reader.get("on", True), bool):
            raise ValueError('reader: a JSON object such as {"on": true} or {"on": false, ...}')

    def reader_config(self, device: str, minutes: float | None = None):
        """The reader's resolved ReaderConfig for a device (and a minutes budget: the GPU's reader
        is wider for longer budgets), or None (memory only)."""
        from .reader import ReaderConfig

        opts = dict(self.reader)
        if not opts.pop("on", True):
            return None
        if "window" in opts and "scan" not in opts:
            opts["scan"] = 0  # options resolved and stored before the scan existed: none
        if "match_inputs" not in opts:  # read the memory's match candidates
            opts["match_inputs"] = len(self.match_minlens) if self.match_each else 1
            opts["match_states"] = mixer.match_states(self.match_cap, len(self.match_recency))
        return ReaderConfig.for_device(device, minutes=minutes, **opts)


# what a checkpoint saved before `selectors`, `apms`, `skips` and the match options existed holds: one
# mixer, two APMs, no skip contexts, one match input verified to 32 bytes with no recency (checked: an old
# checkpoint scores the same bpb with this code as with its own)
LEGACY = {"selectors": ["seen"], "apms": ["partial", "byte1"], "apm_hash_bits": 16, "skips": [],
          "match_cap": 32, "match_recency": [], "match_each": False, "reader": {"on": False}}


def param_layout(cfg: ModelConfig) -> np.ndarray:
    """Block offsets in the flat parameter buffer, in this order: one weight block per selector,
    the final mixer (only with several selectors), count maps, match map, one block per APM."""
    n_ctx = len(cfg.contexts())
    n_mi = len(cfg.match_minlens) if cfg.match_each else 1
    n_in = 2 * n_ctx + n_mi + 1
    n_sel, n_apm = len(cfg.selectors), len(cfg.apms)
    n_mb = mixer.match_states(cfg.match_cap, len(cfg.match_recency))
    lay = np.zeros(mixer.L_LEN, dtype=np.int64)
    lay[mixer.L_MCAP], lay[mixer.L_NMB], lay[mixer.L_NREC] = cfg.match_cap, n_mb, len(cfg.match_recency)
    lay[mixer.L_NMI] = n_mi
    for i, d in enumerate(cfg.match_recency):
        lay[mixer.L_REC + i] = d
    at = 0
    for k, name in enumerate(cfg.selectors):
        kind = mixer.SELECTORS[name]
        lay[mixer.L_SEL + 2 * k], lay[mixer.L_SEL + 2 * k + 1] = kind, at
        at += mixer.selector_sets(kind, n_ctx, n_mb) * n_in
    lay[mixer.L_V] = at
    if n_sel > 1:
        at += 256 * n_sel
    lay[mixer.L_SM] = at
    at += n_ctx * mixer.N_Q * mixer.N_Q
    lay[mixer.L_ML] = at
    at += n_mi * n_mb * 8
    for r, name in enumerate(cfg.apms):
        kind = mixer.APMS[name]
        bits = cfg.apm2_bits if kind == mixer.APM_BYTE1 else cfg.apm_hash_bits
        rows = mixer.apm_rows(kind, bits, n_mb)
        lay[mixer.L_APM + 3 * r], lay[mixer.L_APM + 3 * r + 1], lay[mixer.L_APM + 3 * r + 2] = kind, at, rows - 1
        at += rows * mixer.APM_KNOTS
    lay[mixer.L_NCTX], lay[mixer.L_K], lay[mixer.L_NSEL], lay[mixer.L_NAPM] = n_ctx, n_in, n_sel, n_apm
    lay[mixer.L_P] = at
    lay[mixer.L_FLAGS] = (0 if cfg.weight_sets else mixer.NO_WEIGHT_SETS) | (0 if cfg.apm else mixer.NO_APM)
    return lay


def init_params(cfg: ModelConfig) -> np.ndarray:
    lay = param_layout(cfg)
    n_ctx, n_in, n_sel = int(lay[mixer.L_NCTX]), int(lay[mixer.L_K]), int(lay[mixer.L_NSEL])
    p = np.zeros(int(lay[mixer.L_P]), dtype=np.float32)
    for k in range(n_sel):
        lo = int(lay[mixer.L_SEL + 2 * k + 1])
        hi = lo + mixer.selector_sets(int(lay[mixer.L_SEL + 2 * k]), n_ctx, int(lay[mixer.L_NMB])) * n_in
        w = p[lo:hi].reshape(-1, n_in)
        w[:, 0:2 * n_ctx:2] = 2.0 / n_ctx  # trust in the raw count ratios, shared out over contexts
        w[:, 1:2 * n_ctx:2] = 1.0  # the learned count maps start at 0; a unit weight lets them learn
        w[:, 2 * n_ctx:2 * n_ctx + int(lay[mixer.L_NMI])] = 1.0  # match inputs
    if n_sel > 1:
        p[lay[mixer.L_V]:lay[mixer.L_SM]] = 1.0 / n_sel  # the mixers start equal: their average
    return p


def context_array(cfg: ModelConfig) -> np.ndarray:
    """(C, 4) int64: kind, param, first row, row mask, as the kernels read them."""
    rows = cfg.rows_bits()
    ctx = np.zeros((len(rows), 4), dtype=np.int64)
    offset = 0
    for i, ((kind, param), bits) in enumerate(zip(cfg.contexts(), rows)):
        ctx[i] = (kind, param, offset, (1 << bits) - 1)
        offset += 1 << bits
    return ctx


class Model:
    """Arrays of one model. `device='cuda'` keeps tables, params and optimizer state on the GPU."""

    def __init__(self, cfg: ModelConfig, device: str = "cpu", tables=None, params=None, last_pos=None,
                 reader_params=None, reader_mix=None):
        cfg.validate()
        self.cfg = cfg
        self.device = device
        self.lay = param_layout(cfg)
        self.ctx = context_array(cfg)
        self.minlens = np.asarray(cfg.match_minlens, dtype=np.int64)
        host_tables = tables if tables is not None else np.zeros((cfg.table_rows(), 32), dtype=np.uint32)
        host_params = params if params is not None else init_params(cfg)
        self.last_pos = (last_pos if last_pos is not None
                         else np.full((len(cfg.match_minlens), 1 << cfg.match_bits), -1, dtype=np.int32))
        self.history_len = 0
        if device == "cuda":
            from numba import cuda

            self.tables = cuda.to_device(host_tables)
            self.params = cuda.to_device(host_params)
            self.d_lay = cuda.to_device(self.lay)
            self.d_ctx = cuda.to_device(self.ctx)
            self.d_minlens = cuda.to_device(self.minlens)
        else:
            self.tables = host_tables
            self.params = host_params
            self.d_lay, self.d_ctx, self.d_minlens = self.lay, self.ctx, self.minlens
        self.grad = self.zeros(self.n_params)
        self.adam_m = self.zeros(self.n_params)
        self.adam_v = self.zeros(self.n_params)
        self.grad_chunks = None
        rcfg = cfg.reader_config(device)
        self.reader = None
        if rcfg is not None:
            from .reader import Reader

            self.reader = Reader(rcfg, device, params=reader_params, mix=reader_mix)

    def match_args(self, prev, prev_base: int) -> tuple:
        """What the reader needs of the match model for positions whose pointers are prev[:, t - prev_base]."""
        return (prev, prev_base, self.d_minlens, self.d_lay)

    @property
    def n_params(self) -> int:
        return int(self.lay[mixer.L_P])

    @property
    def n_ctx(self) -> int:
        return int(self.lay[mixer.L_NCTX])

    def zeros(self, n: int):
        if self.device == "cuda":
            from numba import cuda

            return cuda.to_device(np.zeros(n, np.float32))
        return np.zeros(n, np.float32)

    def host(self, arr) -> np.ndarray:
        return arr.copy_to_host() if self.device == "cuda" else arr

    # ---- memory ----------------------------------------------------------------------------------
    def count(self, data, start: int, end: int, delta: int = 1) -> None:
        """Add bytes data[start:end] to the count tables (data on the same device as the tables);
        delta -1 takes them back out exactly."""
        counts.count_add(data, start, end, self.d_ctx, self.tables, delta)

    # ---- mixer -------------------------------------------------------------------------------------
    def make_caches(self, n_b: int, dtype=np.float32) -> mixer.Caches:
        return mixer.Caches(n_b, self.n_ctx, int(self.lay[mixer.L_K]), int(self.lay[mixer.L_NSEL]),
                            int(self.lay[mixer.L_NAPM]), int(self.lay[mixer.L_NMI]), dtype=dtype,
                            device=self.device == "cuda")

    def forward(self, data, pos, prev, prev_base: int, caches: mixer.Caches, loo: bool) -> None:
        mixer.forward(data, pos, 1 if loo else 0, prev, prev_base, self.d_minlens, self.d_ctx, self.tables,
                      self.params, self.d_lay, caches)

    def backward(self, data, pos, caches: mixer.Caches, scale: float) -> None:
        if self.device != "cuda" and self.grad_chunks is None:
            from . import config

            self.grad_chunks = np.zeros((config.CPU_GRAD_CHUNKS, self.n_params), dtype=np.float32)
        mixer.backward(data, pos, self.params, self.d_lay, caches, scale, self.grad, self.grad_chunks)

    def update(self, step: int, lr: float) -> None:
        adam.adam_step(self.params, self.grad, self.adam_m, self.adam_v, step, lr)


# What a CPU training process holds besides the arrays below: the interpreter, numpy, numba and its
# compiler, the compiled kernels, evaluation's and the checkpoint's working buffers. Measured by
# bench/train_memory.py as peak RSS minus the arrays' estimate over 11 runs (table_bits 14-20, 8 KB
# to 155 MB of text, 0.3-1 minute): 298 to 621 MiB, 378-530 in all but two; 440 puts every one of
# them within 9% of its peak (bench/RESULTS.md, "train's memory estimate")
CPU_RUNTIME_BYTES = 440 << 20


def memory_estimate(cfg: ModelConfig, train_bytes: int, batch: int, device: str = "cpu",
                    minutes: float | None = None) -> dict:
    """Bytes each part will take on `device` (the reader's defaults differ by device and, on a GPU,
    by the minutes budget); training also holds the data and its match pointers."""
    lay = param_layout(cfg)
    n_ctx, n_in = int(lay[mixer.L_NCTX]), int(lay[mixer.L_K])
    per_pos = n_ctx * 8 + 8 * n_in * 4 + 8 * n_ctx * 8 + 8 * 8 * 8 + 64
    out = {}
    rcfg = cfg.reader_config(device, minutes)
    if rcfg is not None:
        from .reader import param_count

        n = param_count(rcfg)
        widths = [rcfg.width] + list(rcfg.hidden) + [256]
        # weights, gradient and two moments; per position: activations, gradients and bf16 copies,
        # and the scan's gate, state, input and their gradients
        out["reader"] = 16 * n + rcfg.batch * (sum(widths) + 8 * rcfg.scan) * 16
    if device == "cpu":
        out["runtime"] = CPU_RUNTIME_BYTES
    return {
        **out,
        "tables": cfg.table_bytes(),
        "params+adam": int(lay[mixer.L_P]) * 4 * 4,
        "match index": len(cfg.match_minlens) * (4 << cfg.match_bits),
        "train data + match pointers": train_bytes * (1 + 4 * len(cfg.match_minlens)),
        "batch caches": batch * per_pos,
    }
