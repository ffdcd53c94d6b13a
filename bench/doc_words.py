"""A/B of the document words (cheaplm/docwords.py) in the memory-reader mix, on one trained run.

The run's memory and reader read the first --bytes of a split it has not counted (val) once, after
its history, as evaluation does. The mix is then fitted from its start (the memory alone,
reader.init_mix) on the first half, once without D and once with it (the same steps, rate, seed
and batches), and both are scored on the second half; the run's own mix is scored there too. D is
causal (a position reads only its document's past), and neither half is in the count tables.

    python bench/doc_words.py --run RUN --data DATA --bytes 262144 --save-mix DIR

--save-mix writes DIR/mix_off.npz and DIR/mix_doc.npz (reader_mix, reader_mix_doc) for
`bench/language_quality.py answers --mix FILE`, so that answers with and without D differ only in D.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cheaplm import corpus  # noqa: E402
from cheaplm.checkpoint import load_model  # noqa: E402
from cheaplm.docwords import DOC_SETS, doc_inputs  # noqa: E402
from cheaplm.reader import MixFit, init_mix, mix_loss  # noqa: E402
from cheaplm.shards import load_split  # noqa: E402


def read_both(model, history, stream, batch: int = 4096):
    """(pm, pr) (n, 8) of the stream's true bytes after the history, and the joined text."""
    h, n = len(history), len(stream)
    data = corpus.with_room(history, n)
    data[h:] = stream
    prev = model.match.pointers(n)
    model.match.index(data, h, h + n, prev, h, last_pos=model.match.last_pos.copy())
    pr = model.reader.range_probs(data, [(h, h + n)], model.match.args(prev, h))
    pm = np.empty_like(pr)
    caches = model.caches(batch)
    for lo in range(0, n, batch):
        pos = np.arange(h + lo, h + min(lo + batch, n), dtype=np.int64)
        if len(pos) < batch:
            caches = model.caches(len(pos))
        pm[lo: lo + len(pos)] = model.memory_probs(data, pos, prev, h, caches)
    return pm, pr, data


def fit(pm, pr, y, doc, steps: int, batch: int, seed: int):
    f = MixFit(init_mix(), steps=steps, wd=np.zeros(DOC_SETS, np.float32) if doc is not None else None)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        pick = rng.integers(0, len(y), min(batch, len(y)), dtype=np.int64)
        f.step(pm[pick], pr[pick], y[pick], None if doc is None else (doc[0][pick], doc[1][pick]))
    return f


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--bytes", type=int, default=1 << 18, help="bytes of the split read (first half fits, second scores)")
    ap.add_argument("--steps", type=int, default=1500, help="Adam steps of each mix fit (training's mix_fit_steps)")
    ap.add_argument("--batch", type=int, default=16384)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-mix", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    model, history, ckpt = load_model(Path(args.run), device="cpu")
    split = load_split(Path(args.data), args.split)
    stream = np.ascontiguousarray(split[: args.bytes])
    n = len(stream)
    pm, pr, data = read_both(model, history, stream)
    h = len(history)
    y = stream.astype(np.uint8)
    t_read = time.perf_counter() - t0
    t1 = time.perf_counter()
    zd, cd = doc_inputs(data, [(h, h + n)])
    t_doc = time.perf_counter() - t1
    half = n // 2
    A, B = slice(0, half), slice(half, n)
    none = np.zeros((0, 3), np.float32)
    off = fit(pm[A], pr[A], y[A], None, args.steps, args.batch, args.seed)
    on = fit(pm[A], pr[A], y[A], (zd[A], cd[A]), args.steps, args.batch, args.seed)
    res = {
        "run": str(ckpt), "split": args.split, "bytes": n, "fit_bytes": half, "score_bytes": n - half,
        "steps": args.steps, "d_speaks": float(np.mean(np.any(zd[B] != 0, axis=1))),
        "run_mix_bpb": float(mix_loss(pm[B], pr[B], y[B], model.reader.mix, none).mean()),
        "off_bpb": float(mix_loss(pm[B], pr[B], y[B], off.w, none).mean()),
        "doc_bpb": float(mix_loss(pm[B], pr[B], y[B], on.w, none, (zd[B], cd[B], on.wd)).mean()),
        "off_fit_half_bpb": float(mix_loss(pm[A], pr[A], y[A], off.w, none).mean()),
        "doc_fit_half_bpb": float(mix_loss(pm[A], pr[A], y[A], on.w, none, (zd[A], cd[A], on.wd)).mean()),
        "read_seconds": t_read, "doc_seconds": t_doc, "doc_bytes_per_s": n / max(t_doc, 1e-9),
        "w_d": np.round(on.wd.reshape(8, -1), 2).tolist(),
    }
    # where D speaks and where it does not, on the scored half
    speak = np.any(zd[B] != 0, axis=1)
    lo = mix_loss(pm[B], pr[B], y[B], off.w, none)
    ld = mix_loss(pm[B], pr[B], y[B], on.w, none, (zd[B], cd[B], on.wd))
    res["bits_saved_where_d_speaks"] = float((lo - ld)[speak].sum() / (n - half))
    res["bits_saved_elsewhere"] = float((lo - ld)[~speak].sum() / (n - half))
    if args.save_mix:
        out = Path(args.save_mix)
        out.mkdir(parents=True, exist_ok=True)
        np.savez(out / "mix_off.npz", reader_mix=off.w, reader_mix_doc=np.zeros(DOC_SETS, np.float32))
        np.savez(out / "mix_doc.npz", reader_mix=on.w, reader_mix_doc=on.wd)
    text = json.dumps(res, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
