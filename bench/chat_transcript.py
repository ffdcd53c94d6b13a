"""Record a `cheaplm chat` session in a pseudo-terminal, as a user would see it (for the README).

    python bench/chat_transcript.py RUN_DIR --seed 7 "What is a river?" "Who was Isaac Newton?"

Prints the terminal output (banner on stderr included, since a terminal shows both). With
`--elide SPLIT_DIR`, every stretch of 64+ bytes (or `--elide-min`) that is also in that split's train
text (recall's quotes, mostly) is shown as "[... N bytes of the training text ...]", as
bench/ANSWERS.md shows them: the data's text stays out of the repository.
"""

from __future__ import annotations

import argparse
import os
import pty
import select
import sys
import time


def read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    buf = b""
    end = time.time() + timeout
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            if buf.endswith(needle):
                break
    return buf


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("questions", nargs="+")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--temperature", default=None, help="default: chat's own")
    ap.add_argument("--no-recall", action="store_true")
    ap.add_argument("--elide", default=None, metavar="SPLIT_DIR",
                    help="elide what the output copies from this split's train text")
    ap.add_argument("--elide-min", type=int, default=None,
                    help="the shortest stretch elided (default: language_quality's COPY_LEN, 64; the README's "
                    "transcript: 32, so that the tail of a quote is too)")
    args = ap.parse_args()
    pid, fd = pty.fork()
    if pid == 0:
        extra = (["--temperature", args.temperature] if args.temperature else []) + (
            ["--no-recall"] if args.no_recall else [])
        os.execv(sys.executable, [sys.executable, "-m", "cheaplm.cli", "chat", args.run_dir, "--seed", str(args.seed),
                                  *extra])
    out = read_until(fd, b"> ", 120)
    for q in args.questions:
        os.write(fd, q.encode() + b"\r")
        out += read_until(fd, b"> ", 120)
    os.write(fd, b"exit\r")
    out += read_until(fd, b"\n", 10)
    os.waitpid(pid, 0)
    text = out.decode("utf-8", "replace").replace("\r\n", "\n")
    sys.stdout.write(elided(text, args.elide, args.elide_min) if args.elide else text)


def elided(text: str, split_dir: str, length: int | None = None) -> str:
    """`text` with each line's copies of the train split elided (language_quality's measure)."""
    from pathlib import Path

    import numpy as np

    from cheaplm.shards import load_split
    from language_quality import copy_cover, elide_copies

    lines = text.split("\n")
    encoded = [line.encode() for line in lines]
    covers = copy_cover(encoded, load_split(Path(split_dir), "train"), length)
    return "\n".join(elide_copies(b, c) if np.any(c) else line
                     for line, b, c in zip(lines, encoded, covers))


if __name__ == "__main__":
    main()
