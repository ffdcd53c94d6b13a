"""Record a `cheaplm chat` session in a pseudo-terminal, as a user would see it (for the README).

    python bench/chat_transcript.py RUN_DIR --seed 7 "What is a river?" "Who was Isaac Newton?"

Prints the terminal output (banner on stderr included, since a terminal shows both).
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
    sys.stdout.write(out.decode("utf-8", "replace").replace("\r\n", "\n"))


if __name__ == "__main__":
    main()
