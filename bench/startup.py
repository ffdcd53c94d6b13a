"""Start-up and size of a trained run, as a laptop user meets them (issue 11).

    python bench/startup.py RUN_DIR [RUN_DIR ...] [--repeats 5] [--code PATH] [--json OUT]

For each run: its directory's size on disk (model.npz, state.npz, history.bin, the rest) and its
checkpoint format; then `cheaplm sample RUN_DIR --prompt ... --max-bytes 1` started as a new process
--repeats times after one untimed run (warm: the files are in the page cache, as on a second use),
timing from the spawn to the first byte drawn (after the prompt's echo) and to the process's exit. The median of each
is reported, with the process's peak RSS (from wait4). --code runs another checkout's package (a
`git worktree` of an earlier commit) for a before/after comparison on the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "The river"


def run_size(run_dir: Path) -> dict:
    parts = {"model.npz": 0, "state.npz": 0, "history.bin": 0, "other": 0}
    for p in run_dir.rglob("*"):
        if p.is_file():
            key = p.name if p.name in parts else "other"
            parts[key] += p.stat().st_size
    parts["total"] = sum(parts.values())
    return parts


def checkpoint_format(run_dir: Path) -> int | None:
    ckpt = run_dir / (run_dir / "latest").read_text().strip()
    with zipfile.ZipFile(ckpt / "model.npz") as zf:
        import numpy as np

        with zf.open("meta.npy") as f:
            meta = json.loads(str(np.lib.format.read_array(f)))
    return meta.get("version")


def one_start(run_dir: Path, code: Path) -> tuple[float, float, int]:
    """Seconds to the first stdout byte and to exit, and the peak RSS in bytes, of one `sample`."""
    env = dict(os.environ, PYTHONPATH=str(code))
    cmd = [sys.executable, "-m", "cheaplm.cli", "sample", str(run_dir), "--prompt", PROMPT, "--max-bytes", "1",
           "--seed", "1"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=code)
    first = proc.stdout.read(len(PROMPT.encode()) + 1)  # sample echoes the prompt, then draws
    t_first = time.perf_counter() - t0
    proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    t_exit = time.perf_counter() - t0
    if not first or os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {os.waitstatus_to_exitcode(status)})")
    return t_first, t_exit, usage.ru_maxrss * 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--code", type=Path, default=ROOT, help="the checkout whose cheaplm runs `sample`")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                            cwd=args.code).stdout.strip()
    rows = []
    for run in [r.resolve() for r in args.runs]:  # `sample` runs in the --code checkout
        one_start(run, args.code)  # untimed: fills the page cache and numba's cache
        times = [one_start(run, args.code) for _ in range(args.repeats)]
        row = {"run": str(run), "format": checkpoint_format(run), "size": run_size(run), "code_commit": commit,
               "first_byte_s": statistics.median(t[0] for t in times),
               "exit_s": statistics.median(t[1] for t in times),
               "all_first_byte_s": [round(t[0], 3) for t in times],
               "peak_rss_mib": max(t[2] for t in times) / 2**20}
        rows.append(row)
        s = row["size"]
        print(f"{run}: format {row['format']}, {s['total'] / 2**20:,.0f} MiB on disk (model.npz "
              f"{s['model.npz'] / 2**20:,.0f}, state.npz {s['state.npz'] / 2**20:,.0f}, history.bin "
              f"{s['history.bin'] / 2**20:,.0f}, other {s['other'] / 2**20:,.0f}); sample at {commit}: first byte "
              f"{row['first_byte_s']:.2f} s (median of {args.repeats}, warm), exit {row['exit_s']:.2f} s, "
              f"peak RSS {row['peak_rss_mib']:,.0f} MiB", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv),
                                         "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
