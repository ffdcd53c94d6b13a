"""`cheaplm train`: fill the count tables and fit the mixer, with checkpoints and exact resume.

Training is causal, as a compressor is: one step takes the next chunk of training bytes, fits the
mixer on a batch of positions from that chunk (its bytes are not in the tables yet, exactly as test
bytes will not be), then counts the chunk into the tables. Leave-one-out counts were tried first
and lose: they remove a position's own occurrence but keep the rest of its article, so the mixer
learned to trust high orders more than held-out text deserves (bench/NOTES.md).

Part of the data (GPU 20%, at most 32 MiB; CPU 5%, at most 8 MiB), in blocks spread evenly over
it, is kept out of the tables: after the counting phase a tail of mixer-only steps fits the mixer
to the final tables on those unseen bytes, which are counted at the very end. Spread, because the
training text is not alike from end to end (wikibench's last 100 MB are another source than its
first 55 MB and the test): a tail fitted on the end alone calibrated the mixer to the end
(bench/NOTES.md §7, §9).

Budget: `bytes` uses that many training bytes and runs a tail of 25% more steps (deterministic:
the resume tests use it); `minutes` counts until the data is used up or 75% of the time has
passed, then fits the mixer until the time is up or the tail has had its passes. The learning-rate
schedule follows the fraction of the budget spent, or of the work, whichever is further along.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX: runs are not locked
    fcntl = None

import numba
import numpy as np

from . import checkpoint
from .evaluate import stream_bpb
from .kernels.match import index_workspace, match_index_parallel
from .lanes import stream_positions
from .model import Model, ModelConfig, memory_estimate
from .options import check_keys
from .progress import Eta, fmt_seconds
from .shards import ShardError, load_split, read_manifest

# data kept uncounted for the mixer-only tail, by device: more is better (H200: 5%/8 MiB 1.5862,
# 20%/32 MiB 1.5777, bench/NOTES.md §9), but the CPU's 4096-position tail steps would take 40
# minutes for four passes over 32 MiB
HOLDOUT = {"cuda": (0.2, 32 << 20), "cpu": (0.05, 8 << 20)}
# held-out bytes the memory-reader mix is fitted on, at most: on 2 CPU cores reading 512 KB (both
# sides) took the whole 30 s kept for the mix, which then made one step (10 minutes, 8a9c076)
MIX_BYTES = {"cuda": 4 << 20, "cpu": 1 << 17}
# Adam steps of the mix: at 128 steps of lr 0.002 (two passes over 4 MB) the mix stayed near its start
# (the memory alone) and scored 0.046 worse than the reader alone (H200, 5 minutes, bench/NOTES.md §12)
MIX_STEPS = 1500
MIX_BATCH = 16384  # held-out bytes per step of the mix
MIX_MIN_STEPS = 100  # steps of the mix even when the budget's time is up (about a second on a CPU)
MIX_READ_SECONDS = {"cuda": 4.0, "cpu": 20.0}  # the least time kept for the mix: reading MIX_BYTES, a few steps
TAIL_PASSES = 4  # default: the tail sees each held-out byte about this many times, no more (it overfits)
TAIL = 0.25  # mixer-only steps after counting, as a share of the counting steps (bytes budget)
COUNT_SHARE = 0.75  # share of a minutes budget that counting may take
MIX_STEPS_MAX = 16  # most mixer updates per counted chunk under mix_steps auto


DEVICES = ("auto", "cpu", "cuda")


class TrainError(Exception):
    """User-facing training failure (one line)."""


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
                                                   or (isinstance(v, str) and "str" in kind))))
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
        return out


def run_configs(file: dict | None = None, model_flags: dict | None = None, train_flags: dict | None = None,
                resume: bool = False) -> tuple[ModelConfig | None, TrainConfig]:
    """The one merge of a training run's options: the command line's flags (only those given) over a
    --config file's 'model' and 'train' objects (options.read_config) over the library's defaults,
    the model's for the device the run will use (ModelConfig.for_device). Returns the model config
    (None on resume when no model option is given: the run's own is used; given ones must match it)
    and the training config with its device picked. Unknown keys and bad values: ValueError."""
    file = file or {}
    tc = TrainConfig.from_dict({**file.get("train", {}), **(train_flags or {})})
    tc.device = pick_device(tc.device)
    model_opts = {**file.get("model", {}), **(model_flags or {})}
    check_keys(ModelConfig, model_opts, "model")
    if resume and not model_opts:
        return None, tc
    return ModelConfig.for_device(tc.device, model_opts), tc


def with_resolved_reader(cfg: ModelConfig, device: str, minutes: float | None) -> ModelConfig:
    """cfg with its reader options resolved for the device and budget (ReaderConfig.for_device), as
    a run stores them; unchanged without a reader."""
    rcfg = cfg.reader_config(device, minutes)
    if rcfg is None:
        return cfg
    return ModelConfig.from_dict({**json.loads(cfg.to_json()), "reader": {"on": True, **asdict(rcfg)}})


def pick_device(name: str) -> str:
    from numba import cuda

    if name == "cpu":
        return "cpu"
    available = False
    try:
        available = cuda.is_available()
    except Exception:
        available = False
    if name == "cuda" and not available:
        raise TrainError("--device cuda: no CUDA GPU is available here (numba.cuda.is_available() is False); use --device cpu")
    return "cuda" if available else "cpu"


def available_memory(device: str) -> int:
    if device == "cuda":
        from numba import cuda

        free, _ = cuda.current_context().get_memory_info()
        return int(free)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def data_fingerprint(manifest: dict) -> str:
    shards = [s["sha256"] for s in manifest["splits"].get("train", {}).get("shards", [])]
    return hashlib.sha256(json.dumps(shards).encode()).hexdigest()[:16]


class IndexAhead:
    """Match pointers for data[start:end], built block by block in order on a background thread
    (kernels/match.py releases the GIL), or all at once when background is False."""

    FIRST_BLOCK = 2 << 20  # small, so that counting starts at once; then blocks double, since each
    MAX_BLOCK = 64 << 20  # call pays a fixed cost of merging its per-thread tables

    def __init__(self, data, start, end, minlens, bits, last_pos, prev, background: bool):
        self.args = (data, minlens, bits, last_pos, prev)
        self.last_pos = last_pos  # once done: the index of data[:end]
        self.start, self.end = start, end
        self.done = start
        self.error = None
        self.cv = threading.Condition()
        self.thread = None
        if background:
            self.thread = threading.Thread(target=self._run, name="match-index", daemon=True)
            self.thread.start()
        else:
            self._run()

    def _run(self) -> None:
        data, minlens, bits, last_pos, prev = self.args
        try:
            if self.thread is not None:
                # leave one core to the thread that drives the GPU (the setting is per thread)
                numba.set_num_threads(max(1, numba.get_num_threads() - 1))
            work = index_workspace(minlens, bits)
            lo, block = self.start, self.FIRST_BLOCK
            while lo < self.end:
                hi = min(lo + block, self.end)
                match_index_parallel(data, lo, hi, minlens, bits, last_pos, prev, 0, work)
                with self.cv:
                    self.done = hi
                    self.cv.notify_all()
                lo, block = hi, min(2 * block, self.MAX_BLOCK)
        except BaseException as exc:  # surfaced by wait() in the training thread
            with self.cv:
                self.error = exc
                self.cv.notify_all()

    def wait(self, end: int) -> None:
        """Block until the pointers of every position below `end` are built."""
        with self.cv:
            while self.done < min(end, self.end) and self.error is None:
                self.cv.wait()
        if self.error is not None:
            raise self.error


class StopRequested:
    """SIGINT/SIGTERM set a flag; the loop stops at the next step boundary and checkpoints. The
    final checkpoint is written inside this scope too, so a second Ctrl-C (or a SIGTERM) only
    repeats the request instead of interrupting the write (checkpoint.save also holds signals back
    while it writes)."""

    def __init__(self):
        self.flag = False
        self.signal = None

    def __enter__(self):
        self._old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (tests)
                pass
        return self

    def _handle(self, signum, frame):
        if self.flag:
            with contextlib.suppress(OSError):
                os.write(2, f"{signal.Signals(signum).name}: already stopping; writing the checkpoint first\n".encode())
            return
        self.flag = True
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


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


class RunLock:
    """A run directory locked for one training run: flock on RUN_DIR/.lock, which holds the pid.

    Two `train`s into one --out both ran and appended to one history.bin (issue 12 item 4); the
    second is now refused. The kernel drops the lock when the process ends, however it ends, so a
    killed run leaves no stale lock (the file stays, unlocked). A directory made here is removed
    again if the run fails before writing anything into it.
    """

    NAME = ".lock"

    def __init__(self, run_dir: Path, create: bool):
        self.run_dir = Path(run_dir)
        self.create = create  # False for --resume: a missing run is load_model's error to report
        self.fd: int | None = None
        self.made = False

    def __enter__(self) -> "RunLock":
        if fcntl is None or (not self.create and not self.run_dir.is_dir()):
            return self
        if self.create:
            try:
                self.run_dir.mkdir(parents=True)
                self.made = True
            except FileExistsError:
                if not self.run_dir.is_dir():
                    raise TrainError(f"{self.run_dir}: exists and is not a directory; choose another --out") from None
            except OSError as exc:
                raise TrainError(f"{self.run_dir}: cannot create the run directory ({exc.strerror or exc})") from None
        try:
            fd = os.open(self.run_dir / self.NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            self._remove_if_empty()
            raise TrainError(f"{self.run_dir}: cannot lock the run directory ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise TrainError(f"{self.run_dir}: another cheaplm train (pid {holder}) is using this run directory; "
                             "wait for it to finish or choose another --out") from None
        except OSError:  # a file system without locks: run unlocked rather than not at all
            os.close(fd)
            return self
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self.fd = fd
        return self

    def _remove_if_empty(self) -> None:
        if self.made:
            with contextlib.suppress(OSError):
                if {p.name for p in self.run_dir.iterdir()} <= {self.NAME}:
                    (self.run_dir / self.NAME).unlink(missing_ok=True)
                    self.run_dir.rmdir()

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None:
            self._remove_if_empty()  # still locked: nobody else is inside
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None


def train(data_dir: Path, run_dir: Path, model_cfg: ModelConfig | None, tc: TrainConfig, resume: bool = False,
          log=print, save: bool = True, stop_after_steps: int | None = None,
          keep_model: bool = False, stop_after_reader_steps: int | None = None) -> dict:
    """Train; returns a summary. `stop_after_steps` (memory steps) and `stop_after_reader_steps`
    stop early as an interruption would (tests). The run directory is locked for the whole run."""
    with RunLock(run_dir, create=not resume):
        return _train_locked(data_dir, Path(run_dir), model_cfg, tc, resume, log, save, stop_after_steps, keep_model,
                             stop_after_reader_steps)


def _train_locked(data_dir: Path, run_dir: Path, model_cfg: ModelConfig | None, tc: TrainConfig, resume: bool,
                  log, save: bool, stop_after_steps: int | None, keep_model: bool,
                  stop_after_reader_steps: int | None) -> dict:
    run_dir = Path(run_dir)
    if tc.minutes is None and tc.bytes is None and not resume:
        raise TrainError("give a budget: --minutes or --bytes")
    if tc.tail_passes < 0:
        raise TrainError(f"tail_passes must be 0 or more (got {tc.tail_passes})")
    if tc.mix_steps < 0:
        raise TrainError(f"mix_steps must be 0 (auto) or more (got {tc.mix_steps})")
    if (tc.minutes is not None and not (0 < tc.minutes < math.inf)) or (tc.bytes is not None and tc.bytes <= 0):
        raise TrainError("the budget must be positive and finite (got --minutes/--bytes of zero or less, or nan/inf)")
    if not (0 < tc.lr <= 1):  # also refuses nan; 1e6 diverged to val 6.1e15 bpb and was reported done
        raise TrainError(f"lr must be in (0, 1] (got {tc.lr})")
    if not (0 <= tc.checkpoint_minutes < math.inf):
        raise TrainError(f"checkpoint_minutes must be 0 or more and finite (got {tc.checkpoint_minutes})")
    try:
        manifest = read_manifest(data_dir)
    except ShardError as exc:
        raise TrainError(str(exc)) from None
    device = pick_device(tc.device)
    tc = tc.resolved(device)

    if resume:
        try:
            ckpt = checkpoint.latest_checkpoint(run_dir)
            saved = checkpoint.read_state(ckpt)
        except checkpoint.CheckpointError as exc:
            raise TrainError(str(exc)) from None
        if saved.get("holdout_counted"):  # set by the final checkpoint of a run that ran to its end
            # nothing to continue: say so and write nothing (this rewrote the whole model file)
            log(f"{run_dir}: the run is finished ({ckpt.name}, {int(saved['step']):,} steps, its budget used up); "
                "nothing to do")
            summary = {"steps": int(saved["step"]), "counted_bytes": int(saved["cursor"]), "train_bytes": None,
                       "elapsed": float(saved["elapsed"]), "count_seconds": None, "count_mb_per_s": None,
                       "val_bpb": None, "train_bpb": None, "stopped": None, "losses": [], "device": device,
                       "heldout": None, "finished": True}
            if keep_model:
                try:
                    summary["model"], summary["history"], _ = checkpoint.load_model(run_dir, device, ckpt)
                except checkpoint.CheckpointError as exc:
                    raise TrainError(str(exc)) from None
            return summary
    log("compiling kernels (cached after the first run)…")

    state = None
    if resume:
        try:
            model, history, ckpt = checkpoint.load_model(run_dir, device=device)
            state = checkpoint.load_state(ckpt, model)
        except checkpoint.CheckpointError as exc:
            raise TrainError(str(exc)) from None
        if state["data"] != data_fingerprint(manifest):
            raise TrainError(f"{data_dir}: not the data this run was trained on (train shards differ)")
        saved_tc = TrainConfig(**state["train_config"])
        # the run stored its reader options resolved; the given ones are compared resolved the same way
        # (unresolved, any model option on --resume of a run with a reader was refused as different)
        if (model_cfg is not None and with_resolved_reader(model_cfg, device, saved_tc.minutes).to_json()
                != model.cfg.to_json()):
            raise TrainError(f"{run_dir}: model options differ from the run's own; resume without model options")
        # the schedule must be the one the run started with; how often to checkpoint and log changes
        # nothing learned, and is this invocation's (--checkpoint-minutes on --resume was ignored)
        tc = dataclasses.replace(saved_tc.resolved(device), checkpoint_minutes=tc.checkpoint_minutes, keep=tc.keep,
                                 log_seconds=tc.log_seconds)
        log(f"resuming {ckpt.name} at step {state['step']} with the run's own budget and schedule "
            f"(minutes {tc.minutes}, bytes {tc.bytes})")
        model_cfg = model.cfg
    else:
        if (run_dir / "latest").exists():
            raise TrainError(f"{run_dir}: already holds a run; pass --resume to continue it, or choose another --out")
        model = None
        model_cfg = model_cfg or ModelConfig()

    try:
        limit = tc.bytes if tc.bytes is not None else None
        train_bytes = load_split(data_dir, "train", limit=limit)
    except ShardError as exc:
        raise TrainError(str(exc)) from None
    try:
        val_bytes = load_split(data_dir, "val", limit=tc.val_bytes)
    except ShardError:
        val_bytes = None
    n_train = len(train_bytes)
    if n_train < 2:
        raise TrainError(f"{data_dir}: the train split holds {n_train} bytes; nothing to train on")
    if n_train >= 2**31 - 1:
        raise TrainError(f"{data_dir}: more than 2 GiB of training bytes; pass --bytes to use a part")

    est = memory_estimate(model_cfg, n_train, tc.batch, device, tc.minutes)
    need = sum(est.values())
    have = available_memory(device)
    log(f"device {device}; model: {len(model_cfg.contexts())} contexts, table_bits {model_cfg.table_bits}, "
        f"match {model_cfg.match_minlens}; memory estimate {need / 2**20:,.0f} MiB "
        f"({', '.join(f'{k} {v / 2**20:,.0f}' for k, v in est.items())}); available {have / 2**20:,.0f} MiB")
    log(f"train config: {json.dumps(asdict(tc))}")
    if need > have:
        raise TrainError(f"needs about {need / 2**30:.1f} GiB but only {have / 2**30:.1f} GiB is free on {device}; "
                         f"lower --table-bits (each step down halves the {est['tables'] / 2**30:.1f} GiB of tables) or --bytes")

    if model is None:
        # store the resolved options: the run loads the same reader on any device
        model_cfg = with_resolved_reader(model_cfg, device, tc.minutes)
        model = Model(model_cfg, device=device)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps({"model": json.loads(model_cfg.to_json()),
                                                         "train": asdict(tc), "data": str(data_dir)}, indent=2))
        state = {"step": 0, "cursor": 0, "elapsed": 0.0, "rng": None, "tokens_mixed": 0,
                 "data": data_fingerprint(manifest), "train_config": asdict(tc)}
        history = train_bytes[:0]
    rng = np.random.default_rng(tc.seed)
    if state["rng"] is not None:
        rng.bit_generator.state = state["rng"]

    # match pointers for every training position, built once on all threads (each points only
    # backwards, so a chunk's pointers never reach bytes after it); on resume the part up to the
    # cursor is rebuilt first and checked against the saved index
    n_m = len(model_cfg.match_minlens)
    prev = np.full((n_m, n_train), -1, dtype=np.int32)
    cursor = int(state["cursor"])
    indexed_to = cursor  # model.last_pos holds the index of train_bytes[:indexed_to]
    if cursor:
        if not np.array_equal(history, train_bytes[:cursor]):
            raise TrainError(f"{run_dir}: history.bin does not match the start of the training data")
        fresh_last = np.full_like(model.last_pos, -1)
        match_index_parallel(train_bytes, 0, cursor, model.minlens, model_cfg.match_bits, fresh_last, prev, 0)
        if not np.array_equal(fresh_last, model.last_pos):
            raise TrainError(f"{run_dir}: saved match index does not match history.bin (corrupt run)")
    t_index = time.perf_counter()
    # a GPU run counts while the host builds the rest of the index; a CPU run needs its threads itself
    ahead = IndexAhead(train_bytes, cursor, n_train, model.minlens, model_cfg.match_bits, model.last_pos.copy(), prev,
                       background=device == "cuda")
    if device != "cuda":
        log(f"match index of {(n_train - cursor) / 1e6:.1f} MB built in {time.perf_counter() - t_index:.1f} s")

    def index_to(end: int) -> None:
        # bring model.last_pos (saved with checkpoints, used by eval and generation) up to `end`
        nonlocal indexed_to
        if end > indexed_to:
            ahead.wait(n_train)  # one builder at a time: the parallel kernels share the thread pool
            if end == n_train:
                model.last_pos[:] = ahead.last_pos  # the builder's own index ends exactly there
            else:
                match_index_parallel(train_bytes, indexed_to, end, model.minlens, model_cfg.match_bits,
                                     model.last_pos, prev, 0)
            indexed_to = end

    if device == "cuda":
        from numba import cuda

        to_dev = cuda.to_device
        d_data = cuda.to_device(train_bytes)
        d_prev = cuda.device_array(prev.shape, dtype=prev.dtype)
        if cursor:
            d_prev[:, :cursor].copy_to_device(prev[:, :cursor])
    else:
        d_data, d_prev = train_bytes, prev
        to_dev = None
    caches = model.make_caches(tc.batch)

    # 5% of the data by default, at most 8 MiB; small data sets keep a quarter (up to 64 KiB) so the tail has text
    holdout = min(tc.holdout_max, max(int(n_train * tc.holdout_fraction), min(n_train // 4, 1 << 16)))
    held = ([(n_train - holdout, n_train)] if tc.holdout_at_end and holdout
            else holdout_blocks(n_train, holdout, tc.count_chunk))
    count_steps, at = 0, 0
    while (span := next_chunk(at, held, tc.count_chunk, n_train)) is not None:
        count_steps, at = count_steps + 1, span[1]
    count_steps = max(1, count_steps)
    total_steps = math.ceil(count_steps * (1 + TAIL)) if tc.bytes is not None else None
    step = int(state["step"])
    updates = int(state.get("updates", step))  # optimizer updates (several per step with mix_steps > 1)
    elapsed0 = float(state["elapsed"])
    metrics = open(run_dir / "metrics.jsonl", "a") if save else None
    last_log = last_val = last_ckpt = time.perf_counter()
    t_start = t_index  # the budget pays for building the match index too
    count_seconds, count_bytes = None, 0  # when counting ended, and how far (the counting phase's throughput)
    ema = None
    val_bpb = None
    losses = []
    stopped = None
    tail = None  # the uncounted (start, end) ranges the mixer-only tail trains on
    tail_bytes = 0  # their total length
    holdout_counted = bool(state.get("holdout_counted", False))
    tail_seen = int(state.get("tail_seen", 0))  # positions the tail has trained on
    t_update = t_other = None  # measured seconds per mixer update / per chunk besides them

    # a minutes budget usually outlasts the work (count everything, then the tail's passes), so the
    # schedule follows whichever is further along: time or steps (before, a CPU run that finished at
    # half its budget never decayed its learning rate)
    tail_len = sum(hi - lo for lo, hi in held)
    work_steps = count_steps + math.ceil(tc.tail_passes * tail_len / max(1, min(tc.batch, tail_len)))

    eta_of = Eta()

    def frac_done(elapsed: float) -> float:
        if total_steps is not None:
            return step / total_steps
        return min(1.0, max(elapsed / (tc.minutes * 60), step / work_steps))

    def snapshot() -> dict:
        return {"step": step, "cursor": cursor, "elapsed": elapsed0 + time.perf_counter() - t_start,
                "rng": rng.bit_generator.state, "tokens_mixed": state.get("tokens_mixed", 0), "updates": updates,
                "tail_seen": tail_seen, "holdout_counted": holdout_counted, "data": state["data"],
                **{k: state[k] for k in ("reader_done", "mix_done", "reader_t0", "reader_start_step") if k in state},
                "train_config": asdict(tc)}

    on_device_to = cursor  # match pointers copied to the GPU up to here

    def pointers_ready(end: int) -> None:
        nonlocal on_device_to
        ahead.wait(end)
        if device == "cuda" and end > on_device_to:
            for k in range(n_m):
                d_prev[k, on_device_to:end].copy_to_device(prev[k, on_device_to:end])
            on_device_to = end

    def save_checkpoint(snap: dict) -> None:
        try:
            checkpoint.save(run_dir, model, snap, train_bytes[:cursor], keep=tc.keep)
        except checkpoint.CheckpointError as exc:
            raise TrainError(str(exc)) from None

    def do_val() -> float | None:
        if val_bytes is None or len(val_bytes) == 0:
            return None
        return stream_bpb(model, train_bytes[:cursor], val_bytes, batch=min(tc.batch, 1 << 16))["bpb"]

    reader = model.reader
    # with a reader the memory's phases get a share of a minutes budget; the reader learns in the rest
    mem_minutes = None if tc.minutes is None else tc.minutes * (reader.cfg.memory_share if reader else 1.0)
    if mem_minutes is not None and reader is not None and reader.cfg.memory_seconds:
        mem_minutes = min(mem_minutes, reader.cfg.memory_seconds / 60)
    with StopRequested() as stop:
        while True:
            elapsed = elapsed0 + time.perf_counter() - t_start
            if total_steps is not None and step >= total_steps:
                break
            if mem_minutes is not None and elapsed >= mem_minutes * 60:
                break
            if state.get("reader_t0") is not None:
                break  # a resumed run whose memory phases had ended: on to the reader
            if tail is not None and tail_seen >= tc.tail_passes * tail_bytes:
                break  # counting is done and the tail has had its passes: finish early
            if stop.flag:
                stopped = stop.signal
                break
            if stop_after_steps is not None and step >= stop_after_steps:
                stopped = "stop_after_steps"
                break
            span = None if holdout_counted else next_chunk(cursor, held, tc.count_chunk, n_train)
            counting = span is not None and (mem_minutes is None or elapsed < COUNT_SHARE * mem_minutes * 60)
            if counting:
                # causal: score the next chunk with counts of everything before it, then count it
                t_chunk = time.perf_counter()
                lo, hi = span
                ranges = [span]
                pointers_ready(hi)
            else:
                if holdout_counted:
                    break  # every byte is counted: the run is complete (e.g. --resume of a finished run)
                if tail is None:
                    count_seconds, count_bytes = elapsed, cursor
                    # the tail trains on held-out bytes no table has seen: every block when counting
                    # finished, the blocks passed when time ran out, or the bytes after the cursor
                    tail = held if span is None else [(a, b) for a, b in held if b <= cursor]
                    tail = tail or [(cursor, min(n_train, cursor + max(holdout, tc.count_chunk)))]
                    tail_bytes = sum(b - a for a, b in tail)
                    pointers_ready(max(b for _, b in tail))
                ranges = tail
                tail_seen += min(tc.batch, tail_bytes)
            step += 1
            lr = lr_at(tc, step, frac_done(elapsed))
            n_mix = 1
            if counting:
                time_left = None if mem_minutes is None else COUNT_SHARE * mem_minutes * 60 - elapsed
                n_mix = mix_steps_for(tc, time_left, math.ceil((n_train - lo) / tc.count_chunk), t_update, t_other)
            t_iter = time.perf_counter()
            for _ in range(n_mix):
                pos = draw_positions(rng, ranges, tc.batch)
                if device != "cuda":
                    pos.sort()  # nearby positions share cache lines on the CPU; the GPU gains nothing for the sort's time
                d_pos = to_dev(pos) if to_dev else pos
                if len(pos) != caches.n_b:
                    caches = model.make_caches(len(pos))
                model.forward(d_data, d_pos, d_prev, 0, caches, loo=False)
                model.backward(d_data, d_pos, caches, 1.0 / len(pos))
                loss = float(np.mean(model.host(caches.loss), dtype=np.float64))
                if not math.isfinite(loss):
                    raise TrainError(f"loss became {loss} at step {step}; stopped without saving, the last good "
                                     f"checkpoint is intact (try a lower --lr than {tc.lr})")
                updates += 1
                model.update(updates, lr)
                state["tokens_mixed"] = state.get("tokens_mixed", 0) + len(pos)
            t_mixed = time.perf_counter()
            if counting:
                model.count(d_data, lo, hi)
                cursor = hi
                # per-update time (each update waits for its loss, so it is synchronous) and the rest
                # of the chunk (count and the wait for pointers), measured for mix_steps_for
                now = time.perf_counter()
                tu, to = (t_mixed - t_iter) / n_mix, (now - t_chunk) - (t_mixed - t_iter)
                t_update = tu if t_update is None else 0.8 * t_update + 0.2 * tu
                t_other = to if t_other is None else 0.8 * t_other + 0.2 * to
            losses.append(loss)
            ema = loss if ema is None else 0.95 * ema + 0.05 * loss
            now = time.perf_counter()
            if now - last_val >= tc.val_seconds:
                val_bpb = do_val()
                last_val = now
            if now - last_log >= tc.log_seconds or step == 1:
                el = elapsed0 + now - t_start
                fr = frac_done(el)
                eta = eta_of(el, fr)
                rec = {"step": step, "train_bpb": round(ema, 4), "val_bpb": None if val_bpb is None else round(val_bpb, 4),
                       "lr": lr, "counted": cursor, "mb_per_s": round(cursor / 1e6 / max(el, 1e-9), 3),
                       "elapsed": round(el, 1), "eta": round(eta, 1)}
                log(f"step {step:6d}  train {ema:.3f} bpb  val {'-' if val_bpb is None else f'{val_bpb:.3f}'} bpb  "
                    f"lr {lr:.2e}  counted {cursor / 1e6:.1f}/{n_train / 1e6:.1f} MB  {rec['mb_per_s']:.2f} MB/s  "
                    f"elapsed {fmt_seconds(el)}  ETA {fmt_seconds(eta)}")
                if metrics:
                    metrics.write(json.dumps(rec) + "\n")
                    metrics.flush()
                last_log = now
            if save and tc.checkpoint_minutes > 0 and now - last_ckpt >= tc.checkpoint_minutes * 60:
                index_to(cursor)
                save_checkpoint(snapshot())
                last_ckpt = now

        if reader is not None and stopped is None and not holdout_counted:
            if tail is None:  # the memory's loop ended before its tail (a bytes budget's last step)
                tail = [(a, b) for a, b in held if b <= cursor] or [(cursor, min(n_train, cursor + holdout))]
                tail_bytes = sum(b - a for a, b in tail)
            pointers_ready(n_train)
            stopped = reader_phases(model, tc, state, train_bytes, d_data, d_prev, to_dev,
                                    counted_ranges(held, cursor), tail, rng, lambda: elapsed0 + time.perf_counter() - t_start, stop, log, metrics,
                                    stop_after_reader_steps, count_rate=count_bytes / count_seconds if count_seconds else None)

        # still under StopRequested up to the final checkpoint: a Ctrl-C or SIGTERM here (a second
        # one after the stop included) must not lose the run (issue 12 item 2)
        if stopped is None and not holdout_counted:
            # the held-out bytes join the memory at the very end (those before the cursor, when time
            # ran out before counting finished)
            final = tail if tail is not None else [(a, b) for a, b in held if b <= cursor]
            for a, b in final:
                model.count(d_data, a, b)
            cursor = max([cursor] + [b for _, b in final])
            holdout_counted = True
        index_to(cursor)
        final_state = snapshot()
        model.history_len = cursor
        if save:
            save_checkpoint(final_state)
    val_bpb = do_val()
    summary = {"steps": step, "counted_bytes": cursor, "train_bytes": n_train, "elapsed": final_state["elapsed"],
               "count_seconds": count_seconds, "count_mb_per_s": count_bytes / 1e6 / count_seconds if count_seconds else None,
               "val_bpb": val_bpb, "train_bpb": ema, "stopped": stopped, "losses": losses, "device": device,
               "heldout": state.get("heldout")}
    if metrics:
        metrics.write(json.dumps({"final": True, **{k: v for k, v in summary.items() if k != "losses"}}) + "\n")
        metrics.close()
    if keep_model:
        summary["model"], summary["history"] = model, train_bytes[:cursor]
    return summary


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


def reader_phases(model, tc: TrainConfig, state: dict, data, d_data, d_prev, to_dev, ranges, tail, rng, clock,
                  stop, log, metrics, stop_after: int | None = None, count_rate: float | None = None) -> str | None:
    """The reader learns on the counted bytes for the rest of the budget (less the mix's share), then
    the memory-reader mix is fitted on the held-out tail, whose bytes no table has seen. Returns the
    signal name when interrupted. State keys reader_done / mix_done let a resumed run continue.
    count_rate (bytes/s of the memory's counting) sizes the time kept for counting the tail at the end."""
    from .reader import MixFit, mix_loss

    reader = model.reader
    rc = reader.cfg
    match = model.match_args(d_prev, 0)
    total = None if tc.minutes is None else tc.minutes * 60
    if total is not None:
        # the budget's end holds: the mix reading the held-out bytes (both sides) and its steps, then
        # the count of those bytes (train.py, after this): without this a 1-minute H200 run took 71 s
        tail_bytes_all = sum(b - a for a, b in tail)
        total = total - (1.2 * tail_bytes_all / count_rate if count_rate else 0.0)
    mix_at = None if total is None else total - max(rc.mix_share * tc.minutes * 60, MIX_READ_SECONDS[model.device])
    counted = sum(b - a for a, b in ranges)
    # the reader stops at max_epochs passes or when the budget's time is up, whichever comes first;
    # its learning rate follows whichever is further along (a bytes budget: the passes alone)
    steps_goal = max(1, math.ceil(rc.max_epochs * counted / rc.batch))
    start_step = int(state.get("reader_start_step", reader.step))
    state["reader_start_step"] = start_step
    t0, last = clock(), clock()
    t_phase = float(state.setdefault("reader_t0", t0))  # when the reader phase began (kept on resume)
    ema = None
    if not state.get("reader_done"):
        log(f"reader phase: {rc.batch} positions per step on {counted / 1e6:.1f} MB"
            + ("" if total is None else f" until {mix_at:.0f} s"))
        while True:
            now = clock()
            done = (reader.step - start_step) / steps_goal
            if (total is not None and now >= mix_at) or done >= 1.0:
                break
            if stop.flag:
                return stop.signal
            if stop_after is not None and reader.step >= stop_after:
                return "stop_after_steps"
            frac = done if total is None else max(done, (now - t_phase) / max(1e-9, mix_at - t_phase))
            if rc.order == "stream":
                pos = stream_positions(ranges, rc.lanes, reader.step - start_step, rc.scan_chunk if rc.scan else 1)
            else:
                pos = draw_positions(rng, ranges, rc.batch)
            if len(pos) < rc.batch:  # the GPU's products need the full batch; repeat positions
                pos = np.resize(pos, rc.batch)
            passes = (reader.step - start_step) * rc.batch / max(1, counted)
            frozen = ("table",) if passes >= rc.table_epochs else ()
            loss = reader.train_step(d_data, to_dev(pos) if to_dev else pos, frac, match, reader.training_state(),
                                     frozen)
            if not math.isfinite(loss):
                raise TrainError(f"reader loss became {loss} at reader step {reader.step}; try a lower reader lr")
            ema = loss if ema is None else 0.97 * ema + 0.03 * loss
            if clock() - last >= tc.log_seconds:
                last = clock()
                rate = (reader.step - start_step) * rc.batch / max(1e-9, last - t0)
                log(f"reader step {reader.step:6d}  train {ema:.3f} bpb (reader alone)  {rate / 1e6:.2f} M positions/s  "
                    f"elapsed {fmt_seconds(last)}")
                if metrics:
                    metrics.write(json.dumps({"reader_step": reader.step, "reader_train_bpb": round(ema, 4),
                                              "elapsed": round(last, 1)}) + "\n")
        state["reader_done"] = True
    if not state.get("mix_done"):
        # the mix is fitted on held-out bytes: both sides read them once (the reader in runs, as its
        # scan state needs their past), then Adam draws batches of them; the mix has a few hundred
        # weights, MIX_BYTES is plenty
        tail = mix_ranges(tail, MIX_BYTES[model.device])
        tail_pos = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in tail])
        n_tail = len(tail_pos)
        tail_pr = reader.range_probs(d_data, tail, match)
        tail_pm = np.empty_like(tail_pr)
        batch = min(tc.batch, n_tail)
        caches = model.make_caches(batch)
        for lo in range(0, n_tail, batch):  # the memory's reading, a batch at a time
            pos = np.resize(tail_pos[lo: lo + batch], batch)
            model.forward(d_data, to_dev(pos) if to_dev else pos, d_prev, 0, caches, loo=False)
            tail_pm[lo: lo + batch] = model.host(caches.prob)[: min(batch, n_tail - lo)]
        tail_y = data[tail_pos]
        fit = MixFit(reader.mix, steps=MIX_STEPS)
        for i in range(MIX_STEPS):
            if total is not None and clock() >= total and i >= MIX_MIN_STEPS:
                break
            if stop.flag:
                return stop.signal
            pick = rng.integers(0, n_tail, min(MIX_BATCH, n_tail), dtype=np.int64)
            fit.step(tail_pm[pick], tail_pr[pick], tail_y[pick])
        reader.mix = fit.w
        state["mix_done"] = True
        none = np.zeros((0, 3), np.float32)
        mixed = float(np.mean(mix_loss(tail_pm, tail_pr, tail_y, reader.mix, none)))
        alone = [float(np.mean(_path_bits(p, tail_y))) for p in (tail_pm, tail_pr)]
        state["heldout"] = {"memory": alone[0], "reader": alone[1], "mixed": mixed, "bytes": n_tail,
                            "mix_steps": fit.t}
        log(f"memory-reader mix fitted in {fit.t} steps on {n_tail / 1e6:.1f} MB held out: memory alone "
            f"{alone[0]:.4f}, reader alone {alone[1]:.4f}, mixed {mixed:.4f} bpb")
    return None


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

