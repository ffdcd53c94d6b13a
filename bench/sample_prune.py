"""Generation with and without the nibbles the mix makes unlikely left out (Stream.distribution's
floor, Generator.sample): bytes/s on the caller's cores and whether the text is the same.

    python bench/sample_prune.py RUN_DIR [--bytes 3000]

For each of four samplings: one Generator fed "The river", 300 bytes to warm up, then --bytes
bytes never ending the article, seed 1; once with distribution's floor forced to 0 (the whole
tree), once as generation runs. Prints the sampling, "same" or "DIFF", and both rates.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cheaplm.checkpoint import load_model
from cheaplm.sample import Generator, Sampling, generate

SAMPLINGS = [Sampling(), Sampling(temperature=0.8, top_p=0.95, min_p=0.05),
             Sampling(temperature=1.3, top_k=12, top_p=0.9, min_p=0.05), Sampling(subject=2.0)]


def run(model, history, sampling: Sampling, leave_out: bool, n: int) -> tuple[str, float]:
    g = Generator(model, history)
    if not leave_out:
        whole = g.distribution
        g.distribution = lambda gain=1.0, inside=None, floor=0.0: whole(gain, inside, 0.0)
    g.feed(b"The river")
    rng = np.random.default_rng(1)
    list(generate(g, rng, 300, sampling, allow_end=False))
    t = time.perf_counter()
    text = "".join(generate(g, rng, n, sampling, allow_end=False))
    return text, len(text.encode()) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--bytes", type=int, default=3000)
    args = ap.parse_args()
    model, history, _ = load_model(args.run_dir)
    print("| sampling | whole tree, bytes/s | nibbles left out, bytes/s | text |\n|---|---|---|---|")
    for s in SAMPLINGS:
        a, ra = run(model, history, s, False, args.bytes)
        b, rb = run(model, history, s, True, args.bytes)
        print(f"| T {s.temperature}, top-k {s.top_k}, top-p {s.top_p}, min-p {s.min_p}, subject {s.subject} "
              f"| {ra:,.0f} | {rb:,.0f} | {'the same' if a == b else 'DIFF'} |")


if __name__ == "__main__":
    main()
