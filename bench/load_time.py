"""Where `cheaplm sample RUN --max-bytes 1` spends its start-up (issue 25 item 5), in one process.

    python bench/load_time.py RUN_DIR [--repeats 2] [--code PATH] [--json OUT]

Times, in order: importing the package (numba's cached kernels are loaded lazily, on first call),
then checkpoint.load_model's steps as it runs them (each wrapped, not re-implemented): the .npz
member headers, the meta, mapping the members (_npz_arrays), unpacking the tables
(tablepack.unpack), the NaN / infinity scan of every float array (_count_nonfinite), building the
Model (the reader and the match model), the history's mapping and fingerprint, and the rest
(the index's bounds check); then the sample command's Generator over the history and one byte
drawn. Each repeat is a fresh process (the files are in the page cache after the first: warm).
--big-reader times what load_model does with a reader's weights of the H200 default's size (622,560,030
float32, written once to /tmp/cheaplm-big-reader.npz): the members mapped as checkpoint.MAPPED
says, or read (MAPPED without reader_params), then the NaN scan and the Reader's own copy.
--code runs another copy of the package (e.g. `git archive COMMIT cheaplm | tar -x -C DIR`) for a
before/after comparison on the same run.
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


BIG = r"""
import sys, time, pathlib, numpy as np
from cheaplm import checkpoint
p = pathlib.Path("/tmp/cheaplm-big-reader.npz")
mapped = checkpoint.MAPPED if sys.argv[1] == "mapped" else checkpoint.MAPPED - {"reader_params"}
t = time.perf_counter()
z = checkpoint._npz_arrays(p, mapped)
t1 = time.perf_counter()
checkpoint._count_nonfinite(z["reader_params"])
t2 = time.perf_counter()
own = np.array(z["reader_params"], copy=True)  # Device.own on the CPU
t3 = time.perf_counter()
print(f"{sys.argv[1]}: members {t1 - t:.2f} s, NaN scan {t2 - t1:.2f} s, the Reader's copy {t3 - t2:.2f} s, "
      f"total {t3 - t:.2f} s", flush=True)
"""


def big_reader(repeats: int, code: Path) -> None:
    import numpy as np

    path = Path("/tmp/cheaplm-big-reader.npz")
    if not path.exists():
        np.savez(path, reader_params=np.random.default_rng(0).standard_normal(622_560_030, dtype=np.float32))
    for _ in range(repeats):
        for mode in ("read", "mapped"):
            out = subprocess.run([sys.executable, "-c", BIG, mode], capture_output=True, text=True, cwd=code)
            print(out.stdout.strip() or out.stderr[-2000:], flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path, nargs="?")
    ap.add_argument("--big-reader", action="store_true")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--code", type=Path, default=ROOT, help="the directory holding the cheaplm package to time")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.big_reader:
        return big_reader(args.repeats, args.code)
    rows = []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD, str(args.run)], capture_output=True, text=True,
                             cwd=args.code)
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
