"""Decompress a multistream .bz2 on every core, delivering the bytes in order.

A multistream dump (`pages-articles-multistream.xml.bz2`) is many bz2 streams back to back, each
starting on a byte boundary with its own header ('BZh' + level digit, then the first block's magic
0x314159265359); a stream decodes without the others. The main process reads the file once (the
bytes pass the HashingReader, so the manifest's sha256 costs nothing more), finds stream headers
with `bytes.find`, cuts the file there into chunks of at least CHUNK_BYTES, and hands each chunk to
the worker pool, `ahead` chunks in flight. The decoded chunks are consumed in file order, so what
the XML parser reads is exactly what one decompressor would have produced.

A header found by its bytes may be a false one (the 10 bytes can occur inside compressed data),
so nothing trusts it: a worker accepts a chunk only if it decodes as whole streams that end exactly
at the chunk's end. By induction from offset 0 (a true stream start), every accepted chunk starts at
a true stream start and decodes to the same bytes as a serial decoder. The first chunk that is not
accepted (a false header, a damaged or truncated file, trailing garbage) ends the parallel part:
from its start on, the file is decoded serially by `bz2.BZ2File`, as before, with its rules
(trailing non-bz2 data ignored, a damaged stream an error). The same happens when no header turns up
within MAX_CHUNK_BYTES: a single-stream .bz2 is decoded serially in constant memory.

Decompression runs in prepare's pool of processes, the one that cleans: one pool sized to the
cores keeps them busy without oversubscribing them. Threads would do too (bz2 releases the GIL),
but they would compete with the cleaning processes for the cores, and the decoded bytes would
still have to be parsed in one process; on the loaded 2-core machine the two measured alike
(bench/RESULTS.md; bench/prepare_speed.py measures both). For a dump, prepare's task also reads
and cleans the chunk's pages in the worker, so the decoded bytes never cross the pipe.
The dump's index file (`...-multistream-index.txt.bz2`) is not needed: finding the headers runs at
GB/s.

A caller can ask for more than decoding (`parse_ahead`): chunks cut from then on go to its task,
which decodes the chunk and may also turn it into something else (prepare: the chunk's whole pages,
parsed and cleaned). Such a result is not bytes: reading stops in front of it (`readinto` returns 0)
until the caller takes it (`take_parsed`), and goes on after it. The first chunk is decoded alone,
before any other is cut, so that the caller can read the dump's header and decide before more
chunks are in flight.
"""

from __future__ import annotations

import bz2
import collections
import io

# compressed bytes per chunk, at least (enwiki's streams are ~100 KB: a few a chunk). Small chunks
# keep many workers evenly busy (each takes the next when done; the last ones end together); the
# callers keep several per worker in flight (prepare: 8)
CHUNK_BYTES = 256 << 10
MAX_CHUNK_BYTES = 16 << 20  # no stream header within this many bytes: decode the rest serially
READ_BYTES = 1 << 20
BLOCK_MAGIC = b"\x31\x41\x59\x26\x53\x59"  # pi: the first bytes of every bz2 block
LEVELS = b"123456789"
EMPTY_STREAM = bz2.compress(b"")  # header + end-of-stream marker, no block: decodes to nothing


def next_stream_start(buf, start: int = 0) -> int:
    """The first offset from `start` on where buf holds a bz2 stream header and its first block's
    magic (10 bytes), or -1."""
    i = buf.find(BLOCK_MAGIC, start + 4)
    while i >= 0:
        if buf[i - 4:i - 1] == b"BZh" and buf[i - 1] in LEVELS:
            return i - 4
        i = buf.find(BLOCK_MAGIC, i + 1)
    return -1


def decompress_streams(data: bytes) -> bytes | None:
    """Worker: `data` decoded, if it is whole bz2 streams back to back and nothing else; else None."""
    out = []
    while data:
        d = bz2.BZ2Decompressor()
        try:
            out.append(d.decompress(data))
        except OSError:
            return None
        if not d.eof:
            return None
        data = d.unused_data
    return b"".join(out)


class ParsedChunk:
    """A chunk a task decoded (`size` bytes of output) and made into `value` instead of returning the bytes."""

    __slots__ = ("size", "value")

    def __init__(self, size: int, value):
        self.size, self.value = size, value


class _Tail(io.RawIOBase):
    """The compressed bytes from the first unaccepted chunk on: held bytes, then the rest of the file."""

    def __init__(self, held: bytes, raw):
        self._held = memoryview(held)
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self._held:
            n = min(len(buf), len(self._held))
            buf[:n] = self._held[:n]
            self._held = self._held[n:]
            return n
        return self._raw.readinto(buf)


class ParallelBz2Reader(io.RawIOBase):
    """Decompressed bytes of a bz2 file, its streams decoded by `pool` (anything with apply_async).

    Raises what bz2.BZ2File raises (EOFError, OSError) for a truncated or damaged file.
    """

    def __init__(self, raw, pool, ahead: int):
        self._raw = raw  # the compressed file, read sequentially
        self._pool = pool
        self._ahead = max(1, ahead)
        self._chunk_bytes = max(1, CHUNK_BYTES)  # read here, so that tests can patch them small
        self._max_chunk_bytes = max(MAX_CHUNK_BYTES, self._chunk_bytes)
        self._buf = bytearray()  # compressed bytes read but not yet in a chunk
        self._scanned = 0  # _buf[:_scanned] holds no header past the chunk minimum
        self._eof = False  # the file is read to its end
        self._too_long = False  # no header within max_chunk_bytes: the rest goes serially
        self._chunks = 0  # chunks cut so far
        self._pending: collections.deque = collections.deque()  # (chunk index, compressed bytes, result)
        self._out = memoryview(b"")  # decoded bytes of the current chunk not yet delivered
        self._serial: bz2.BZ2File | None = None
        self._task, self._task_args = decompress_streams, ()
        self._parsed = None  # (compressed bytes, ParsedChunk) that reading stopped in front of
        self.chunks_parallel = 0  # chunks accepted from the pool (for tests and benchmarks)

    def parse_ahead(self, task, args: tuple = ()) -> bool:
        """Send the chunks cut from now on to `task(chunk, *args)` (a module-level function), which
        returns what decompress_streams does, or a ParsedChunk (module docstring). True if the
        chunks are still cut (not after a fall back to serial decoding)."""
        self._task, self._task_args = task, tuple(args)
        return self._serial is None and not self._too_long

    def take_parsed(self):
        """(compressed bytes, ParsedChunk) where reading stopped, or None; reading then goes on after it."""
        got, self._parsed = self._parsed, None
        return got

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        while not self._out:
            if self._parsed is not None:
                return 0  # stopped in front of a parsed chunk until it is taken
            if self._serial is not None:
                return self._serial.readinto(buf)
            self._submit()
            if not self._pending:
                if self._too_long:  # one stream, or streams too long: decode the rest serially
                    self._fall_back(self._chunks, b"")
                    continue
                return 0
            index, data, result = self._pending.popleft()
            decoded = result.get()
            if decoded is None:
                self._fall_back(index, data)
            elif isinstance(decoded, ParsedChunk):
                self.chunks_parallel += 1
                self._parsed = (data, decoded)
            else:
                self.chunks_parallel += 1
                self._out = memoryview(decoded)
        n = min(len(buf), len(self._out))
        buf[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _submit(self) -> None:
        """Cut chunks and hand them to the pool until `ahead` are in flight or the file is read."""
        ahead = self._ahead if self._chunks else 1  # the first chunk alone: the caller may change the task
        while len(self._pending) < ahead and not self._too_long:
            data = self._next_chunk()
            if data is None:
                return
            result = self._pool.apply_async(self._task, (data, *self._task_args))
            self._pending.append((self._chunks, data, result))
            self._chunks += 1

    def _next_chunk(self) -> bytes | None:
        """The next chunk: from _buf's start to the first stream header at or past chunk_bytes."""
        while True:
            lo = max(self._scanned, self._chunk_bytes)
            at = next_stream_start(self._buf, lo) if len(self._buf) >= lo + 10 else -1
            if at >= 0:
                return self._cut(at)
            self._scanned = max(lo, len(self._buf) - 9)  # a header may begin in the last 9 bytes
            if self._eof:
                return self._cut(len(self._buf)) if self._buf else None
            if len(self._buf) >= self._max_chunk_bytes:
                self._too_long = True
                return None
            block = self._raw.read(READ_BYTES)
            if not block:
                self._eof = True
            self._buf += block

    def _cut(self, at: int) -> bytes:
        data = bytes(self._buf[:at])
        del self._buf[:at]
        self._scanned = 0
        return data

    def _fall_back(self, index: int, data: bytes) -> None:
        """Decode serially from chunk `index` on (its bytes `data`, then the later chunks and the file)."""
        held = b"".join([data, *(d for _, d, _ in self._pending), bytes(self._buf)])
        self._pending.clear()
        self._buf = bytearray()
        # A stream after the first: BZ2File ignores non-bz2 data there as trailing garbage. An empty
        # stream in front gives the serial decoder that same state.
        lead = EMPTY_STREAM if index > 0 else b""
        self._serial = bz2.BZ2File(_Tail(lead + held, self._raw))

    def close(self) -> None:
        if self._serial is not None:
            self._serial.close()
        self._pending.clear()
        self._parsed = None
        super().close()
