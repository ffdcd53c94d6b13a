"""`cheaplm prepare` on the real dump fragments, determinism, multistream, and every bad input."""

import bz2
import hashlib
import lzma
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from cheaplm.cli import main
from cheaplm.prepare import PrepareOptions, prepare
from cheaplm.shards import split_of
from cheaplm.sources import SourceError
from cheaplm.wikitext import clean_wikitext, expand_template

from conftest import SAMPLE_DUMP, shared

DUMPS = ["enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
         "enwiki-latest-pages-articles1.xml-p000000010p000010000-shortened.bz2",
         "enwiki-table-markup.xml.bz2"]


def independent_counts(path):
    """Main-namespace articles and redirects, counted with ElementTree alone."""
    articles = redirects = 0
    with bz2.open(path) as f:
        for _, elem in ET.iterparse(f):
            if elem.tag.rsplit("}", 1)[-1] != "page":
                continue
            fields = {c.tag.rsplit("}", 1)[-1]: c for c in elem}
            text = ""
            for rev_field in fields["revision"]:
                if rev_field.tag.endswith("text"):
                    text = rev_field.text or ""
            if fields["ns"].text == "0":
                if "redirect" in fields or re.match(r"\s*#redirect", text, re.I):
                    redirects += 1
                else:
                    articles += 1
            elem.clear()
    return articles, redirects


def all_text(out):
    return b"".join(p.read_bytes() for p in sorted(out.glob("*.bin"))).decode("utf-8")


@pytest.fixture(scope="module")
def prepared_dumps(tmp_path_factory):
    out = tmp_path_factory.mktemp("p") / "dumps"
    manifest = prepare([str(shared("dumps", d)) for d in DUMPS], out,
                       PrepareOptions(val_fraction=0.1, test_fraction=0.1), console=None)
    return out, manifest


@pytest.mark.parametrize("i", range(len(DUMPS)))
def test_counts_match_an_independent_parse(prepared_dumps, i):
    _, manifest = prepared_dumps
    src = manifest["sources"][i]
    articles, redirects = independent_counts(shared("dumps", DUMPS[i]))
    assert src["kept"] + src["skipped"].get("empty", 0) + src["skipped"].get("duplicate", 0) == articles
    assert src["skipped"].get("redirect", 0) == redirects
    assert src["kept"] > 0


def newest_revisions(paths):
    """Title -> the newest revision's timestamp, over all main-namespace articles (ElementTree alone)."""
    newest = {}
    for path in paths:
        with bz2.open(path) as f:
            for _, elem in ET.iterparse(f):
                if elem.tag.rsplit("}", 1)[-1] != "page":
                    continue
                fields = {c.tag.rsplit("}", 1)[-1]: c for c in elem}
                rev = {c.tag.rsplit("}", 1)[-1]: c.text or "" for c in fields["revision"]}
                if fields["ns"].text == "0" and "redirect" not in fields and not re.match(r"\s*#redirect", rev["text"], re.I):
                    title = fields["title"].text
                    newest[title] = max(newest.get(title, ""), rev["timestamp"])
                elem.clear()
    return newest


def test_one_article_per_title_across_overlapping_fragments(prepared_dumps):
    # issue 11: the two enwiki fragments overlap; they gave 201 articles of only 112 titles
    out, manifest = prepared_dumps
    titles = [a.split("\n", 1)[0] for a in all_text(out).split("\x00")[:-1]]
    assert len(titles) == len(set(titles)) == manifest["pages"]["kept"] == 112
    assert manifest["pages"]["skipped"]["duplicate"] == 201 - 112
    assert len(newest_revisions([shared("dumps", d) for d in DUMPS])) == 112
    assert sum(v["articles"] for v in manifest["splits"].values()) == 112
    p = manifest["pages"]
    assert p["read"] == p["kept"] + sum(p["skipped"].values())


def small_dump(pages) -> str:
    """A pages-articles dump of (title, timestamp or None, text)."""
    body = "".join(
        f"<page><title>{t}</title><ns>0</ns><id>{i}</id><revision>"
        + (f"<timestamp>{ts}</timestamp>" if ts else "") + f"<text>{x}</text></revision></page>"
        for i, (t, ts, x) in enumerate(pages))
    return '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10">' + body + "</mediawiki>"


def test_newest_revision_wins_else_the_later_input(tmp_path):
    a, b = tmp_path / "a.xml", tmp_path / "b.xml"
    a.write_text(small_dump([("Bay", "2020-01-01T00:00:00Z", "Bay text of 2020."),
                             ("Rock", None, "Rock text of a."),
                             ("Cape", "2019-05-05T00:00:00Z", "Cape text of a."),
                             ("Reef", None, "Reef text without a date.")]))
    b.write_text(small_dump([("bay", "2010-01-01T00:00:00Z", "Bay text of 2010."),  # same title as 'Bay'
                             ("Rock", None, "Rock text of b."),
                             ("Cape", "2019-05-05T00:00:00Z", "Cape text of b."),
                             ("Reef", "2001-01-01T00:00:00Z", "Reef text of 2001."),
                             ("Sound_of_the bay", None, "Sound one."),
                             ("Sound of  the bay", None, "Sound two.")]))
    m = prepare([str(a), str(b)], tmp_path / "o", PrepareOptions(workers=2, val_fraction=0, test_fraction=0))
    text = all_text(tmp_path / "o")
    bodies = {x.split("\n\n", 1)[1].strip() for x in text.split("\x00")[:-1]}
    assert bodies == {"Bay text of 2020.", "Rock text of b.", "Cape text of b.", "Reef text of 2001.", "Sound two."}
    assert [s["skipped"] for s in m["sources"]] == [{"duplicate": 3}, {"duplicate": 2}]
    assert m["pages"] == {"read": 10, "kept": 5, "skipped": {"duplicate": 5}}
    info = m["splits"]["train"]
    assert info["articles"] == 5 and info["bytes"] == len(text.encode())
    for shard in info["shards"]:
        assert hashlib.sha256((tmp_path / "o" / shard["name"]).read_bytes()).hexdigest() == shard["sha256"]
    summary = CliRunner().invoke(main, ["prepare", str(a), str(b), "--out", str(tmp_path / "c")])
    assert summary.exit_code == 0 and "duplicate 3" in summary.output and "duplicate 2" in summary.output


def test_removing_articles_rewrites_and_renumbers_shards(tmp_path):
    from cheaplm.shards import SplitWriter

    w = SplitWriter(tmp_path, "train", shard_bytes=10)
    where = [w.write(x) for x in (b"aaaa\0", b"bbbb\0", b"cccc\0", b"dd\0", b"ee\0")]
    w.close()
    assert where == [(0, 0), (0, 5), (1, 0), (1, 5), (2, 0)]
    info = w.remove({0: [(0, 5)], 1: [(0, 5), (5, 3)]})
    assert [s["name"] for s in info["shards"]] == ["train-00000.bin", "train-00001.bin"]
    assert [(tmp_path / s["name"]).read_bytes() for s in info["shards"]] == [b"bbbb\0", b"ee\0"]
    assert info["articles"] == 2 and info["bytes"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-00000.bin", "train-00001.bin"]


def articles_by_split(out, manifest):
    return {s: [a.split("\n", 1)[0] for sh in info["shards"] for a in (out / sh["name"]).read_text().split("\x00")[:-1]]
            for s, info in manifest["splits"].items()}


def test_a_small_dump_gets_val_and_test_and_one_warning_line(tmp_path, capsys):
    # issue 11: 106 articles at the default 0.5% got an empty test split, and no warning
    titles = [f"Article {i}" for i in range(106)]
    assert {split_of(t, 0.005, 0.005) for t in titles} == {"train"}  # the title hash alone
    src = tmp_path / "small.xml"
    src.write_text(small_dump([(t, None, f"The text of {t}, a sentence long.") for t in titles]))
    capsys.readouterr()
    m = prepare([str(src)], tmp_path / "o", PrepareOptions(workers=1))
    by_split = articles_by_split(tmp_path / "o", m)
    assert [len(by_split[s]) for s in ("train", "val", "test")] == [104, 1, 1]
    assert sorted(sum(by_split.values(), [])) == sorted(titles)
    assert [m["splits"][s]["articles"] for s in ("train", "val", "test")] == [104, 1, 1]
    assert m["split_fill"] == ["test <- train", "val <- train"]
    for info in m["splits"].values():
        for shard in info["shards"]:
            data = (tmp_path / "o" / shard["name"]).read_bytes()
            assert (len(data), hashlib.sha256(data).hexdigest()) == (shard["bytes"], shard["sha256"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err == m["warnings"], err
    assert err[0].startswith("warning: small splits: train ") and "val " in err[0] and "test " in err[0]
    assert "64 KiB" in err[0]
    # the same input gives the same shards
    again = prepare([str(src)], tmp_path / "o2", PrepareOptions(workers=2))
    assert again["splits"] == m["splits"]


def test_split_fill_needs_three_articles_and_a_fraction_above_zero(tmp_path, capsys):
    three, two = tmp_path / "three.xml", tmp_path / "two.xml"
    three.write_text(small_dump([(f"Article {i}", None, "Some text.") for i in range(3)]))
    two.write_text(small_dump([(f"Article {i}", None, "Some text.") for i in range(2)]))
    m = prepare([str(three)], tmp_path / "a", PrepareOptions(workers=1))
    assert [m["splits"][s]["articles"] for s in ("train", "val", "test")] == [1, 1, 1]
    m = prepare([str(two)], tmp_path / "b", PrepareOptions(workers=1))
    assert [m["splits"][s]["articles"] for s in ("train", "val", "test")] == [2, 0, 0]
    assert "test 0 bytes (0 articles)" in m["warnings"][0]
    m = prepare([str(three)], tmp_path / "c", PrepareOptions(workers=1, val_fraction=0))
    assert [m["splits"][s]["articles"] for s in ("train", "val", "test")] == [2, 0, 1]
    assert " val " not in m["warnings"][0]
    big = tmp_path / "big.xml"
    big.write_text(small_dump([(f"Topic {i}", None, "Word " * 3000) for i in range(106)]))
    m = prepare([str(big)], tmp_path / "d", PrepareOptions(workers=1, val_fraction=0.3, test_fraction=0.3))
    assert m["warnings"] == [] and m["split_fill"] == []


def test_cleaned_text_has_no_markup_left(prepared_dumps):
    out, _ = prepared_dumps
    text = all_text(out)
    for token in ("{{", "}}", "[[", "]]", "<ref", "&amp;", "{|", "|}", "&nbsp;"):
        assert token not in text, token


def test_known_sentences_from_named_articles(prepared_dumps):
    out, _ = prepared_dumps
    articles = {a.split("\n", 1)[0]: a for a in all_text(out).split("\x00")}
    # links ([[Nereid]] [[Thetis]] ...) turned into their anchors
    assert "Achilles was the son of the Nereid Thetis and Peleus, the king of the Myrmidons." in articles["Achilles"]
    # the 2016 revision (first fragment), not the 2014 one (second fragment): the newest wins
    assert "Anarchism is a political philosophy that advocates self-governed societies" in articles["Anarchism"]
    assert "advocates stateless societies" not in articles["Anarchism"]
    # headings kept as lines; the title line then a blank line starts every article
    assert "\nEtymology\n" in articles["Achilles"]
    assert articles["Achilles"].startswith("Achilles\n\n")


def test_splits_and_manifest_add_up(prepared_dumps):
    out, manifest = prepared_dumps
    total = sum(s["kept"] for s in manifest["sources"])
    assert sum(v["articles"] for v in manifest["splits"].values()) == total
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            data = (out / shard["name"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == shard["sha256"]
            assert data.endswith(b"\x00")
            assert data.count(b"\x00") <= total
    for src in manifest["sources"]:
        assert len(src["sha256"]) == 64


def test_source_sha256_is_of_the_file_on_disk(prepared_dumps):
    _, manifest = prepared_dumps
    for src in manifest["sources"]:
        with open(src["path"], "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == src["sha256"]


def test_deterministic_whatever_the_worker_count(tmp_path):
    dump = str(shared("dumps", DUMPS[2]))
    m1 = prepare([dump, str(SAMPLE_DUMP)], tmp_path / "a", PrepareOptions(workers=1, val_fraction=0.2))
    m2 = prepare([dump, str(SAMPLE_DUMP)], tmp_path / "b", PrepareOptions(workers=2, val_fraction=0.2))
    assert m1["splits"] == m2["splits"]
    assert m1["splits"]["train"]["bytes"] > 0


def test_multistream_bz2_reads_as_one_dump(tmp_path):
    raw = SAMPLE_DUMP.read_bytes()
    cut = raw.index(b"  <page>", len(raw) // 2)
    multi = tmp_path / "multi.xml.bz2"
    multi.write_bytes(bz2.compress(raw[:cut]) + bz2.compress(raw[cut:]))
    single = tmp_path / "single.xml"
    single.write_bytes(raw)
    m_multi = prepare([str(multi)], tmp_path / "m", PrepareOptions())
    m_single = prepare([str(single)], tmp_path / "s", PrepareOptions())
    assert m_multi["pages"] == m_single["pages"]
    assert m_multi["splits"] == m_single["splits"]
    assert m_multi["pages"]["kept"] == 14


def test_sample_dump_skips_redirects_and_other_namespaces(tmp_path):
    m = prepare([str(SAMPLE_DUMP)], tmp_path / "o", PrepareOptions())
    assert m["pages"] == {"read": 19, "kept": 14, "skipped": {"namespace": 2, "redirect": 3}}


def test_enwik8_prefix_keeps_complete_pages(tmp_path):
    path = shared("enwik8.head4154399.xz")
    m = prepare([str(path)], tmp_path / "e", PrepareOptions())
    src = m["sources"][0]
    assert src["truncated"] and src["schema"] == "0.3"
    raw = lzma.decompress(path.read_bytes())
    complete = raw.count(b"</page>")
    assert src["pages_read"] == complete
    assert src["kept"] + sum(src["skipped"].values()) == complete


def test_wikiextractor_and_keep_markup(tmp_path):
    path = shared("wikitext", "markoeltermann_CourseProject.txt.xz")
    m = prepare([str(path)], tmp_path / "w", PrepareOptions())
    assert m["sources"][0]["format"] == "wikiextractor"
    assert m["pages"]["kept"] == lzma.decompress(path.read_bytes()).count(b"<doc ")
    dump = shared("dumps", DUMPS[2])
    mk = prepare([str(dump)], tmp_path / "k", PrepareOptions(keep_markup=True, val_fraction=0, test_fraction=0))
    assert "{{" in all_text(tmp_path / "k") or "[[" in all_text(tmp_path / "k")
    assert mk["pages"]["kept"] == 5


def test_tar_of_wikitext_pages(tmp_path):
    m = prepare([str(shared("dumps", "wtf_wikipedia-tests-cache.tar.xz"))], tmp_path / "t", PrepareOptions())
    assert m["sources"][0]["format"] == "tar"
    assert m["pages"]["read"] == 71
    assert "[[" not in all_text(tmp_path / "t")


def test_template_allow_list():
    assert expand_template("convert|10|km|mi") == "10 km"
    assert expand_template("convert|10|to|20|km") == "10 to 20 km"
    assert expand_template("lang|fr|la plume") == "la plume"
    assert expand_template("nihongo|Tokyo Tower|東京タワー|Tōkyō tawā") == "Tokyo Tower (東京タワー, Tōkyō tawā)"
    assert expand_template("cite web|url=x|title=y") == ""
    assert clean_wikitext("A [[File:x.jpg|thumb|a [[cat]] here]] b [[dog|dogs]] c{{efn|note}}.") == "A b dogs c."
    assert clean_wikitext("'''Bold''' and ''it''<ref name=a>x</ref> &amp;nbsp;ok") == "Bold and it ok"


# ---- bad input: one line, non-zero exit, nothing left behind ----------------------------------------

def run_cli(args, cwd):
    proc = subprocess.run([sys.executable, "-m", "cheaplm.cli", *args], cwd=cwd, capture_output=True, text=True)
    return proc


def assert_clean_failure(proc, tmp_path, needle):
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert err and err[-1].startswith("Error: "), proc.stderr
    assert needle in err[-1], err[-1]
    assert "Traceback" not in proc.stderr
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".") or p.name == "out"]
    assert leftovers == []


def test_missing_path(tmp_path):
    proc = run_cli(["prepare", str(tmp_path / "nope.xml.bz2"), "--out", str(tmp_path / "out")], tmp_path)
    assert_clean_failure(proc, tmp_path, "nope.xml.bz2: no such file")


def test_directory_with_nothing_usable(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    (d / "notes.pdf").write_bytes(b"%PDF-1.4")
    proc = run_cli(["prepare", str(d), "--out", str(tmp_path / "out")], tmp_path)
    assert_clean_failure(proc, tmp_path, "no usable file")


def test_file_that_is_not_a_dump(tmp_path):
    f = tmp_path / "image.png"
    f.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4)
    proc = run_cli(["prepare", str(f), "--out", str(tmp_path / "out")], tmp_path)
    assert_clean_failure(proc, tmp_path, "image.png: binary data")
    x = tmp_path / "page.xml"
    x.write_text('<?xml version="1.0"?>\n<html><body>hi</body></html>\n')
    proc = run_cli(["prepare", str(x), "--out", str(tmp_path / "out")], tmp_path)
    assert_clean_failure(proc, tmp_path, "not a MediaWiki export")


def test_truncated_and_corrupt_bz2(tmp_path):
    data = bz2.compress(SAMPLE_DUMP.read_bytes())
    t = tmp_path / "trunc.xml.bz2"
    t.write_bytes(data[: len(data) // 2])
    proc = run_cli(["prepare", str(t), "--out", str(tmp_path / "out")], tmp_path)
    assert_clean_failure(proc, tmp_path, "trunc.xml.bz2: truncated bz2")
    c = tmp_path / "corrupt.xml.bz2"
    c.write_bytes(data[:200] + bytes(200) + data[400:])
    proc = run_cli(["prepare", str(c), "--out", str(tmp_path / "out")], tmp_path)
    assert_clean_failure(proc, tmp_path, "corrupt.xml.bz2: corrupt bz2")


def test_non_utf8_bytes(tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes("Caf\u00e9 au lait is a drink.\n".encode("latin-1") * 10)
    proc = run_cli(["prepare", str(f), "--out", str(tmp_path / "out")], tmp_path)
    assert_clean_failure(proc, tmp_path, "latin1.txt: not UTF-8")


def test_out_with_other_content(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    proc = run_cli(["prepare", str(SAMPLE_DUMP), "--out", str(out)], tmp_path)
    assert proc.returncode == 1 and "holds other content" in proc.stderr
    assert [p.name for p in out.iterdir()] == ["precious.txt"]


def test_rerun_is_a_no_op_and_force_replaces(tmp_path):
    out = tmp_path / "o"
    runner = CliRunner()
    r1 = runner.invoke(main, ["prepare", str(SAMPLE_DUMP), "--out", str(out)])
    assert r1.exit_code == 0, r1.output
    before = (out / "manifest.json").read_text()
    r2 = runner.invoke(main, ["prepare", str(SAMPLE_DUMP), "--out", str(out)])
    assert r2.exit_code == 0 and "nothing to do" in r2.output
    assert (out / "manifest.json").read_text() == before


def test_interrupt_leaves_out_as_it_was(tmp_path, monkeypatch):
    import cheaplm.prepare as prep

    real = prep.read_pages

    def interrupted(src, state):
        for i, page in enumerate(real(src, state)):
            if i == 3:
                raise KeyboardInterrupt
            yield page

    monkeypatch.setattr(prep, "read_pages", interrupted)
    result = CliRunner().invoke(main, ["prepare", str(SAMPLE_DUMP), "--out", str(tmp_path / "out")])
    assert result.exit_code == 130
    assert "is as it was" in result.output
    assert list(tmp_path.iterdir()) == []


def test_library_error_is_source_error(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        prepare([str(tmp_path / "missing.bz2")], tmp_path / "o", PrepareOptions())
