"""What a training run will take, said before it starts (`cheaplm train ... --dry-run`).

Memory per part on the host and on the GPU (model.memory_estimate: the arrays the run allocates;
on a GPU the host also keeps the match pointers it builds ahead (every position's when the text
fits one match window, else a window's: pointers.py), the text's mapping, the match index the
builder walks and its per-thread tables, and a host copy of the tables while a checkpoint is
written; the GPU also holds the text once more while validation scores after it), the run
directory's disk (checkpoints, at most `keep` + 1 of them while the newest is written; no copy of
the text: text.json names the shards), and each phase's time. A minutes budget divides its time
as the Trainer does (schedule.ReaderSchedule's shares); a bytes budget is paced by the work, so
its times are rough: the training rates below, measured whole-run on 2 CPU cores and on an H200.

bench/train_memory.py checks the host total against a CPU run's peak RSS.
"""

from __future__ import annotations

import os

import numpy as np

from .match import position_dtype
from .memory import mixer_blocks
from .model import CPU_RUNTIME_BYTES, ModelConfig, memory_estimate
from .pointers import BLOCKS_PER_WINDOW, WINDOW, pointer_bytes

# training bytes per second of the memory phases, whole run (bench/RESULTS.md): 2-core CPU about
# 1.2 MB/s counting (schedule.py), H200 2.5-5 MB/s (mixer-bound, wikibench rows at dfa64e9/e5ca69c)
COUNT_RATE = {"cpu": 1.2e6, "cuda": 2.5e6}
# match pointers built per second on the host (kernels/match.py, all threads): about 20 MB/s on 2 cores
INDEX_RATE = 20e6
INDEX_RATE_PER_CORE = INDEX_RATE / 2  # assumed to scale with the cores (not measured beyond 2)
TITLE_LINE_BYTES = 64  # titles.tsv per article: three offsets and a title


def run_plan(cfg: ModelConfig, tc, n: int, device: str, sched=None, articles: int | None = None,
             holdout: int = 0) -> dict:
    """{"host": {part: bytes}, "gpu": {part: bytes}, "disk": {part: bytes}, "phases": {phase: seconds
    or None}} of a run over n training bytes with train config tc (resolved for device)."""
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
    if device == "cpu":
        host, gpu = est, {}
    else:
        gpu = {k_: v for k_, v in est.items() if k_ != "runtime"}
        gpu["text again (validation)"] = n
        threads = os.cpu_count() or 1
        host = {"runtime": CPU_RUNTIME_BYTES, "text (mapped)": n,
                "match pointers": (n * k * width if not windowed
                                   else pointer_bytes(n, window, k, holdout, steps)["match pointers"]),
                "match index (builder's)": est["match index"],
                # the builder's walk (and a checkpoint's, beside it when windowed): per-thread tables
                "match walks' per-thread tables": (2 if windowed else 1) * k * threads * (width << cfg.match_bits),
                "tables (checkpoint's host copy)": est["tables"]}
    model_npz = cfg.table_bytes() + cfg.table_rows() + 4 * n_params + est["match index"] + 4 * reader_params
    state_npz = 8 * n_params + 8 * reader_params
    disk = {"checkpoints": (tc.keep + 1) * (model_npz + state_npz),
            "titles.tsv": TITLE_LINE_BYTES * (articles if articles is not None else n // 2000),
            "text.json, config.json, metrics.jsonl": 1 << 20}
    disk["checkpoints"] = int(disk["checkpoints"])
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
        phases = {"match index": index, "memory (count + mixer)": n * 1.25 / rate,
                  "reader": None if rcfg is not None else 0.0, "mix": None if rcfg is not None else 0.0,
                  "final count": holdout / rate}
    block = max(1, window // BLOCKS_PER_WINDOW)
    cores = os.cpu_count() or 1
    pointers = {"window": window, "windowed": windowed, "block": block,
                # a reader sweep walks the counted text (at most n) for each block of positions read
                "sweep_seconds": (n / (INDEX_RATE_PER_CORE * cores)) if windowed else None}
    return {"host": host, "gpu": gpu, "disk": disk, "phases": phases, "train_bytes": n, "device": device,
            "pointers": pointers}


def _size(b: float) -> str:
    return f"{b / 2**30:,.2f} GiB" if b >= 2**30 else f"{b / 2**20:,.0f} MiB"


def format_plan(plan: dict) -> list[str]:
    """The plan as lines for a terminal."""
    lines = [f"plan for {plan['train_bytes'] / 1e6:,.1f} MB of training text on {plan['device']}:"]
    for where, label in (("host", "host memory"), ("gpu", "GPU memory")):
        parts = plan[where]
        if parts:
            lines.append(f"  {label}: {_size(sum(parts.values()))} "
                         f"({', '.join(f'{k} {_size(v)}' for k, v in parts.items())})")
    p = plan.get("pointers")
    if p and p["windowed"]:
        lines.append(f"  match pointers: a window of {p['window']:,} positions (the text is longer): blocks of "
                     f"{p['block']:,} built ahead of counting, the held-out bytes', and for the reader a sweep "
                     f"of the counted text per {p['block']:,} positions read (up to {p['sweep_seconds']:,.0f} s "
                     "each on this host's cores, in the background on a GPU)")
    elif p:
        lines.append(f"  match pointers: every position's (the text fits one window of {p['window']:,})")
    lines.append(f"  run directory disk: at most {_size(sum(plan['disk'].values()))} "
                 f"({', '.join(f'{k} {_size(v)}' for k, v in plan['disk'].items())}); no copy of the text")
    known = [v for v in plan["phases"].values() if v is not None]
    lines.append("  time: " + ", ".join(f"{k} {'paced by the work' if v is None else f'{v:,.0f} s'}"
                                        for k, v in plan["phases"].items())
                 + f"; about {sum(known) / 60:,.1f} min" + (" plus the reader's passes" if len(known) < len(plan["phases"]) else ""))
    return lines
