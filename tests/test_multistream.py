"""Parallel decoding of multistream .bz2 (multistream.py): the same bytes, and the same shards, as one decoder."""

import bz2
import io
import json
import multiprocessing.pool
import re

import pytest

from cheaplm import multistream, wiki
from cheaplm.multistream import ParallelBz2Reader, next_stream_start
from cheaplm.prepare import PrepareOptions, prepare
from cheaplm.sources import SourceError

from conftest import SAMPLE_DUMP, shared

DUMPS = ["enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
         "enwiki-latest-pages-articles1.xml-p000000010p000010000-shortened.bz2",
         "enwiki-table-markup.xml.bz2"]


def multistream_bz2(xml: bytes, cuts: list[int]) -> bytes:
    """`xml` as one bz2 stream per piece between the cut offsets."""
    bounds = [0, *sorted(cuts), len(xml)]
    return b"".join(bz2.compress(xml[a:b], 1) for a, b in zip(bounds, bounds[1:]) if b > a)


def page_cuts(xml: bytes, every: int) -> list[int]:
    """Offsets of every `every`-th '<page>' (dumps cut their streams there)."""
    return [m.start() for m in re.finditer(rb"  <page>", xml)][every::every]


def mid_page_cuts(xml: bytes, n: int) -> list[int]:
    """n offsets spread evenly: inside pages, tags and UTF-8 characters alike."""
    return [len(xml) * k // (n + 1) + 7 for k in range(1, n + 1)]


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(multistream, "CHUNK_BYTES", 1)  # every stream its own chunk
    monkeypatch.setattr(multistream, "READ_BYTES", 997)  # headers straddle the reads


@pytest.fixture(scope="module")
def threads():
    with multiprocessing.pool.ThreadPool(3) as pool:
        yield pool


def read_parallel(data: bytes, pool, ahead=2):
    reader = ParallelBz2Reader(io.BytesIO(data), pool, ahead)
    out = io.BufferedReader(reader, 1 << 16).read()
    return out, reader.chunks_parallel


def read_serial(data: bytes):
    return bz2.BZ2File(io.BytesIO(data)).read()


def test_stream_headers_are_found_only_whole(small_chunks):
    a, b = bz2.compress(b"one"), bz2.compress(b"two")
    assert next_stream_start(a + b) == 0
    assert next_stream_start(a + b, 1) == len(a)
    assert next_stream_start(a + b[:9], 1) == -1  # the header's 10 bytes are not all there
    assert next_stream_start(b"BZh0" + b[4:]) == -1  # no such level


@pytest.mark.parametrize("how", ["pages", "mid-page", "both"])
def test_parallel_reader_gives_the_serial_bytes(small_chunks, threads, how):
    xml = SAMPLE_DUMP.read_bytes()
    cuts = {"pages": page_cuts(xml, 2), "mid-page": mid_page_cuts(xml, 9),
            "both": page_cuts(xml, 3) + mid_page_cuts(xml, 4)}[how]
    data = multistream_bz2(xml, cuts)
    out, chunks = read_parallel(data, threads)
    assert out == xml == read_serial(data)
    assert chunks == len(set(cuts)) + 1  # every stream was decoded by the pool


def test_parallel_reader_in_processes(small_chunks):
    xml = SAMPLE_DUMP.read_bytes() * 3
    data = multistream_bz2(xml, mid_page_cuts(xml, 5))
    with multiprocessing.get_context("fork").Pool(2) as pool:
        out, chunks = read_parallel(data, pool, ahead=4)
    assert out == xml and chunks == 6


def _double(x):
    return 2 * x


def test_parallel_reader_in_prepares_pool_beside_cleaning_tasks(small_chunks):
    """prepare decodes a multistream .bz2 in its cleaning pool (workpool.OrderedPool): decoding tasks
    (apply_async) interleave with the pool's own tasks, and each result is collected when asked for,
    whatever the order."""
    from cheaplm.workpool import OrderedPool

    xml = SAMPLE_DUMP.read_bytes() * 3
    data = multistream_bz2(xml, mid_page_cuts(xml, 5))
    with OrderedPool(multiprocessing.get_context("fork"), 2, _double) as pool:
        early = [pool.submit(k) for k in range(5)]  # the pool's own tasks, collected after the reader's
        out, chunks = read_parallel(data, pool, ahead=4)
        late = pool.submit(21)
        assert late.get() == 42 and [r.get() for r in early] == [0, 2, 4, 6, 8]
    assert out == xml and chunks == 6


def _wait_for(flag: str) -> tuple[int, bool]:
    """A slow task: waits (at most 20 s) until the file `flag` exists; its worker's pid, and whether it did."""
    import os
    import time
    end = time.monotonic() + 20
    while not os.path.exists(flag) and time.monotonic() < end:
        time.sleep(0.01)
    return os.getpid(), os.path.exists(flag)


def _pid(x):
    import os
    return os.getpid()


def test_pool_sends_tasks_past_a_busy_worker(tmp_path):
    """workpool.OrderedPool gives a task to the worker with the fewest unanswered: tasks submitted
    while one worker is held by a slow task all run on the other (in turn, the next would wait behind
    the slow one), and a result already collected cannot be asked for again."""
    from cheaplm.workpool import OrderedPool

    flag = tmp_path / "go"
    with OrderedPool(multiprocessing.get_context("fork"), 2, _pid) as pool:
        slow = pool.apply_async(_wait_for, (str(flag),))
        quick = []
        for k in range(4):
            quick.append(pool.submit(k).get())  # each done before the next is sent
        flag.touch()
        slow_pid, released = slow.get()
        assert released and len(set(quick)) == 1 and slow_pid not in quick
        with pytest.raises(RuntimeError, match="already collected"):
            slow.get()


def test_false_stream_header_falls_back_to_serial(small_chunks, threads, monkeypatch):
    """A header found by its bytes inside a stream is not trusted: decoding goes on serially from there."""
    xml = SAMPLE_DUMP.read_bytes()
    data = multistream_bz2(xml, page_cuts(xml, 2))
    true_starts = [m.start() for m in re.finditer(re.escape(b"BZh1" + multistream.BLOCK_MAGIC), data)]
    false_start = true_starts[4] + 100  # inside the fifth stream
    real = multistream.next_stream_start
    seen = [0]  # the reader's chunks start at 0 of its buffer: track file offsets

    def with_a_false_one(buf, start=0):
        at = real(buf, start)
        base = seen[0]
        if base < false_start and (at < 0 or base + at > false_start):
            at = false_start - base if false_start - base + 10 <= len(buf) else -1  # as if its 10 bytes were seen
        if at >= 0:
            seen[0] = base + at
        return at

    monkeypatch.setattr(multistream, "next_stream_start", with_a_false_one)
    out, chunks = read_parallel(data, threads)
    assert out == xml
    assert chunks == 4  # the four streams before the false header; the rest went serially


def test_single_stream_longer_than_a_chunk_goes_serially(small_chunks, threads, monkeypatch):
    monkeypatch.setattr(multistream, "MAX_CHUNK_BYTES", 4096)
    xml = SAMPLE_DUMP.read_bytes()
    data = bz2.compress(xml)
    assert len(data) > 4096
    out, chunks = read_parallel(data, threads)
    assert out == xml and chunks == 0
    # a multistream file whose later stream is too long: the pool decodes the streams before it
    data = bz2.compress(xml[:100]) + bz2.compress(xml[100:])
    out, chunks = read_parallel(data, threads)
    assert out == xml and chunks == 1


@pytest.mark.parametrize("tail", [bytes(300), b"garbage that is no bz2 stream"])
def test_trailing_garbage_is_ignored_as_bz2file_does(small_chunks, threads, tail):
    xml = SAMPLE_DUMP.read_bytes()
    data = multistream_bz2(xml, page_cuts(xml, 4)) + tail
    assert read_serial(data) == xml
    out, _ = read_parallel(data, threads)
    assert out == xml


def outcome(read, data: bytes):
    try:
        return read(data)
    except (EOFError, OSError) as exc:
        return type(exc)


@pytest.mark.parametrize("where", [0, 1, -1])
def test_truncated_and_damaged_multistream_read_as_bz2file_does(small_chunks, threads, where):
    """Damage in a stream after the first: BZ2File takes a stream that fails at once for trailing
    garbage and stops there without an error (the pages after it are lost, the XML then looks
    truncated); the parallel reader does the same."""
    xml = SAMPLE_DUMP.read_bytes()
    data = multistream_bz2(xml, page_cuts(xml, 4))
    assert outcome(read_serial, data[:-50]) is EOFError
    assert outcome(lambda d: read_parallel(d, threads)[0], data[:-50]) is EOFError
    at = [m.start() for m in re.finditer(re.escape(b"BZh1" + multistream.BLOCK_MAGIC), data)][where]
    damaged = data[:at + 200] + bytes(100) + data[at + 300:]
    expected = outcome(read_serial, damaged)
    if where == 0:
        assert expected is OSError
    else:
        assert len(expected) < len(xml) and xml.startswith(expected)
    assert outcome(lambda d: read_parallel(d, threads)[0], damaged) == expected


@pytest.fixture
def runs(monkeypatch):
    """The page counts of the runs that workers read and cleaned (wiki.PageRun) during prepare."""
    seen = []
    real = wiki.read_xml_dump

    def counting(src, state):
        for item in real(src, state):
            if isinstance(item, wiki.PageRun):
                seen.append(item.count)
            yield item

    monkeypatch.setattr(wiki, "read_xml_dump", counting)
    return seen


def prepared(paths, out, parallel: bool, workers: int = 2):
    manifest = prepare([str(p) for p in paths], out, PrepareOptions(workers=workers, val_fraction=0.1,
                                                                     test_fraction=0.1, parallel_bz2=parallel))
    files = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != "manifest.json"}
    stored = json.loads((out / "manifest.json").read_text())
    for m in (manifest, stored):
        del m["seconds"], m["mb_per_s_uncompressed"]
    assert stored == manifest
    return manifest, files


def test_prepare_multistream_parallel_equals_serial(small_chunks, tmp_path, runs):
    xml = SAMPLE_DUMP.read_bytes()
    dump = tmp_path / "multi.xml.bz2"
    dump.write_bytes(multistream_bz2(xml, page_cuts(xml, 3) + mid_page_cuts(xml, 5)))
    serial = prepared([dump], tmp_path / "s", parallel=False)
    assert runs == []
    parallel = prepared([dump], tmp_path / "p", parallel=True)
    assert parallel == serial
    assert serial[0]["pages"]["kept"] == 14
    # the workers read and cleaned most pages; the main parser the first stream's and those cut by a stream
    assert len(runs) >= 6 and sum(runs) >= 10


GHOST = b"<page><title>Ghost</title><ns>0</ns><revision><text>a page in a comment</text></revision></page>"


def awkward(xml: bytes, how: str) -> tuple[bytes, list[int]]:
    """A dump and stream cuts where a worker's reading of its chunk's pages would differ from the main
    parser's, or could: prepare must notice and read those chunks in the main process."""
    pages = [m.start() for m in re.finditer(rb"  <page>", xml)]
    at = pages[len(pages) // 2]
    if how == "comment":  # a comment holding a page, inside one chunk
        return xml[:at] + b"<!-- " + GHOST + b" -->\n" + xml[at:], page_cuts(xml, 3)
    if how == "comment across streams":  # '<' ends a stream, '!--' starts the next: no chunk holds '<!'
        xml = xml[:at] + b"<!-- " + GHOST + b" -->\n" + xml[at:]
        return xml, [p for p in page_cuts(xml, 3) if p != at] + [at + 1]
    if how == "latin-1":  # the main parser reads Latin-1, a worker would read UTF-8
        text = xml.decode("utf-8").replace("bicycle", "bicycl\u00e9")
        return (b'<?xml version="1.0" encoding="ISO-8859-1"?>\n'
                + text.encode("latin-1", "xmlcharrefreplace")), page_cuts(xml, 3)
    if how == "no ns":  # export 0.3: a page's namespace comes from <siteinfo> (here one of no English name)
        xml = xml.replace(b"<namespaces>", b"<namespaces>\n<namespace key='108'>Wikibook</namespace>")
        at = xml.index(b"<title>", at + 50) + len(b"<title>")
        xml = re.sub(rb"\s*<ns>\d+</ns>", b"", xml[:at] + b"Wikibook:" + xml[at:])
        return xml, page_cuts(xml, 3)
    if how == "page inside another element":  # a stream starts at a <page> that is no page of the root
        inner = b"  <other>" + GHOST
        return xml[:at] + inner + b"</other>\n" + xml[at:], page_cuts(xml, 3) + [at + 9, at + len(inner)]
    raise ValueError(how)


@pytest.mark.parametrize("how", ["comment", "comment across streams", "latin-1", "no ns",
                                 "page inside another element"])
def test_prepare_multistream_awkward_dumps_read_as_one_decoder(small_chunks, tmp_path, runs, how):
    xml, cuts = awkward(SAMPLE_DUMP.read_bytes(), how)
    dump = tmp_path / "multi.xml.bz2"
    dump.write_bytes(multistream_bz2(xml, cuts))
    serial = prepared([dump], tmp_path / "s", parallel=False)
    parallel = prepared([dump], tmp_path / "p", parallel=True)
    assert parallel == serial
    if how in ("latin-1", "no ns"):
        assert runs == []  # the declaration, or every chunk's pages, rule the workers out
    else:
        assert runs  # the chunks before the awkward one were read by the workers
    if how == "no ns":
        assert serial[0]["pages"]["skipped"]["namespace"] == 1 + 2


def test_prepare_multistream_malformed_page_after_runs_gives_the_same_error(small_chunks, tmp_path, runs):
    """The main parser reads whitespace with the runs' line breaks in their place: an error's line
    and column are those that one decoder reports."""
    xml = SAMPLE_DUMP.read_bytes()
    pages = [m.start() for m in re.finditer(rb"  <page>", xml)]
    at = xml.index(b"</title>", pages[-3])
    xml = xml[:at] + b"</titel>" + xml[at + 8:]
    dump = tmp_path / "multi.xml.bz2"
    dump.write_bytes(multistream_bz2(xml, page_cuts(xml, 2)))
    errors = []
    for parallel in (False, True):
        with pytest.raises(SourceError, match="malformed XML") as info:
            prepare([str(dump)], tmp_path / f"o{parallel}", PrepareOptions(workers=2, parallel_bz2=parallel))
        errors.append(str(info.value))
    assert errors[0] == errors[1] and "line" in errors[0]
    assert runs


def test_page_run_reads_whole_pages_and_leaves_the_rest():
    xml = SAMPLE_DUMP.read_bytes()
    pages = [m.start() for m in re.finditer(rb"  <page>", xml)]
    piece = xml[pages[2] + 5:pages[6] + 20]  # from inside page 2 to inside page 6
    run = wiki.page_run(piece, 1 << 20)
    assert run.count == 3 == len(run.pages)
    assert piece.startswith(run.head) and piece.endswith(run.tail)
    middle = piece[len(run.head):len(piece) - len(run.tail)]
    assert middle.startswith(b"<page>") and middle.endswith(b"</page>")
    assert run.filler() == b"\n" * middle.count(b"\n") + b" " * len(middle.split(b"\n")[-1])
    assert wiki.page_run(piece.replace(b"</page>", b"</page><!-- -->", 1), 1 << 20) is None
    assert wiki.page_run(xml[pages[2] + 5:pages[2] + 200], 1 << 20) is None  # no whole page


def test_prepare_real_dumps_parallel_equals_serial(tmp_path, runs):
    """The fragments as they are (single-stream), and recut into multistream files of 20 pages a
    stream, some streams cut mid-page: shards and manifest as one decoder gives them."""
    dumps = [shared("dumps", d) for d in DUMPS]
    serial = prepared(dumps, tmp_path / "s", parallel=False)
    parallel = prepared(dumps, tmp_path / "p", parallel=True)
    assert parallel == serial
    multi = []
    for i, d in enumerate(dumps):
        xml = bz2.decompress(d.read_bytes())
        multi.append(tmp_path / f"multi{i}.xml.bz2")
        multi[-1].write_bytes(multistream_bz2(xml, page_cuts(xml, 20) + mid_page_cuts(xml, 3)))
    multistream.CHUNK_BYTES, saved = 64 << 10, multistream.CHUNK_BYTES  # several chunks a file
    try:
        m_serial = prepared(multi, tmp_path / "ms", parallel=False)
        m_parallel = prepared(multi, tmp_path / "mp", parallel=True)
    finally:
        multistream.CHUNK_BYTES = saved
    assert m_parallel == m_serial
    assert sum(runs) > m_parallel[0]["pages"]["read"] // 2  # the workers read most pages
    # the same pages and text as the fragments themselves; only the files' own fields differ
    for key in ("pages", "splits", "split_fill", "warnings"):
        assert m_parallel[0][key] == serial[0][key]
    assert m_parallel[1] == serial[1]
