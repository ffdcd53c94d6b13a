"""What a training run will take, said before it starts (`cheaplm train ... --dry-run`).

Memory on the host and on the GPU as the most that is alive at once: each phase of the run lists
what it holds (model.memory_estimate's arrays, and for a GPU run the host's side), and the plan is
the phase that holds the most, named in the printed plan, with every phase's total beside it. The
run directory's disk (checkpoints, at most `keep` + 1 of them while the newest is written, their
tables counted dense: an upper bound, packed they take less; no copy of the text: text.json names
the shards), and each phase's time. A minutes budget divides its time as the Trainer does
(schedule.ReaderSchedule's shares); a bytes budget is paced by the work, so its times are rough:
the training rates below, measured whole-run on 2 CPU cores and on an H200.

A GPU run's phases (train.py, pointers.py, checkpoint.py, evaluate.py):
- counting: on the host the text's mapping (every page read: the text is copied to the GPU), the
  model's match index and the pointer builder's own, the pointers built ahead and the builder's
  per-thread tables (kernels/match.py index_workspace: np.full, every page touched); a windowed
  builder keeps its tables between blocks until counting ends.
- a checkpoint while counting (only when one can come: checkpoint_minutes > 0 and the memory
  phase may last that long): all of counting's, and beside it the checkpoint's own walk of the
  index (per-thread tables and a block of pointers), then the tables' host copy with the weights'
  and the packing's buffers (tablepack.write_packed), then the optimizer state's host copy.
- the reader (windowed): two sweeps of pointers, the block a sweep walks into and its per-thread
  tables; the counting blocks and the builder's tables are freed.
- the mix: both sides' probabilities of the held-out bytes read (MIX_BYTES), and a walk to a tail
  past the builder's (windowed).
- the final checkpoint: as a checkpoint while counting, without counting's blocks and builder.
- validation (every val_seconds while counting, and at the end): the counted text mapped again
  and copied to the GPU with the validation bytes, a copy of the index, the pointers of the
  validation bytes and evaluation's own batch caches. On the GPU this is the peak: everything
  training holds, the reader's and the lanes' text included, stays allocated.
  The counted bytes of a minutes budget are bounded by COUNT_RATE_MOST over counting's share.
A CPU run's arrays are one phase (model.memory_estimate, its runtime measured against peak RSS).

bench/train_memory.py checks the host total against a CPU run's peak RSS; bench/plan_10gb.py
prints the plan of issue 25's 10 GB H200 run.
"""

from __future__ import annotations

import os

import numpy as np

from .match import position_dtype
from .memory import mixer_blocks
from .model import CPU_RUNTIME_BYTES, ModelConfig, memory_estimate
from .pointers import BLOCKS_PER_WINDOW, WINDOW, pointer_bytes
from .tablepack import CHUNKS, GROUP, WIDTH

# training bytes per second of the memory phases, whole run (bench/RESULTS.md): 2-core CPU about
# 1.2 MB/s counting (schedule.py); H200 12.2 MB/s at 10 GB and 17.2 on wikibench's 155 MB (e88d66a)
COUNT_RATE = {"cpu": 1.2e6, "cuda": 12e6}
# the fastest counting the plan allows for when it bounds the counted bytes (validation's copy of
# them): about 1.5 x the fastest whole-run rate measured
COUNT_RATE_MOST = {"cpu": 2.5e6, "cuda": 25e6}
# match pointers built per second on the host (kernels/match.py, all threads): about 20 MB/s on 2 cores
INDEX_RATE = 20e6
INDEX_RATE_PER_CORE = INDEX_RATE / 2  # assumed to scale with the cores (not measured beyond 2)
TITLE_LINE_BYTES = 64  # titles.tsv per article: three offsets and a title
ARTICLE_BYTES = 2000  # a training text's bytes per article, when the manifest does not say
# a GPU run's process on the host holds CUDA's driver, libraries and context besides the CPU
# runtime; and on the GPU a context and the kernels' modules. Neither was measured on its own:
# the 10 GB H200 run (bench/RESULTS.md) left 0.59 GiB of its peak RSS beside the arrays alive at
# it (packing buffers included) and 0.43 GiB of nvidia-smi's peak beside the GPU's arrays
CUDA_HOST_BYTES = 512 << 20
CUDA_CONTEXT_BYTES = 512 << 20


def counted_most(n: int, tc, device: str, mem_seconds: float | None, holdout: int) -> int:
    """The most bytes a run can have counted (what validation copies to the GPU): all n for a bytes
    budget, else what COUNT_RATE_MOST counts in counting's share of the memory phase, and the
    held-out bytes the final count adds."""
    from .train import COUNT_SHARE

    if tc.minutes is None or mem_seconds is None:
        return n
    return min(n, int(COUNT_RATE_MOST[device] * COUNT_SHARE * mem_seconds) + holdout)


def pack_buffer_bytes(rows: int, counted: int, contexts: int) -> int:
    """The most of tablepack.write_packed's group buffers alive at once for tables of `rows` rows
    after `counted` bytes: one class's rows of a group (GROUP of the CHUNKS chunks) at a time; a
    byte adds 8 to the counts of 2 rows per context, so few rows can need uint16 or uint32."""
    group = min(rows, -(-rows * GROUP // CHUNKS) + GROUP)  # chunks of rows * c // CHUNKS rows each
    adds = 8 * contexts * counted
    return max(group * WIDTH,  # uint8 rows
               min(group, adds // 256) * WIDTH * 2,  # uint16: a count over 255
               min(group, adds // 65536) * WIDTH * 4,  # uint32: a count over 65,535
               group * (4 + WIDTH - 5))  # sparse: a mask and at most 27 counts


def mid_run_checkpoints(tc, mem_seconds: float | None) -> bool:
    """Whether a checkpoint can be written while counting (train.py memory_phase): the memory phase
    lasts at most mem_seconds of a minutes budget; a bytes budget's is paced by the work."""
    return tc.checkpoint_minutes > 0 and (tc.minutes is None or mem_seconds is None
                                          or mem_seconds >= tc.checkpoint_minutes * 60)


def _biggest(options: dict) -> dict:
    """The largest of named alternative working sets {name: {part: bytes}}: its parts."""
    return max(options.values(), key=lambda parts: sum(parts.values()))


def gpu_host_phases(cfg: ModelConfig, tc, n: int, est: dict, ptr: dict, windowed: bool, rcfg, reader_params: int,
                    n_params: int, counted: int, mid_checkpoint: bool, mid_validation: bool, threads: int) -> dict:
    """{phase: {part: bytes}} on the host of a GPU run (the module docstring)."""
    k = len(cfg.match_minlens)
    width = np.dtype(position_dtype(n)).itemsize
    index = est["match index"]
    walk_tables = k * max(2, threads) * (width << cfg.match_bits)  # kernels/match.py index_workspace
    base = {"runtime": CPU_RUNTIME_BYTES + CUDA_HOST_BYTES, "text (mapped)": n,
            "match index (model's and builder's)": 2 * index}
    weights = 4 * (n_params + reader_params)
    save = _biggest({
        "titles": {"titles (the counted text read once)": counted + TITLE_LINE_BYTES * (counted // ARTICLE_BYTES)},
        "model.npz": {"tables (host copy)": cfg.table_bytes(), "weights (host copy)": weights,
                      "packing (classes, a group's rows)": cfg.table_rows()
                      + pack_buffer_bytes(cfg.table_rows(), counted, len(cfg.contexts()))},
        "state.npz": {"optimizer state (host copy)": 2 * weights}})
    walk = {"checkpoint's walk (per-thread tables)": walk_tables, "checkpoint's walk (a block of pointers)": ptr["walk block"]}
    checkpoint = _biggest({"walk": walk, "save": save})
    counting = {**base, "match pointers (counting)": ptr["counting"],
                "builder's walk (per-thread tables)": walk_tables}
    if not windowed:
        # every position's pointers all along; a checkpoint first waits for the builder to finish
        after = {**base, "match pointers": ptr["counting"]}
        phases = {"counting": counting}
        if mid_checkpoint:
            phases["checkpoint while counting"] = {**after, **checkpoint}
    else:
        after = {**base, "match pointers (held-out bytes)": ptr["held-out"]}
        phases = {"counting": counting}
        if mid_checkpoint:  # the builder keeps its blocks and tables beside the checkpoint's
            phases["checkpoint while counting"] = {**counting, **checkpoint}
        if rcfg is not None:
            phases["reader"] = {**base, "match pointers (reader's sweeps)": ptr["reader"],
                                "sweep's walk (per-thread tables)": walk_tables}
    if rcfg is not None:
        from .train import MIX_BYTES

        # both sides' bit probabilities of the held-out bytes read; a tail past the walk is walked to
        phases["mix"] = {**after, "mix's probabilities (memory's and reader's)": 2 * 8 * 4 * MIX_BYTES["cuda"]}
        if windowed:
            phases["mix"].update({"tail's walk (per-thread tables)": walk_tables,
                                  "tail's walk (a block of pointers)": ptr["walk block"]})
    phases["final checkpoint"] = {**after, **checkpoint}
    phases["validation"] = {**(counting if mid_validation else after),
                            "counted text (mapped again)": counted, "match index (validation's copy)": index,
                            "validation's pointers": k * tc.val_bytes * width}
    return phases


def run_plan(cfg: ModelConfig, tc, n: int, device: str, sched=None, articles: int | None = None,
             holdout: int = 0, resume: bool = False) -> dict:
    """{"host": {part: bytes}, "gpu": {part: bytes} (each at its peak phase), "host_phase",
    "gpu_phase" (which phase that is), "host_phases", "gpu_phases" ({phase: bytes}), "disk":
    {part: bytes}, "phases": {phase: seconds or None}, ...} of a run over n training bytes with
    train config tc (resolved for device); `resume`: the run directory may hold checkpoints already."""
    window = tc.match_window or WINDOW
    est = memory_estimate(cfg, n, tc.batch, device, tc.minutes, window, holdout)
    n_params = sum(size for _, size in mixer_blocks(cfg, cfg.match_spec()))
    reader_params = 0
    rcfg = cfg.reader_config(device, tc.minutes)
    if rcfg is not None:
        from .reader import param_count

        reader_params = param_count(rcfg)
    k = len(cfg.match_minlens)
    width = np.dtype(position_dtype(n)).itemsize
    steps = rcfg.lanes * (rcfg.scan_chunk if rcfg.scan else 1) if rcfg is not None else 0
    windowed = n > window
    rate = COUNT_RATE[device]
    index = (n / INDEX_RATE) if device == "cpu" else 0.0  # a GPU run builds pointers in the background
    if tc.minutes is not None:
        total = tc.minutes * 60
        share = sched.memory_share if (sched and rcfg is not None) else 1.0
        mem = total * share
        if rcfg is not None and sched and sched.memory_seconds:
            mem = min(mem, sched.memory_seconds)
        final = 1.2 * holdout / rate
        mix = 0.0 if rcfg is None else max(sched.mix_share * total, 20.0 if device == "cpu" else 4.0)
        reader = 0.0 if rcfg is None else max(0.0, total - mem - mix - final)
        phases = {"match index": index, "memory (count + mixer)": mem, "reader": reader, "mix": mix,
                  "final count": final}
    else:
        mem = None
        phases = {"match index": index, "memory (count + mixer)": n * 1.25 / rate,
                  "reader": None if rcfg is not None else 0.0, "mix": None if rcfg is not None else 0.0,
                  "final count": holdout / rate}
    mid_checkpoint = mid_run_checkpoints(tc, mem)
    counted = counted_most(n, tc, device, mem, holdout)
    if device == "cpu":
        host_phases, gpu_phases = {"training": est}, {}
    else:
        ptr = pointer_bytes(n, window, k, holdout, steps)
        host_phases = gpu_host_phases(cfg, tc, n, est, ptr, windowed, rcfg, reader_params, n_params, counted,
                                      mid_checkpoint, mem is None or mem >= tc.val_seconds, os.cpu_count() or 1)
        # the match index lives on the host only
        training = {"CUDA context": CUDA_CONTEXT_BYTES,
                    **{k_: v for k_, v in est.items() if k_ not in ("runtime", "match index")}}
        gpu_phases = {"training": training,
                      "validation": {**training, "counted text and validation bytes (validation's copy)":
                                     counted + tc.val_bytes,
                                     "validation's pointers": k * tc.val_bytes * width,
                                     # evaluate.py's own, of min(batch, 65536, the validation bytes)
                                     "batch caches (validation's)": est["batch caches"]
                                     * min(tc.batch, 1 << 16, tc.val_bytes) // tc.batch}}
    host_phase = max(host_phases, key=lambda p: sum(host_phases[p].values()))
    gpu_phase = max(gpu_phases, key=lambda p: sum(gpu_phases[p].values())) if gpu_phases else None
    model_npz = cfg.table_bytes() + cfg.table_rows() + 4 * n_params + est["match index"] + 4 * reader_params
    state_npz = 8 * n_params + 8 * reader_params
    # a new run that writes no checkpoint while counting writes one, at its end
    copies = tc.keep + 1 if (mid_checkpoint or resume) else 1
    disk = {"checkpoints": copies * (model_npz + state_npz),
            "titles.tsv": TITLE_LINE_BYTES * (articles if articles is not None else n // ARTICLE_BYTES),
            "text.json, config.json, metrics.jsonl": 1 << 20}
    block = max(1, window // BLOCKS_PER_WINDOW)
    cores = os.cpu_count() or 1
    pointers = {"window": window, "windowed": windowed, "block": block,
                # a reader sweep walks the counted text (at most n) for each block of positions read
                "sweep_seconds": (n / (INDEX_RATE_PER_CORE * cores)) if windowed else None}
    return {"host": host_phases[host_phase], "gpu": gpu_phases[gpu_phase] if gpu_phase else {},
            "host_phase": host_phase, "gpu_phase": gpu_phase,
            "host_phases": {p: sum(v.values()) for p, v in host_phases.items()},
            "gpu_phases": {p: sum(v.values()) for p, v in gpu_phases.items()},
            "counted_most": counted, "checkpoints_while_counting": mid_checkpoint, "checkpoint_copies": copies,
            "disk": disk, "phases": phases, "train_bytes": n, "device": device, "pointers": pointers}


def _size(b: float) -> str:
    return f"{b / 2**30:,.2f} GiB" if b >= 2**30 else f"{b / 2**20:,.0f} MiB"


def format_plan(plan: dict) -> list[str]:
    """The plan as lines for a terminal."""
    lines = [f"plan for {plan['train_bytes'] / 1e6:,.1f} MB of training text on {plan['device']}:"]
    for where, label in (("host", "host memory"), ("gpu", "GPU memory")):
        parts, by_phase = plan[where], plan.get(f"{where}_phases") or {}
        if parts:
            peak = f" at its peak, in {plan[f'{where}_phase']}" if len(by_phase) > 1 else ""
            lines.append(f"  {label}: {_size(sum(parts.values()))}{peak} "
                         f"({', '.join(f'{k} {_size(v)}' for k, v in parts.items())})")
            if len(by_phase) > 1:
                lines.append(f"    {label} by phase: " + ", ".join(f"{k} {_size(v)}" for k, v in by_phase.items()))
    p = plan.get("pointers")
    if p and p["windowed"]:
        lines.append(f"  match pointers: a window of {p['window']:,} positions (the text is longer): blocks of "
                     f"{p['block']:,} built ahead of counting, the held-out bytes', and for the reader a sweep "
                     f"of the counted text per {p['block']:,} positions read (up to {p['sweep_seconds']:,.0f} s "
                     "each on this host's cores, in the background on a GPU)")
    elif p:
        lines.append(f"  match pointers: every position's (the text fits one window of {p['window']:,})")
    if plan["device"] != "cpu":
        lines.append(f"  checkpoints while counting: {'can come' if plan['checkpoints_while_counting'] else 'none'}"
                     f"; validation copies at most {plan['counted_most'] / 1e6:,.1f} MB counted")
    copies = plan.get("checkpoint_copies")
    disk = {(f"checkpoints ({copies}, tables as dense: packed they take less)" if k == "checkpoints" and copies else k): v
            for k, v in plan["disk"].items()}
    lines.append(f"  run directory disk: at most {_size(sum(disk.values()))} "
                 f"({', '.join(f'{k} {_size(v)}' for k, v in disk.items())}); no copy of the text")
    known = [v for v in plan["phases"].values() if v is not None]
    lines.append("  time: " + ", ".join(f"{k} {'paced by the work' if v is None else f'{v:,.0f} s'}"
                                        for k, v in plan["phases"].items())
                 + f"; about {sum(known) / 60:,.1f} min" + (" plus the reader's passes" if len(known) < len(plan["phases"]) else ""))
    return lines
