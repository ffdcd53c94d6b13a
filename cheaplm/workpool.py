"""An ordered process pool that Ctrl-C or SIGTERM always ends: `prepare`'s cleaning workers.

multiprocessing.Pool cannot promise that. Its task-handler thread writes each task into the
workers' shared pipe; a batch (1 MiB of text) is many times a pipe's buffer, so that thread is
often blocked mid-write, and if the workers are gone Pool.terminate() joins it forever. And a
forked worker runs the parent's signal handlers until its initializer replaces them, so a SIGTERM
in that window was swallowed and the worker lived on. Both hung an interrupted `prepare`.

Here the parent has no helper thread: its main thread does every send and receive, so each wait
is a system call that a signal interrupts, and ending the pool kills the workers and reaps them.
Workers are forked with SIGINT and SIGTERM blocked and unblock them only after setting their own
handlers (SIGINT ignored: the parent handles Ctrl-C; SIGTERM's default action: it ends them).

Each worker has its own pipe; a task goes to the worker with the fewest tasks unanswered (ties:
in turn), so one slow task does not hold up the tasks queued behind it while others are free. A
worker's results come back in the order it was given them. Whenever the parent waits for a result,
it reads every reply that is ready, from any worker, and keeps it until asked for: results may be
collected in any order, and a worker never waits long in sending a reply that is asked for only
after earlier ones (a reply is larger than a pipe's buffer: the worker could not go on meanwhile). Besides the pool's
own function, `apply_async(fn, args)` runs any module-level function (a multistream .bz2's
decompression shares the cleaning workers, multistream.py). A thread inside each worker reads its tasks as
they arrive, so the parent's send never waits on a worker that is itself waiting to send a result
(that would deadlock), and the next batch is at hand when one is done. How many tasks are in
flight is the caller's choice; each costs its size in the worker's memory.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import signal
import threading
import time
from multiprocessing.connection import wait
from multiprocessing.reduction import ForkingPickler

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
JOIN_SECONDS = 5.0  # a worker that outlives SIGTERM by this long is killed


@contextlib.contextmanager
def stop_signals_blocked():
    """Ctrl-C and SIGTERM wait for the end of the block; yields the signal mask a forked child restores.

    Two layers, as both are needed. The mask blocks both signals in this thread, so a process
    forked inside the block starts with them blocked (a child is forked with its parent's mask).
    But other threads (numpy's BLAS pool) still take them, and Python then runs the handler in
    the main thread at its next line, mask or not: so in the main thread the handlers are
    replaced for the block by one that only notes the signal, and the first one noted is raised
    again (signal.raise_signal, to the handler that was there before) once the block is over.
    The mask is None where the platform has no pthread_sigmask.
    """
    noted: list[int] = []
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            handler = signal.getsignal(signum)
            if handler is not None:  # None: set outside Python, left alone
                previous[signum] = signal.signal(signum, lambda signum, frame: noted.append(signum))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS) if hasattr(signal, "pthread_sigmask") else None
    try:
        yield mask
    finally:
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # one held back by the mask is noted here
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if noted:
            signal.raise_signal(noted[0])


class WorkerDied(RuntimeError):
    pass


CALL = "__workpool_call__"  # marks a task of apply_async


def _serve(conn, func, mask, inherited) -> None:
    """A worker: run func on each task its pipe brings, send back (ok, result or exception)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if mask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a SIGTERM held back since the fork ends us here
    for other in inherited:  # the parent's ends of the pipes, copied by fork: with them closed, the
        other.close()        # parent's death (even by SIGKILL) reaches us as the end of our pipe
    tasks: queue.SimpleQueue = queue.SimpleQueue()

    def read() -> None:
        try:
            while True:
                tasks.put(conn.recv())
        except (EOFError, OSError):  # the parent closed the pipe, or is gone
            tasks.put(None)

    threading.Thread(target=read, daemon=True).start()
    sent = 0.0  # seconds the previous reply's send took (the parent reads replies in its own order)
    while True:
        t0 = time.perf_counter()
        if (args := tasks.get()) is None:
            break
        t1 = time.perf_counter()
        try:
            if args and args[0] == CALL:  # apply_async: (CALL, fn, fn's args)
                value = (True, args[1](*args[2]))
            else:
                value = (True, func(*args))
        except Exception as exc:  # the parent raises it
            value = (False, exc)
        t2 = time.perf_counter()
        # (ok, value, timings): seconds idle before the task, busy on it, blocked sending the last reply
        reply = (*value, (t1 - t0, t2 - t1, sent))
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return
        sent = time.perf_counter() - t2


class PoolStats:
    """What a pool's traffic cost, for bench/prepare_speed.py --profile. Seconds are wall-clock.

    Parent: `send_s` in sends (a send waits while the worker's pipe is full), `wait_s` waiting for a
    result asked for (the workers still busy, or replies crossing), `load_s` unpickling replies; bytes
    each way. Workers, summed over them: `idle_s` waiting for a task, `busy_s` running tasks,
    `blocked_s` in sending replies (until the parent reads them). `wall_s`: the pool's life so far.
    """

    def __init__(self, workers: int):
        self.workers = workers
        self.started = time.perf_counter()
        self.ended: float | None = None
        self.tasks = 0
        self.send_s = self.wait_s = self.load_s = 0.0
        self.sent_bytes = self.received_bytes = 0
        self.idle_s = self.busy_s = self.blocked_s = 0.0
        self.task_s: list[float] = []  # each task's busy seconds, in the order read

    @property
    def wall_s(self) -> float:
        return (self.ended or time.perf_counter()) - self.started

    def as_dict(self) -> dict:
        names = ("workers", "wall_s", "tasks", "send_s", "wait_s", "load_s", "sent_bytes", "received_bytes",
                 "idle_s", "busy_s", "blocked_s", "task_s")
        return {k: getattr(self, k) for k in names}


class OrderedPool:
    """`workers` processes running `func`; submit() returns a handle whose get() waits for the result.

    Use as a context manager: leaving the block normally lets the workers finish and exit;
    leaving it by an exception (Ctrl-C, SIGTERM, an error) ends them at once.
    """

    def __init__(self, ctx, workers: int, func):
        self._procs: list = []
        self._conns: list = []
        self._turn = 0
        self._tickets = 0
        self._waiting: list = []  # per worker: tickets sent to it whose replies are not read yet
        self._replies: dict = {}  # ticket -> (ok, value) read ahead of its get()
        self.stats = PoolStats(workers)
        try:
            with stop_signals_blocked() as mask:  # a signal that came meanwhile raises here, and we clean up
                for _ in range(workers):
                    parent_end, child_end = ctx.Pipe()
                    inherited = [parent_end, *self._conns] if ctx.get_start_method() == "fork" else []
                    proc = ctx.Process(target=_serve, args=(child_end, func, mask, inherited), daemon=True)
                    proc.start()
                    child_end.close()
                    self._procs.append(proc)
                    self._conns.append(parent_end)
                    self._waiting.append(collections.deque())
        except BaseException:
            self.terminate()
            raise

    def submit(self, *args) -> "_Result":
        """Run the pool's function on args in the worker with the fewest tasks unanswered."""
        self._read_ready(0)
        n = len(self._procs)
        k = min(range(self._turn, self._turn + n), key=lambda j: len(self._waiting[j % n])) % n
        self._turn = (k + 1) % n
        data = ForkingPickler.dumps(args)
        t0 = time.perf_counter()
        self._conns[k].send_bytes(data)
        self.stats.send_s += time.perf_counter() - t0
        self.stats.sent_bytes += len(data)
        self._tickets += 1
        self._waiting[k].append(self._tickets)
        return _Result(self, k, self._tickets)

    def apply_async(self, fn, args: tuple) -> "_Result":
        """Run fn(*args) (a module-level function) as submit() runs the pool's function."""
        return self.submit(CALL, fn, tuple(args))

    def _receive(self, k: int, ticket: int):
        while ticket not in self._replies:
            if not self._waiting[k] or ticket < self._waiting[k][0]:
                raise RuntimeError(f"result {ticket} was already collected")
            t0 = time.perf_counter()
            self._read_ready(None)
            self.stats.wait_s += time.perf_counter() - t0
        ok, value = self._replies.pop(ticket)
        if not ok:
            raise value
        return value

    def _read_ready(self, timeout: float | None) -> None:
        """Read the replies that are ready, one per worker, from the workers with tasks unanswered;
        with timeout None, wait until one is."""
        busy = {self._conns[k]: k for k in range(len(self._procs)) if self._waiting[k]}
        if not busy:
            return
        for conn in wait(list(busy), timeout):
            self._read_reply(busy[conn])

    def _read_reply(self, k: int) -> None:
        stats = self.stats
        try:
            data = self._conns[k].recv_bytes()
        except (EOFError, OSError):
            self._procs[k].join(0.1)
            raise WorkerDied(f"a worker ended unexpectedly (exit code {self._procs[k].exitcode})") from None
        t1 = time.perf_counter()
        ok, value, (idle, busy, blocked) = ForkingPickler.loads(data)
        stats.load_s += time.perf_counter() - t1
        stats.received_bytes += len(data)
        stats.tasks += 1
        stats.idle_s += idle
        stats.busy_s += busy
        stats.blocked_s += blocked
        stats.task_s.append(busy)
        self._replies[self._waiting[k].popleft()] = (ok, value)

    def close(self) -> None:
        """Let the workers finish what they hold and exit (closing their pipes tells them), then reap them."""
        self.stats.ended = time.perf_counter()
        for conn in self._conns:
            conn.close()
        for proc in self._procs:
            proc.join(JOIN_SECONDS)
        self.terminate()

    def terminate(self) -> None:
        """End every worker now and reap it; a second Ctrl-C or SIGTERM waits until this is done."""
        with stop_signals_blocked():
            for proc in self._procs:
                if proc.exitcode is None:
                    proc.terminate()
            for proc in self._procs:
                proc.join(JOIN_SECONDS)
                if proc.exitcode is None:
                    proc.kill()
                    proc.join()
            for conn in self._conns:
                conn.close()

    def __enter__(self) -> "OrderedPool":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.terminate()


class _Result:
    __slots__ = ("_pool", "_k", "_ticket")

    def __init__(self, pool: OrderedPool, k: int, ticket: int):
        self._pool, self._k, self._ticket = pool, k, ticket

    def get(self):
        return self._pool._receive(self._k, self._ticket)

