"""`prepare --out` is guarded: lock, re-check, no overlap with inputs, one-line errors (issue 12, items 1, 3, 10, 17)."""

import json
import os

import pytest
from click.testing import CliRunner

import cheaplm.prepare as prep
from cheaplm.cli import main
from cheaplm.prepare import PrepareOptions, prepare
from cheaplm.sources import SourceError

from conftest import SAMPLE_DUMP


def during_the_run(monkeypatch, action):
    """Call `action()` once, after prepare has read its first page."""
    real = prep.read_pages

    def reader(src, state):
        for i, page in enumerate(real(src, state)):
            if i == 1:
                action()
            yield page

    monkeypatch.setattr(prep, "read_pages", reader)


def test_a_file_created_in_out_during_the_run_is_kept(tmp_path, monkeypatch):
    out = tmp_path / "out"
    during_the_run(monkeypatch, lambda: (out.mkdir(), (out / "notes.txt").write_text("mine")))
    with pytest.raises(SourceError, match="changed while prepare ran"):
        prepare([str(SAMPLE_DUMP)], out, PrepareOptions(workers=1))
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no partial directory, no lock file


def test_a_second_prepare_into_the_same_out_is_refused(tmp_path, monkeypatch):
    out = tmp_path / "out"
    second = []

    def concurrent():
        try:
            prepare([str(SAMPLE_DUMP)], out, PrepareOptions(workers=1, val_fraction=0.3))
            second.append("done")
        except SourceError as exc:
            second.append(str(exc))

    during_the_run(monkeypatch, concurrent)
    first = prepare([str(SAMPLE_DUMP)], out, PrepareOptions(workers=1))
    assert "another cheaplm prepare" in second[0] and "is writing it" in second[0]
    assert json.loads((out / "manifest.json").read_text())["splits"] == first["splits"]


@pytest.mark.parametrize("layout", ["out is the input directory", "out inside the input directory",
                                    "out holds the input file"])
def test_out_overlapping_an_input_is_refused_even_with_force(tmp_path, layout):
    inputs = tmp_path / "dumps"
    inputs.mkdir()
    dump = inputs / "sample.xml"
    dump.write_bytes(SAMPLE_DUMP.read_bytes())
    src, out = {"out is the input directory": (inputs, inputs),
                "out inside the input directory": (inputs, inputs / "shards"),
                "out holds the input file": (dump, inputs)}[layout]
    result = CliRunner().invoke(main, ["prepare", str(src), "--out", str(out), "--force"])
    assert result.exit_code == 1 and result.output.splitlines()[-1].startswith("Error: "), result.output
    assert "input" in result.output
    assert dump.read_bytes() == SAMPLE_DUMP.read_bytes()
    assert sorted(p.name for p in inputs.iterdir()) == ["sample.xml"]


def test_unusable_out_gives_one_error_line(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for out in (str(tmp_path / "afile" / "out"), "."):
        result = CliRunner().invoke(main, ["prepare", str(SAMPLE_DUMP), "--out", out])
        assert result.exit_code == 1, (out, result.output, result.exception)
        assert result.output.splitlines()[-1].startswith("Error: "), result.output
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("manifest", ["[1, 2]", '{"options": {}, "sources": [{}]}', '{"sources": 3}'])
def test_a_damaged_manifest_in_out_is_other_content(tmp_path, manifest):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text(manifest)
    with pytest.raises(SourceError, match="holds other content"):
        prepare([str(SAMPLE_DUMP)], out, PrepareOptions(workers=1))


def test_nan_fraction_is_refused(tmp_path):
    result = CliRunner().invoke(main, ["prepare", str(SAMPLE_DUMP), "--out", str(tmp_path / "o"), "--val-fraction", "nan"])
    assert result.exit_code == 1 and "Error: val-fraction must be" in result.output, result.output


def test_a_source_edited_in_place_is_prepared_again(tmp_path):
    src = tmp_path / "notes.txt"
    src.write_text("The lighthouse keeper wrote in the log every night.\n")
    out = tmp_path / "out"
    first = prepare([str(src)], out, PrepareOptions(workers=1))
    st = src.stat()
    src.write_text("The lighthouse keeper slept in the tower every day.\n"[: st.st_size])  # same size
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    with pytest.raises(SourceError, match="holds other content"):  # not "nothing to do"
        prepare([str(src)], out, PrepareOptions(workers=1))
    prepare([str(src)], out, PrepareOptions(workers=1), force=True)
    second = json.loads((out / "manifest.json").read_text())
    assert second["sources"][0]["sha256"] != first["sources"][0]["sha256"]
    # touched but unchanged: still up to date (the sha256 decides when the time differs)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 4_000_000_000))
    assert prepare([str(src)], out, PrepareOptions(workers=1))["up_to_date"] is True
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 6_000_000_000))
    assert prepare([str(src)], out, PrepareOptions(workers=1))["up_to_date"] is True
