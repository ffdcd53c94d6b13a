"""`cheaplm train`: a run's phases (Trainer), with checkpoints and exact resume.

Phases, in order: the memory (count the training text chunk by chunk, fitting the memory's mixer
on each chunk before it is counted, then a mixer-only tail on held-out bytes), the reader (learns
on the counted text), the mix (memory and reader fitted together on the held-out bytes), the final
count (the held-out bytes join the tables), the checkpoint. Each is a method of `Trainer`; a run's
progress is a typed `RunState` (state.npz's JSON), its budget one `Clock`.

The memory's training is causal, as a compressor is: a chunk's positions are scored with the
counts of everything before it (its bytes are not in the tables yet, exactly as test bytes will not
be), then it is counted. Leave-one-out counts were tried first and lose: they remove a position's
own occurrence but keep the rest of its article, so the mixer learned to trust high orders more
than held-out text deserves (bench/NOTES.md).

Part of the data (GPU 20%, at most 32 MiB; CPU 5%, at most 8 MiB), in blocks spread evenly over
it, is kept out of the tables for the tail and the mix, and counted at the very end. Spread,
because the training text is not alike from end to end (wikibench's last 100 MB are another
source than its first 55 MB and the test): a tail fitted on the end alone calibrated the mixer to
the end (bench/NOTES.md §7, §9).

Budget: `bytes` uses that many training bytes, runs a tail of 25% more memory steps and gives the
reader its passes (deterministic: the resume tests use it); `minutes` gives the memory's phases a
share (schedule.py: 30%, on a GPU at most 60 s), the reader the rest less the mix's share and the
time the final count needs. Learning rates follow the fraction of the budget spent, or of the
work, whichever is further along.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import checkpoint, corpus, parallel
from .comm import Comm, Solo
from .device import NAMES as DEVICES
from .device import Device, DeviceError
from .device import pick as pick_device
from .lanes import stream_positions
from .match import IndexAhead  # noqa: F401 (tests patch its block sizes from here)
from .pointers import WINDOW, AllPointers, WindowedPointers
from .model import Model, ModelConfig, memory_estimate
from .options import check_keys
from .plan import format_plan, run_plan
from .progress import Eta, fmt_seconds
from .docwords import doc_inputs
from .reader import MixFit, mix_loss, widen
from .runctl import RunLock, StopRequested, TrainError  # noqa: F401 (TrainError: callers catch it from here)
from .schedule import ReaderSchedule, split_reader_options
from .shards import ShardError, load_split, read_manifest

# data kept uncounted for the mixer-only tail, by device: more is better (H200: 5%/8 MiB 1.5862,
# 20%/32 MiB 1.5777, bench/NOTES.md §9), but the CPU's 4096-position tail steps would take 40
# minutes for four passes over 32 MiB
HOLDOUT = {"cuda": (0.2, 32 << 20), "cpu": (0.05, 8 << 20)}
# held-out bytes the memory-reader mix is fitted on, at most: on 2 CPU cores reading 512 KB (both
# sides) took the whole 30 s kept for the mix, which then made one step (10 minutes, 8a9c076)
MIX_BYTES = {"cuda": 4 << 20, "cpu": 1 << 17}
MIX_BATCH = 16384  # held-out bytes per step of the mix
MIX_MIN_STEPS = 100  # steps of the mix even when the budget's time is up (about a second on a CPU)
MIX_READ_SECONDS = {"cuda": 4.0, "cpu": 20.0}  # the least time kept for the mix: reading MIX_BYTES, a few steps
TAIL_PASSES = 4  # default: the tail sees each held-out byte about this many times, no more (it overfits)
TAIL = 0.25  # mixer-only steps after counting, as a share of the counting steps (bytes budget)
COUNT_SHARE = 0.75  # share of a minutes budget that counting may take
MIX_STEPS_MAX = 16  # most mixer updates per counted chunk under mix_steps auto


@dataclass
class TrainConfig:
    device: str = "auto"
    minutes: float | None = None
    bytes: int | None = None
    batch: int = 0  # 0: 4096 on CPU, 65536 on GPU
    count_chunk: int = 0  # 0: 128 KiB on CPU, 1 MiB on GPU
    lr: float = 0.004
    mix_steps: int = 0  # mixer updates per counted chunk, each on its own batch; 0: auto (see mix_steps_for)
    warmup: int = 50
    seed: int = 0
    val_bytes: int = 1 << 17
    log_seconds: float = 10.0
    val_seconds: float = 60.0
    checkpoint_minutes: float = 5.0
    keep: int = 2
    holdout_fraction: float = 0.0  # share of the data kept out of the tables for the tail; 0: HOLDOUT
    holdout_max: int = 0  # at most this many bytes; 0: HOLDOUT
    holdout_at_end: bool = False  # hold out the data's end instead of blocks spread over it (ablation)
    tail_passes: int = TAIL_PASSES
    match_window: int = 0  # positions whose match pointers are held at a time (pointers.py); 0: WINDOW
    # how the reader is trained (schedule.ReaderSchedule: lr, table_lr, warmup, max_epochs, table_epochs,
    # ctx_dropout, ctx_dropout_from, weight_decay, order, memory_share, memory_seconds, mix_share,
    # mix_fit_steps); unset keys: the device's defaults
    reader: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """A TrainConfig from JSON-like options: unknown keys and values of the wrong type are a
        ValueError naming the key (a typo in a --config file was silently ignored, issue 11)."""
        check_keys(cls, d, "train")
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            v = d[f.name]
            kind = f.type.split(" | ")  # e.g. "float | None" (annotations are strings here)
            ok = ((v is None and "None" in kind) or (isinstance(v, bool) and "bool" in kind)
                  or (not isinstance(v, bool) and ((isinstance(v, int) and ("int" in kind or "float" in kind))
                                                   or (isinstance(v, float) and "float" in kind)
                                                   or (isinstance(v, str) and "str" in kind)
                                                   or (isinstance(v, dict) and "dict" in kind))))
            if not ok:
                raise ValueError(f"train option {f.name}: {v!r} is not {' or '.join(kind)}")
        if d.get("device", "auto") not in DEVICES:
            raise ValueError(f"train option device: {d['device']!r} is not one of {', '.join(DEVICES)}")
        return cls(**d)

    def resolved(self, device: str) -> "TrainConfig":
        out = TrainConfig(**asdict(self))
        out.device = device
        if not out.batch:
            out.batch = 65536 if device == "cuda" else 4096
        if not out.count_chunk:
            out.count_chunk = (1 << 20) if device == "cuda" else (1 << 17)
        out.holdout_fraction = out.holdout_fraction or HOLDOUT[device][0]
        out.holdout_max = out.holdout_max or HOLDOUT[device][1]
        out.match_window = out.match_window or WINDOW
        return out


def run_configs(file: dict | None = None, model_flags: dict | None = None, train_flags: dict | None = None,
                resume: bool = False) -> tuple[ModelConfig | None, TrainConfig]:
    """The one merge of a training run's options: the command line's flags (only those given) over a
    --config file's 'model' and 'train' objects (options.read_config) over the library's defaults,
    the model's for the device the run will use (ModelConfig.for_device), except the sizes that follow
    the training text: table_bits and match_bits, when not given, are None (the Trainer sizes them,
    ModelConfig.sized_for, as the reader's hashed rows). Returns the model config (None on resume when no model option is
    given: the run's own is used; given ones must match it) and the training config with its device
    picked. Unknown keys and bad values: ValueError."""
    file = file or {}
    tc = TrainConfig.from_dict({**file.get("train", {}), **(train_flags or {})})
    try:
        tc.device = pick_device(tc.device)
    except DeviceError as exc:
        raise TrainError(str(exc)) from None
    model_opts = {**file.get("model", {}), **(model_flags or {})}
    check_keys(ModelConfig, model_opts, "model")
    if isinstance(model_opts.get("reader"), dict):  # schedule keys given with the reader's: the run's
        model_opts["reader"], sched = split_reader_options(model_opts["reader"])
        tc.reader = {**sched, **tc.reader}
        ReaderSchedule.for_device(tc.device, tc.minutes, tc.reader)  # unknown keys: one error now
    if resume and not model_opts:
        return None, tc
    return ModelConfig.for_device(tc.device, {"table_bits": None, "match_bits": None, **model_opts}), tc


def with_resolved_reader(cfg: ModelConfig, device: str, minutes: float | None) -> ModelConfig:
    """cfg with its reader options resolved for the device and budget (ReaderConfig.for_device), as
    a run stores them; unchanged without a reader."""
    rcfg = cfg.reader_config(device, minutes)
    if rcfg is None:
        return cfg
    return ModelConfig.from_dict({**json.loads(cfg.to_json()), "reader": {"on": True, **asdict(rcfg)}})


def data_fingerprint(manifest: dict) -> str:
    shards = [s["sha256"] for s in manifest["splits"].get("train", {}).get("shards", [])]
    return hashlib.sha256(json.dumps(shards).encode()).hexdigest()[:16]


def holdout_blocks(n: int, holdout: int, chunk: int) -> list[tuple[int, int]]:
    """Held-out ranges: about `holdout` bytes in blocks of at most `chunk`, centred at evenly
    spaced points of data[:n], in order and not overlapping."""
    size = max(1, min(chunk, holdout, n))
    count = max(1, holdout // size)
    blocks, end = [], 0
    for b in range(count):
        lo = min(max((2 * b + 1) * n // (2 * count) - size // 2, end), n - size)
        if lo < end:
            break
        blocks.append((lo, lo + size))
        end = lo + size
    return blocks


def draw_positions(rng, ranges, batch: int) -> np.ndarray:
    """min(batch, bytes in ranges) positions drawn uniformly from the (start, end) ranges."""
    sizes = np.array([b - a for a, b in ranges], dtype=np.int64)
    starts = np.array([a for a, _ in ranges], dtype=np.int64)
    ends = np.cumsum(sizes)
    u = rng.integers(0, int(ends[-1]), min(batch, int(ends[-1])), dtype=np.int64)
    k = np.searchsorted(ends, u, side="right")
    return starts[k] + u - (ends[k] - sizes[k])


def next_chunk(cursor: int, blocks, chunk: int, n: int) -> tuple[int, int] | None:
    """The next range to count at or after cursor, stepping over held-out blocks; None at the end."""
    for lo, hi in blocks:
        if lo <= cursor < hi:
            cursor = hi
    if cursor >= n:
        return None
    stop = min([lo for lo, _ in blocks if lo > cursor], default=n)
    return cursor, min(cursor + chunk, stop)


def mix_steps_for(tc: TrainConfig, time_left: float | None, chunks_left: int, t_update: float | None,
                  t_other: float | None) -> int:
    """Mixer updates for the next counted chunk.

    The mixer is short of updates, not of positions (bench/NOTES.md §9: on 2 CPU cores 182 updates
    of 4096 positions gave 1.848 bpb, 4x as many 1.759, 16x 1.733; one update of 16384 positions
    1.831), but drawing a chunk's positions too often over fits the chunk (CPU, 128 KiB chunks of
    4096-position batches: 64 updates 1.771; H200, 1 MiB chunks of 65536: 16 updates 1.6270, 64
    updates 1.6319). Auto takes count_chunk / batch updates, at most MIX_STEPS_MAX (the best
    measured on both), and with a minutes budget no more than the time left for counting pays for
    (time_left: seconds until counting must end; t_update, t_other: measured seconds per mixer
    update and per chunk besides them).
    """
    if tc.mix_steps:
        return tc.mix_steps
    most = max(1, min(MIX_STEPS_MAX, tc.count_chunk // tc.batch))
    if time_left is None:
        return most
    if t_update is None or t_other is None:
        return 1  # first chunk: measure
    per_chunk = time_left / max(1, chunks_left) - t_other
    return int(min(most, max(1, per_chunk // max(t_update, 1e-6))))


def lr_at(tc: TrainConfig, step: int, frac: float) -> float:
    warm = min(1.0, step / max(tc.warmup, 1))
    decay = 1.0 if frac < 0.5 else 1.0 - 0.9 * min(1.0, (frac - 0.5) / 0.5)
    return tc.lr * warm * decay


@dataclass
class RunState:
    """What a checkpoint keeps of a run's progress (state.npz's JSON), typed."""

    step: int = 0  # memory steps taken
    cursor: int = 0  # training bytes counted, held-out blocks stepped over
    elapsed: float = 0.0  # seconds of the budget spent
    rng: dict | None = None  # the position sampler's state
    tokens_mixed: int = 0
    updates: int | None = None  # memory optimizer updates (several per step with mix_steps > 1); None: = step
    tail_seen: int = 0  # positions the memory's held-out tail has trained on
    holdout_counted: bool = False  # the run ran to its end: every byte is counted
    data: str = ""  # data_fingerprint of the train split
    train_config: dict = dataclasses.field(default_factory=dict)
    reader_t0: float | None = None  # when the reader phase began (budget seconds); None: not yet
    reader_start_step: int | None = None
    reader_done: bool = False
    mix_done: bool = False
    heldout: dict | None = None  # the mix's held-out figures

    @classmethod
    def from_dict(cls, d: dict) -> "RunState":
        known = {f.name for f in dataclasses.fields(cls)}
        out = cls(**{k: v for k, v in d.items() if k in known})
        if out.updates is None:
            out.updates = out.step
        return out

    def to_dict(self) -> dict:
        return asdict(self)


class Clock:
    """The budget's clock: seconds spent, across resumes (elapsed0 is what earlier runs spent)."""

    def __init__(self, elapsed0: float):
        self.elapsed0 = elapsed0
        self.t_start = time.perf_counter()

    def __call__(self) -> float:
        return self.elapsed0 + time.perf_counter() - self.t_start


class Trainer:
    """One training run: its phases as methods, its progress in a RunState, one Clock.

    Phases, in order (each skipped when a resumed run had finished it): the memory (count the
    training bytes chunk by chunk, fitting the mixer on each chunk before it is counted, then a
    mixer-only tail on held-out bytes), the reader (learns on the counted bytes), the mix (memory
    and reader fitted together on the held-out bytes), the final count (the held-out bytes join the
    tables), the checkpoint. `stop_after_steps` / `stop_after_reader_steps` stop early as an
    interruption would (tests)."""

    def __init__(self, data_dir: Path, run_dir: Path, model_cfg: ModelConfig | None, tc: TrainConfig,
                 resume: bool = False, log=print, save: bool = True, stop_after_steps: int | None = None,
                 keep_model: bool = False, stop_after_reader_steps: int | None = None, comm: Comm | None = None):
        self.data_dir, self.run_dir = Path(data_dir), Path(run_dir)
        # several processes (parallel.py): this Trainer is rank 0's; the others join its reader phase
        self.comm = comm or Solo()
        self.workers_told = self.comm.size == 1
        self.shard = None
        self.model_cfg, self.tc, self.resume, self.log, self.save = model_cfg, tc, resume, log, save
        self.stop_after_steps, self.stop_after_reader_steps = stop_after_steps, stop_after_reader_steps
        self.keep_model = keep_model
        self.losses: list[float] = []
        self.ema = self.val_bpb = self.stopped = None
        self.tail = None  # the uncounted (start, end) ranges the memory's tail and the mix train on
        self.tail_bytes = 0
        self.count_seconds, self.count_bytes = None, 0  # when counting ended, and how far
        self.t_update = self.t_other = None  # measured seconds per mixer update / per chunk besides them
        self.phase = "memory"
        self.reader_stats: dict = {}

    # ---- set-up ------------------------------------------------------------------------------------
    def check_options(self) -> None:
        tc = self.tc
        if tc.minutes is None and tc.bytes is None and not self.resume:
            raise TrainError("give a budget: --minutes or --bytes")
        if tc.tail_passes < 0:
            raise TrainError(f"tail_passes must be 0 or more (got {tc.tail_passes})")
        if tc.mix_steps < 0:
            raise TrainError(f"mix_steps must be 0 (auto) or more (got {tc.mix_steps})")
        if (tc.minutes is not None and not (0 < tc.minutes < math.inf)) or (tc.bytes is not None and tc.bytes <= 0):
            raise TrainError("the budget must be positive and finite (got --minutes/--bytes of zero or less, or nan/inf)")
        if not (0 < tc.lr <= 1):  # also refuses nan; 1e6 diverged to val 6.1e15 bpb and was reported done
            raise TrainError(f"lr must be in (0, 1] (got {tc.lr})")
        if tc.match_window < 0:
            raise TrainError(f"match_window must be 0 (the default, {WINDOW:,}) or more (got {tc.match_window})")
        if not (0 <= tc.checkpoint_minutes < math.inf):
            raise TrainError(f"checkpoint_minutes must be 0 or more and finite (got {tc.checkpoint_minutes})")

    def finished_summary(self, ckpt: Path, saved: dict, device: str) -> dict:
        """--resume of a run that ran to its end: say so, write nothing."""
        self.log(f"{self.run_dir}: the run is finished ({ckpt.name}, {int(saved['step']):,} steps, its budget used "
                 "up); nothing to do")
        summary = {"steps": int(saved["step"]), "counted_bytes": int(saved["cursor"]), "train_bytes": None,
                   "elapsed": float(saved["elapsed"]), "count_seconds": None, "count_mb_per_s": None,
                   "val_bpb": None, "train_bpb": None, "stopped": None, "losses": [], "device": device,
                   "heldout": None, "finished": True}
        if self.keep_model:
            try:
                summary["model"], summary["history"], _ = checkpoint.load_model(self.run_dir, device, ckpt)
            except checkpoint.CheckpointError as exc:
                raise TrainError(str(exc)) from None
        return summary

    def load_run(self, manifest: dict, device: str) -> np.ndarray:
        """Resume: the model and state of the latest checkpoint; returns its history bytes."""
        try:
            self.model, history, ckpt = checkpoint.load_model(self.run_dir, device=device)
            self.state = RunState.from_dict(checkpoint.load_state(ckpt, self.model))
        except checkpoint.CheckpointError as exc:
            raise TrainError(str(exc)) from None
        if self.state.data != data_fingerprint(manifest):
            raise TrainError(f"{self.data_dir}: not the data this run was trained on (train shards differ)")
        saved_tc = TrainConfig(**self.state.train_config)
        # a run saved before the reader's schedule moved here kept it with the reader's options
        saved_tc.reader = {**split_reader_options(self.model.cfg.reader)[1], **saved_tc.reader}
        # the schedule is the one the run started with; how often to checkpoint and log is this invocation's
        self.tc = dataclasses.replace(saved_tc.resolved(device), checkpoint_minutes=self.tc.checkpoint_minutes,
                                      keep=self.tc.keep, log_seconds=self.tc.log_seconds)
        self.log(f"resuming {ckpt.name} at step {self.state.step} with the run's own budget and schedule "
                 f"(minutes {self.tc.minutes}, bytes {self.tc.bytes})")
        return history

    def check_resumed_options(self, device: str) -> None:
        """Model options given on resume must be the run's own, resolved as a new run resolves them
        (sized to the same training text, the reader's options for the run's budget)."""
        if (self.model_cfg is not None
                and self.new_config(self.model_cfg, device).to_json() != self.model.cfg.to_json()):
            raise TrainError(f"{self.run_dir}: model options differ from the run's own; resume without model options")
        self.model_cfg = self.model.cfg

    def new_config(self, cfg: ModelConfig, device: str) -> ModelConfig:
        """The config a new run stores: sized to its training text (ModelConfig.sized_for), the
        reader's options resolved for the device and budget."""
        return with_resolved_reader(cfg.sized_for(self.n, device), device, self.tc.minutes)

    def load_data(self) -> None:
        """The training text mapped from its shards (corpus.py: nothing read until counted, no copy),
        a few KiB of validation bytes read."""
        try:
            self.pieces = corpus.layout(self.data_dir, "train", limit=self.tc.bytes)
            self.data = corpus.map_text(self.data_dir, self.pieces)
        except ShardError as exc:
            raise TrainError(str(exc)) from None
        except OSError as exc:
            raise TrainError(f"{exc.filename or self.data_dir}: cannot map the training text ({exc.strerror or exc})") from None
        try:
            self.val = load_split(self.data_dir, "val", limit=self.tc.val_bytes)
        except ShardError:
            self.val = None
        self.n = len(self.data)
        if self.n < 2:
            raise TrainError(f"{self.data_dir}: the train split holds {self.n} bytes; nothing to train on")

    def check_memory(self, device: str) -> None:
        cfg, tc = self.model_cfg, self.tc
        est = memory_estimate(cfg, self.n, tc.batch, device, tc.minutes, tc.match_window, self.holdout_of(self.n))
        need, have = sum(est.values()), Device(device).free_memory()
        self.log(f"device {device}; model: {len(cfg.contexts())} contexts, table_bits {cfg.table_bits}, "
                 f"match {cfg.match_minlens} in 2^{cfg.match_bits} rows; memory estimate {need / 2**20:,.0f} MiB "
                 f"({', '.join(f'{k} {v / 2**20:,.0f}' for k, v in est.items())}); available {have / 2**20:,.0f} MiB")
        self.log(f"train config: {json.dumps(asdict(tc))}")
        if need > have:
            raise TrainError(f"needs about {need / 2**30:.1f} GiB but only {have / 2**30:.1f} GiB is free on {device}; "
                             f"lower --table-bits (each step down halves the {est['tables'] / 2**30:.1f} GiB of tables) "
                             "or --bytes")

    def resolve_new_config(self, device: str) -> None:
        """A new run's model config, resolved before its memory is estimated: sizes for its text,
        the reader's options stored resolved (the run loads the same reader on any device)."""
        # schedule keys given among the reader's options (as runs before schedule.py held them) are the run's
        own, sched = split_reader_options(self.model_cfg.reader)
        if sched:
            self.model_cfg = dataclasses.replace(self.model_cfg, reader=own)
            self.tc.reader = {**sched, **self.tc.reader}
        self.model_cfg = self.new_config(self.model_cfg, device)

    def new_run(self, manifest: dict, device: str) -> None:
        self.model = Model(self.model_cfg, device=device)
        self.state = RunState(data=data_fingerprint(manifest), updates=0)
        self.resolve_schedule()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        corpus.record(self.run_dir, self.data_dir, "train", self.pieces)  # the run's text: where, not a copy
        (self.run_dir / "config.json").write_text(json.dumps({"model": json.loads(self.model_cfg.to_json()),
                                                              "train": asdict(self.tc), "data": str(self.data_dir)},
                                                             indent=2))

    def resolve_schedule(self) -> None:
        """The reader's schedule with the device's defaults filled in, kept resolved in the run's
        train config (a resumed run goes on with the same)."""
        tc, rcfg = self.tc, self.model.reader.cfg if self.model.reader is not None else None
        try:
            self.sched = ReaderSchedule.for_device(tc.device, tc.minutes, tc.reader, widen(tc.minutes))
            self.sched.validate(scan=bool(rcfg and rcfg.scan))
        except ValueError as exc:
            raise TrainError(str(exc)) from None
        tc.reader = asdict(self.sched)
        self.state.train_config = asdict(tc)

    def build_index(self, history: np.ndarray) -> None:
        """The match pointers (pointers.py: every position's when the text fits one window, else
        those of what the trainer is about to read), built ahead on a background thread on a GPU
        run; on resume the index up to the cursor is walked afresh first and checked against the
        saved one."""
        match, cursor = self.model.match, self.state.cursor
        match.widen(self.n)
        gpu = self.model.dev.gpu
        if self.n <= self.tc.match_window:
            self.ptrs = AllPointers(match, self.data, self.n, self.model.dev, background=gpu)
        else:
            if self.model.reader is not None and self.sched.order != "stream":
                raise TrainError(f"a reader that draws its positions at random (order random) reads anywhere in the "
                                 f"text: it needs all of it in one match window (train option match_window "
                                 f"{self.n:,} or more; {self.tc.match_window:,} now)")
            self.ptrs = WindowedPointers(match, self.data, self.n, self.model.dev, gpu, self.tc.match_window,
                                         self.held)
        if cursor:
            if not self.same_text(history, cursor):
                raise TrainError(f"{self.run_dir}: the run's history does not match the start of the training data")
            if not np.array_equal(self.ptrs.rebuild(cursor), match.last_pos):
                raise TrainError(f"{self.run_dir}: saved match index does not match history.bin (corrupt run)")
        self.clock = Clock(self.state.elapsed)  # the budget pays for building the match index too
        # a GPU run counts while the host builds the rest of the index; a CPU run needs its threads itself
        self.ptrs.start(cursor)
        if not gpu and not self.ptrs.windowed:
            self.log(f"match index of {(self.n - cursor) / 1e6:.1f} MB built in "
                     f"{time.perf_counter() - self.clock.t_start:.1f} s")
        elif self.ptrs.windowed:
            self.log(f"match pointers held for a window of {self.tc.match_window:,} positions at a time "
                     f"({self.n:,} bytes of text)")
        self.d_data = self.model.dev.put(self.data)

    def same_text(self, history: np.ndarray, cursor: int) -> bool:
        """Whether the run's history is data[:cursor]: the same shards at the same places for a run
        that maps them (text.json), compared byte for byte for one with a history.bin."""
        if (self.run_dir / "history.bin").exists():
            return np.array_equal(history, self.data[:cursor])
        try:
            _, recorded = corpus.read_record(self.run_dir)
        except corpus.TextError as exc:
            raise TrainError(str(exc)) from None
        key = [(p.name, p.start, p.used, p.sha256) for p in corpus.cut(recorded, cursor)]
        return key == [(p.name, p.start, p.used, p.sha256) for p in corpus.cut(self.pieces, cursor)]

    def plan(self) -> None:
        """The held-out blocks, the step counts of a bytes budget and the memory's share of the time."""
        tc, n = self.tc, self.n
        self.holdout = self.holdout_of(n)
        self.held = ([(n - self.holdout, n)] if tc.holdout_at_end and self.holdout
                     else holdout_blocks(n, self.holdout, tc.count_chunk))
        count_steps, at = 0, 0
        while (span := next_chunk(at, self.held, tc.count_chunk, n)) is not None:
            count_steps, at = count_steps + 1, span[1]
        count_steps = max(1, count_steps)
        self.total_steps = math.ceil(count_steps * (1 + TAIL)) if tc.bytes is not None else None
        # a minutes budget usually outlasts the work (count everything, then the tail's passes), so the
        # schedule follows whichever is further along: time or steps
        tail_len = sum(hi - lo for lo, hi in self.held)
        self.work_steps = count_steps + math.ceil(tc.tail_passes * tail_len / max(1, min(tc.batch, tail_len)))
        reader, sched = self.model.reader, self.sched
        # with a reader the memory's phases get a share of a minutes budget; the reader learns in the rest
        self.mem_minutes = None if tc.minutes is None else tc.minutes * (sched.memory_share if reader else 1.0)
        if self.mem_minutes is not None and reader is not None and sched.memory_seconds:
            self.mem_minutes = min(self.mem_minutes, sched.memory_seconds / 60)
        self.caches = self.model.caches(tc.batch)
        self.rng = np.random.default_rng(tc.seed)
        if self.state.rng is not None:
            self.rng.bit_generator.state = self.state.rng

    def holdout_of(self, n: int) -> int:
        """Bytes held out of the tables: 5% of the data by default, at most 8 MiB; small data sets
        keep a quarter (up to 64 KiB) so the tail has text."""
        tc = self.tc
        return min(tc.holdout_max, max(int(n * tc.holdout_fraction), min(n // 4, 1 << 16)))

    # ---- helpers of every phase ---------------------------------------------------------------------
    def frac_done(self, elapsed: float) -> float:
        if self.total_steps is not None:
            return self.state.step / self.total_steps
        return min(1.0, max(elapsed / (self.tc.minutes * 60), self.state.step / self.work_steps))

    def index_to(self, end: int) -> None:
        """Bring the match index (saved with checkpoints, used by eval and generation) up to `end`."""
        self.ptrs.index_to(end)

    def snapshot(self) -> dict:
        st = self.state
        st.elapsed, st.rng, st.train_config = self.clock(), self.rng.bit_generator.state, asdict(self.tc)
        return st.to_dict()

    def checkpoint(self) -> None:
        self.index_to(self.state.cursor)
        try:
            checkpoint.save(self.run_dir, self.model, self.snapshot(), self.data[:self.state.cursor], keep=self.tc.keep)
        except checkpoint.CheckpointError as exc:
            raise TrainError(str(exc)) from None

    def validate(self) -> float | None:
        if self.val is None or len(self.val) == 0:
            return None
        return self.model.score(self.data[:self.state.cursor], self.val, batch=min(self.tc.batch, 1 << 16))["bpb"]

    def eta(self, elapsed: float) -> float:
        """Seconds left of the whole run: the budget's rest for a minutes budget, else by the work's rate."""
        if self.tc.minutes is not None:
            return max(0.0, self.tc.minutes * 60 - elapsed)
        return self.eta_of(elapsed, self.frac_done(elapsed))

    def write_metrics(self, rec: dict) -> None:
        if self.metrics:
            self.metrics.write(json.dumps(rec) + "\n")
            self.metrics.flush()

    # ---- the memory phase -----------------------------------------------------------------------------
    def memory_done(self, elapsed: float, stop) -> bool:
        st = self.state
        if self.total_steps is not None and st.step >= self.total_steps:
            return True
        if self.mem_minutes is not None and elapsed >= self.mem_minutes * 60:
            return True
        if st.reader_t0 is not None:
            return True  # a resumed run whose memory phases had ended: on to the reader
        if self.tail is not None and st.tail_seen >= self.tc.tail_passes * self.tail_bytes:
            return True  # counting is done and the tail has had its passes: finish early
        if stop.flag:
            self.stopped = stop.signal
            return True
        if self.stop_after_steps is not None and st.step >= self.stop_after_steps:
            self.stopped = "stop_after_steps"
            return True
        return False

    def start_tail(self, span) -> None:
        """Counting is over: the tail trains on held-out bytes no table has seen (every block when
        counting finished, the blocks passed when time ran out, or the bytes after the cursor)."""
        cursor = self.state.cursor
        self.count_seconds, self.count_bytes = self.clock(), cursor
        tail = self.held if span is None else [(a, b) for a, b in self.held if b <= cursor]
        self.tail = tail or [(cursor, min(self.n, cursor + max(self.holdout, self.tc.count_chunk)))]
        self.tail_bytes = sum(b - a for a, b in self.tail)
        self.ptrs.ensure(self.tail)

    def memory_phase(self, stop) -> None:
        """Count the training bytes chunk by chunk (causal: each chunk is scored with the counts of
        everything before it, then counted), then fit the mixer on the held-out tail."""
        tc, st = self.tc, self.state
        last_log = last_val = last_ckpt = time.perf_counter()
        while not self.memory_done(elapsed := self.clock(), stop):
            span = None if st.holdout_counted else next_chunk(st.cursor, self.held, tc.count_chunk, self.n)
            counting = span is not None and (self.mem_minutes is None or elapsed < COUNT_SHARE * self.mem_minutes * 60)
            if counting:
                t_chunk = time.perf_counter()
                ranges = [span]
                self.ptrs.ready(*span)
            else:
                if st.holdout_counted:
                    break  # every byte is counted: the run is complete
                if self.tail is None:
                    self.start_tail(span)
                ranges = self.tail
                st.tail_seen += min(tc.batch, self.tail_bytes)
            st.step += 1
            lr = lr_at(tc, st.step, self.frac_done(elapsed))
            n_mix = 1
            if counting:
                time_left = None if self.mem_minutes is None else COUNT_SHARE * self.mem_minutes * 60 - elapsed
                n_mix = mix_steps_for(tc, time_left, math.ceil((self.n - span[0]) / tc.count_chunk), self.t_update,
                                      self.t_other)
            t_iter = time.perf_counter()
            loss = self.mixer_updates(ranges, n_mix, lr)
            if counting:
                self.count_chunk(span, n_mix, t_chunk, t_iter)
            self.losses.append(loss)
            self.ema = loss if self.ema is None else 0.95 * self.ema + 0.05 * loss
            now = time.perf_counter()
            if now - last_val >= tc.val_seconds:
                self.val_bpb, last_val = self.validate(), now
            if now - last_log >= tc.log_seconds or st.step == 1:
                self.log_memory(lr)
                last_log = now
            if self.save and tc.checkpoint_minutes > 0 and now - last_ckpt >= tc.checkpoint_minutes * 60:
                self.checkpoint()
                last_ckpt = now

    def mixer_updates(self, ranges, n_mix: int, lr: float) -> float:
        """n_mix Adam steps of the memory's mixer, each on its own batch drawn from ranges; the last loss."""
        tc, st, model = self.tc, self.state, self.model
        for _ in range(n_mix):
            pos = draw_positions(self.rng, ranges, tc.batch)
            if not model.dev.gpu:
                pos.sort()  # nearby positions share cache lines on the CPU; the GPU gains nothing for the sort's time
            if len(pos) != self.caches.n_b:
                self.caches = model.caches(len(pos))
            st.updates += 1
            loss = model.memory_step(self.d_data, model.dev.put(pos), *self.ptrs.prev_for(pos), self.caches, st.updates,
                                     lr)
            if not math.isfinite(loss):
                raise TrainError(f"loss became {loss} at step {st.step}; stopped without saving, the last good "
                                 f"checkpoint is intact (try a lower --lr than {tc.lr})")
            st.tokens_mixed += len(pos)
        return loss

    def count_chunk(self, span, n_mix: int, t_chunk: float, t_iter: float) -> None:
        """Count the chunk just scored; measure per-update time (each update waits for its loss) and
        the rest of the chunk's time (count, pointers) for mix_steps_for."""
        t_mixed = time.perf_counter()
        self.model.count(self.d_data, *span)
        self.state.cursor = span[1]
        now = time.perf_counter()
        tu, to = (t_mixed - t_iter) / n_mix, (now - t_chunk) - (t_mixed - t_iter)
        self.t_update = tu if self.t_update is None else 0.8 * self.t_update + 0.2 * tu
        self.t_other = to if self.t_other is None else 0.8 * self.t_other + 0.2 * to

    def log_memory(self, lr: float) -> None:
        st, el = self.state, self.clock()
        val = self.val_bpb
        rec = {"phase": "memory", "step": st.step, "train_bpb": round(self.ema, 4),
               "val_bpb": None if val is None else round(val, 4), "lr": lr, "counted": st.cursor,
               "mb_per_s": round(st.cursor / 1e6 / max(el, 1e-9), 3), "elapsed": round(el, 1),
               "eta": round(self.eta(el), 1)}
        self.log(f"memory step {st.step:6d}  train {self.ema:.3f} bpb  val {'-' if val is None else f'{val:.3f}'} bpb  "
                 f"lr {lr:.2e}  counted {st.cursor / 1e6:.1f}/{self.n / 1e6:.1f} MB  {rec['mb_per_s']:.2f} MB/s  "
                 f"elapsed {fmt_seconds(el)}  ETA {fmt_seconds(rec['eta'])}")
        self.write_metrics(rec)

    # ---- the reader phase -----------------------------------------------------------------------------
    def reader_budget(self) -> tuple[float | None, float | None]:
        """(end of the whole budget less the final count, when the reader stops for the mix), in
        budget seconds; None, None for a bytes budget. The budget's end holds the mix reading the
        held-out bytes (both sides) and its steps, then the count of those bytes (without this a
        1-minute H200 run took 71 s)."""
        tc = self.tc
        if tc.minutes is None:
            return None, None
        rate = self.count_bytes / self.count_seconds if self.count_seconds else None
        total = tc.minutes * 60 - (1.2 * self.tail_bytes / rate if rate else 0.0)
        return total, total - max(self.sched.mix_share * tc.minutes * 60, MIX_READ_SECONDS[self.model.device])

    def reader_phase(self, stop) -> None:
        """The reader learns on the counted bytes until its passes are done or the mix's time comes;
        its learning rate follows whichever is further along."""
        self.phase = "reader"
        tc, st, reader = self.tc, self.state, self.model.reader
        rc = reader.cfg
        _, mix_at = self.reader_budget()
        ranges = counted_ranges(self.held, st.cursor)
        counted = sum(b - a for a, b in ranges)
        steps_goal = max(1, math.ceil(self.sched.max_epochs * counted / rc.batch))
        if st.reader_start_step is None:
            st.reader_start_step = reader.step
        if st.reader_t0 is None:
            st.reader_t0 = self.clock()
        start, t_phase = st.reader_start_step, st.reader_t0
        self.log(f"reader phase: {rc.batch} positions per step on {counted / 1e6:.1f} MB"
                 + ("" if mix_at is None else f" until {mix_at:.0f} s")
                 + ("" if self.shard is None else f", {self.comm.size} processes of {rc.batch // self.comm.size}"))
        if self.shard is not None:
            if self.ptrs.windowed:  # the workers get every pointer once (parallel.share_setup)
                raise TrainError(f"--gpus {self.comm.size}: a training text longer than one match window "
                                 f"({self.tc.match_window:,} bytes) trains on one GPU for now")
            parallel.share_setup(self.comm, self.model, self.n, self.ptrs.d_prev, tc.bytes, st.reader_start_step)
            self.workers_told = True
        t0 = self.clock()
        try:
            self.reader_loop(stop, steps_goal, start, t_phase, mix_at, ranges, counted, t0)
        finally:
            n_steps = reader.step - start  # also when stopped: the rate is what bench/multi_gpu.py reads
            self.reader_stats = {"reader_steps": n_steps, "reader_seconds": self.clock() - t0,
                                 "reader_positions_per_s": n_steps * rc.batch / max(1e-9, self.clock() - t0)}
            if self.shard is not None:  # every way out: the others stop and send their lanes' state back
                self.shard.stop()
                self.shard.gather_state(reader)

    def reader_loop(self, stop, steps_goal: int, start: int, t_phase: float, mix_at, ranges, counted: int,
                    t0: float) -> None:
        tc, st, reader = self.tc, self.state, self.model.reader
        rc = reader.cfg
        last = t0
        ema = None
        while True:
            now = self.clock()
            done = (reader.step - start) / steps_goal
            if (mix_at is not None and now >= mix_at) or done >= 1.0:
                break
            if stop.flag:
                self.stopped = stop.signal
                return
            if self.stop_after_reader_steps is not None and reader.step >= self.stop_after_reader_steps:
                self.stopped = "stop_after_steps"
                return
            frac = done if mix_at is None else max(done, (now - t_phase) / max(1e-9, mix_at - t_phase))
            loss = self.reader_step(ranges, counted, frac)
            ema = loss if ema is None else 0.97 * ema + 0.03 * loss
            if self.clock() - last >= tc.log_seconds:
                last = self.clock()
                self.log_reader(ema, (reader.step - start) * rc.batch / max(1e-9, last - t0))
        st.reader_done = True

    def reader_step(self, ranges, counted: int, frac: float) -> float:
        reader, rc, st = self.model.reader, self.model.reader.cfg, self.state
        if self.sched.order == "stream":
            self.ptrs.reader_at(reader.step - st.reader_start_step)
            pos = stream_positions(ranges, rc.lanes, reader.step - st.reader_start_step, rc.scan_chunk if rc.scan else 1)
        else:
            pos = draw_positions(self.rng, ranges, rc.batch)
        if len(pos) < rc.batch:  # the GPU's products need the full batch; repeat positions
            pos = np.resize(pos, rc.batch)
        match = self.model.match.args(*self.ptrs.prev_for(pos))
        passes = (reader.step - st.reader_start_step) * rc.batch / max(1, counted)
        frozen = ("table",) if passes >= self.sched.table_epochs else ()
        drop = self.sched.ctx_dropout if passes >= self.sched.ctx_dropout_from else 0.0
        lr = self.sched.lr_at(reader.step, frac)
        if self.shard is not None:  # several processes: each reads its lanes of the same batch
            self.shard.send(pos, lr, frozen, self.sched.table_lr, drop, self.sched.weight_decay)
            loss = self.shard.step(reader, self.d_data, pos, lr, match, frozen, self.sched.table_lr, drop,
                                   self.sched.weight_decay)
        else:
            loss = reader.train_step(self.d_data, self.model.dev.put(pos), lr, match, reader.training_state(), frozen,
                                     self.sched.table_lr, drop, self.sched.weight_decay)
        if not math.isfinite(loss):
            raise TrainError(f"reader loss became {loss} at reader step {reader.step}; try a lower reader lr")
        return loss

    def log_reader(self, ema: float, rate: float) -> None:
        el, step = self.clock(), self.model.reader.step
        eta = self.eta(el)
        self.log(f"reader step {step:6d}  train {ema:.3f} bpb (reader alone)  {rate / 1e6:.2f} M positions/s  "
                 f"elapsed {fmt_seconds(el)}  ETA {fmt_seconds(eta)}")
        self.write_metrics({"phase": "reader", "reader_step": step, "reader_train_bpb": round(ema, 4),
                            "elapsed": round(el, 1), "eta": round(eta, 1)})

    # ---- the mix phase --------------------------------------------------------------------------------
    def mix_phase(self, stop) -> None:
        """Fit the memory-reader mix on held-out bytes: both sides read them once (the reader in runs,
        as its scan state needs their past), then Adam draws batches of them; the mix has a few
        hundred weights, MIX_BYTES is plenty."""
        self.phase = "mix"
        model, reader = self.model, self.model.reader
        total, _ = self.reader_budget()
        tail = mix_ranges(self.tail, MIX_BYTES[model.device])
        pos_all = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in tail])
        n = len(pos_all)
        self.ptrs.ensure(tail)
        pr = reader.range_probs(self.d_data, tail, self.ptrs.source())
        pm = np.empty_like(pr)
        batch = min(self.tc.batch, n)
        caches = model.caches(batch)
        for lo in range(0, n, batch):  # the memory's reading, a batch at a time
            pos = np.resize(pos_all[lo: lo + batch], batch)
            pm[lo: lo + batch] = model.memory_probs(self.d_data, model.dev.put(pos), *self.ptrs.prev_for(pos),
                                                    caches)[: min(batch, n - lo)]
        y = self.data[pos_all]
        # the document words (host, causal: each range is read from its document's start)
        zd, cd = doc_inputs(self.data, tail) if self.sched.doc_words else (None, None)
        fit = MixFit(reader.mix, steps=self.sched.mix_fit_steps, wd=reader.mix_doc if zd is not None else None)
        for i in range(self.sched.mix_fit_steps):
            if total is not None and self.clock() >= total and i >= MIX_MIN_STEPS:
                break
            if stop.flag:
                self.stopped = stop.signal
                return
            pick = self.rng.integers(0, n, min(MIX_BATCH, n), dtype=np.int64)
            fit.step(pm[pick], pr[pick], y[pick], None if zd is None else (zd[pick], cd[pick]))
        reader.mix = fit.w
        if zd is not None:
            reader.mix_doc = fit.wd
        self.state.mix_done = True
        mixed = float(np.mean(mix_loss(pm, pr, y, reader.mix, np.zeros((0, 3), np.float32),
                                       None if zd is None else reader.doc_mix(zd, cd))))
        alone = [float(np.mean(_path_bits(p, y))) for p in (pm, pr)]
        self.state.heldout = {"memory": alone[0], "reader": alone[1], "mixed": mixed, "bytes": n, "mix_steps": fit.t}
        self.log(f"memory-reader mix fitted in {fit.t} steps on {n / 1e6:.1f} MB held out: memory alone "
                 f"{alone[0]:.4f}, reader alone {alone[1]:.4f}, mixed {mixed:.4f} bpb")

    # ---- the end ----------------------------------------------------------------------------------------
    def final_count(self) -> None:
        """The held-out bytes join the memory at the very end (those before the cursor, when time ran
        out before counting finished)."""
        self.phase = "final count"
        st = self.state
        final = self.tail if self.tail is not None else [(a, b) for a, b in self.held if b <= st.cursor]
        for a, b in final:
            self.model.count(self.d_data, a, b)
        st.cursor = max([st.cursor] + [b for _, b in final])
        st.holdout_counted = True

    def run(self) -> dict:
        self.check_options()
        try:
            manifest = read_manifest(self.data_dir)
            device = pick_device(self.tc.device)
        except (ShardError, DeviceError) as exc:
            raise TrainError(str(exc)) from None
        self.tc = self.tc.resolved(device)
        if self.resume:
            try:
                ckpt = checkpoint.latest_checkpoint(self.run_dir)
                saved = checkpoint.read_state(ckpt)
            except checkpoint.CheckpointError as exc:
                raise TrainError(str(exc)) from None
            if saved.get("holdout_counted"):  # set by the final checkpoint of a run that ran to its end
                return self.finished_summary(ckpt, saved, device)
        self.log("compiling kernels (cached after the first run)…")
        history = None
        if self.resume:
            history = self.load_run(manifest, device)
        elif (self.run_dir / "latest").exists():
            raise TrainError(f"{self.run_dir}: already holds a run; pass --resume to continue it, or choose another --out")
        else:
            self.model_cfg = self.model_cfg or ModelConfig(table_bits=None, match_bits=None)
        self.load_data()
        if self.resume:
            self.check_resumed_options(device)
        else:
            self.resolve_new_config(device)
        self.check_memory(device)
        if not self.resume:
            self.new_run(manifest, device)
            history = self.data[:0]
        if self.resume:
            self.resolve_schedule()
        self.plan()
        self.build_index(history)
        self.eta_of = Eta()
        self.metrics = open(self.run_dir / "metrics.jsonl", "a") if self.save else None
        try:
            return self.phases()
        finally:
            self.ptrs.close()
            if self.metrics:
                self.metrics.close()

    def dry_run(self) -> dict:
        """--dry-run: the plan of a new run (plan.py) logged and returned; nothing is written and
        nothing of the text is read (shard sizes are checked, not their sha256)."""
        self.check_options()
        if self.resume:
            return self.dry_run_resume()
        if (self.run_dir / "latest").exists():
            raise TrainError(f"{self.run_dir}: already holds a run; pass --resume to continue it, or choose another --out")
        try:
            manifest = read_manifest(self.data_dir)
            device = pick_device(self.tc.device)
            self.pieces = corpus.layout(self.data_dir, "train", limit=self.tc.bytes, verify=False)
        except (ShardError, DeviceError) as exc:
            raise TrainError(str(exc)) from None
        tc = self.tc = self.tc.resolved(device)
        n = self.n = corpus.text_length(self.pieces)
        self.model_cfg = self.model_cfg or ModelConfig(table_bits=None)
        self.resolve_new_config(device)
        rcfg = self.model_cfg.reader_config(device, tc.minutes)
        try:
            sched = ReaderSchedule.for_device(device, tc.minutes, tc.reader, widen(tc.minutes))
        except ValueError as exc:
            raise TrainError(str(exc)) from None
        holdout = self.holdout_of(n)
        articles = manifest["splits"]["train"].get("articles")
        out = run_plan(self.model_cfg, tc, n, device, sched if rcfg is not None else None,
                       articles if isinstance(articles, int) else None, holdout)
        for line in format_plan(out):
            self.log(line)
        have = Device(device).free_memory()
        need = sum((out["gpu"] or out["host"]).values())
        self.log(f"{device} has {have / 2**20:,.0f} MiB free: the run " + ("fits" if need <= have else "does NOT fit")
                 + f"; dry run, nothing written (table_bits {self.model_cfg.table_bits})")
        return out

    def dry_run_resume(self) -> dict:
        """--dry-run --resume: the plan of continuing the run from its latest checkpoint (its own
        config and schedule, the time its budget has left; phases already done take none);
        nothing is written and nothing of the text is read."""
        try:
            ckpt = checkpoint.latest_checkpoint(self.run_dir)
            saved = checkpoint.read_state(ckpt)
            cfg = checkpoint.read_config(ckpt)
            manifest = read_manifest(self.data_dir)
        except (checkpoint.CheckpointError, ShardError) as exc:
            raise TrainError(str(exc)) from None
        state = RunState.from_dict(saved)
        if state.data != data_fingerprint(manifest):
            raise TrainError(f"{self.data_dir}: not the data this run was trained on (train shards differ)")
        try:
            device = pick_device(self.tc.device if self.tc.device != "auto" else state.train_config.get("device", "auto"))
            tc = dataclasses.replace(TrainConfig(**state.train_config).resolved(device),
                                     checkpoint_minutes=self.tc.checkpoint_minutes, keep=self.tc.keep)
            self.pieces = corpus.layout(self.data_dir, "train", limit=tc.bytes, verify=False)
            sched = ReaderSchedule.for_device(device, tc.minutes, tc.reader, widen(tc.minutes))
        except (ShardError, DeviceError, ValueError) as exc:
            raise TrainError(str(exc)) from None
        self.tc, n = tc, corpus.text_length(self.pieces)
        rcfg = cfg.reader_config(device, tc.minutes)
        articles = manifest["splits"]["train"].get("articles")
        out = run_plan(cfg, tc, n, device, sched if rcfg is not None else None,
                       articles if isinstance(articles, int) else None, self.holdout_of(n), resume=True)
        spent = state.elapsed
        done = {"memory (count + mixer)": state.reader_t0 is not None or state.holdout_counted,
                "match index": state.cursor > 0, "reader": state.reader_done, "mix": state.mix_done,
                "final count": state.holdout_counted}
        left = {}
        for phase, secs in out["phases"].items():  # the budget's spent seconds go to the phases in order
            if secs is None or done.get(phase):
                left[phase] = None if secs is None and not done.get(phase) else 0.0
                continue
            take = min(secs, spent) if tc.minutes is not None else 0.0
            left[phase], spent = secs - take, spent - take
        out["phases"], out["resume"] = left, {"checkpoint": ckpt.name, "step": state.step, "cursor": state.cursor,
                                              "elapsed": state.elapsed, "finished": state.holdout_counted}
        self.log(f"resuming {ckpt.name}: step {state.step:,}, {state.cursor / 1e6:,.1f} of {n / 1e6:,.1f} MB counted, "
                 f"{state.elapsed:,.0f} s of the budget spent"
                 + (" (the run is finished: --resume would do nothing)" if state.holdout_counted else ""))
        for line in format_plan(out):
            self.log(line)
        self.log("dry run, nothing written")
        return out

    def phases(self) -> dict:
        st, reader = self.state, self.model.reader
        if self.comm.size > 1 and reader is not None:
            try:
                self.shard = parallel.ReaderShard(self.comm, reader.cfg, self.model.dev.gpu)
            except parallel.SplitError as exc:
                raise TrainError(str(exc)) from None
        with StopRequested() as stop:
            self.memory_phase(stop)
            if reader is not None and self.stopped is None and not st.holdout_counted:
                if self.tail is None:  # the memory's loop ended before its tail (a bytes budget's last step)
                    self.tail = ([(a, b) for a, b in self.held if b <= st.cursor]
                                 or [(st.cursor, min(self.n, st.cursor + self.holdout))])
                    self.tail_bytes = sum(b - a for a, b in self.tail)
                if not st.reader_done:
                    rc = reader.cfg
                    try:
                        self.ptrs.reader_begin(counted_ranges(self.held, st.cursor), rc.lanes,
                                               rc.scan_chunk if rc.scan else 1, self.sched.order)
                    except ValueError as exc:
                        raise TrainError(str(exc)) from None
                    self.reader_phase(stop)
                    self.ptrs.reader_end()
                if self.stopped is None and not st.mix_done:
                    self.mix_phase(stop)
            # still under StopRequested up to the final checkpoint: a Ctrl-C or SIGTERM here must not lose the run
            if self.stopped is None and not st.holdout_counted:
                self.final_count()
            self.index_to(st.cursor)
            final_state = self.snapshot()
            self.model.history_len = st.cursor
            if self.save:
                self.checkpoint()
        return self.summary(final_state)

    def summary(self, final_state: dict) -> dict:
        st = self.state
        self.phase = "done"
        val_bpb = self.validate()
        out = {"steps": st.step, "counted_bytes": st.cursor, "train_bytes": self.n, "elapsed": final_state["elapsed"],
               "count_seconds": self.count_seconds,
               "count_mb_per_s": self.count_bytes / 1e6 / self.count_seconds if self.count_seconds else None,
               "val_bpb": val_bpb, "train_bpb": self.ema, "stopped": self.stopped, "losses": self.losses,
               "device": self.model.device, "heldout": st.heldout, **self.reader_stats}
        self.write_metrics({"final": True, **{k: v for k, v in out.items() if k != "losses"}})
        if self.keep_model:
            out["model"], out["history"] = self.model, self.data[:st.cursor]
        return out


def train(data_dir: Path, run_dir: Path, model_cfg: ModelConfig | None, tc: TrainConfig, resume: bool = False,
          log=print, save: bool = True, stop_after_steps: int | None = None,
          keep_model: bool = False, stop_after_reader_steps: int | None = None, dry_run: bool = False,
          comm: Comm | None = None) -> dict:
    """Train (Trainer); returns a summary. The run directory is locked for the whole run. dry_run:
    log and return the plan (plan.py) instead, writing nothing. comm (comm.py): with several
    processes, rank 0 trains as one process would and the others join its reader phase
    (parallel.reader_worker: they read data_dir and write nothing)."""
    comm = comm or Solo()
    if dry_run:
        return Trainer(data_dir, run_dir, model_cfg, tc, resume, log, save=False).dry_run()
    if comm.rank > 0:
        return parallel.reader_worker(comm, Path(data_dir), log)
    with RunLock(run_dir, create=not resume):
        trainer = Trainer(data_dir, run_dir, model_cfg, tc, resume, log, save, stop_after_steps, keep_model,
                          stop_after_reader_steps, comm)
        try:
            return trainer.run()
        finally:
            if not trainer.workers_told:  # no reader phase for the others to join (or rank 0 failed first)
                parallel.no_reader(comm)


def counted_ranges(held, cursor: int) -> list[tuple[int, int]]:
    """data[:cursor] without the held-out blocks: the bytes in the count tables."""
    out, at = [], 0
    for lo, hi in held:
        if lo >= cursor:
            break
        if lo > at:
            out.append((at, lo))
        at = hi
    if at < cursor:
        out.append((at, cursor))
    return out or [(0, max(1, cursor))]


def mix_ranges(tail, most: int) -> list[tuple[int, int]]:
    """The held-out ranges, each cut to the same share so that they hold at most `most` bytes."""
    total = sum(b - a for a, b in tail)
    if total <= most:
        return list(tail)
    keep = most / total
    return [(a, a + max(1, int((b - a) * keep))) for a, b in tail]


def _path_bits(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bits per byte of per-bit probabilities p (B, 8) of the true bytes y."""
    bits = (y[:, None].astype(np.int64) >> (7 - np.arange(8))) & 1
    q = np.clip(np.where(bits == 1, p, 1 - p), 1e-9, 1.0)
    return -np.log2(q).sum(axis=1)

