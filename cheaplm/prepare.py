"""`cheaplm prepare`: Wikipedia sources -> byte shards + manifest.json.

The main process decompresses and parses (one stream at a time, in order); cleaning runs in a
pool of worker processes on batches of pages. At most `2 x workers` batches are in flight, so memory
stays constant however large the dump. Results are consumed in submission order, which is what
makes the shards independent of the number of workers.

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
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .progress import Progress
from .shards import FORMAT, FORMAT_VERSION, MANIFEST, SPLITS, SplitWriter, encode_article, split_of
from .sources import SourceError, expand_sources, open_source
from .wiki import CLEAN, MAX_PAGE_CHARS, NAMESPACE, OVERSIZED, REDIRECT, ReadState, read_pages
from .wikitext import CleanTimeout, clean_wikitext

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock on the output
    fcntl = None

BATCH_CHARS = 1 << 20


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


def _worker_init() -> None:
    # Ctrl-C reaches every process of the terminal's group: the main process handles it and
    # ends the pool; a worker must not print a traceback of its own. SIGTERM is how the pool
    # ends its workers, so it keeps its default action (the parent's handler is inherited by fork).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


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
    """Move the finished `tmp` to `out` if `out` still holds what it held at the start."""
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


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises Terminated in the main thread, so the temporary output is cleaned up as on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the clean-up short
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _remove_quietly(path: Path) -> None:
    """rmtree that a second Ctrl-C or SIGTERM does not interrupt (they are delivered after it)."""
    blocked = {signal.SIGINT, signal.SIGTERM}
    if hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread():
        old = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
    else:
        shutil.rmtree(path, ignore_errors=True)


def prepare(paths: list[str], out: Path, options: PrepareOptions, console=None, force: bool = False) -> dict:
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
            tmp.mkdir()
            try:
                manifest = _prepare_into(files, tmp, options, console)
                _install(tmp, out, before)
            except BaseException:
                _remove_quietly(tmp)
                raise
    except OSError as exc:
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
    with ctx.Pool(workers, initializer=_worker_init) as pool:
        for f in files:
            stats = SourceStats(str(f))
            stats_all.append(stats)
            src = open_source(f)
            stats.format, stats.compression, stats.bytes = src.format, src.compression, src.size
            stats.mtime_ns = f.stat().st_mtime_ns
            state = ReadState(max_page_chars=options.max_page_chars)
            pending: collections.deque = collections.deque()
            try:
                batch: list = []
                chars = 0

                def drain(limit: int) -> None:
                    while len(pending) > limit:
                        for title, article, reason in pending.popleft().get():
                            if article is None:
                                stats.skipped[reason] += 1
                                continue
                            stats.kept += 1
                            writers[split_of(title, options.val_fraction, options.test_fraction)].write(article)
                        progress.update(done_disk + src.raw.bytes_read, stats_total(stats_all),
                                        done_text + src.stream.raw.bytes_out)

                for page in read_pages(src, state):
                    stats.pages_read += 1
                    if page.kind in (REDIRECT, NAMESPACE, OVERSIZED):
                        stats.skipped[page.kind] += 1
                        continue
                    batch.append((page.title, page.text, page.kind))
                    chars += len(page.text)
                    if chars >= BATCH_CHARS:
                        pending.append(pool.apply_async(clean_batch, (batch, *clean_args)))
                        batch, chars = [], 0
                        drain(2 * workers)
                if batch:
                    pending.append(pool.apply_async(clean_batch, (batch, *clean_args)))
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
    progress.finish()
    elapsed = time.time() - t0
    splits = {s: w.close() for s, w in writers.items()}
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
        "seconds": round(elapsed, 3),
        "mb_per_s_uncompressed": round(sum(s.bytes_uncompressed for s in stats_all) / 1e6 / max(elapsed, 1e-9), 3),
    }
    tmp_manifest = tmp / (MANIFEST + ".tmp")
    tmp_manifest.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp_manifest.rename(tmp / MANIFEST)
    return manifest


def stats_total(stats_all: list[SourceStats]) -> int:
    return sum(s.kept for s in stats_all)
