"""Passes without memorising (issue 22 item 2): the reader alone, trained for several passes over a
small text, scored on held-out bytes after each pass it is asked about.

    python bench/passes.py --name default --passes 4 [--reader '{"ctx_bits": 12}']
                           [--sched '{"table_epochs": 1}'] [--json out.json]

Text (wikibench's source file, ../shared/data/SOURCES.md): train = its first --train-bytes bytes;
held-out = --heldout-bytes from the start of the val stretch (the 2 MB before the test), never
trained on. One data array holds both (held-out after train), and the match model's causal
pointers are built over it once, so the reader reads the match candidates as `cheaplm train`'s
reader does (the held-out bytes' candidates may point into train, as the mix's tail does).

Training is the reader phase of cheaplm/train.py at a bytes budget: its lanes of consecutive bytes
over the train text (stream order, the scan's state carried), the CPU schedule's rates
(schedule.ReaderSchedule: warm-up, flat to 60% of the run, linear to a tenth), the hashed rows
frozen once table_epochs passes are done. After each pass listed in --eval-at: the reader alone on
the held-out bytes (as train.py's "reader alone" held-out figure: reader.reader_bpb, the scan's
state from zero up to 2 KB before each piece) and, the same way, on the first --heldout-bytes of
the train text ("train bpb": what it has read, scored by the same forward).

A run of P passes takes its learning-rate schedule over P passes, so the figure after pass 1 of a
4-pass run is not a 1-pass run's (whose rate decays within the pass): run --passes 1 for that.
Everything is fixed by bytes and steps, never by seconds: the machine's load changes no number.
"""

from __future__ import annotations

import argparse
import json
import lzma
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402

from cheaplm.device import Device  # noqa: E402
from cheaplm.lanes import stream_positions  # noqa: E402
from cheaplm.match import MatchModel  # noqa: E402
from cheaplm.model import ModelConfig  # noqa: E402
from cheaplm.reader import Reader, ReaderConfig, describe, reader_bpb  # noqa: E402
from cheaplm.schedule import ReaderSchedule  # noqa: E402
from wikibench_data import TEST_START, VAL_BYTES, VIBHAS, read_checked  # noqa: E402

CACHE = ROOT / "bench" / "work" / "vibhas.bin"  # bench/work is git-ignored


def source_text(data_dir: Path) -> np.ndarray:
    if not CACHE.exists():
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        tmp = CACHE.with_suffix(".tmp")
        tmp.write_bytes(read_checked(data_dir, VIBHAS))
        tmp.rename(CACHE)
    return np.fromfile(CACHE, dtype=np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="run")
    ap.add_argument("--train-bytes", type=int, default=1_000_000)
    ap.add_argument("--heldout-bytes", type=int, default=1 << 17)
    ap.add_argument("--passes", type=int, default=4)
    ap.add_argument("--eval-at", default="1,2,4", help="passes after which to score (comma-separated)")
    ap.add_argument("--reader", default="{}", help="ReaderConfig options over the CPU defaults")
    ap.add_argument("--sched", default="{}", help="ReaderSchedule options over the CPU defaults")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--dropout-from", type=float, default=0.0,
                    help="apply the schedule's ctx_dropout only from this many passes done (as its ctx_dropout_from)")
    ap.add_argument("--commit", default=None, help="the commit, for a run from an exported tree (no .git)")
    args = ap.parse_args()

    src = source_text(Path(args.data))
    n_tr, n_ho = args.train_bytes, args.heldout_bytes
    val_lo = TEST_START - VAL_BYTES
    assert n_tr <= val_lo and n_ho <= VAL_BYTES
    data = np.ascontiguousarray(np.concatenate([src[:n_tr], src[val_lo: val_lo + n_ho]]))
    n = len(data)

    mcfg = ModelConfig.for_device("cpu")
    spec = mcfg.match_spec()
    match_model = MatchModel(spec, Device("cpu"))
    prev = match_model.pointers(n)
    match_model.index(data, 0, n, prev, 0)
    match = match_model.args(prev, 0)

    over = {"match_inputs": spec.inputs, "match_states": spec.states, **json.loads(args.reader)}
    cfg = ReaderConfig.for_device("cpu", **over)
    sched = ReaderSchedule.for_device("cpu", over=json.loads(args.sched))
    sched.validate(bool(cfg.scan))
    print(describe(cfg), flush=True)
    print(f"schedule: {sched}", flush=True)
    reader = Reader(cfg, "cpu")
    state = reader.new_state(cfg.lanes)
    chunk = cfg.scan_chunk if cfg.scan else 1
    ranges = [(1, n_tr)]
    counted = n_tr - 1
    # a pass: every lane has walked its stretch once (lanes.stream_positions)
    steps_per_pass = -(-(counted // cfg.lanes) // chunk)
    total = args.passes * steps_per_pass
    eval_at = sorted({int(x) for x in args.eval_at.split(",") if int(x) <= args.passes})

    res = {"name": args.name, "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv),
           "commit": args.commit or subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                                    capture_output=True, text=True).stdout.strip(),
           "reader": json.loads(reader.to_json()), "schedule": sched.__dict__, "train_bytes": n_tr,
           "heldout_bytes": n_ho, "dropout_from": args.dropout_from, "passes": args.passes,
           "steps_per_pass": steps_per_pass, "at": []}
    t0 = time.perf_counter()
    pass_loss = 0.0
    for step in range(total):
        pos = stream_positions(ranges, cfg.lanes, step, chunk)
        done = step * cfg.batch / counted
        frozen = ("table",) if done >= sched.table_epochs else ()
        drop = sched.ctx_dropout if done >= max(args.dropout_from, sched.ctx_dropout_from) else 0.0
        loss = reader.train_step(data, pos, sched.lr_at(step, step / total), match, state, frozen, sched.table_lr,
                                 drop, sched.weight_decay)
        if not np.isfinite(loss):
            raise SystemExit(f"Error: loss {loss} at step {step}")
        pass_loss += loss
        if (step + 1) % steps_per_pass == 0:
            k = (step + 1) // steps_per_pass
            rec = {"pass": k, "train_loss_pass": pass_loss / steps_per_pass, "seconds": time.perf_counter() - t0}
            pass_loss = 0.0
            if k in eval_at:
                rec["heldout_bpb"] = reader_bpb(reader, data, n_tr, n, data, match)
                rec["train_bpb"] = reader_bpb(reader, data, 1, 1 + n_ho, data, match)
                res["at"].append(rec)
            print(f"[{args.name}] pass {k}: mean train loss {rec['train_loss_pass']:.4f}"
                  + (f"  held-out {rec['heldout_bpb']:.4f}  train(first {n_ho}) {rec['train_bpb']:.4f}"
                     if "heldout_bpb" in rec else "") + f"  {rec['seconds']:.0f} s", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
