"""The cheaplm model: the memory, the match model, the reader and their mix, as one object.

    cli -> commands (prepare, train, eval, sample, chat) -> Model -> {memory, match, reader, mix}
        -> kernels -> device

`ModelConfig` says what the model is: which contexts the memory counts and how large its tables
are (memory.py), the match model's settings (match.py's MatchSpec), the reader's options
(reader.py). `Model` owns the parts on one device and offers what callers think in: scoring a
byte stream, generation streams, training steps and checkpoint arrays. Training's schedule lives
in train.py, not here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

import numpy as np

from .device import Device
from .kernels.hashing import ORDER, SKIP, SPARSE, WORD
from .kernels import mixer
from .kernels.match import MAX_REC
from .match import MatchModel, MatchSpec
from .memory import ROW_BYTES, Memory, mixer_blocks
from .options import check_keys
from .schedule import split_reader_options
# the defaults that differ by device, over ModelConfig's own (the CPU's): a GPU's memory holds the
# 16x larger tables of table_bits 24 (31 GB at the default contexts). A new run's tables are these
# at most: smaller when its text is (sized_for)
DEVICE_DEFAULTS = {"cpu": {}, "cuda": {"table_bits": 24}}
# A new run sizes its count tables, its match index and the reader's hashed rows by its training text
# (issue 24 item 6: 2.75 MB of text wrote a 621 MiB run directory): at least one table row per
# TEXT_PER_ROW bytes, one match row per TEXT_PER_MATCH_ROW and one reader row per TEXT_PER_READER_ROW,
# powers of two, under the device's defaults and over a floor. Measured on the 2.75 MB dump with every
# byte counted (bench/RESULTS.md, "Small text, small run, measured part by part"): its text in 2^18
# table rows (a row per 16 bytes, the GPU default's density on wikibench) cost 0.026 bpb against 2^20,
# the reader's 2^14 rows against 2^16 cost 0.0001, the match index's 2^21 / 2^20 rows against 2^22
# 0.0016 / 0.0033. A table row per 4 bytes keeps 2.75 MB at 2^20 table rows, a match row per 2 at
# 2^21; with the sparse rows of a checkpoint (tablepack.py) its run directory is 299 MB (286 MiB),
# 0.0017 bpb from the 621 MiB one. wikibench's 154.9 MB gets every device default (the caps).
TEXT_PER_ROW = 4
TEXT_PER_MATCH_ROW = 2
TEXT_PER_READER_ROW = 256
MIN_TABLE_BITS = 16  # 2^16 rows hold the 26 KB sample's ~2 rows per byte per context with few collisions
MIN_MATCH_BITS = 16
MIN_READER_BITS = 12


def sized_bits(text_bytes: int, bytes_per_row: int, least: int, most: int) -> int:
    """log2 of the rows that give `text_bytes` of text at least one row per `bytes_per_row` bytes,
    within least..most (most wins)."""
    need = math.ceil(math.log2(text_bytes / bytes_per_row)) if text_bytes > bytes_per_row else 0
    return min(most, max(least, need))


def option(default, absent=None, *, since_first: bool = False):
    """A ModelConfig field: its default for a new run and, for a field added after checkpoints of
    the first format existed, `absent`: what a checkpoint saved before the field holds (usually the
    behaviour before it). Every field but the first format's declares one (tests/test_model.py
    checks), so a new field cannot silently change or refuse an old checkpoint."""
    meta = {} if since_first else {"absent": absent}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: json.loads(json.dumps(default)), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    orders: list = field(default_factory=lambda: [0, 1, 2, 3, 4, 5, 6, 8, 12, 16, 24])
    words: int = 3  # word contexts: partial word, + previous word, + the two previous words
    sparse: list = field(default_factory=lambda: [0b10, 0b1100])  # byte-offset masks
    skips: list = option([2, 3, 4, 5], absent=[])  # skip-word contexts: partial word + the word n back
    # log2 rows per context table (at most; low orders need fewer). 20 (the CPU's full size) is what
    # ModelConfig() and for_device give; None: sized to the training text (sized_for), which a new run
    # from the command line gets unless it is given (train.run_configs) and stores as a number
    table_bits: int | None = 20
    match_minlens: list = field(default_factory=lambda: [24, 12, 8, 5, 3, 2])  # longest first
    # log2 rows of the match index per minimum length; None: sized to the training text, as table_bits
    match_bits: int | None = 22
    match_cap: int = option(64, absent=32)  # verify a match at most this many bytes back (a multiple of 16, >= 32)
    # the match state also says how far back the match is: below 1 KiB, 8 KiB (mostly the same
    # article), 128 KiB, or further; [] = length only
    match_recency: list = option([1024, 8192, 131072], absent=[])
    # one mixer input per minimum length, each candidate verified on its own (the most recent
    # occurrence of a short context beside the longest match); off = one input, the longest match
    match_each: bool = option(True, absent=False)
    apm2_bits: int = 12  # rows of the byte1 APM
    weight_sets: bool = True  # select mixer weights by each selector's context; off = one set per mixer
    apm: bool = True  # the APM/SSE stages after the mixer; off = none
    # one mixer per selector (kernels/mixer.py), combined by a final mixer when there are several
    selectors: list = option(["seen", "partial", "byte1", "votes"], absent=["seen"])
    apms: list = option(["partial", "byte1", "byte2", "match"], absent=["partial", "byte1"])
    apm_hash_bits: int = option(16, absent=16)  # rows of the byte2 APM
    # the learned reader (reader.py): {"on": true} takes the device's defaults (ReaderConfig.for_device),
    # other keys override them; a new run stores the resolved options here; {"on": false}: memory only
    reader: dict = option({"on": True}, absent={"on": False})

    # the first format's fields: every checkpoint holds them
    FIRST_FORMAT = ("orders", "words", "sparse", "table_bits", "match_minlens", "match_bits", "apm2_bits",
                    "weight_sets", "apm")

    def contexts(self) -> list[tuple[int, int]]:
        """The memory's contexts in table order. A context's hash seed is its index in this list
        (memory.context_array): reordering it, or inserting a context before others, makes every
        saved table mean something else, so the order is pinned by tests/test_model.py."""
        return ([(ORDER, k) for k in self.orders] + [(WORD, n) for n in range(1, self.words + 1)]
                + [(SPARSE, m) for m in self.sparse] + [(SKIP, n) for n in self.skips])

    def match_spec(self) -> MatchSpec:
        if self.match_bits is None:
            raise ValueError("match_bits None (sized to the training text) is chosen by ModelConfig.sized_for "
                             "before a model is built")
        return MatchSpec(tuple(self.match_minlens), self.match_bits, self.match_cap, tuple(self.match_recency),
                         self.match_each)

    def rows_bits(self) -> list[int]:
        if self.table_bits is None:
            raise ValueError("table_bits None (sized to the training text) is chosen by ModelConfig.sized_for "
                             "before a model is built")
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

    def sized_for(self, text_bytes: int, device: str) -> "ModelConfig":
        """This config with the sizes it leaves open chosen for text_bytes of training text on
        `device`, as a new run stores them: table_bits None gets a row per TEXT_PER_ROW bytes,
        match_bits None a match row per TEXT_PER_MATCH_ROW, a reader without ctx_bits a hashed row per
        TEXT_PER_READER_ROW bytes, each at most the device's default and at least a floor. Sizes
        given (--table-bits, a --config) are kept."""
        from .reader import ReaderConfig

        out = json.loads(self.to_json())
        if self.table_bits is None:
            most = self.for_device(device).table_bits
            out["table_bits"] = sized_bits(text_bytes, TEXT_PER_ROW, MIN_TABLE_BITS, most)
        if self.match_bits is None:
            most = self.for_device(device).match_bits
            out["match_bits"] = sized_bits(text_bytes, TEXT_PER_MATCH_ROW, MIN_MATCH_BITS, most)
        if self.reader.get("on", True) and "ctx_bits" not in self.reader:
            most = ReaderConfig.for_device(device).ctx_bits
            out["reader"]["ctx_bits"] = sized_bits(text_bytes, TEXT_PER_READER_ROW, MIN_READER_BITS, most)
        return ModelConfig.from_dict(out)

    def validate(self) -> None:
        if self.table_bits is not None and not (4 <= self.table_bits <= 30):
            raise ValueError(f"table_bits must be in 4..30 (or null: sized to the text), not {self.table_bits}")
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
        if (len(self.match_recency) > MAX_REC or any(d < 1 for d in self.match_recency)
                or list(self.match_recency) != sorted(set(self.match_recency))):
            raise ValueError(f"match_recency: at most {MAX_REC} increasing distances >= 1")
        if (self.match_bits is not None and not (8 <= self.match_bits <= 28)) or not (0 <= self.apm2_bits <= 16):
            raise ValueError("match_bits must be in 8..28 (or null: sized to the text) and apm2_bits in 0..16")
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

        # a run saved before the schedule moved to the training config holds its keys here too
        opts, _ = split_reader_options(dict(self.reader))
        if not opts.pop("on", True):
            return None
        if "window" in opts and "scan" not in opts:
            opts["scan"] = 0  # options resolved and stored before the scan existed: none
        if "match_inputs" not in opts:  # read the memory's match candidates
            opts["match_inputs"], opts["match_states"] = self.match_spec().inputs, self.match_spec().states
        return ReaderConfig.for_device(device, minutes=minutes, **opts)


# what a checkpoint saved before each later field existed holds (option's `absent`): one mixer,
# two APMs, no skip contexts, one match input verified to 32 bytes with no recency, no reader
# (checked: an old checkpoint scores the same bpb with this code as with its own)
LEGACY = {f.name: f.metadata["absent"] for f in dataclasses.fields(ModelConfig) if "absent" in f.metadata}


class Model:
    """The model: the memory (count tables and mixer), the match model, the reader and the mix
    between memory and reader, on one device ("cpu" or "cuda"; device.py). Callers think in
    scoring a byte stream (`score`), generation streams (`stream`), training steps (`count`,
    `memory_step`, `memory_probs`, the reader's `train_step`) and checkpoint arrays (`arrays`,
    `optimizer_arrays`, `load_optimizer`); only the parts touch kernels."""

    def __init__(self, cfg: ModelConfig, device: str = "cpu", tables=None, params=None, last_pos=None,
                 reader_params=None, reader_mix=None, reader_mix_doc=None):
        cfg.validate()
        self.cfg = cfg
        self.dev = Device(device)
        self.device = self.dev.name
        self.match = MatchModel(cfg.match_spec(), self.dev, last_pos)
        self.memory = Memory(cfg, cfg.match_spec(), self.dev, tables, params)
        rcfg = cfg.reader_config(device)
        self.reader = None
        if rcfg is not None:
            from .reader import Reader

            self.reader = Reader(rcfg, device, params=reader_params, mix=reader_mix, mix_doc=reader_mix_doc)
        self.history_len = 0

    def host(self, arr) -> np.ndarray:
        return self.dev.host(arr)

    # ---- training ----------------------------------------------------------------------------------
    def count(self, data, start: int, end: int, delta: int = 1) -> None:
        """Add bytes data[start:end] (on the model's device) to the memory's count tables."""
        self.memory.count(data, start, end, delta)

    def caches(self, n_b: int, dtype=np.float32):
        """Work space of the memory's mixer for batches of n_b positions."""
        return self.memory.caches(n_b, dtype)

    def memory_step(self, data, pos, prev, prev_base: int, caches, update: int, lr: float) -> float:
        """One Adam step of the memory's mixer on positions pos (their pointers prev[:, t - prev_base],
        or prev[:, b] for row b with prev_base BY_ROW, on the device); returns the batch's mean
        loss in bits per byte."""
        self.memory.forward(data, pos, self.match.args(prev, prev_base), caches)
        self.memory.backward(data, pos, caches, 1.0 / len(pos))
        loss = float(np.mean(self.host(caches.loss), dtype=np.float64))
        self.memory.update(update, lr)
        return loss

    def memory_probs(self, data, pos, prev, prev_base: int, caches) -> np.ndarray:
        """(B, 8) host: the memory's p(bit j = 1 | bits before j) for the true bytes at pos."""
        self.memory.forward(data, pos, self.match.args(prev, prev_base), caches)
        return self.host(caches.prob)

    # ---- reading -----------------------------------------------------------------------------------
    def score(self, history: np.ndarray, stream: np.ndarray, batch: int = 1 << 16, adaptive: bool = False,
              progress=None) -> dict:
        """Bits per byte of `stream` read after `history`, as evaluation scores a split (evaluate.py)."""
        from .evaluate import stream_bpb

        return stream_bpb(self, history, stream, batch, adaptive, progress)

    def stream(self, history: np.ndarray, **options):
        """A generation stream after `history` (stream.py's Generator: feed bytes, read the next
        byte's distribution, sample)."""
        from .stream import Generator

        return Generator(self, history, **options)

    # ---- checkpoints -------------------------------------------------------------------------------
    def arrays(self) -> dict:
        """What a checkpoint's model file holds besides the tables (on the host)."""
        out = {"params": self.host(self.memory.params), "last_pos": self.match.last_pos}
        if self.reader is not None:
            out.update(self.reader.arrays())
        return out

    def optimizer_arrays(self) -> dict:
        out = {"adam_m": self.host(self.memory.adam_m), "adam_v": self.host(self.memory.adam_v)}
        if self.reader is not None:
            out.update(self.reader.state_arrays())
        return out

    def load_optimizer(self, z: dict) -> None:
        self.memory.adam_m = self.dev.own(z["adam_m"])
        self.memory.adam_v = self.dev.own(z["adam_v"])
        if self.reader is not None:
            self.reader.load_state(z)


# What a CPU training process holds besides the arrays below: the interpreter, numpy, numba and its
# compiler, the compiled kernels, evaluation's and the checkpoint's working buffers. Measured by
# bench/train_memory.py as peak RSS minus the arrays' estimate over 11 runs (table_bits 14-20, 8 KB
# to 155 MB of text, 0.3-1 minute): 298 to 621 MiB, 378-530 in all but two; 440 puts every one of
# them within 9% of its peak (bench/RESULTS.md, "train's memory estimate")
CPU_RUNTIME_BYTES = 440 << 20


def memory_estimate(cfg: ModelConfig, train_bytes: int, batch: int, device: str = "cpu",
                    minutes: float | None = None, window: int | None = None, holdout: int = 0) -> dict:
    """Bytes each part will take on `device` (the reader's defaults differ by device and, on a GPU,
    by the minutes budget); training also holds the text and its match pointers: every position's
    when the text fits one match window (`window`, default pointers.WINDOW), else a window's on the
    host and a batch's on a GPU (pointers.py). plan.py adds the host's side of a GPU run, the run
    directory's disk and the phases' times."""
    from .match import position_dtype
    from .pointers import WINDOW, pointer_bytes

    window = window or WINDOW
    spec = cfg.match_spec()
    n_ctx = len(cfg.contexts())
    n_in = 2 * n_ctx + spec.inputs + 1
    per_pos = n_ctx * 8 + 8 * n_in * 4 + 8 * n_ctx * 8 + 8 * 8 * 8 + 64
    out = {}
    rcfg = cfg.reader_config(device, minutes)
    if rcfg is not None:
        from .reader import param_count

        n = param_count(rcfg)
        widths = [rcfg.width] + list(rcfg.hidden) + [256]
        # weights, gradient and two moments; per position: activations, gradients and bf16 copies,
        # and the scan's gate, state, input and their gradients
        out["reader"] = 16 * n + rcfg.batch * (sum(widths) + 8 * rcfg.scan * rcfg.scan_layers) * 16
    if device == "cpu":
        out["runtime"] = CPU_RUNTIME_BYTES
    width = np.dtype(position_dtype(train_bytes)).itemsize
    if train_bytes <= window:
        pointers = train_bytes * width * len(cfg.match_minlens)
    elif device == "cpu":
        steps = rcfg.lanes * (rcfg.scan_chunk if rcfg.scan else 1) if rcfg is not None else 0
        pointers = pointer_bytes(train_bytes, window, len(cfg.match_minlens), holdout, steps)["match pointers"]
    else:  # a batch's, gathered
        pointers = 2 * max(batch, rcfg.batch if rcfg is not None else 0) * width * len(cfg.match_minlens)
    return {
        **out,
        "tables": cfg.table_bytes(),
        "params+adam": sum(size for _, size in mixer_blocks(cfg, spec)) * 4 * 4,
        "match index": len(cfg.match_minlens) * (width << cfg.match_bits),
        # the text is mapped from the shards (corpus.py): page cache, counted in RSS once read
        "text (mapped)": train_bytes,
        "match pointers": pointers,
        "batch caches": batch * per_pos,
    }
