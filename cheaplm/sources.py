"""Open input files whatever their compression, and tell what kind of text they hold.

Compression is detected from magic bytes, not from the file name, so a renamed `.bz2` still
works. The raw (compressed) bytes pass through a hashing reader, so the manifest's sha256 of each
source costs no second read of the file.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import zlib
from dataclasses import dataclass
from pathlib import Path

from .multistream import ParallelBz2Reader


class SourceError(Exception):
    """Bad input: the message names the file and says what is wrong, in one line."""


MAGIC = {
    b"BZh": "bz2",
    b"\x1f\x8b": "gzip",
    b"\xfd7zXZ\x00": "xz",
}

# Formats a source can hold, decided from its first bytes after decompression.
XML_DUMP = "mediawiki-xml"
WIKIEXTRACTOR = "wikiextractor"
TAR = "tar"
WIKITEXT = "wikitext"
TEXT = "text"

PEEK_BYTES = 1 << 16


class HashingReader(io.RawIOBase):
    """Reads a file, hashing and counting every byte that passes (the compressed bytes)."""

    def __init__(self, path: Path):
        self._f = open(path, "rb")
        self.sha256 = hashlib.sha256()
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = self._f.readinto(buf)
        if n:
            self.sha256.update(memoryview(buf)[:n])
            self.bytes_read += n
        return n

    def finish_hash(self) -> str:
        """Hash whatever the decompressor did not read (trailing bytes), then return the digest."""
        while True:
            chunk = self._f.read(1 << 20)
            if not chunk:
                break
            self.sha256.update(chunk)
            self.bytes_read += len(chunk)
        return self.sha256.hexdigest()

    def close(self) -> None:
        self._f.close()
        super().close()


def compression_of(path: Path) -> str | None:
    with open(path, "rb") as f:
        head = f.read(8)
    for magic, name in MAGIC.items():
        if head.startswith(magic):
            return name
    return None


class DecompressingReader(io.RawIOBase):
    """A raw stream of the decompressed bytes that turns codec failures into SourceError.

    bz2 reads concatenated streams (multistream dumps) as one; a stream that ends early or holds
    garbage raises a one-line error naming the file. Given a worker pool, a multistream bz2's
    streams are decoded by the pool (multistream.py), the bytes delivered in the same order.
    """

    def __init__(self, path: Path, raw: HashingReader, compression: str | None, pool=None, ahead: int = 0):
        self.path = path
        self.raw = raw
        self.compression = compression
        if compression == "bz2" and pool is not None:
            self._f = ParallelBz2Reader(raw, pool, ahead)
        elif compression == "bz2":
            self._f = bz2.BZ2File(raw)
        elif compression == "gzip":
            self._f = gzip.GzipFile(fileobj=raw)
        elif compression == "xz":
            self._f = lzma.LZMAFile(raw)
        else:
            self._f = raw
        self.bytes_out = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        try:
            n = self._f.readinto(buf)
        except EOFError:
            raise SourceError(
                f"{self.path}: truncated {self.compression} stream "
                f"(ends after {self.bytes_out:,} decompressed bytes)") from None
        except (OSError, lzma.LZMAError, zlib.error, ValueError) as exc:  # zlib.error: damaged gzip data
            raise SourceError(
                f"{self.path}: corrupt {self.compression} data after {self.bytes_out:,} "
                f"decompressed bytes ({exc})") from None
        self.bytes_out += n or 0
        return n

    def parse_ahead(self, task, args: tuple = ()) -> bool:
        """Hand the chunks of a multistream bz2 cut from now on to `task` (multistream.py); False if
        this stream's chunks do not go to a pool."""
        return isinstance(self._f, ParallelBz2Reader) and self._f.parse_ahead(task, args)

    def take_parsed(self):
        """(compressed bytes, ParsedChunk) at which reading stopped, or None (a true end of the stream);
        its decoded bytes count as read."""
        got = self._f.take_parsed() if isinstance(self._f, ParallelBz2Reader) else None
        if got is not None:
            self.bytes_out += got[1].size
        return got

    def close(self) -> None:
        if self._f is not self.raw:
            self._f.close()
        self.raw.close()
        super().close()


@dataclass
class OpenedSource:
    path: Path
    raw: HashingReader
    stream: io.BufferedReader  # decompressed bytes
    compression: str | None
    format: str
    size: int  # bytes on disk, for progress

    def parse_ahead(self, task, args: tuple = ()) -> bool:
        return self.stream.raw.parse_ahead(task, args)

    def take_parsed(self):
        return self.stream.raw.take_parsed()

    def close(self) -> None:
        self.stream.close()


def detect_format(path: Path, head: bytes) -> str:
    """Decide what a source holds from its first decompressed bytes."""
    if len(head) >= 262 and head[257:262] == b"ustar":
        return TAR
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith(b"<?xml") or stripped.startswith(b"<mediawiki"):
        if b"<mediawiki" not in stripped[:4096]:
            root = stripped.split(b">", 2)[-1].lstrip()[:40]
            raise SourceError(f"{path}: XML but not a MediaWiki export (starts {root!r})")
        return XML_DUMP
    if stripped.startswith(b"<doc "):
        return WIKIEXTRACTOR
    if b"\x00" in head:
        raise SourceError(f"{path}: binary data, not a Wikipedia dump, WikiExtractor output or text")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the end of the peek is fine; anything else is not UTF-8.
        if exc.start < len(head) - 3 or exc.reason != "unexpected end of data":
            raise SourceError(
                f"{path}: not UTF-8 (invalid byte 0x{head[exc.start]:02x} at offset {exc.start:,}); "
                "not a dump, WikiExtractor output or text file") from None
    return WIKITEXT if looks_like_wikitext(head) else TEXT


def looks_like_wikitext(head: bytes) -> bool:
    marks = head.count(b"[[") + head.count(b"{{") + head.count(b"'''")
    return marks >= 3


def open_source(path: Path, pool=None, ahead: int = 0) -> OpenedSource:
    """Open `path` for reading its decompressed bytes; with a pool (anything with apply_async), a
    bz2 file's streams are decoded by the pool, `ahead` chunks (multistream.CHUNK_BYTES) in flight."""
    if not path.exists():
        raise SourceError(f"{path}: no such file or directory")
    if not path.is_file():
        raise SourceError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise SourceError(f"{path}: empty file")
    try:
        compression = compression_of(path)
        raw = HashingReader(path)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read ({exc.strerror})") from None
    stream = io.BufferedReader(DecompressingReader(path, raw, compression, pool, ahead), buffer_size=1 << 20)
    try:
        head = stream.peek(PEEK_BYTES)[:PEEK_BYTES]
        fmt = detect_format(path, head)
    except BaseException:
        stream.close()
        raise
    return OpenedSource(path, raw, stream, compression, fmt, size)


def expand_sources(paths: list[str]) -> list[Path]:
    """Files named directly are kept in order; directories give their files, sorted by name."""
    out: list[Path] = []
    for name in paths:
        p = Path(name)
        if not p.exists():
            raise SourceError(f"{p}: no such file or directory")
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
            usable = [f for f in files if f.suffix.lower() in USABLE_SUFFIXES or compression_of(f)]
            if not usable:
                raise SourceError(f"{p}: directory holds no usable file (.xml, .bz2, .xz, .gz, .txt, .tar)")
            out.extend(usable)
        else:
            out.append(p)
    return out


USABLE_SUFFIXES = {".xml", ".bz2", ".xz", ".gz", ".txt", ".tar", ".wiki", ".text"}
