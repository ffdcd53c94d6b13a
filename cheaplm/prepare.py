"""`cheaplm prepare`: Wikipedia sources -> byte shards + manifest.json.

The main process parses (one stream at a time, in order); cleaning runs in a pool of worker
processes on batches of pages (workpool.OrderedPool, which Ctrl-C and SIGTERM always end). A
multistream .bz2 goes further: each worker takes a chunk of its compressed streams, decodes it,
reads the whole pages in it and cleans them (`read_chunk`), and sends back only the cleaned
articles, with the few bytes before its first and after its last page (a page cut by a stream
boundary), which the main parser reads; so the main process reads the file, orders and writes
(multistream.py, wiki.page_run; where a worker cannot cut the pages out safely it returns the
decoded bytes, which the main process parses as before). At most `2 x workers` batches and
`CHUNKS_AHEAD x workers` compressed chunks are in flight, so memory stays constant however large
the dump. A worker's reply is read as soon as it is ready, and a task goes to the worker with the
fewest unanswered (workpool.py): workers never wait on the order in which results are consumed,
only on the chunks in flight running out.
Results are consumed in submission order, which is what makes the shards independent of the
number of workers.

One article per title across all inputs (the dump fragments of a wiki overlap, and a later dump
repeats every page of an earlier one). Of the copies of a title, prepare keeps the newest revision
by the revision's <timestamp> where the dump gives one; a copy without a timestamp counts as older
than any copy with one; between copies of equal or no timestamp, the later one in input order
(later input, then later in its input) is kept. Titles are compared as MediaWiki does: '_' is a
space, runs of whitespace are one space, the first letter is upper case (Unicode NFC). Only copies
that survive cleaning compete (a newer revision that cleans to nothing does not remove an older
article). Plain-text inputs are exempt: their titles (`name#k`) are made up from the file name.
Each dropped copy is counted as skipped 'duplicate' for its source.

The copy to keep may come after a copy already written (the fragments here hold the newer
revisions first, but nothing says so in general), so every copy is written and the losers are cut
out of their shards at the end (`SplitWriter.remove`), which rewrites only the shards that hold
one. A first pass over titles and timestamps would instead decompress and parse every input twice,
and decompression bounds prepare's speed; holding articles back until the last input is read
would hold the text. What is remembered per written article is its location and two hashes in
typed arrays, 58 bytes (about 400 MB for English Wikipedia's 6.9 M articles), never its text.

Splits follow the title hash (`shards.split_of`), so a small preparation can get an empty val or
test split (106 articles at the default 0.5% did). With at least 3 articles, every split whose
fraction is above 0 gets at least one: an empty one takes the article with the lowest title hash
from the split that holds the most (recorded in the manifest's `split_fill`). A split under
SMALL_SPLIT_BYTES (64 KiB) gets one warning line on stderr, also kept in the manifest's `warnings`.

Everything is written into a temporary sibling of `--out` and renamed into place at the end: an
interrupted (Ctrl-C, SIGTERM) or failed run leaves `--out` exactly as it was and removes its
temporary directory. The output is guarded: a lock file beside it keeps a second `prepare` out, it
is checked again before it is replaced (so nothing created in it during the run is lost), and it
may neither hold nor lie inside an input. Temporary directories of dead runs are removed.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import math
import multiprocessing as mp
import os
import re
import shutil
import signal
import sys
import threading
import time
import unicodedata
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .progress import Progress
from .shards import FORMAT, FORMAT_VERSION, MANIFEST, SPLITS, SplitWriter, encode_article, split_of, title_hash
from .multistream import ParsedChunk, decompress_streams
from .sources import TEXT, SourceError, expand_sources, open_source
from .wiki import CLEAN, MAX_PAGE_CHARS, NAMESPACE, OVERSIZED, REDIRECT, PageRun, ReadState, page_run, read_pages
from .wikitext import CleanTimeout, clean_wikitext
from .workpool import OrderedPool, stop_signals_blocked

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock on the output
    fcntl = None

BATCH_CHARS = 1 << 20
# A multistream .bz2's chunks in flight per worker (of multistream.CHUNK_BYTES, 256 KiB, each): the
# results are consumed in file order, so the workers stay busy only while enough later chunks are
# at hand to cover a slow one (bench/RESULTS.md: 16 workers, 2 a worker of 1 MiB, were busy less
# than half the time). Memory: under 1 MB a chunk (its compressed bytes, held until it is taken, and
# its cleaned text), about 100 MB for 16 workers.
CHUNKS_AHEAD = 8
# A split smaller than this gets a warning: its bits per byte would rest on a few articles
# (64 KiB is about 15 articles of average length), too noisy to compare two runs by.
SMALL_SPLIT_BYTES = 64 << 10
MIN_ARTICLES_TO_FILL = 3  # from this many articles on, no split that is asked for stays empty
SKIPPED_KINDS = (REDIRECT, NAMESPACE, OVERSIZED)  # pages counted as skipped, never cleaned
# The last run's costs (bench/prepare_speed.py --profile): the pool's PoolStats.as_dict(), with
# the main process's CPU and wall seconds from the pool's start to its end
LAST_PROFILE: dict = {}


@dataclass
class PrepareOptions:
    val_fraction: float = 0.005
    test_fraction: float = 0.005
    shard_bytes: int = 64 << 20
    keep_markup: bool = False
    workers: int = 0  # 0 = all cores
    min_chars: int = 1
    max_page_chars: int = MAX_PAGE_CHARS  # longer pages are skipped and counted as 'oversized'
    page_seconds: float = 60.0  # cleaning time budget per page; past it, skipped and counted as 'timeout'
    parallel_bz2: bool = True  # a multistream .bz2 decoded by the pool; False: one decoder (same output)

    def as_dict(self) -> dict:
        return {"val_fraction": self.val_fraction, "test_fraction": self.test_fraction,
                "shard_bytes": self.shard_bytes, "keep_markup": self.keep_markup,
                "min_chars": self.min_chars, "max_page_chars": self.max_page_chars}

    def check(self) -> None:
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 0.5):
                raise SourceError(f"{name.replace('_', '-')} must be a number from 0 to 0.5, not {v}")
        if not (isinstance(self.page_seconds, (int, float)) and self.page_seconds > 0):
            raise SourceError(f"page-seconds must be a positive number, not {self.page_seconds}")
        if self.max_page_chars < 1 or self.shard_bytes < 1:
            raise SourceError("max-page-mb and shard size must be positive")


@dataclass
class SourceStats:
    path: str
    format: str = ""
    compression: str | None = None
    sha256: str = ""
    bytes: int = 0
    mtime_ns: int = 0
    bytes_uncompressed: int = 0
    pages_read: int = 0
    kept: int = 0
    skipped: dict = field(default_factory=lambda: collections.Counter())
    truncated: bool = False
    schema: str = ""


def clean_batch(batch: list[tuple[str, str, str]], keep_markup: bool, min_chars: int,
                page_seconds: float | None = None):
    """Worker: (title, text, kind) -> (title, article bytes or None, skip reason)."""
    out = []
    for title, text, kind in batch:
        # NUL ends an article in the shards: one inside the text would split it in two
        title, text = title.replace("\0", ""), text.replace("\0", "")
        if kind == CLEAN or keep_markup:
            body = text
        else:
            deadline = time.monotonic() + page_seconds if page_seconds else None
            try:
                body = clean_wikitext(text, title, deadline)
            except CleanTimeout:
                out.append((title, None, "timeout"))
                continue
        if len(body.strip()) < min_chars:
            out.append((title, None, "empty"))
        else:
            out.append((title, encode_article(title, body), ""))
    return out


def read_chunk(data: bytes, max_page_chars: int, keep_markup: bool, min_chars: int, page_seconds: float | None):
    """Worker: a chunk of a multistream .bz2 (whole streams, multistream.py) decoded, its whole pages
    read (wiki.page_run) and cleaned as clean_batch cleans them.

    Returns None if the chunk is not whole streams, its decoded bytes if the pages cannot be cut
    out safely, else a ParsedChunk holding the PageRun, whose pages are replaced by
    ([(title, article bytes or None, skip reason)], [timestamp]), one each per page in order.
    """
    xml = decompress_streams(data)
    if xml is None:
        return None
    run = page_run(xml, max_page_chars)
    if run is None:
        return xml
    cleaned = iter(clean_batch([(p.title, p.text, p.kind) for p in run.pages if p.kind not in SKIPPED_KINDS],
                               keep_markup, min_chars, page_seconds))
    outcomes = [("", None, p.kind) if p.kind in SKIPPED_KINDS else next(cleaned) for p in run.pages]
    run.pages = (outcomes, [p.timestamp for p in run.pages])
    return ParsedChunk(len(xml), run)


class _Ready:
    """A result at hand, asked for as a pool's result is."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def get(self):
        return self.value


def title_key(title: str) -> bytes:
    """128-bit hash of a title as MediaWiki compares titles ('_' = ' ', first letter upper case).

    A hash, not the title, is remembered per article; two different titles share one with
    probability about n^2 / 2^129 (1e-25 for English Wikipedia).
    """
    t = " ".join(unicodedata.normalize("NFC", title).replace("_", " ").split())
    t = t[:1].upper() + t[1:]
    return hashlib.blake2b(t.encode("utf-8", "replace"), digest_size=16).digest()


_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def timestamp_value(ts: str) -> int:
    """A MediaWiki revision timestamp '2016-04-22T10:19:33Z' as 20160422101933 (ordered as time); -1 if none."""
    if not _TIMESTAMP.fullmatch(ts):
        return -1
    return int(ts[0:4] + ts[5:7] + ts[8:10] + ts[11:13] + ts[14:16] + ts[17:19])


class WrittenArticles:
    """Where each written article lies, in the order written (= input order), and its title key.

    Typed arrays, 58 bytes an article; the text stays in the shards.
    """

    def __init__(self):
        self.key_hi, self.key_lo = array("Q"), array("Q")
        self.hash = array("Q")  # shards.title_hash: the split's order
        self.stamp = array("q")
        self.dedup = array("B")  # 0: exempt from the one-per-title rule (plain-text inputs)
        self.source = array("I")
        self.split = array("B")
        self.shard = array("I")
        self.offset, self.length = array("Q"), array("Q")

    def add(self, title: str, timestamp: str, dedup: bool, source: int, split: int,
            shard: int, offset: int, length: int) -> None:
        key = title_key(title) if dedup else bytes(16)
        self.key_hi.append(int.from_bytes(key[:8], "big"))
        self.key_lo.append(int.from_bytes(key[8:], "big"))
        self.hash.append(title_hash(title))
        self.stamp.append(timestamp_value(timestamp))
        self.dedup.append(int(dedup))
        self.source.append(source)
        self.split.append(split)
        self.shard.append(shard)
        self.offset.append(offset)
        self.length.append(length)

    def superseded(self) -> np.ndarray:
        """Rows (ascending) of the copies that lose to another copy of their title."""
        rows = np.flatnonzero(np.frombuffer(self.dedup, np.uint8))
        if len(rows) < 2:
            return rows[:0]
        hi = np.frombuffer(self.key_hi, np.uint64)[rows]
        lo = np.frombuffer(self.key_lo, np.uint64)[rows]
        stamp = np.frombuffer(self.stamp, np.int64)[rows]
        # by title, then timestamp (-1: none, older than any), then input order: the last of a title wins
        order = rows[np.lexsort((rows, stamp, lo, hi))]
        hi, lo = np.frombuffer(self.key_hi, np.uint64)[order], np.frombuffer(self.key_lo, np.uint64)[order]
        loses = (hi[:-1] == hi[1:]) & (lo[:-1] == lo[1:])
        return np.sort(order[:-1][loses])


class OutputExists(SourceError):
    pass


class Terminated(KeyboardInterrupt):
    """SIGTERM during `prepare`: handled as Ctrl-C is (the temporary output is removed)."""
    signum = signal.SIGTERM


def _source_signature(files: list[Path]) -> list[tuple[str, int, int]]:
    return [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _same_sources(old_sources, sig: list) -> bool:
    """The manifest's sources are these files, unchanged (same size; same mtime, or else same sha256)."""
    if not isinstance(old_sources, list) or len(old_sources) != len(sig):
        return False
    for old, (path, size, mtime_ns) in zip(old_sources, sig):
        if not isinstance(old, dict) or (old.get("path"), old.get("bytes")) != (path, size):
            return False
        if old.get("mtime_ns") != mtime_ns and old.get("sha256") != _file_sha256(Path(path)):
            return False  # edited in place, even at the same size
    return True


def check_out_dir(out: Path, sources_sig: list, options: dict) -> bool:
    """True if `out` already holds exactly this preparation; raise if it holds anything else."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise OutputExists(f"{out}: exists and is not a directory")
    entries = [p for p in out.iterdir()]
    if not entries:
        return False
    manifest = out / MANIFEST
    if manifest.exists():
        try:
            old = json.loads(manifest.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            old = {}
        if isinstance(old, dict) and isinstance(old.get("options"), dict):
            # a preparation from before an option existed used its default
            old_options = {"max_page_chars": MAX_PAGE_CHARS, **old["options"]}
            if old_options == options and _same_sources(old.get("sources"), sources_sig):
                return True
    raise OutputExists(f"{out}: exists and holds other content; choose an empty or new --out (or pass --force)")


class OutputLock:
    """An exclusive lock on an output directory: flock on `.NAME.lock` beside it, which holds our pid.

    The file is removed when the lock is released. A process that opened it just before that
    locks a file no longer in the directory, sees so, and opens the new one.
    """

    def __init__(self, out: Path):
        self.out = out
        self.path = out.parent / f".{out.name}.lock"
        self.fd: int | None = None

    def __enter__(self) -> "OutputLock":
        if fcntl is None:
            return self
        try:
            with stop_signals_blocked():  # a signal before we hold the lock would leave its file behind
                self._acquire()
        except BaseException:  # a signal held back meanwhile is raised here, with the lock held
            self.__exit__(None, None, None)
            raise
        return self

    def _acquire(self) -> "OutputLock":
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
                os.close(fd)
                raise OutputExists(f"{self.out}: another cheaplm prepare (pid {holder}) is writing it; "
                                   "wait for it to finish or choose another --out") from None
            try:
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is None:
            return
        with stop_signals_blocked():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            os.close(self.fd)
            self.fd = None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove_stale_partials(out: Path) -> list[Path]:
    """Remove `.NAME.partial-PID` directories beside `out` left by runs that died (call under the lock)."""
    prefix = f".{out.name}.partial-"
    removed = []
    for p in out.parent.iterdir():
        pid = p.name[len(prefix):] if p.name.startswith(prefix) else ""
        if pid.isdigit() and (int(pid) == os.getpid() or not _pid_alive(int(pid))):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _snapshot(out: Path):
    """What `out` holds now: None if absent, else its entries with their sizes and times."""
    try:
        entries = list(os.scandir(out))
    except FileNotFoundError:
        return None
    return sorted((e.name, e.stat(follow_symlinks=False).st_mtime_ns, e.stat(follow_symlinks=False).st_size)
                  for e in entries)


def _check_places(out: Path, paths: list[str], files: list[Path]) -> None:
    """Refuse an --out that holds an input, lies inside one, or holds the current directory."""
    for name in [*paths, *map(str, files)]:
        p = Path(name).resolve()
        if p == out or out in p.parents:
            raise SourceError(f"{out}: holds the input {name}; choose an --out outside the inputs")
        if p in out.parents:
            raise SourceError(f"{out}: is inside the input {name}; choose an --out outside the inputs")
    cwd = Path.cwd().resolve()
    if cwd == out or out in cwd.parents:
        raise SourceError(f"{out}: is or holds the current directory; name a new directory, e.g. --out data/wiki")


def _install(tmp: Path, out: Path, before) -> None:
    """Move the finished `tmp` to `out` if `out` still holds what it held at the start.

    Ctrl-C and SIGTERM wait until it is done: between two renames `out` would be missing.
    """
    with stop_signals_blocked():
        _install_now(tmp, out, before)


def _install_now(tmp: Path, out: Path, before) -> None:
    if _snapshot(out) != before:
        raise OutputExists(f"{out}: changed while prepare ran (something was written into it); "
                           "left as it is and nothing written. Run again into an empty or new --out")
    if before is None:
        tmp.rename(out)  # fails, rather than replaces, if a non-empty directory appeared meanwhile
    elif not before:
        out.rmdir()  # fails if anything appeared meanwhile
        tmp.rename(out)
    else:  # --force: the old content goes only once the new one is in place
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)


# the interrupt (Terminated for SIGTERM, KeyboardInterrupt for Ctrl-C) raised inside a destructor
# (__del__, a weakref callback), where Python prints it as "Exception ignored" and goes on: a
# SIGTERM during the regex module's garbage collection was lost so, the workers it also reached
# broke the pool's pipes, and prepare ended with "Broken pipe" and exit code 1. The main loop and
# the error path raise it again
_LOST_INTERRUPT: list = []


def _raise_if_interrupt_lost() -> None:
    if _LOST_INTERRUPT:
        raise type(_LOST_INTERRUPT[0])()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises Terminated in the main thread, so the temporary output is cleaned up as on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the clean-up short
        raise Terminated()

    previous_hook = sys.unraisablehook

    def unraisable(info):
        if isinstance(info.exc_value, KeyboardInterrupt):
            _LOST_INTERRUPT.append(info.exc_value)
        else:
            previous_hook(info)

    _LOST_INTERRUPT.clear()
    previous = signal.signal(signal.SIGTERM, handler)
    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = previous_hook


def _remove_quietly(path: Path) -> None:
    """rmtree that a second Ctrl-C or SIGTERM does not interrupt (they are delivered after it)."""
    with stop_signals_blocked():
        shutil.rmtree(path, ignore_errors=True)


def prepare(paths: list[str], out: Path, options: PrepareOptions, console=None, force: bool = False) -> dict:
    """Prepare `paths` (dumps, WikiExtractor output, tars, text) into shards in `out`; return the manifest.

    One article per title across all inputs: the newest revision by its <timestamp> where the dump
    gives one, else (no or equal timestamps) the later in input order; the others are counted as
    skipped 'duplicate' (the module docstring has the details).
    """
    options.check()
    given = out
    files = expand_sources(paths)
    for f in files:
        if not f.is_file():
            raise SourceError(f"{f}: not a regular file")
    try:
        out = Path(out).resolve()
        _check_places(out, list(paths), files)
        out.parent.mkdir(parents=True, exist_ok=True)
        with _sigterm_as_interrupt(), OutputLock(out):
            remove_stale_partials(out)
            sig = _source_signature(files)
            if not force and check_out_dir(out, sig, options.as_dict()):
                manifest = json.loads((out / MANIFEST).read_text())
                manifest["up_to_date"] = True
                return manifest
            if out.exists() and not out.is_dir():
                raise OutputExists(f"{given}: exists and is not a directory")
            before = _snapshot(out)
            tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
            try:
                tmp.mkdir()  # in the try: a signal right after it must not leave tmp behind
                manifest = _prepare_into(files, tmp, options, console)
                _install(tmp, out, before)
            except BaseException:
                _remove_quietly(tmp)
                raise
    except OSError as exc:
        _raise_if_interrupt_lost()  # the signal, not the pipe it broke, is what ended the run
        where = exc.filename or given
        raise SourceError(f"{where}: {exc.strerror or exc}") from None
    return manifest


def _prepare_into(files: list[Path], tmp: Path, options: PrepareOptions, console) -> dict:
    writers = {s: SplitWriter(tmp, s, options.shard_bytes) for s in SPLITS}
    total_disk = sum(f.stat().st_size for f in files)
    workers = options.workers or os.cpu_count() or 1
    stats_all: list[SourceStats] = []
    progress = Progress(console, total_disk, unit="articles")
    done_disk = 0
    done_text = 0  # uncompressed bytes of the finished sources, for MB/s
    t0 = time.time()
    ctx = mp.get_context("fork" if hasattr(os, "fork") else "spawn")
    clean_args = (options.keep_markup, options.min_chars, options.page_seconds)
    chunk_task = (read_chunk, (options.max_page_chars, *clean_args)) if options.parallel_bz2 else None
    written = WrittenArticles()
    cpu0 = time.process_time()
    with OrderedPool(ctx, workers, clean_batch) as pool:
        for source_index, f in enumerate(files):
            stats = SourceStats(str(f))
            stats_all.append(stats)
            src = open_source(f, pool if options.parallel_bz2 else None, ahead=CHUNKS_AHEAD * workers)
            stats.format, stats.compression, stats.bytes = src.format, src.compression, src.size
            stats.mtime_ns = f.stat().st_mtime_ns
            dedup = src.format != TEXT  # plain text's titles are made up from the file name
            state = ReadState(max_page_chars=options.max_page_chars,
                              chunk_task=chunk_task if src.compression == "bz2" else None)
            pending: collections.deque = collections.deque()  # (cleaning result, the pages' timestamps)
            try:
                batch: list = []
                stamps: list[str] = []
                chars = 0

                def drain(limit: int) -> None:
                    _raise_if_interrupt_lost()
                    while len(pending) > limit or (pending and isinstance(pending[0][0], _Ready)):
                        result, batch_stamps = pending.popleft()
                        for (title, article, reason), stamp in zip(result.get(), batch_stamps):
                            if article is None:
                                stats.skipped[reason] += 1
                                continue
                            stats.kept += 1
                            split = split_of(title, options.val_fraction, options.test_fraction)
                            shard, offset = writers[split].write(article)
                            written.add(title, stamp, dedup, source_index, SPLITS.index(split),
                                        shard, offset, len(article))
                        progress.update(done_disk + src.raw.bytes_read, stats_total(stats_all),
                                        done_text + src.stream.raw.bytes_out)

                for page in read_pages(src, state):
                    _raise_if_interrupt_lost()
                    if isinstance(page, PageRun):  # a chunk's pages, read and cleaned by a worker
                        if batch:
                            pending.append((pool.submit(batch, *clean_args), stamps))
                            batch, stamps, chars = [], [], 0
                        outcomes, run_stamps = page.pages
                        stats.pages_read += page.count
                        pending.append((_Ready(outcomes), run_stamps))
                        drain(2 * workers)
                        continue
                    stats.pages_read += 1
                    if page.kind in SKIPPED_KINDS:
                        stats.skipped[page.kind] += 1
                        continue
                    batch.append((page.title, page.text, page.kind))
                    stamps.append(page.timestamp)
                    chars += len(page.text)
                    if chars >= BATCH_CHARS:
                        pending.append((pool.submit(batch, *clean_args), stamps))
                        batch, stamps, chars = [], [], 0
                        drain(2 * workers)
                if batch:
                    pending.append((pool.submit(batch, *clean_args), stamps))
                drain(0)
                stats.bytes_uncompressed = src.stream.raw.bytes_out
                stats.sha256 = src.raw.finish_hash()
                stats.truncated, stats.schema = state.truncated, state.schema
            finally:
                src.close()
            done_disk += stats.bytes
            done_text += stats.bytes_uncompressed
            if stats.pages_read == 0:
                raise SourceError(f"{f}: no pages or text found")
    LAST_PROFILE.clear()
    LAST_PROFILE.update(pool.stats.as_dict(), main_cpu_s=time.process_time() - cpu0,
                        xml_bytes=done_text)
    progress.finish()
    superseded = written.superseded()
    cuts = _count_duplicates(written, superseded, stats_all)
    split_fill = _fill_empty_splits(written, superseded, writers, cuts, options)
    splits = {}
    for s, w in writers.items():
        w.close()
        splits[s] = w.remove(cuts[s])
    warnings = _small_split_warnings(splits, options)
    for line in warnings:
        if console is not None:
            console.print(line, markup=False, soft_wrap=True)
        else:
            print(line, file=sys.stderr)
    return _write_manifest(tmp, options, stats_all, splits, split_fill, warnings, time.time() - t0)


def _write_manifest(tmp: Path, options: PrepareOptions, stats_all: list, splits: dict, split_fill, warnings: list,
                    elapsed: float) -> dict:
    """manifest.json of a prepared directory (written to a temporary name, then renamed); returns it."""
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "cheaplm_version": __version__,
        "separator": "\\u0000",
        "layout": "each article: TITLE \\n\\n BODY \\n then one NUL byte",
        "options": options.as_dict(),
        "sources": [{
            "path": s.path, "format": s.format, "compression": s.compression, "schema": s.schema,
            "sha256": s.sha256, "bytes": s.bytes, "mtime_ns": s.mtime_ns, "bytes_uncompressed": s.bytes_uncompressed,
            "pages_read": s.pages_read, "kept": s.kept, "skipped": dict(sorted(s.skipped.items())),
            "truncated": s.truncated} for s in stats_all],
        "pages": {"read": sum(s.pages_read for s in stats_all), "kept": sum(s.kept for s in stats_all),
                  "skipped": dict(sorted(sum((s.skipped for s in stats_all), collections.Counter()).items()))},
        "splits": splits,
        "split_fill": split_fill,
        "warnings": warnings,
        "seconds": round(elapsed, 3),
        "mb_per_s_uncompressed": round(sum(s.bytes_uncompressed for s in stats_all) / 1e6 / max(elapsed, 1e-9), 3),
    }
    tmp_manifest = tmp / (MANIFEST + ".tmp")
    tmp_manifest.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp_manifest.rename(tmp / MANIFEST)
    return manifest


def _count_duplicates(written: WrittenArticles, superseded: np.ndarray, stats_all: list[SourceStats]) -> dict:
    """Count the superseded copies per source; return where they lie, to be cut out: split -> shard -> ranges."""
    cuts: dict[str, dict[int, list]] = {s: collections.defaultdict(list) for s in SPLITS}
    for row in superseded.tolist():
        cuts[SPLITS[written.split[row]]][written.shard[row]].append((written.offset[row], written.length[row]))
        stats = stats_all[written.source[row]]
        stats.kept -= 1
        stats.skipped["duplicate"] += 1
    return cuts


def _fill_empty_splits(written: WrittenArticles, superseded: np.ndarray, writers: dict, cuts: dict,
                       options: PrepareOptions) -> list[str]:
    """With at least MIN_ARTICLES_TO_FILL articles, give each empty split that is asked for one article.

    It comes from the split holding the most articles (ties: train, val, test), which then still
    holds one: the one of the lowest title hash, copied to the empty split and cut from its own.
    Returns what moved, as 'test <- train'.
    """
    kept = np.ones(len(written.split), dtype=bool)
    kept[superseded] = False
    if kept.sum() < MIN_ARTICLES_TO_FILL:
        return []
    split = np.frombuffer(written.split, np.uint8).copy()
    hashes = np.frombuffer(written.hash, np.uint64)
    asked = {"train": options.val_fraction + options.test_fraction < 1,
             "val": options.val_fraction > 0, "test": options.test_fraction > 0}
    moved = []
    for name in ("test", "val", "train"):
        counts = np.bincount(split[kept], minlength=len(SPLITS))
        if not asked[name] or counts[SPLITS.index(name)]:
            continue
        donor = max(("train", "val", "test"), key=lambda d: counts[SPLITS.index(d)])
        rows = np.flatnonzero(kept & (split == SPLITS.index(donor)))
        row = int(rows[np.argmin(hashes[rows])])
        where = (written.shard[row], written.offset[row], written.length[row])
        writers[name].write(writers[donor].read(*where))
        cuts[donor][where[0]].append(where[1:])
        split[row] = SPLITS.index(name)
        moved.append(f"{name} <- {donor}")
    return moved


def _small_split_warnings(splits: dict, options: PrepareOptions) -> list[str]:
    """One line naming every split asked for that holds less than SMALL_SPLIT_BYTES, or none."""
    fractions = {"train": 1 - options.val_fraction - options.test_fraction,
                 "val": options.val_fraction, "test": options.test_fraction}
    small = [s for s in SPLITS if fractions[s] > 0 and splits[s]["bytes"] < SMALL_SPLIT_BYTES]
    if not small:
        return []
    sizes = ", ".join(f"{s} {splits[s]['bytes']:,} bytes ({splits[s]['articles']:,} "
                      f"article{'' if splits[s]['articles'] == 1 else 's'})" for s in small)
    fractions_help = [f"--{s}-fraction" for s in small if s != "train"] if "train" not in small else []
    hint = "more articles" + (f" or a larger {' or '.join(fractions_help)}" if fractions_help else "")
    return [f"warning: small splits: {sizes}; under {SMALL_SPLIT_BYTES >> 10} KiB a split's bits per byte "
            f"rests on a few articles and is too noisy to compare runs by; give prepare {hint}"]


def stats_total(stats_all: list[SourceStats]) -> int:
    return sum(s.kept for s in stats_all)
