"""Loading shards checks them against the manifest (issue 12, items 6, 10 and 16)."""

import json
import os

import pytest

from cheaplm import shards
from cheaplm.shards import MANIFEST, ShardError, load_split, require_split, write_raw_split_dir

TEXT = b"Title\n\nSome text of an article.\n\x00Other\n\nMore text.\n\x00"


def make(tmp_path):
    d = tmp_path / "data"
    write_raw_split_dir(d, {"train": TEXT * 50, "test": TEXT}, "hardening test")
    return d


def flip_a_byte(path, at=7):
    data = bytearray(path.read_bytes())
    data[at] ^= 0x20
    st = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # as an edit would


def test_a_flipped_byte_is_refused_unless_verification_is_off(tmp_path, monkeypatch):
    d = make(tmp_path)
    assert load_split(d, "test").tobytes() == TEXT  # verified and stamped
    monkeypatch.setattr(shards, "_sha256_of", None)  # an unchanged shard is not hashed again
    assert load_split(d, "test").tobytes() == TEXT
    monkeypatch.undo()
    flip_a_byte(d / "test-00000.bin")
    with pytest.raises(ShardError, match="sha256 does not match"):
        load_split(d, "test")
    with pytest.raises(ShardError, match="sha256 does not match"):
        load_split(d, "test", limit=5)  # a partial read still checks the whole shard
    assert load_split(d, "test", verify=False).tobytes() != TEXT  # the opt-out for huge data
    monkeypatch.setenv("CHEAPLM_VERIFY_SHARDS", "0")
    assert len(load_split(d, "test")) == len(TEXT)


def test_shard_names_must_stay_in_the_directory(tmp_path):
    d = make(tmp_path)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(TEXT)  # right size: only the name can give it away
    manifest = json.loads((d / MANIFEST).read_text())
    for name in ("../outside.bin", str(outside)):
        manifest["splits"]["test"]["shards"][0]["name"] = name
        (d / MANIFEST).write_text(json.dumps(manifest))
        with pytest.raises(ShardError, match="not a plain file name"):
            load_split(d, "test", verify=False)


@pytest.mark.parametrize("damage", [
    lambda m: m.pop("splits"),
    lambda m: m["splits"].__setitem__("test", ["x"]),
    lambda m: m["splits"]["test"]["shards"][0].pop("bytes"),
    lambda m: m["splits"]["test"]["shards"][0].__setitem__("name", 7),
])
def test_a_damaged_manifest_is_one_shard_error(tmp_path, damage):
    d = make(tmp_path)
    manifest = json.loads((d / MANIFEST).read_text())
    damage(manifest)
    (d / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match="damaged manifest"):
        load_split(d, "test")


def test_require_split_checks_the_manifest_alone(tmp_path):
    d = make(tmp_path)
    for shard in d.glob("*.bin"):
        shard.unlink()  # no shard is read: eval calls it before loading a checkpoint
    assert require_split(d, "test")["bytes"] == len(TEXT)
    with pytest.raises(ShardError, match=r"data: no split 'val' \(it has: train, test\)"):
        require_split(d, "val")
    e = tmp_path / "e"
    write_raw_split_dir(e, {"train": TEXT, "test": b""}, "an empty test split")
    with pytest.raises(ShardError, match=r"e: split 'test' is empty; .* a larger --test-fraction"):
        require_split(e, "test")
    with pytest.raises(ShardError, match="split 'test' is empty"):
        load_split(e, "test")  # the same check, the same line
    with pytest.raises(ShardError, match="no such directory"):
        require_split(tmp_path / "missing", "test")
