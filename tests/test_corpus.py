"""The training text mapped from its shards (corpus.py): a run directory holds no copy of it, loads
and scores as before, and says so in one line when its shards move or change (issue 25)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from cheaplm import corpus
from cheaplm.checkpoint import CheckpointError, load_model
from cheaplm.evaluate import stream_bpb
from cheaplm.model import ModelConfig
from cheaplm.shards import SplitWriter, load_split
from cheaplm.train import TrainConfig, train

CFG = ModelConfig(orders=[0, 1, 2, 4], words=1, sparse=[], table_bits=11, match_bits=12, apm2_bits=6,
                  reader={"on": False})


def articles(seed: int, count: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    words = [b"harbour", b"light", b"keeper", b"north", b"stone", b"tower", b"the", b"of", b"sea", b"lamp"]
    out = []
    for i in range(count):
        body = b" ".join(words[j] for j in rng.integers(0, len(words), int(rng.integers(40, 400))))
        out.append(b"Title %d\n\n" % i + body + b".\n\0")
    return out


def shard_dir(path, shard_bytes: int, count: int = 60):
    """A data directory of train shards of at most shard_bytes each (several, at odd sizes), and a val split."""
    path.mkdir(parents=True)
    splits = {}
    for split, arts in (("train", articles(0, count)), ("val", articles(1, 6))):
        w = SplitWriter(path, split, shard_bytes)
        for a in arts:
            w.write(a)
        splits[split] = w.close()
    (path / "manifest.json").write_text(json.dumps({"format": "cheaplm-shards", "version": 1, "splits": splits}))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shard_dir(tmp_path_factory.mktemp("corpus") / "data", 9000)


def tc(**kw):
    return TrainConfig(**{**dict(device="cpu", bytes=40_000, batch=256, count_chunk=2048, log_seconds=1e9,
                                 val_seconds=1e9, checkpoint_minutes=0), **kw})


def test_the_layout_maps_each_shard_at_a_page_boundary_with_nul_between(data):
    pieces = corpus.layout(data)
    assert len(pieces) > 3 and all(p.start % corpus.PAGE == 0 for p in pieces)
    text = corpus.map_text(data, pieces)
    assert len(text) == corpus.text_length(pieces)
    for p, q in zip(pieces, pieces[1:]):
        assert text[p.start: p.start + p.used].tobytes() == (data / p.name).read_bytes()
        assert not text[p.start + p.used: q.start].any()  # the gap: NUL
    joined = np.concatenate([text[p.start: p.start + p.used] for p in pieces])
    assert np.array_equal(joined, load_split(data, "train"))
    # a write changes this process's copy only
    text[0] ^= 0xFF
    assert (data / pieces[0].name).read_bytes()[0] != text[0]
    # a cut: bytes of text, not of the layout
    cut = corpus.layout(data, limit=pieces[0].used + 10)
    assert [p.used for p in cut] == [pieces[0].used, 10]


def test_room_after_a_mapped_text_is_its_own_and_grows_in_place(data):
    pieces = corpus.layout(data)
    text = corpus.map_text(data, pieces)
    h = pieces[1].start + 100  # inside a shard: what follows in the file must not show
    a = corpus.with_room(text[:h], 50, reserve=1 << 20)
    b = corpus.with_room(text[:h], 50)
    assert corpus._mapping_of(a) is not None and len(a) == h + 50
    assert np.array_equal(a[:h], text[:h]) and not a[h:].any()
    a[h:] = 7
    assert not b[h:].any()  # two streams over one history do not share their room
    g = corpus.grow(a, h + 5000)
    assert g is not None and np.array_equal(g[:h + 50], a) and not g[h + 50:].any()
    assert corpus.grow(b, h + 5000) is None  # no reserve: the caller copies
    plain = corpus.with_room(np.arange(10, dtype=np.uint8), 3)
    assert plain.tolist() == list(range(10)) + [0, 0, 0]


def test_a_run_keeps_no_copy_of_its_text_and_scores_as_one_that_did(data, tmp_path):
    run = tmp_path / "run"
    s = train(data, run, CFG, tc(), log=lambda *a: None, keep_model=True)
    assert (run / corpus.RECORD).exists() and not (run / "history.bin").exists()
    model, history, _ = load_model(run)
    assert corpus._mapping_of(history) is not None  # mapped, not read
    assert np.array_equal(history, s["history"])
    val = load_split(data, "val")
    mapped = stream_bpb(model, history, val)["bpb"]
    copied = stream_bpb(model, np.array(history), val)["bpb"]  # as evaluation scored a read history
    assert mapped == copied
    # an old run directory, with history.bin and no text.json, still loads and scores the same
    old = tmp_path / "old"
    shutil.copytree(run, old)
    (old / corpus.RECORD).unlink()
    np.asarray(history).tofile(old / "history.bin")
    old_model, old_history, _ = load_model(old)
    assert stream_bpb(old_model, old_history, val)["bpb"] == mapped


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "cheaplm.cli", *args], capture_output=True, text=True)


def one_line_error(proc, needle):
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and needle in last, proc.stderr
    assert "Traceback" not in proc.stderr


def test_moved_or_changed_shards_are_one_clean_error(tmp_path):
    data = shard_dir(tmp_path / "data", 9000)
    run = tmp_path / "run"
    train(data, run, CFG, tc(bytes=20_000), log=lambda *a: None)
    load_model(run)
    moved = tmp_path / "moved"
    os.rename(data, moved)
    with pytest.raises(CheckpointError, match="missing .the run .* reads its training text from"):
        load_model(run)
    one_line_error(run_cli("eval", str(run), str(moved), "--split", "val"), "missing")
    one_line_error(run_cli("sample", str(run), "--max-bytes", "5", "--seed", "1"), "missing")
    os.rename(moved, data)
    load_model(run)
    # the same size, another content (and mtime): hashed again, refused
    shard = data / "train-00000.bin"
    raw = bytearray(shard.read_bytes())
    raw[10] ^= 0x20
    shard.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256 differs"):
        load_model(run)
    # another size: refused from a stat alone
    shard.write_bytes(bytes(raw) + b"x")
    with pytest.raises(CheckpointError, match="bytes, the run was trained on"):
        load_model(run)
    raw[10] ^= 0x20
    shard.write_bytes(bytes(raw))  # put back as it was (new mtime, same bytes): hashed once, accepted
    load_model(run)


def test_resume_over_mapped_shards_equals_straight(data, tmp_path):
    straight = train(data, tmp_path / "a", CFG, tc(), log=lambda *a: None)
    first = train(data, tmp_path / "b", CFG, tc(), log=lambda *a: None, stop_after_steps=straight["steps"] // 2)
    second = train(data, tmp_path / "b", None, tc(), resume=True, log=lambda *a: None)
    assert first["losses"] + second["losses"] == straight["losses"]
    ma, _, _ = load_model(tmp_path / "a")
    mb, _, _ = load_model(tmp_path / "b")
    assert np.array_equal(ma.memory.tables, mb.memory.tables)
    assert np.array_equal(ma.match.last_pos, mb.match.last_pos)
    assert not (tmp_path / "b" / "history.bin").exists()


def test_dry_run_prints_the_plan_and_writes_nothing(data, tmp_path):
    run = tmp_path / "run"
    proc = run_cli("train", str(data), "--out", str(run), "--device", "cpu", "--bytes", "30000", "--table-bits", "12",
                   "--dry-run")
    assert proc.returncode == 0, proc.stderr
    for needle in ("host memory:", "tables", "match pointers", "text (mapped)", "run directory disk:", "time:",
                   "memory (count + mixer)", "nothing written"):
        assert needle in proc.stderr, proc.stderr
    assert not run.exists()
    # its host total is the estimate the run itself logs and refuses by
    from cheaplm.plan import run_plan
    from cheaplm.train import Trainer

    plan = Trainer(data, run, None, tc(bytes=30_000), log=lambda *a: None).dry_run()
    assert not run.exists()
    assert plan["train_bytes"] == corpus.text_length(corpus.layout(data, limit=30_000))
    cfg = ModelConfig(table_bits=12)
    small, big = (run_plan(cfg, tc().resolved("cpu"), n, "cpu") for n in (10_000, 10_000_000))
    assert big["host"]["match pointers"] == 1000 * small["host"]["match pointers"]
    assert big["disk"]["checkpoints"] == small["disk"]["checkpoints"]  # the text is not copied


def test_a_generator_over_a_mapped_history_copies_none_of_it(data, tmp_path):
    from cheaplm.sample import Generator

    run = tmp_path / "run"
    train(data, run, CFG, tc(bytes=20_000), log=lambda *a: None)
    model, history, _ = load_model(run)
    gen = Generator(model, history, own_index=False)
    assert corpus._mapping_of(gen.buf) is not None  # the history's pages, mapped again: not read at start
    plain = Generator(model, np.array(history), own_index=False)  # a read history, copied as before
    for g in (gen, plain):
        g.feed(b"The harbour light" * 5000)  # past the first room: the stream grows (in place when mapped)
    assert corpus._mapping_of(gen.buf) is not None
    assert np.array_equal(gen.buf[: gen.t], plain.buf[: plain.t])
    assert np.array_equal(gen.distribution(), plain.distribution())


def _mapped_rss(paths) -> int:
    """Bytes of the files `paths` this process has mapped in (/proc/self/smaps: pages it touched,
    not the page cache's), over all its mappings of them."""
    names, total, inside = {str(p) for p in paths}, 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                inside = len(head) >= 6 and head[5] in names
            elif inside and line.startswith("Rss:"):
                total += int(head[1]) * 1024
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs /proc/self/smaps")
def test_loading_a_run_touches_none_of_its_text_and_reads_no_titles(tmp_path, monkeypatch):
    """issue 25 item 5: load_model, a generator and recall's titles (mapped, looked up by hash) read
    a few pages of a 3 MB history, not the history, and never rebuild the title index."""
    import gc

    from cheaplm import recall
    from cheaplm.sample import Generator

    data = shard_dir(tmp_path / "data", 1 << 20, count=2600)
    run = tmp_path / "run"
    train(data, run, CFG, tc(bytes=3_000_000, count_chunk=1 << 16, batch=1024), log=lambda *a: None)
    gc.collect()
    shards = sorted(data.glob("train-*.bin"))
    before = _mapped_rss(shards)  # what training mapped in (its mapping may outlive train() in this process)
    monkeypatch.setattr(recall, "build_index", lambda h: pytest.fail("the title index was rebuilt from the history"))
    model, history, ckpt = load_model(run)
    gen = Generator(model, history)
    index = recall.load_index(ckpt.parent, history)
    assert isinstance(index, recall.MappedTitleIndex) and len(index) > 2000
    found = index.find("title 1234")
    assert found is not None and found.title == "Title 1234"
    assert bytes(history[found.header: found.text]) == b"Title 1234\n\n"
    assert index.find("no such title") is None
    assert len(history) >= 2_900_000
    touched = _mapped_rss(shards) - before
    # the fingerprint's 16 blocks, the article read, the stream's tail: a page each, and the 64 KiB
    # the kernel maps around each fault (fault-around), whatever the history's size
    assert 0 < touched < min(24 * (68 << 10), len(history) // 2), touched
    del gen


def test_dry_run_of_a_resume_plans_what_is_left_and_writes_nothing(data, tmp_path):
    run = tmp_path / "run"
    first = train(data, run, CFG, tc(), log=lambda *a: None, stop_after_steps=4)
    assert first["stopped"] == "stop_after_steps"
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    proc = run_cli("train", str(data), "--out", str(run), "--resume", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    for needle in ("resuming ckpt-", "step 4", "plan for", "host memory:", "match pointers", "nothing written"):
        assert needle in proc.stderr, proc.stderr
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before
    from cheaplm.train import Trainer

    plan = Trainer(data, run, None, tc(), resume=True, log=lambda *a: None).dry_run()
    assert plan["resume"]["step"] == 4 and plan["resume"]["cursor"] == first["counted_bytes"]
    assert plan["train_bytes"] == corpus.text_length(corpus.layout(data, limit=40_000))
