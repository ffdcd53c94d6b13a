"""Where `cheaplm sample RUN --max-bytes 1` spends its start-up (issue 25 item 5), in one process.

    python bench/load_time.py RUN_DIR [--repeats 2] [--json OUT]

Times, in order: importing the package (numba's cached kernels are loaded lazily, on first call),
then checkpoint.load_model's steps as it runs them (each wrapped, not re-implemented): the .npz
member headers, the meta, mapping the members (_npz_arrays), unpacking the tables
(tablepack.unpack), the NaN / infinity scan of every float array (_count_nonfinite), building the
Model (the reader and the match model), the history's mapping and fingerprint, and the rest
(the index's bounds check); then the sample command's Generator over the history and one byte
drawn. Each repeat is a fresh process (the files are in the page cache after the first: warm).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from cheaplm import checkpoint, tablepack
from cheaplm.sample import Generator, Sampling
t_import = time.perf_counter() - t0
times = {}
def wrap(owner, name, label):
    real = getattr(owner, name)
    def timed(*a, **k):
        t = time.perf_counter()
        try:
            return real(*a, **k)
        finally:
            times[label] = times.get(label, 0.0) + time.perf_counter() - t
    setattr(owner, name, timed)
wrap(checkpoint, "npz_headers", "npz headers")
wrap(checkpoint, "_npz_arrays", "npz members mapped / read")
wrap(tablepack, "unpack", "tables unpacked")
wrap(checkpoint, "_count_nonfinite", "NaN scan")
wrap(checkpoint, "Model", "Model built (reader, match)")
wrap(checkpoint, "load_history", "history mapped")
wrap(checkpoint, "history_fingerprint", "history fingerprint")
t = time.perf_counter()
model, history, ckpt = checkpoint.load_model(sys.argv[1])
load = time.perf_counter() - t
times["rest of load_model (meta, checks)"] = load - sum(times.values())
t = time.perf_counter()
gen = Generator(model, history)
gen.feed(b"The river")
t_gen = time.perf_counter() - t
t = time.perf_counter()
gen.sample(np.random.default_rng(1), Sampling())
t_byte = time.perf_counter() - t
print(json.dumps({"import": t_import, "load_model": load, "steps": times, "generator": t_gen, "first byte": t_byte,
                  "tables_bytes": int(model.memory.tables.nbytes)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD, str(args.run)], capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            sys.exit(out.stderr[-3000:])
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["process"] = time.perf_counter() - t0
        rows.append(row)
        steps = ", ".join(f"{k} {v:.2f}" for k, v in row["steps"].items())
        print(f"repeat {i}: process {row['process']:.2f} s; import {row['import']:.2f}, load_model {row['load_model']:.2f} "
              f"({steps}), generator {row['generator']:.2f}, first byte {row['first byte']:.2f}; "
              f"tables {row['tables_bytes'] / 2**30:.2f} GiB", flush=True)
    if args.json:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                                cwd=ROOT).stdout.strip()
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "commit": commit,
                                         "command": " ".join(sys.argv), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
