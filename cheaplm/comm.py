"""Communication between the processes of a run on several GPUs: one small interface, three kinds.

A `Comm` knows its rank and the world's size and does four collectives, each called by every rank
in the same order: `all_reduce` (sum, in place), `broadcast` (from a root, in place), `all_gather`
(each rank's equal part, rank order) and `barrier`. Arrays are float32, float64, int32, int64, uint8,
or uint16 holding bf16 bits (as kernels/gemm.py keeps them: summed as bf16), on the host (numpy) or the GPU
(anything with __cuda_array_interface__, numba's device arrays included).

- `Solo`: a world of one; every collective leaves its array as it is. The one-process run.
- `Lockstep` (tests only): N ranks as N threads of one process, one running at a time (a rank runs
  until it reaches a collective, then the next one does), so numba's thread pool is never entered
  twice at once. A collective's result is computed when the last rank arrives, summing in rank
  order 0, 1, ..., N-1: deterministic, whatever the threads' timing. `run_ranks(n, fn)` runs them.
- `Nccl`: NCCL through CuPy's binding (cupy.cuda.nccl), imported only when asked for, so the
  package imports and runs without CuPy. NCCL's unique id travels from rank 0 to the others over
  TCP at MASTER_ADDR, port MASTER_PORT + 1 (torchrun's own store holds MASTER_PORT itself;
  CHEAPLM_ID_PORT overrides). NVLink multicast (NVLS) is set off before NCCL starts.

Where the processes are (`World.from_env`): RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT
as torchrun sets them, else SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID (srun), else a world of one.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass

import numpy as np

DTYPES = ("float32", "float64", "int32", "int64", "uint8", "uint16")  # uint16: bf16 bits (summed as bf16)


class CommError(Exception):
    """A world that cannot be set up (bad environment, NCCL missing): one line for the user."""


# ---- where the processes are --------------------------------------------------------------------

@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @classmethod
    def from_env(cls, env=None) -> "World":
        """The world a launcher describes in the environment (torchrun's names first, then SLURM's);
        a world of one when neither is set. Values that are not integers, or a rank outside the
        world: CommError."""
        env = os.environ if env is None else env

        def num(*names, default=None):
            for name in names:
                if env.get(name, "") != "":
                    try:
                        return int(env[name])
                    except ValueError:
                        raise CommError(f"{name}={env[name]!r} is not an integer") from None
            return default

        size = num("WORLD_SIZE", "SLURM_NTASKS", default=1)
        rank = num("RANK", "SLURM_PROCID", default=0)
        local = num("LOCAL_RANK", "SLURM_LOCALID", default=rank if size > 1 else 0)
        port = num("MASTER_PORT", default=29500)
        if size < 1 or not 0 <= rank < size or local < 0:
            raise CommError(f"rank {rank} of a world of {size} (local rank {local}): not a valid place in it")
        if not 0 < port < 65535:
            raise CommError(f"MASTER_PORT={port}: not a port")
        return cls(rank, size, local, env.get("MASTER_ADDR") or "127.0.0.1", port)


# ---- the interface ------------------------------------------------------------------------------

class Comm:
    """rank, size, and the collectives; every rank calls each collective, in the same order."""

    rank = 0
    size = 1

    def all_reduce(self, arr) -> None:
        """arr = the sum over ranks of arr, in place."""

    def broadcast(self, arr, root: int = 0) -> None:
        """arr = root's arr, in place."""

    def all_gather(self, part, out) -> None:
        """out = every rank's part, in rank order along the first axis (out holds size x part)."""
        _copy(out, part)

    def barrier(self) -> None:
        pass

    def close(self) -> None:
        pass


class Solo(Comm):
    """A world of one: nothing to exchange."""


def _copy(out, part) -> None:
    if hasattr(out, "copy_to_device"):
        out.copy_to_device(part)
    else:
        out[...] = part


def _check(arr) -> None:
    if np.dtype(arr.dtype).name not in DTYPES:
        raise TypeError(f"collectives take {', '.join(DTYPES)} arrays, not {arr.dtype}")


# ---- bf16 bits on the host (the stand-in sums bf16 as bf16) ------------------------------------

def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """Round to nearest, ties to even (NaN stays NaN)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), r)


# ---- the single-process stand-in (tests only) ---------------------------------------------------

class _Group:
    def __init__(self, n: int):
        self.n = n
        self.cv = threading.Condition()  # held by the one rank that runs
        self.slots: list = [None] * n
        self.arrived = 0
        self.generation = 0
        self.result = None
        self.failed: BaseException | None = None


class Lockstep(Comm):
    """Rank `rank` of a stand-in world run by run_ranks (tests only): see the module's docstring."""

    def __init__(self, group: _Group, rank: int):
        self.group, self.rank, self.size = group, rank, group.n

    def _meet(self, value, combine):
        """Leave value; when every rank has, combine(slots) once; return that result to each."""
        g = self.group
        if g.failed is not None:
            raise CommError("another rank failed") from g.failed
        gen = g.generation
        g.slots[self.rank] = value
        g.arrived += 1
        if g.arrived == g.n:
            g.result = combine(g.slots)
            g.slots, g.arrived, g.generation = [None] * g.n, 0, gen + 1
            g.cv.notify_all()
        else:
            g.cv.wait_for(lambda: g.generation != gen or g.failed is not None)  # lets the next rank run
            if g.generation == gen:
                raise CommError("another rank failed") from g.failed
        return g.result

    @staticmethod
    def _host(arr) -> np.ndarray:
        return arr.copy_to_host() if hasattr(arr, "copy_to_host") else np.array(arr, copy=True)

    def all_reduce(self, arr) -> None:
        _check(arr)

        def total(parts):
            if parts[0].dtype == np.uint16:  # bf16: each partial sum rounded to bf16, as NCCL's bf16 sum does
                acc = parts[0]
                for p in parts[1:]:
                    acc = f32_to_bf16(bf16_to_f32(acc) + bf16_to_f32(p))
                return acc
            acc = parts[0].copy()
            for p in parts[1:]:  # rank order: deterministic
                acc += p
            return acc

        _copy(arr, self._meet(self._host(arr), total))

    def broadcast(self, arr, root: int = 0) -> None:
        _check(arr)
        _copy(arr, self._meet(self._host(arr) if self.rank == root else None, lambda parts: parts[root]))

    def all_gather(self, part, out) -> None:
        _check(part)
        _copy(out, self._meet(self._host(part), lambda parts: np.concatenate(parts)))

    def barrier(self) -> None:
        self._meet(None, lambda parts: None)


def run_ranks(n: int, fn, timeout: float = 600.0) -> list:
    """fn(comm) on each rank of a stand-in world of n (tests only); the results in rank order. A
    rank's exception fails every rank's next collective and is raised here (the first rank's)."""
    g = _Group(n)
    results: list = [None] * n
    errors: list = [None] * n

    def body(r):
        with g.cv:
            try:
                results[r] = fn(Lockstep(g, r))
            except BaseException as exc:  # noqa: BLE001 (handed to the caller)
                errors[r] = exc
                if g.failed is None:
                    g.failed = exc
                g.cv.notify_all()

    threads = [threading.Thread(target=body, args=(r,), name=f"rank-{r}", daemon=True) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        if t.is_alive():
            raise TimeoutError(f"stand-in world of {n}: a rank is still running after {timeout} s (a collective "
                               "that not every rank called?)")
    first = next((e for e in errors if e is not None and not isinstance(e, CommError)), None)
    first = first or next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
    return results


# ---- small messages over any Comm ---------------------------------------------------------------

def broadcast_json(comm: Comm, obj=None, root: int = 0):
    """root's JSON-able obj on every rank (a length, then the bytes, as two broadcasts of arrays)."""
    raw = json.dumps(obj).encode() if comm.rank == root else b""
    n = np.array([len(raw)], np.int64)
    comm.broadcast(n, root)
    buf = np.frombuffer(raw, np.uint8).copy() if comm.rank == root else np.zeros(int(n[0]), np.uint8)
    comm.broadcast(buf, root)
    return json.loads(buf.tobytes().decode())


# ---- NCCL through CuPy ----------------------------------------------------------------------------

INSTALL_HINT = "pip install 'cheaplm[multigpu]' (CuPy with NCCL: cupy-cuda12x, or cupy-cuda13x for CUDA 13)"


def _preload_nccl() -> bool:
    """Load libnccl.so.2 from pip's nvidia-nccl-cu12/-cu13 package (torch installs one) into the
    global namespace, for a CuPy that does not find it by itself; whether one was found."""
    import ctypes
    import sys

    for base in sys.path:
        lib = os.path.join(base or ".", "nvidia", "nccl", "lib", "libnccl.so.2")
        if os.path.exists(lib):
            ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
            return True
    return False


def nccl_module():
    """cupy.cuda.nccl, or CommError saying how to get it."""
    os.environ["NCCL_NVLS_ENABLE"] = "0"  # before NCCL starts: NVLink multicast stays off
    try:
        from cupy.cuda import nccl
    except ImportError as exc:
        try:
            if not _preload_nccl():
                raise
            from cupy.cuda import nccl
        except (ImportError, OSError):
            raise CommError(f"several GPUs need CuPy with NCCL, which is not importable here ({exc}); "
                            f"{INSTALL_HINT}") from None
    if not getattr(nccl, "available", True):
        raise CommError(f"this CuPy was built without NCCL; {INSTALL_HINT}")
    return nccl


def _send_id(world: World, uid: list, port: int, timeout: float) -> None:
    """Rank 0: hand NCCL's unique id to each of the other ranks that connect (one JSON line each)."""
    payload = (json.dumps(uid) + "\n").encode()
    with socket.create_server(("", port), reuse_port=False) as srv:
        srv.settimeout(timeout)
        for _ in range(world.size - 1):
            conn, _ = srv.accept()
            with conn:
                conn.sendall(payload)


def _receive_id(world: World, port: int, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((world.master_addr, port), timeout=10) as s:
                buf = b""
                while not buf.endswith(b"\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
                return json.loads(buf)
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise CommError(f"rank {world.rank}: no NCCL id from rank 0 at {world.master_addr}:{port} after "
                                f"{timeout:.0f} s (MASTER_ADDR, MASTER_PORT)") from None
            time.sleep(0.2)


class Nccl(Comm):
    """One NCCL communicator per process, on the GPU numbered LOCAL_RANK; collectives on the default
    stream (numba's kernels run there too, so they are ordered with the collectives)."""

    def __init__(self, world: World, timeout: float = 300.0):
        nccl = self.nccl = nccl_module()
        from numba import cuda

        cuda.select_device(world.local_rank)
        import cupy

        cupy.cuda.Device(world.local_rank).use()
        self.cuda, self.rank, self.size = cuda, world.rank, world.size
        port = int(os.environ.get("CHEAPLM_ID_PORT") or world.master_port + 1)
        if world.rank == 0:
            uid = list(nccl.get_unique_id())
            sender = threading.Thread(target=_send_id, args=(world, uid, port, timeout), daemon=True)
            sender.start()
        else:
            uid = _receive_id(world, port, timeout)
        self.comm = nccl.NcclCommunicator(world.size, tuple(uid), world.rank)
        if world.rank == 0:
            sender.join()
        self.types = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64, "int32": nccl.NCCL_INT32,
                      "int64": nccl.NCCL_INT64, "uint8": nccl.NCCL_UINT8, "uint16": getattr(nccl, "NCCL_BFLOAT16", 9)}  # ncclBfloat16 is 9 (NCCL >= 2.10)

    def _on_device(self, arr, run) -> None:
        """run(device array) on arr, staging a host array through the GPU and back."""
        _check(arr)
        if hasattr(arr, "__cuda_array_interface__"):
            run(arr)
            return
        d = self.cuda.to_device(np.ascontiguousarray(arr))
        run(d)
        arr[...] = d.copy_to_host()

    @staticmethod
    def _ptr(arr) -> int:
        return arr.__cuda_array_interface__["data"][0]

    def all_reduce(self, arr) -> None:
        self._on_device(arr, lambda d: self.comm.allReduce(self._ptr(d), self._ptr(d), d.size,
                                                           self.types[d.dtype.name], self.nccl.NCCL_SUM, 0))

    def broadcast(self, arr, root: int = 0) -> None:
        self._on_device(arr, lambda d: self.comm.bcast(self._ptr(d), d.size, self.types[d.dtype.name], root, 0))

    def all_gather(self, part, out) -> None:
        _check(part)
        src = part if hasattr(part, "__cuda_array_interface__") else self.cuda.to_device(np.ascontiguousarray(part))

        def run(d):
            self.comm.allGather(self._ptr(src), self._ptr(d), src.size, self.types[src.dtype.name], 0)
        self._on_device(out, run)

    def barrier(self) -> None:
        one = self.cuda.to_device(np.zeros(1, np.float32))
        self.all_reduce(one)
        self.cuda.synchronize()

    def close(self) -> None:
        self.cuda.synchronize()
        self.comm.destroy()


def connect(world: World | None = None) -> Comm:
    """The world's Comm: Solo for a world of one, else NCCL (CommError when it cannot start)."""
    world = world or World.from_env()
    if world.size == 1:
        return Solo()
    return Nccl(world)
