"""How long a chat reply takes to start: from the typed line to the first byte the model draws.

    python bench/chat_first_byte.py RUN_DIR [--titles N]

Loads the model as `cheaplm chat` does, then for each question of bench/language_quality.py's
PROMPTS (or, with --titles N, "What is TITLE?" for N titles of the run's own history, spread over
it, so that recall finds every one: a history without the PROMPTS' articles recalls none) times
what chat does after Enter: frame (and recall) the question, start a new document, feed the frame
(and the recalled lead), draw the first byte at the default sampling. Prints the median and the
slowest, with and without recall, and the mean bytes fed; the process's load time is reported apart.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cheaplm import chat  # noqa: E402
from cheaplm.checkpoint import load_model  # noqa: E402
from cheaplm.recall import load_index  # noqa: E402
from cheaplm.sample import Generator, Sampling  # noqa: E402
from language_quality import PROMPTS  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--titles", type=int, default=0, help="questions from this many of the run's titles")
    args = ap.parse_args()
    t0 = time.perf_counter()
    model, history, ckpt = load_model(Path(args.run_dir))
    gen = Generator(model, history)
    index = load_index(ckpt.parent, history)
    print(f"load {time.perf_counter() - t0:.1f} s ({ckpt}, {len(index):,} articles)")
    rng = np.random.default_rng(0)
    sampling = Sampling()
    doc_style = b'<doc id="' in bytes(history[: 1 << 16])
    questions = [q for q, _ in PROMPTS]
    if args.titles:
        pick = np.linspace(0, len(index) - 1, args.titles).astype(int)
        questions = [f"What is {index.articles[i].title}?" for i in pick]
    # the first turn compiles nothing (numba's cache is on disk) but warms the caches: not counted
    for recall in (True, False):
        times, fed, found = [], [], 0
        for turn, question in enumerate([questions[0]] + questions):
            t = time.perf_counter()
            gen.new_document()
            data, lead, source = chat.prompt_bytes(question, doc_style, turn, index if recall else None, history)
            gen.feed(data)
            gen.sample(rng, sampling, allow_end=False)
            if turn:
                times.append(time.perf_counter() - t)
                fed.append(len(data))
                found += source is not None
        print(f"recall {'on ' if recall else 'off'}: first byte after Enter, median {np.median(times):.3f} s, "
              f"slowest {max(times):.3f} s over {len(times)} questions ({found} recalled an article; "
              f"{np.mean(fed):.0f} bytes fed on average)")


if __name__ == "__main__":
    main()
