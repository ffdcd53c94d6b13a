"""`cheaplm train ... --gpus N`: one process per GPU on this machine, or the world a launcher made.

With `--gpus N` (or `all`) and no world in the environment, `launch` starts N copies of the same
command, each with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR (127.0.0.1) and MASTER_PORT (a free
port) set as torchrun sets them; each copy then finds its world in the environment
(comm.World.from_env), uses GPU LOCAL_RANK and joins the others through NCCL. Under torchrun or
srun the environment is already there and `train` uses it (no processes are started; `--gpus`,
when given, must agree with WORLD_SIZE).

Signals: Ctrl-C reaches every process of the terminal's group; rank 0 stops at the next step,
checkpoints and tells the others to stop (they ignore SIGINT and SIGTERM themselves, parallel.py).
A SIGTERM to the launcher is passed to rank 0 alone, for the same. When a process fails, the others
are killed (they would wait for it in NCCL forever), one line on stderr names the rank, and its exit
status is returned; a rank still running long after rank 0 finished cleanly is killed the same way.
Under torchrun or srun the launcher's own watchdog does this (torchrun stops the group when one
process fails; srun with --kill-on-bad-exit).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time

from .comm import INSTALL_HINT, CommError, World

WORLD_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def visible_gpus() -> int:
    """CUDA GPUs this process can see (0 without a driver)."""
    from numba import cuda

    try:
        return len(cuda.gpus) if cuda.is_available() else 0
    except Exception:
        return 0


def parse_gpus(text: str, visible) -> int:
    """--gpus: a positive count or 'all', checked against the GPUs visible (visible: a count, or a
    function giving it, asked only when needed). CommError in one line otherwise."""
    text = str(text).strip().lower()
    if text == "all":
        n = visible() if callable(visible) else visible
        if n < 1:
            raise CommError("--gpus all: no CUDA GPU is visible here")
        return n
    try:
        n = int(text)
    except ValueError:
        raise CommError(f"--gpus {text!r}: give a number of GPUs (1 or more) or 'all'") from None
    if n < 1:
        raise CommError(f"--gpus {n}: give a number of GPUs (1 or more) or 'all'")
    if n > 1:
        have = visible() if callable(visible) else visible
        if n > have:
            raise CommError(f"--gpus {n}: only {have} CUDA GPU{'' if have == 1 else 's'} visible here")
    return n


def check_nccl() -> None:
    """CommError when CuPy (NCCL's binding) is not installed; looks, does not import."""
    if importlib.util.find_spec("cupy") is None:
        raise CommError(f"several GPUs need CuPy with NCCL, which is not installed; {INSTALL_HINT}")


def world_for(gpus: str | None, device: str | None, env=None, visible=visible_gpus) -> tuple[World, int]:
    """(the environment's world, how many processes to start here: 0 for none). A world in the
    environment wins; --gpus N > 1 without one asks for N processes. Bad combinations: CommError."""
    world = World.from_env(env)
    if world.size > 1:
        if gpus is not None and str(gpus).strip().lower() != "all" and parse_gpus(gpus, world.size) != world.size:
            raise CommError(f"--gpus {gpus} but the launcher's WORLD_SIZE is {world.size}")
        if device == "cpu":
            raise CommError("several processes train on GPUs (NCCL): not with --device cpu")
        check_nccl()
        return world, 0
    n = 1 if gpus is None else parse_gpus(gpus, visible)
    if n > 1:
        if device == "cpu":
            raise CommError(f"--gpus {n}: several GPUs, not with --device cpu")
        check_nccl()
    return world, (n if n > 1 else 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(rank: int, n: int, port: int, base=None) -> dict:
    env = dict(os.environ if base is None else base)
    env.update(RANK=str(rank), WORLD_SIZE=str(n), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(n),
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NCCL_NVLS_ENABLE="0")
    return env


def launch(n: int, argv: list[str], poll: float = 0.2, grace: float = 300.0, cmd: list[str] | None = None,
           say=None) -> int:
    """Run `python -m cheaplm.cli ARGV` (or cmd) as n processes (ranks 0..n-1 of one world); the
    exit status. A dead peer leaves the others waiting in NCCL forever, so: when a process exits
    non-zero (or is killed), the others are killed and one line names the rank; when rank 0 has
    finished cleanly and another is still running `grace` seconds later, that one is killed too."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    port = free_port()
    cmd = cmd or [sys.executable, "-m", "cheaplm.cli", *argv]
    procs = [subprocess.Popen(cmd, env=child_env(r, n, port)) for r in range(n)]

    def to_rank0(signum, frame):
        if procs[0].poll() is None:
            procs[0].send_signal(signal.SIGTERM)

    def stop_others() -> int:
        live = [p for p in procs if p.poll() is None]
        for p in live:
            p.kill()
        for p in procs:
            p.wait()
        return len(live)

    old = {signal.SIGTERM: signal.signal(signal.SIGTERM, to_rank0),
           signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN)}  # the terminal tells rank 0 itself
    try:
        done_at = None
        while True:
            codes = [p.poll() for p in procs]
            failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                rank, code = failed[0]
                how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
                stopped = stop_others()
                say(f"Error: rank {rank} of {n} {how}; stopped the {stopped} still running")
                return 128 - code if code < 0 else code
            if all(c is not None for c in codes):
                return 0
            if codes[0] == 0:
                done_at = done_at or time.monotonic()
                if time.monotonic() - done_at > grace:
                    rank = next(r for r, c in enumerate(codes) if c is None)
                    stopped = stop_others()
                    say(f"Error: rank 0 finished but rank {rank} of {n} was still running {grace:g} s later; "
                        f"stopped the {stopped} still running")
                    return 1
            time.sleep(poll)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
