"""Runs wikibench.py jobs side by side, one GPU each, on a machine with several GPUs.

    python bench/parallel_runs.py bench/jobs/NAME.json OUT_DIR [--only a,b] [--detach c]

The jobs file is a list of {"name": ..., "args": [wikibench.py arguments]}; the i-th job of the
file runs with CUDA_VISIBLE_DEVICES=i (each job alone on its card, so its minutes are the card's), writing
OUT_DIR/NAME.json and OUT_DIR/NAME.log. Jobs named in --detach start in a new session and are
not waited for (a run longer than one device command: a later command waits for its .json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("jobs")
    ap.add_argument("out")
    ap.add_argument("--only", default="", help="comma-separated job names (default: all)")
    ap.add_argument("--detach", default="", help="comma-separated job names to leave running")
    args = ap.parse_args()
    jobs = json.loads(Path(args.jobs).read_text())
    keep = set(args.only.split(",")) if args.only else {j["name"] for j in jobs}
    detach = set(filter(None, args.detach.split(",")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bench = Path(__file__).resolve().parent
    procs = []
    for gpu, job in enumerate(jobs):  # a job's card is its place in the file, --only or not
        if job["name"] not in keep:
            continue
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(gpu), PYTHONUNBUFFERED="1")
        cmd = [sys.executable, str(bench / "wikibench.py"), *job["args"], "--label", job["name"],
               "--json", str(out / f"{job['name']}.json")]
        log = open(out / f"{job['name']}.log", "w")
        p = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=job["name"] in detach)
        print(f"gpu {gpu}: {job['name']}: {' '.join(cmd[1:])}", flush=True)
        if job["name"] not in detach:
            procs.append((job["name"], p))
    bad = 0
    for name, p in procs:
        rc = p.wait()
        print(f"{name}: exit {rc}", flush=True)
        bad += rc != 0
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
