"""One model trained by several processes (one per GPU): which rank does what, and what they send.

Rank 0 runs the whole `Trainer` (train.py) as a one-process run does: it counts, fits the mixers,
writes every checkpoint and metric, and decides every step. The other ranks (`reader_worker`) join
for the reader phase only, which is where the time goes (a 5-minute H200 run: 22 s counting, 250 s
reader): the reader is data-parallel.

- The reader's batch is rank 0's, as one process would draw it (its positions, lane-major runs of
  consecutive bytes); rank r reads lanes [r L / W, (r + 1) L / W) of it with its own share of the
  scan's state (`ReaderShard`). Each rank's backward adds its part of the gradient of the global
  mean loss (scale 1 / global batch), the dense weights' part of the flat gradient buffer is summed
  over ranks (all_reduce, fp32), the table's as below, and every rank takes the same Adam step:
  the parameters stay equal without being sent.
- The hashed rows (the embedding table) are replicated, and their gradient is not summed whole:
  a step touches at most reader.touched_rows_max rows of the table's 8.4 M (x5 reader: 30,721 for
  one of 8 GPUs' 2,048 positions). Each rank lists the distinct rows its positions read with their
  gradient rows (kernels/table_rows.py; a list of that fixed length, -1 past the count, as NCCL
  needs equal parts), the lists are all-gathered, and every rank adds them back into its zeroed
  rows in rank order and runs the same row-wise lazy Adam over the gathered rows. A list names a
  row once, so the adds need no atomics: every replica makes the same sums, to the bit (on the
  stand-in they equal the whole-table all_reduce this replaced, 0 + g0 + g1 in rank order).
  Computed, not timed (bench/multi_gpu_volume.py, bench/NOTES.md §22): the whole table's all_reduce
  was 2.2 GB a step, the lists are 31 MB at 2 GPUs and 57 MB at 8, and the dense weights' 328 MB
  all_reduce is now the larger part. Sharding the table by row hash (rank h % W owning row h; the
  rows a batch reads requested from their owners before forward, their gradients sent back after
  backward: Reader.forward's gather and backward's scatter) would move about as much (588 against
  630 MB a step at 8 GPUs) for two exchanges on forward's critical path and sharded checkpoints;
  its gain is memory (the table and its moments split W ways), worth it once the table does not
  fit one GPU.
- The memory (count tables, match index, mixers) is counted by rank 0 alone: the reader reads the
  match model's pointers but never the count tables, and only rank 0 saves, so the tables never
  need to travel; counting is about 10% of a GPU run's time. Splitting it by shard and reducing
  would go in Trainer.count_chunk (each rank counting its share of a chunk's rows into its own
  tables, then an all_reduce of the touched rows); the tables' saturating counts are not a plain
  sum, so that needs its own tests first.
- At the reader phase's start rank 0 sends its setup (the reader's config and state, the match
  pointers of the whole text); each step it sends the step's controls and positions; at the end a
  stop, then every rank's lanes of the scan state come back to rank 0 for the checkpoint. A
  checkpoint therefore holds the global state (all lanes, the global step, the data cursor, one
  Adam state) and resumes with any world size whose lanes divide evenly.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import asdict
from pathlib import Path

import numpy as np

from . import corpus
from .comm import Comm, broadcast_json
from .device import Device
from .shards import ShardError

HEADER = 6  # a step's message: go, lr, ctx dropout, table frozen, table lr, weight decay; then the positions


class SplitError(ValueError):
    """The world cannot share this run's reader (a batch that does not split, other text): one line."""


class ReaderShard:
    """This rank's part of the reader's global batch: positions [lo, hi) and scan lanes [lane_lo, lane_hi)."""

    def __init__(self, comm: Comm, rcfg, gpu: bool):
        w, b = comm.size, rcfg.batch
        lanes = rcfg.lanes if rcfg.scan else b
        if lanes % w or b % w:
            raise SplitError(f"the reader's {lanes} lanes (batch {b}) do not split evenly over {w} processes")
        if gpu and (b // w) % 64:
            raise SplitError(f"the reader's batch {b} over {w} GPUs is {b // w} positions each; the GPU's products "
                             "need a multiple of 64")
        self.comm, self.batch = comm, b
        self.lo, self.hi = comm.rank * b // w, (comm.rank + 1) * b // w
        self.lane_lo, self.lane_hi = comm.rank * lanes // w, (comm.rank + 1) * lanes // w
        self.msg = np.zeros(HEADER + b, np.float64)

    def step(self, reader, data, pos: np.ndarray, lr: float, match, frozen: tuple, table_lr: float, drop: float,
             wd: float) -> float:
        """One update of the reader on this rank's part of the global positions pos; the global mean loss."""
        state = reader.training_state()
        if state is not None:
            state = state[self.lane_lo: self.lane_hi]  # a view: the step moves the full state's rows on
        return reader.train_step(data, reader.dev.put(np.ascontiguousarray(pos[self.lo: self.hi])), lr, match,
                                 state, frozen, table_lr, drop, wd, comm=self.comm)

    def send(self, pos, lr, frozen, table_lr, drop, wd) -> None:
        """Rank 0: the step's controls and positions to every rank."""
        m = self.msg
        m[:HEADER] = (1.0, lr, drop, 1.0 if "table" in frozen else 0.0, table_lr, wd)
        m[HEADER:] = pos
        self.comm.broadcast(m)

    def receive(self):
        """Other ranks: the next step's (pos, lr, frozen, table_lr, drop, wd), or None at the end."""
        m = self.msg
        self.comm.broadcast(m)
        if m[0] == 0.0:
            return None
        go, lr, drop, frozen, table_lr, wd = m[:HEADER]
        return m[HEADER:].astype(np.int64), lr, ("table",) if frozen else (), table_lr, drop, wd

    def stop(self) -> None:
        self.msg[:] = 0.0
        self.comm.broadcast(self.msg)

    def gather_state(self, reader) -> None:
        """Every rank's lanes of the scan state into rank 0's (the others keep theirs)."""
        if not reader.cfg.scan:
            return
        state = reader.training_state()
        part = reader.host(state)[self.lane_lo: self.lane_hi]
        full = np.empty(state.shape, np.float32)
        self.comm.all_gather(np.ascontiguousarray(part), full)
        if self.comm.rank == 0:
            reader.train_state = reader.dev.own(full)


# ---- rank 0 --------------------------------------------------------------------------------------

def share_setup(comm: Comm, model, n: int, d_prev, tc_bytes, reader_start_step: int) -> None:
    """Rank 0, at the reader phase's start: what the other ranks need to join it."""
    reader = model.reader
    broadcast_json(comm, {"go": True, "device": model.device, "reader": asdict(reader.cfg), "n": n,
                          "bytes": tc_bytes, "step": reader.step, "prev": list(d_prev.shape),
                          "prev_dtype": np.dtype(d_prev.dtype).name,
                          "minlens": [int(x) for x in model.match.minlens],
                          "spec": [int(x) for x in model.match.spec.array()],
                          "start": reader_start_step})
    _share_arrays(comm, reader, d_prev)


def no_reader(comm: Comm) -> None:
    """Rank 0: there is no reader phase to join (memory only, finished, stopped or failed before it)."""
    broadcast_json(comm, {"go": False})


def _share_arrays(comm: Comm, reader, d_prev) -> None:
    comm.broadcast(d_prev)
    for arr in (reader.params, reader.adam_m, reader.adam_v):
        comm.broadcast(arr)
    if reader.cfg.scan:
        comm.broadcast(reader.training_state())


# ---- the other ranks -------------------------------------------------------------------------------

def reader_worker(comm: Comm, data_dir: Path, log=print) -> dict:
    """A rank > 0: wait for rank 0's reader phase, take part in each of its steps, send back the scan
    state. Writes nothing. SIGINT and SIGTERM are left to rank 0, which stops everyone."""
    from .reader import Reader, ReaderConfig

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
    setup = broadcast_json(comm)
    if not setup["go"]:
        return {"rank": comm.rank, "reader_steps": 0}
    dev = Device(setup["device"])
    try:
        data = corpus.map_text(Path(data_dir), corpus.layout(Path(data_dir), "train", limit=setup["bytes"]))
    except (ShardError, OSError) as exc:
        raise SplitError(f"rank {comm.rank}: {exc}") from None
    if len(data) != setup["n"]:
        raise SplitError(f"rank {comm.rank}: {data_dir} holds {len(data)} training bytes, rank 0 trains on {setup['n']}")
    reader = Reader(ReaderConfig.from_dict(setup["reader"]), setup["device"])
    reader.step = setup["step"]
    kind = np.dtype(setup["prev_dtype"])  # int32, or int64 for a text past 1.75 GiB (pointers.py)
    prev = dev.empty(tuple(setup["prev"]), kind) if dev.gpu else np.empty(tuple(setup["prev"]), kind)
    if reader.cfg.scan:
        reader.training_state()
    _share_arrays(comm, reader, prev)
    match = (prev, 0, dev.put(np.asarray(setup["minlens"], np.int64)), dev.put(np.asarray(setup["spec"], np.int64)))
    shard = ReaderShard(comm, reader.cfg, dev.gpu)
    d_data = dev.put(data)
    steps = 0
    while (got := shard.receive()) is not None:
        pos, lr, frozen, table_lr, drop, wd = got
        shard.step(reader, d_data, pos, lr, match, frozen, table_lr, drop, wd)
        steps += 1
    shard.gather_state(reader)
    return {"rank": comm.rank, "reader_steps": steps, "reader": reader}
