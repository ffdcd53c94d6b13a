"""Is `cheaplm train`'s memory estimate the memory it uses? (issue 11: it must be within 10% of the
peak RSS for "refuses to start if it will not fit" to be trusted.)

    python bench/train_memory.py DATA_DIR [--table-bits 16,18,20] [--minutes 0.5] [--train-opts "..."] [--json OUT]

Runs `cheaplm train DATA_DIR --device cpu --minutes M --table-bits N` as a child process for each N,
reads the estimate from its log ("memory estimate X MiB") and the host total of the plan the same
command prints with --dry-run (which must write nothing), and takes its peak resident set size
from wait4 (the kernel's ru_maxrss: the whole process, numba's compiler and all). Prints
estimate, peak, estimate/peak and the run's last val bpb for each (the same runs say which
table_bits suits the data).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure(data: Path, table_bits: int, minutes: float, extra: list[str], eval_split: str | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "cheaplm.cli", "train", str(data), "--out", str(Path(tmp) / "run"),
               "--device", "cpu", "--minutes", str(minutes), "--table-bits", str(table_bits),
               "--checkpoint-minutes", "0", *extra]
        # the plan `--dry-run` prints for the same command (issue 25: within 10% of the peak)
        dry = subprocess.run(cmd + ["--dry-run"], capture_output=True, text=True, cwd=ROOT)
        pm = re.search(r"host memory: ([\d,.]+) (GiB|MiB)", dry.stderr)
        plan = None if pm is None else float(pm.group(1).replace(",", "")) * (1024 if pm.group(2) == "GiB" else 1)
        if (Path(tmp) / "run").exists():
            sys.exit(f"--dry-run wrote {Path(tmp) / 'run'}")
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        log = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{log[-2000:]}")
        scored = None
        if eval_split:  # e.g. wikibench-val's "test" split, which is wikibench's val
            out = subprocess.run([sys.executable, "-m", "cheaplm.cli", "eval", str(Path(tmp) / "run"), str(data),
                                  "--split", eval_split], capture_output=True, text=True, cwd=ROOT)
            scored = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr.strip()[-300:]
    m = re.search(r"memory estimate ([\d,]+) MiB \(([^)]*)\)", log)
    if m is None:
        sys.exit(f"no memory estimate in the log of {' '.join(cmd)}")
    estimate = int(m.group(1).replace(",", ""))
    vals = re.findall(r"val ([\d.]+) bpb", log)
    peak = usage.ru_maxrss / 1024  # KiB -> MiB
    return {"table_bits": table_bits, "minutes": minutes, "estimate_mib": estimate, "parts": m.group(2),
            "peak_rss_mib": round(peak, 1), "estimate_over_peak": round(estimate / peak, 3),
            "plan_host_mib": None if plan is None else round(plan, 1),
            "plan_over_peak": None if plan is None else round(plan / peak, 3),
            "final_val_bpb": float(vals[-1]) if vals else None, "eval": scored,
            "seconds": round(time.perf_counter() - t0, 1), "command": " ".join(cmd[2:])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--table-bits", default="16,18,20")
    ap.add_argument("--minutes", type=float, default=0.5)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--eval-split", default=None, help="also score the trained run on this split (`cheaplm eval`)")
    ap.add_argument("--train-opts", default="", help='more `cheaplm train` options, e.g. "--bytes 3000000"')
    args = ap.parse_args()
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    rows = []
    for bits in [int(b) for b in args.table_bits.split(",")]:
        row = measure(args.data.resolve(), bits, args.minutes, args.train_opts.split(), args.eval_split)
        rows.append(row)
        print(f"table_bits {bits}: estimate {row['estimate_mib']:,} MiB, peak RSS {row['peak_rss_mib']:,.0f} MiB, "
              f"estimate/peak {row['estimate_over_peak']:.3f}, --dry-run plan {row['plan_host_mib']} MiB "
              f"(plan/peak {row['plan_over_peak']}), val {row['final_val_bpb']}, eval: {row['eval']}  ({row['parts']})", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "commit": commit,
                                         "command": " ".join(sys.argv), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
