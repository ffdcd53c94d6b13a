"""Readers on hostile input: NUL bytes, oversized pages, text without breaks, damaged archives (issue 12)."""

import gzip
import io
import tarfile

import pytest

from cheaplm.prepare import PrepareOptions, prepare
from cheaplm.sources import SourceError

PARAGRAPH = "The lighthouse stands on a rock at the mouth of the bay, and its lamp turns all night.\n\n"


def shards_of(out):
    return b"".join(p.read_bytes() for p in sorted(out.glob("*.bin")))


def tar_of(members: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_nul_bytes_in_article_text_never_reach_the_shards(tmp_path):
    # plain text (past the 64 KiB that format detection reads), WikiExtractor output, a tar of pages
    plain = tmp_path / "plain.txt"
    plain.write_text(PARAGRAPH * 800 + "A paragraph with a \0 NUL in it.\n\n" + PARAGRAPH * 3)
    wex = tmp_path / "wex.txt"
    wex.write_text('<doc id="1" url="u" title="Bay">\nBay\n\nText with \0 a NUL.\n</doc>\n'
                   '<doc id="2" url="u" title="Rock">\nRock\n\nMore text.\n</doc>\n')
    tar = tmp_path / "pages.tar"
    tar.write_bytes(tar_of({"Lamp.wiki": b"The '''lamp''' [[turns]] at \0 night.",
                            "Keeper.txt": b"A keeper\0 lived there."}))
    for src in (plain, wex, tar):
        out = tmp_path / ("out-" + src.stem)
        m = prepare([str(src)], out, PrepareOptions(workers=1))
        data = shards_of(out)
        assert data.count(b"\0") == m["pages"]["kept"], src.name  # one NUL per article, as the end mark
        assert all(a for a in data.split(b"\0")[:-1]), src.name


def test_damaged_gzip_is_one_source_error(tmp_path):
    raw = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10">'
           + "".join(f"<page><title>P{i}</title><ns>0</ns><revision><text>{PARAGRAPH * 20}</text></revision></page>"
                     for i in range(20)) + "</mediawiki>").encode()
    data = bytearray(gzip.compress(raw))
    data[10] ^= 0xFF  # the first deflate block header
    bad = tmp_path / "dump.xml.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(SourceError, match="dump.xml.gz: corrupt gzip data"):
        prepare([str(bad)], tmp_path / "out", PrepareOptions(workers=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump.xml.gz"]
