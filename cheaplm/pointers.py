"""The match pointers a training run reads: all of them when the text fits one window, else only
those of the positions the trainer is about to read, built ahead and freed after.

A position's pointers (match.py: prev[k, t], the last earlier position whose m_k bytes before it
hash as t's do) depend on all the text before t, so they are made by walking the text in order
(kernels/match.py). Held for every training byte they cost 4 bytes per minimum length (6 by
default) per byte, 24 GB for 1 GB of text, and a GPU run held them on the GPU too. Two holders,
with one interface for the Trainer (train.py):

- `AllPointers` (a text of at most `window` bytes, the default 2^28): every position's pointers,
  built ahead of counting on a background thread (a GPU run) or at once (CPU), copied to the GPU
  as counting reaches them. What every run did before windows; kernels read prev[:, t].
- `WindowedPointers` (a longer text): at most about `window` positions' pointers at a time:
  * the memory phase reads blocks of `window // 8` positions from the count cursor on, built
    ahead by a background thread (GPU) or when reached (CPU) and freed when counting passes them;
    counting never waits for more than the block it is in and the next;
  * the held-out blocks' pointers (the memory's tail and the mix read them) are kept as the walk
    passes them: at most the holdout (32 MiB of text on a GPU);
  * the reader phase reads its lanes (lanes.stream_positions): the pointers of every lane's next
    `window // 8` positions in all (`steps_per_sweep` steps) are captured by a sweep, a walk from
    the text's start with a fresh index (a lane's pointers depend on all the text before it),
    the next sweep built while the steps before it are read. A sweep walks the counted text:
    with C bytes counted, the reader waits unless a sweep (C / the host's index rate) is quicker
    than reading `window // 8` positions; the plan (plan.py) says what that costs.
  A batch reads its rows' pointers gathered (kernels/match.py BY_ROW: column b holds row b's).

Either way the pointers are the same numbers, so a windowed run trains exactly as the same run
held whole (tests/test_pointers.py). The model's own index (match.last_pos, saved with each
checkpoint, read by evaluation and generation) covers everything counted so far: it is walked up
to the cursor when a checkpoint is written. Positions are int64 for texts of 1.75 GiB and more
(match.position_dtype).
"""

from __future__ import annotations

import threading

import numba
import numpy as np

from .lanes import VirtualText
from .match import BY_ROW, position_dtype

WINDOW = 1 << 28  # positions: a text this long or shorter keeps every position's pointers
BLOCKS_PER_WINDOW = 8  # a windowed run's memory blocks and reader sweeps hold window / 8 positions each
FIRST_PIECE, MOST_PIECE = 2 << 20, 64 << 20  # a block is walked in pieces, doubling, so counting starts at once
POOL = threading.Lock()  # numba's parallel walks share one thread pool: one walk at a time


def walk(match, data, lo: int, hi: int, last_pos, prev, work) -> None:
    """match.walk (MatchModel), one walk at a time."""
    with POOL:
        match.walk(data, lo, hi, last_pos, prev, work)


class Store:
    """The pointers of some ranges of positions: one (minimum lengths, total) array, range after range."""

    def __init__(self, ranges, k: int, dtype):
        rs = sorted((int(a), int(b)) for a, b in ranges if b > a)
        merged: list[list[int]] = []
        for a, b in rs:
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        self.lo = np.array([a for a, _ in merged], np.int64)
        self.hi = np.array([b for _, b in merged], np.int64)
        self.off = np.concatenate([[0], np.cumsum(self.hi - self.lo)]).astype(np.int64)
        self.arr = np.full((k, int(self.off[-1])), -1, dtype)

    @property
    def positions(self) -> int:
        return int(self.off[-1])

    def covers(self, ranges) -> bool:
        for a, b in ranges:
            if b <= a:
                continue
            i = int(np.searchsorted(self.lo, a, side="right")) - 1
            if i < 0 or b > self.hi[i]:
                return False
        return True

    def capture(self, a: int, b: int, prev) -> None:
        """Keep what of prev (the pointers of positions [a, b)) falls in this store's ranges."""
        i = max(0, int(np.searchsorted(self.hi, a, side="right")))
        while i < len(self.lo) and self.lo[i] < b:
            x, y = max(a, int(self.lo[i])), min(b, int(self.hi[i]))
            if x < y:
                c = int(self.off[i]) + x - int(self.lo[i])
                self.arr[:, c: c + y - x] = prev[:, x - a: y - a]
            i += 1

    def find(self, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(which of pos this store holds, their columns)."""
        i = np.searchsorted(self.lo, pos, side="right") - 1
        ok = i >= 0
        i = np.maximum(i, 0)
        ok &= pos < self.hi[i] if len(self.hi) else False
        return ok, self.off[i] + pos - self.lo[i] if len(self.lo) else pos


def lane_runs(ranges, lanes: int, step0: int, steps: int, chunk: int) -> list[tuple[int, int]]:
    """The data ranges that steps step0 .. step0 + steps - 1 of lanes.stream_positions(ranges,
    lanes, step, chunk) read: each lane's run of steps x chunk bytes (round again after its
    stretch), cut where the ranges end."""
    text = VirtualText(ranges)
    stretch = max(1, text.total // lanes)
    span = min(steps * chunk, stretch)
    first = (step0 * chunk) % stretch
    virtual = []
    for lane in range(lanes):
        base = lane * stretch
        a, b = first, first + span
        parts = [(a, min(b, stretch))] + ([(0, b - stretch)] if b > stretch else [])
        for x, y in parts:
            x, y = (base + x) % text.total, (base + y - 1) % text.total + 1
            virtual.append((x, y))
    out = []
    for x, y in virtual:
        while x < y:
            k = int(text.range_of(np.array([x]))[0])
            end = min(y, int(text.ends[k]))
            d = int(text.to_data(np.array([x]))[0])
            out.append((d, d + end - x))
            x = end
    return out


def pointer_bytes(n: int, window: int, k: int, holdout: int, step_positions: int = 0) -> dict:
    """Host bytes of the match pointers of a run over n training bytes (see the module docstring),
    without the model's own index or a walk's per-thread tables: {"match pointers": the most held
    at once, "counting": the memory phase's (three blocks and the held-out bytes'), "reader": the
    reader phase's (two sweeps, the block a sweep walks into, the held-out bytes'), "held-out":
    the held-out bytes' alone (what is left at the end), "walk block": the block a checkpoint's
    walk of the index writes into}. A text that fits one window holds every position's all along."""
    width = np.dtype(position_dtype(n)).itemsize
    if n <= window:
        every = n * k * width
        return {"match pointers": every, "counting": every, "reader": every, "held-out": every, "walk block": 0}
    block = max(1, window // BLOCKS_PER_WINDOW)
    sweep = max(block, step_positions)
    # memory phase: two blocks resident and one in the making; reader: two sweeps and the sweep's
    # walk block; the held-out bytes' pointers all along
    out = {"counting": (3 * block + holdout) * k * width, "reader": (2 * sweep + block + holdout) * k * width,
           "held-out": holdout * k * width, "walk block": block * k * width}
    out["match pointers"] = max(out["counting"], out["reader"])
    return out


class AllPointers:
    """Every position's pointers (a text of at most one window): the Trainer's pointers as before windows."""

    windowed = False

    def __init__(self, match, data, n: int, dev, background: bool):
        self.match, self.data, self.n, self.dev = match, data, n, dev
        self.background = background
        self.prev = match.pointers(n)
        self.indexed_to = 0  # match.last_pos holds the index of data[:indexed_to]
        self.ahead = None

    def rebuild(self, cursor: int) -> np.ndarray:
        """The index of data[:cursor] walked afresh (a resumed run checks it against its saved one)."""
        fresh = np.full_like(self.match.last_pos, -1)
        self.match.index_parallel(self.data, 0, cursor, self.prev, last_pos=fresh)
        return fresh

    def start(self, cursor: int) -> None:
        """Build the pointers from cursor on (match.last_pos: the index of data[:cursor])."""
        from .match import IndexAhead

        m = self.match
        self.indexed_to = cursor
        self.ahead = IndexAhead(self.data, cursor, self.n, m.minlens, m.spec.bits, m.last_pos.copy(), self.prev,
                                background=self.background)
        self.d_prev = self.dev.empty(self.prev.shape, self.prev.dtype) if self.dev.gpu else self.prev
        if self.dev.gpu and cursor:
            self.d_prev[:, :cursor].copy_to_device(self.prev[:, :cursor])
        self.on_device_to = cursor  # pointers copied to the GPU up to here

    def ready(self, lo: int, hi: int) -> None:
        """Positions below hi will be read (and none below lo again, for now)."""
        self.ahead.wait(hi)
        if self.dev.gpu and hi > self.on_device_to:
            for k in range(self.prev.shape[0]):
                self.d_prev[k, self.on_device_to:hi].copy_to_device(self.prev[k, self.on_device_to:hi])
            self.on_device_to = hi

    def ensure(self, ranges) -> None:
        """The positions of `ranges` will be read (the tail, the mix)."""
        self.ready(0, max(b for _, b in ranges))

    def reader_begin(self, ranges, lanes: int, chunk: int, order: str) -> None:
        self.ready(0, self.n)

    def reader_at(self, step: int) -> None:
        pass

    def reader_end(self) -> None:
        pass

    def prev_for(self, pos) -> tuple:
        """(prev, prev_base) for a kernel reading host positions pos."""
        return self.d_prev, 0

    def source(self):
        """What Reader.range_probs takes as its match argument."""
        return self.match.args(self.d_prev, 0)

    def index_to(self, end: int) -> None:
        """Bring the model's index (saved with checkpoints, used by eval and generation) up to `end`."""
        if end > self.indexed_to:
            self.ahead.wait(self.n)  # one builder at a time: the parallel kernels share the thread pool
            if end == self.n:
                self.match.last_pos[:] = self.ahead.last_pos  # the builder's own index ends exactly there
            else:
                self.match.index_parallel(self.data, self.indexed_to, end, self.prev)
            self.indexed_to = end

    def close(self) -> None:
        pass


class WindowedPointers:
    """At most about `window` positions' pointers at a time (module docstring)."""

    windowed = True

    def __init__(self, match, data, n: int, dev, background: bool, window: int, held):
        self.match, self.data, self.n, self.dev, self.background = match, data, n, dev, background
        self.k, self.dtype = len(match.minlens), match.last_pos.dtype
        self.block = max(1, window // BLOCKS_PER_WINDOW)
        self.held = Store(held, self.k, self.dtype)  # the held-out blocks, kept as the walks pass them
        self.extra: list[Store] = []  # ranges read later that the walk had not kept (a tail after the cursor)
        self.blocks: list[tuple[int, int, np.ndarray]] = []  # the memory phase's, built and not freed
        self.cv = threading.Condition()
        self.error = None
        self.thread = None
        self.sweeps: dict[int, Store] = {}  # the reader's, by sweep number
        self.sweep_plan = None

    # ---- the memory phase's blocks -----------------------------------------------------------------
    def rebuild(self, cursor: int) -> np.ndarray:
        fresh = np.full_like(self.match.last_pos, -1)
        self._walk_keep(0, cursor, fresh, [self.held])
        return fresh

    def _walk_keep(self, lo: int, hi: int, last_pos, stores, work=None) -> None:
        """Walk data[lo:hi) into last_pos a block at a time, each block's pointers captured by stores."""
        m = self.match
        work = m.workspace() if work is None else work
        scratch = np.empty((self.k, max(1, min(self.block, hi - lo))), self.dtype)
        for a in range(lo, hi, self.block):
            b = min(a + self.block, hi)
            walk(m, self.data, a, b, last_pos, scratch, work)
            for s in stores:
                s.capture(a, b, scratch[:, : b - a])

    def start(self, cursor: int) -> None:
        self.indexed_to = cursor
        self.built_to = self.released_to = self.want = cursor
        self.ahead_pos = self.match.last_pos.copy()  # the builder's index: of data[:built_to]
        self.work = None
        self.memory_open = True
        if self.background:
            self.thread = threading.Thread(target=self._builder, name="match-windows", daemon=True)
            self.thread.start()

    def _room(self) -> bool:
        """Whether the builder may walk on: it is wanted, or fewer than two blocks are ahead of the trainer."""
        return self.built_to < self.n and (self.built_to < self.want
                                           or self.built_to - self.released_to < 2 * self.block)

    def _build_block(self) -> None:
        """Walk the next block in pieces (counting waits for the first piece only), keeping the
        held-out bytes' pointers as they pass."""
        m = self.match
        if self.work is None:
            self.work = m.workspace()
        a = self.built_to
        b = min(a + self.block, self.n)
        arr = np.full((self.k, b - a), -1, self.dtype)
        with self.cv:
            self.blocks.append((a, b, arr))
        lo, piece = a, FIRST_PIECE
        while lo < b:
            hi = min(lo + piece, b)
            walk(m, self.data, lo, hi, self.ahead_pos, arr[:, lo - a:], self.work)
            self.held.capture(lo, hi, arr[:, lo - a: hi - a])
            with self.cv:
                self.built_to = hi
                self.cv.notify_all()
            lo, piece = hi, min(2 * piece, MOST_PIECE)

    def _builder(self) -> None:
        try:
            # leave one core to the thread that drives the GPU (the setting is per thread)
            numba.set_num_threads(max(1, numba.get_num_threads() - 1))
            while True:
                with self.cv:
                    while self.memory_open and not self._room():
                        self.cv.wait()
                    if not self.memory_open:
                        return
                self._build_block()
        except BaseException as exc:  # surfaced by the training thread's next wait
            with self.cv:
                self.error = exc
                self.cv.notify_all()

    def ready(self, lo: int, hi: int) -> None:
        hi = min(hi, self.n)
        with self.cv:
            self.released_to = max(self.released_to, lo)
            self.blocks = [blk for blk in self.blocks if blk[1] > self.released_to]
            self.want = max(self.want, hi)
            self.cv.notify_all()
            if self.background:
                while self.built_to < hi and self.error is None:
                    self.cv.wait()
        if self.error is not None:
            raise self.error
        while not self.background and self.built_to < hi:
            self._build_block()

    def _end_memory(self) -> None:
        """Counting is over: the builder stops and its blocks are freed (its index, of data[:built_to], stays)."""
        with self.cv:
            self.memory_open = False
            self.cv.notify_all()
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        if self.error is not None:
            raise self.error
        self.blocks, self.work = [], None

    def _holds(self, ranges) -> bool:
        ranges = [(a, b) for a, b in ranges if b > a]
        if all(b <= self.built_to for _, b in ranges) and self.held.covers(ranges):
            return True  # held-out blocks the walk has passed
        return any(s.covers(ranges) for s in self.extra)

    def ensure(self, ranges) -> None:
        """The positions of `ranges` will be read (the tail, the mix): counting is over."""
        self._end_memory()
        missing = [(a, b) for a, b in ranges if b > a and not self._holds([(a, b)])]
        if not missing:
            return
        end = max(b for _, b in missing)
        if min(a for a, _ in missing) >= self.built_to:  # ahead of the walk: walk on to them
            store = Store(missing, self.k, self.dtype)
            self._walk_keep(self.built_to, end, self.ahead_pos, [store, self.held])
            self.built_to = end
        else:  # behind it, and not held: a sweep from the start keeps them
            store = self._sweep(missing)
        self.extra.append(store)

    # ---- the reader's sweeps -------------------------------------------------------------------------
    def _sweep(self, ranges) -> Store:
        """A walk from the text's start with a fresh index, keeping the pointers of `ranges`."""
        store = Store(ranges, self.k, self.dtype)
        if store.positions:
            self._walk_keep(0, int(store.hi[-1]), np.full_like(self.match.last_pos, -1), [store])
        return store

    def steps_per_sweep(self, lanes: int, chunk: int) -> int:
        return max(1, self.block // max(1, lanes * chunk))

    def reader_begin(self, ranges, lanes: int, chunk: int, order: str) -> None:
        """The reader reads stream_positions(ranges, lanes, step, chunk) for step 0, 1, ...."""
        self._end_memory()
        if order != "stream":
            raise ValueError("a reader that draws its positions at random (order random) reads the whole text: "
                             "it needs the text within one match window (train option match_window)")
        self.sweep_plan = (list(ranges), lanes, chunk, self.steps_per_sweep(lanes, chunk))
        self.sweeps = {}
        self.sweep_thread = None

    def _sweep_runs(self, j: int):
        ranges, lanes, chunk, s = self.sweep_plan
        return lane_runs(ranges, lanes, j * s, s, chunk)

    def _build_sweep(self, j: int) -> None:
        try:
            store = self._sweep(self._sweep_runs(j))
            with self.cv:
                self.sweeps[j] = store
                self.cv.notify_all()
        except BaseException as exc:
            with self.cv:
                self.error = exc
                self.cv.notify_all()

    def reader_at(self, step: int) -> None:
        """The reader's next step is `step` (counted from the phase's start): its sweep is ready,
        the ones before it freed, the next one in the making (on a background thread on a GPU)."""
        j = step // self.sweep_plan[3]
        with self.cv:
            for old in [i for i in self.sweeps if i < j]:
                del self.sweeps[old]
        if j not in self.sweeps:
            self._join_sweep()
            if j not in self.sweeps:
                self._build_sweep(j)
        if self.error is not None:
            raise self.error
        if self.background and j + 1 not in self.sweeps and self.sweep_thread is None:
            self.sweep_thread = threading.Thread(target=self._sweep_bg, args=(j + 1,), name="match-sweep", daemon=True)
            self.sweep_thread.start()
        self.current = j

    def _sweep_bg(self, j: int) -> None:
        numba.set_num_threads(max(1, numba.get_num_threads() - 1))
        self._build_sweep(j)

    def _join_sweep(self) -> None:
        if getattr(self, "sweep_thread", None) is not None:
            self.sweep_thread.join()
            self.sweep_thread = None

    # ---- what kernels read ---------------------------------------------------------------------------
    def gather(self, pos: np.ndarray) -> np.ndarray:
        """(minimum lengths, len(pos)) pointers of host positions pos, from whatever holds them."""
        pos = np.asarray(pos, np.int64)
        out = np.empty((self.k, len(pos)), self.dtype)
        todo = np.ones(len(pos), bool)
        with self.cv:
            stores = [self.sweeps.get(getattr(self, "current", -1)), self.held] + self.extra
            blocks = list(self.blocks)
        for a, b, arr in blocks:
            if not todo.any():
                break
            inside = todo & (pos >= a) & (pos < min(b, self.built_to))
            if inside.any():
                out[:, inside] = arr[:, pos[inside] - a]
                todo &= ~inside
        for s in stores:
            if s is None or not todo.any():
                continue
            idx = np.flatnonzero(todo)
            ok, cols = s.find(pos[idx])
            out[:, idx[ok]] = s.arr[:, cols[ok]]
            todo[idx[ok]] = False
        if todo.any():
            raise RuntimeError(f"match pointers of position {int(pos[np.argmax(todo)])} are not held (a bug)")
        return out

    def prev_for(self, pos) -> tuple:
        return self.dev.put(self.gather(pos)), BY_ROW

    def source(self):
        return self

    def args_for(self, pos) -> tuple:
        """The kernels' match arguments for host positions pos (reader.match_at)."""
        return self.match.args(*self.prev_for(pos))

    def index_to(self, end: int) -> None:
        if end <= self.indexed_to:
            return
        m = self.match
        work = m.workspace()
        scratch = np.empty((self.k, max(1, min(self.block, end - self.indexed_to))), self.dtype)
        for a in range(self.indexed_to, end, self.block):
            b = min(a + self.block, end)
            walk(m, self.data, a, b, m.last_pos, scratch, work)
        self.indexed_to = end

    def reader_end(self) -> None:
        """The reader is done: its sweeps are freed (the mix reads held-out bytes)."""
        self._join_sweep()
        self.sweeps = {}

    def close(self) -> None:
        """No background walk is left running (the end of a run, or its stop)."""
        if getattr(self, "memory_open", False):
            self._end_memory()
        self._join_sweep()
