"""Generation: reproducibility, greedy == argmax, valid UTF-8, consistency with training's forward,
the CLI's bad input, and the chat REPL driven through a pseudo-terminal."""

import os
import pty
import select
import subprocess
import sys
import time

import numpy as np
import pytest

from cheaplm.checkpoint import load_model
from cheaplm.model import ModelConfig
from cheaplm.prepare import PrepareOptions, prepare
from cheaplm.sample import draw, finish_thought, Generator, Sampling, filter_probs, generate, np_sum, sample_byte
from cheaplm.utf8 import utf8_allowed
from cheaplm.shards import write_raw_split_dir
from cheaplm.train import TrainConfig, train

from conftest import SAMPLE_DUMP

CFG = ModelConfig(orders=[0, 1, 2, 3, 4, 6], words=2, sparse=[0b10], table_bits=12, match_bits=14, apm2_bits=6)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("s")
    prepare([str(SAMPLE_DUMP)], d / "sample", PrepareOptions(val_fraction=0, test_fraction=0))
    raw = (d / "sample" / "train-00000.bin").read_bytes()
    # a few non-ASCII words so that multi-byte characters are likely
    extra = "Café, naïve façade, Zürich, Ελλάδα, 東京. ".encode() * 40
    write_raw_split_dir(d / "data", {"train": raw + extra + raw, "val": raw[:2000]}, "sample test data")
    train(d / "data", d / "run", CFG, TrainConfig(device="cpu", bytes=10**6, batch=512, count_chunk=4096,
                                                   log_seconds=1e9, val_seconds=1e9, checkpoint_minutes=0),
          log=lambda *a: None)
    return d / "run"


def cli(*args, input_bytes=None):
    return subprocess.run([sys.executable, "-m", "cheaplm.cli", *args], input=input_bytes, capture_output=True)


def test_same_seed_same_bytes_different_seed_different(run_dir):
    a = cli("sample", str(run_dir), "--prompt", "The river", "--seed", "5", "--max-bytes", "200", "--temperature", "1")
    b = cli("sample", str(run_dir), "--prompt", "The river", "--seed", "5", "--max-bytes", "200", "--temperature", "1")
    c = cli("sample", str(run_dir), "--prompt", "The river", "--seed", "6", "--max-bytes", "200", "--temperature", "1")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout != c.stdout
    assert a.stdout.startswith(b"The river") and len(a.stdout) > 20
    assert b"seed 5" in a.stderr and b"seed" not in a.stdout


def test_random_seed_is_printed_and_reproduces(run_dir):
    a = cli("sample", str(run_dir), "--prompt", "A", "--max-bytes", "60")
    seed = int(a.stderr.decode().split("seed ")[1].split()[0])
    b = cli("sample", str(run_dir), "--prompt", "A", "--max-bytes", "60", "--seed", str(seed))
    assert a.stdout == b.stdout


def test_top_k_1_is_greedy_argmax(run_dir):
    model, history, _ = load_model(run_dir)
    prompt = b"Bread is a food made from"
    g = Generator(model, history)
    g.feed(prompt)
    got = bytearray()
    greedy = Sampling(temperature=1.0, top_k=1, top_p=1.0, min_p=0.0, no_repeat=0, self_copy=True, subject=1.0)
    for piece in generate(g, np.random.default_rng(0), 40, greedy):
        got += piece.encode()
    # independently: argmax of the model's distribution, one byte at a time, on a fresh stream
    h = Generator(model, history)
    h.feed(prompt)
    want = bytearray()
    while len(want) < len(got):
        p = h.distribution()
        y = int(np.argmax(p))
        want.append(y)
        h.push(y)
    assert got == want


def test_a_generator_owning_the_index_draws_the_same_and_writes_the_model_s(run_dir):
    """own_index skips sample's 100 MB copy of the match index: same bytes, the model's index written."""
    model, history, _ = load_model(run_dir)
    pristine = model.match.last_pos.copy()
    outs = []
    for own in (False, True):
        g = Generator(model, history, own_index=own)
        g.feed(b"Bread is a food made from")
        outs.append("".join(generate(g, np.random.default_rng(3), 80, Sampling())))
        assert np.array_equal(model.match.last_pos, pristine) != own
    assert outs[0] == outs[1]
    again, _, _ = load_model(run_dir)
    assert np.array_equal(again.match.last_pos, pristine)  # the file is not written: the mapping is private


def assert_generation_equals_scoring(g, model, history, text: bytes) -> float:
    """Generation's bits for `text`, byte by byte from g, equal evaluation's (stream_bpb) within
    1e-3 a byte; returns evaluation's bits."""
    from cheaplm.evaluate import stream_bpb

    total_bits = 0.0
    for y in text:
        p = g.distribution()
        assert abs(p.sum() - 1) < 1e-6
        total_bits += -np.log2(p[y])
        g.push(y)
    got = stream_bpb(model, history, np.frombuffer(text, np.uint8))["bpb"] * len(text)
    assert abs(total_bits - got) < 1e-3 * len(text)
    return got


def test_distribution_agrees_with_training_forward(run_dir):
    """P(actual byte) from generation equals 2^-loss from the batch forward used in training/eval."""
    model, history, _ = load_model(run_dir)
    text = b"The lighthouse keeper wound the clockwork."
    g = Generator(model, history, history_far=False)  # evaluation scores the split right after the history
    assert_generation_equals_scoring(g, model, history, text)


def test_distribution_agrees_with_scoring_with_doc_words(run_dir):
    """With the document words in the mix (docwords.py), generation's P(actual byte), its D read
    incrementally from the document's start, equals scoring's (D read over the whole stream)."""
    from cheaplm.docwords import DOC_SETS
    from cheaplm.evaluate import stream_bpb

    model, history, _ = load_model(run_dir)
    model.reader.mix_doc = np.random.default_rng(0).uniform(0.3, 1.5, DOC_SETS).astype(np.float32)
    text = b"\x00Lighthouse\n\nA lighthouse is a tower. Lighthouses guide ships; the lighthouse keeper lit it."
    g = Generator(model, history, history_far=False)
    assert g._doc is not None
    got = assert_generation_equals_scoring(g, model, history, text)
    model.reader.mix_doc[:] = 0  # the same text without D: D changed the bits (it was read)
    assert abs(stream_bpb(model, history, np.frombuffer(text, np.uint8))["bpb"] * len(text) - got) > 0.1


def test_a_mix_from_before_doc_words_loads_and_scores_as_before(run_dir, tmp_path, monkeypatch):
    """A checkpoint without reader_mix_doc (written before the document words) loads with zero
    weights for them, is not read by generation, and scores exactly as the mix without D does."""
    import shutil

    from cheaplm import checkpoint
    from cheaplm.evaluate import stream_bpb
    from cheaplm.reader import Reader

    model, history, ckpt = load_model(run_dir)
    old_arrays = Reader.arrays
    monkeypatch.setattr(Reader, "arrays", lambda self: {k: v for k, v in old_arrays(self).items()
                                                        if k != "reader_mix_doc"})
    old_run = tmp_path / "old"
    old_run.mkdir()
    for f in run_dir.iterdir():
        if f.is_file():
            shutil.copy(f, old_run / f.name)
    checkpoint.save(old_run, model, checkpoint.read_state(ckpt), history)
    monkeypatch.undo()
    assert "reader_mix_doc" not in checkpoint.npz_headers(checkpoint.latest_checkpoint(old_run) / "model.npz")
    old, old_history, _ = load_model(old_run)
    assert not old.reader.reads_doc and Generator(old, old_history)._doc is None
    text = np.frombuffer(b"\x00Lighthouse\n\nA lighthouse is a tower. Lighthouses guide ships.", np.uint8)
    before = stream_bpb(old, old_history, text)["bpb"]
    model.reader.mix_doc[:] = 0
    assert stream_bpb(model, history, text)["bpb"] == before
    assert np.array_equal(old.reader.mix, model.reader.mix)


def test_output_is_always_valid_utf8(run_dir):
    model, history, _ = load_model(run_dir)
    prompt = "Ελλάδα and Zürich".encode()
    wide = 0
    for seed in range(6):
        g = Generator(model, history)
        g.feed(prompt)
        start = g.t
        out = "".join(generate(g, np.random.default_rng(seed), 300, Sampling(temperature=1.5, top_p=1.0, min_p=0.0)))
        drawn = bytes(g.buf[start: g.t])  # every byte the sampler drew, decoded or not
        ended = drawn.endswith(b"\x00")  # the end of an article stops generation, unprinted
        text = drawn[: len(drawn) - ended].decode("utf-8")  # every drawn byte is valid UTF-8
        # a reply cut by the limit shows up to its last sentence or word end (issue 23 item 4)
        assert out == (text if ended else finish_thought(text))
        assert ended or 300 <= len(drawn) <= 303  # else a character cut at 300 bytes is completed
        wide += sum(ord(c) > 0x7F for c in out)
    assert wide > 0  # hot sampling after a non-ASCII prompt drew multi-byte characters: they were tested
    r = cli("sample", str(run_dir), "--prompt", "東京", "--max-bytes", "300", "--temperature", "2", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode("utf-8").startswith("東京") and len(r.stdout) <= len("東京".encode()) + 304


def test_filter_probs():
    p = np.array([0.5, 0.3, 0.15, 0.05] + [0.0] * 252)
    assert filter_probs(p, 1.0, 2, 1.0)[:3].tolist() == pytest.approx([0.625, 0.375, 0.0])
    assert filter_probs(p, 1.0, 0, 0.7)[:3].tolist() == pytest.approx([0.625, 0.375, 0.0])
    assert filter_probs(p, 0.0, 0, 1.0)[0] == 1.0
    sharp = filter_probs(p, 0.5, 0, 1.0)
    assert sharp[0] > 0.5 and abs(sharp.sum() - 1) < 1e-12
    # min-p keeps the bytes at least min_p times as likely as the most likely one
    assert filter_probs(p, 1.0, 0, 1.0, min_p=0.25)[:4].tolist() == pytest.approx([0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0])


def test_np_sum_is_numpys_sum_bit_for_bit():
    """sample_byte's sums are NumPy's pairwise sums, so its normalised distributions are filter_probs'."""
    rng = np.random.default_rng(7)
    for n in list(range(0, 140)) + [255, 256, 257, 300, 1000, 4099]:
        for _ in range(3):
            a = rng.random(n) ** rng.uniform(1, 30)
            a[rng.random(n) < rng.random()] = 0.0
            assert np_sum(a) == a.sum(), n


def test_sample_byte_is_filter_probs_and_draw():
    """The fused filter and draw against the NumPy path (filter_probs, then draw's inverse CDF at the
    same uniform): the same distribution and the same byte, on random distributions with zeros and
    ties, for every filter and their combinations. Bit for bit where NumPy's log and exp are the C
    library's; on a CPU with AVX-512 NumPy uses its own vector versions, which differ from the C
    library's in the last bit (3.5e-18 on an AMD EPYC at T 1.7), so the distribution is compared to
    1e-14 relative (the same zeros), and the byte exactly (a uniform within 1e-14 of a bin's edge
    has a chance of about 1e-11 in these 3,000 draws)."""
    rng = np.random.default_rng(3)
    n = 0
    for _ in range(3000):
        p = rng.dirichlet(np.ones(256) * rng.choice([0.02, 0.1, 0.5, 2.0]))
        p[rng.random(256) < rng.random() * 0.95] = 0.0
        if rng.random() < 0.2:
            p[rng.integers(0, 256, 20)] = p.max()  # ties
        if p.sum() == 0:
            continue
        temp = float(rng.choice([0.0, 0.3, 0.5, 0.8, 1.0, 1.7]))
        top_k = int(rng.choice([0, 1, 5, 40, 255, 256]))
        top_p = float(rng.choice([1.0, 0.95, 0.5, 0.1]))
        min_p = float(rng.choice([0.0, 0.05, 0.2]))
        seed = int(rng.integers(1 << 30))
        want_q = filter_probs(p, temp, top_k, top_p, min_p)
        want = draw(want_q, np.random.default_rng(seed))
        got_q = p.copy()
        got = sample_byte(got_q, temp, top_k, top_p, min_p, np.random.default_rng(seed).random())
        assert np.array_equal(got_q > 0, want_q > 0), (temp, top_k, top_p, min_p)
        assert np.allclose(got_q, want_q, rtol=1e-14, atol=0.0), (temp, top_k, top_p, min_p)
        assert got == want, (temp, top_k, top_p, min_p)
        n += 1
    assert n > 2500
    assert sample_byte(np.zeros(256), 0.5, 0, 0.95, 0.2, 0.5) == -1  # filter_probs raises there


class NumpyPathGenerator(Generator):
    """Generator.sample as it was before the fused path: filter_probs, then draw."""

    def sample(self, rng, sampling=Sampling(), allow_end=True, banned=(), gain=None, barred=()):
        gain = sampling.subject if gain is None else gain
        p = self.distribution(gain, sampling.subject_inside) * utf8_allowed(self.pending)
        for b in barred:
            p[b] = 0.0
        at_word_start = self.t > 0 and self.buf[self.t - 1] == 0x20
        if not at_word_start:
            banned = ()
        elif sampling.max_copy:
            banned = set(banned) | self.history_copies(sampling.max_copy)
        if not allow_end:
            p[0] = 0.0
        if banned:
            kept = p.copy()
            kept[list(banned)] = 0.0
            if kept.sum() > 0:
                p = kept
        y = draw(filter_probs(p, sampling.temperature, sampling.top_k, sampling.top_p, sampling.min_p), rng)
        self.push(y)
        return y


def test_the_fast_byte_tree_is_the_reference_tree(run_dir):
    """memory.byte_distribution (a row set per high nibble, count tables, side-by-side dot products)
    equals byte_tree_reference (mixer.mix_node at every node, as training) bit for bit, along a
    generated text; also with the stretch table cut to 2 x 2, so counts take the computed path."""
    from cheaplm.memory import _count_lut_tables

    model, history, _ = load_model(run_dir)
    g = Generator(model, history)
    g.feed(b"The river")
    mem = model.memory
    tiny = model.memory.new_node_scratch()
    tiny.luts = _count_lut_tables(2)
    rng = np.random.default_rng(0)
    pruned = 0
    for _ in range(60):
        g._ensure_prev()
        args = (g.buf, g.t, g.match.args(g.prev_t, g.t))
        for prune in (None, 0.02):  # PRUNE, and a threshold that prunes (this small model's PRUNE rarely does)
            want, want_p1 = np.zeros(256), np.zeros(256)
            mem.node_probs_reference(*args, mem.new_node_scratch(), want, want_p1, prune)
            for scratch in (g._scratch, tiny):
                got, got_p1 = np.zeros(256), np.zeros(256)
                mem.node_probs(*args, scratch, got, got_p1, prune)
                assert np.array_equal(got, want) and np.array_equal(got_p1[1:], want_p1[1:])
            pruned += int((want_p1[16:] == 0.5).sum())
        g.sample(rng, Sampling(temperature=1.0, top_p=1.0, min_p=0.0))
    assert pruned > 0  # the walk met pruned nibbles too


@pytest.mark.parametrize("sampling", [Sampling(), Sampling(temperature=0.8, top_k=0, top_p=0.95, min_p=0.0),
                                      Sampling(temperature=1.3, top_k=12, top_p=0.9, min_p=0.05, no_repeat=0)])
def test_a_seeded_sample_is_the_numpy_path_s(run_dir, sampling):
    """The same seed writes the same text through the fast path (fused filter, fast byte tree) as
    through the NumPy filters over the reference byte tree."""
    model, history, _ = load_model(run_dir)
    texts = []
    for cls, reference_tree in ((Generator, False), (NumpyPathGenerator, True)):
        if reference_tree:
            model.memory.node_probs = model.memory.node_probs_reference
        try:
            g = cls(model, history)
            g.feed(b"The river")
            texts.append("".join(generate(g, np.random.default_rng(11), 400, sampling, allow_end=False)))
        finally:
            model.memory.__dict__.pop("node_probs", None)
    assert texts[0] == texts[1] and len(texts[0]) > 50


def test_bad_input(run_dir, tmp_path):
    for args, needle in [(["--top-p", "0"], "--top-p must be in (0, 1]"), (["--top-p", "1.5"], "--top-p"),
                         (["--temperature", "-1"], "--temperature must be 0"), (["--min-p", "1"], "--min-p must be in"),
                         (["--min-p", "nan"], "--min-p must be in"), (["--no-repeat", "2"], "--no-repeat must be 0"),
                         (["--no-repeat", "-5"], "--no-repeat must be 0")]:
        r = cli("sample", str(run_dir), "--prompt", "x", *args)
        assert r.returncode == 1 and r.stderr.decode().strip().splitlines()[-1].startswith("Error: ")
        assert needle in r.stderr.decode()
    r = cli("sample", str(run_dir), input_bytes=b"caf\xe9 latin-1")
    assert r.returncode == 1 and b"not valid UTF-8" in r.stderr and b"Traceback" not in r.stderr
    r = cli("sample", str(tmp_path / "nothing"), "--prompt", "x")
    assert r.returncode == 1 and b"no such run directory" in r.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "latest").write_text("ckpt-00000001\n")
    (broken / "ckpt-00000001").mkdir()
    (broken / "ckpt-00000001" / "model.npz").write_bytes(b"PK\x03\x04 not really a zip")
    r = cli("chat", str(broken))
    assert r.returncode == 1 and b"corrupt or truncated" in r.stderr and b"Traceback" not in r.stderr


class Terminal:
    """The master side of a pseudo-terminal, read as a user reads a screen: wait until some text is there.

    What is read past the awaited text is kept for the next wait, so no output is lost between two.
    """

    def __init__(self, fd: int):
        self.fd, self.buf = fd, b""

    def _fill(self, end: float) -> bool:
        r, _, _ = select.select([self.fd], [], [], max(0.0, min(0.2, end - time.monotonic())))
        if r:
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:  # the child closed the terminal
                return False
            self.buf += chunk
            return bool(chunk)
        return True

    def expect(self, needle: bytes, timeout: float) -> bytes:
        """Everything up to and including the first `needle`; AssertionError if it is not there in time."""
        end = time.monotonic() + timeout
        while needle not in self.buf:
            if time.monotonic() > end or not self._fill(end):
                raise AssertionError(f"did not see {needle!r} in {timeout} s; got {self.buf[-500:]!r}")
        i = self.buf.index(needle) + len(needle)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def expect_bytes(self, n: int, timeout: float) -> bytes:
        """The next `n` bytes of output, whatever they are."""
        end = time.monotonic() + timeout
        while len(self.buf) < n:
            if time.monotonic() > end or not self._fill(end):
                raise AssertionError(f"fewer than {n} bytes in {timeout} s; got {self.buf[-500:]!r}")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


PROMPT = b"\r\n> "  # the prompt at the start of a line (the terminal writes a newline as CR LF)


def test_chat_in_a_pseudo_terminal(run_dir):
    pid, fd = pty.fork()
    if pid == 0:  # child: the REPL, as a user would start it
        os.execv(sys.executable, [sys.executable, "-m", "cheaplm.cli", "chat", str(run_dir), "--seed", "2",
                                  "--max-bytes", "200000", "--temperature", "1.2"])
    term = Terminal(fd)
    try:
        # every step waits for the text that shows the chat is ready for it, never for a time
        term.expect(PROMPT, 120)
        os.write(fd, b"What is a lighthouse?\r")
        out = term.expect(PROMPT, 60)
        assert b"A lighthouse is" in out
        reply = out.split(b"A lighthouse is", 1)[1]
        assert len(reply.strip()) > 5  # the model wrote something after the framing
        # a long reply in raw mode (no paragraph stop): Ctrl-C must return to the prompt, not exit
        os.write(fd, b"!raw\r")
        term.expect(b"raw mode on", 30)
        term.expect(PROMPT, 30)
        os.write(fd, b"The\r")
        term.expect(b"The\r\nThe", 30)  # the terminal's echo of the line, then the chat's own copy of it
        term.expect_bytes(1, 30)  # a byte the model wrote: the reply streams (to --max-bytes), Ctrl-C is its to stop
        os.write(fd, b"\x03")
        out = term.expect(b"[stopped]", 30)
        out += term.expect(PROMPT, 30)
        assert b"Traceback" not in out
        os.write(fd, b"exit\r")
        deadline = time.time() + 30
        seen = b""
        while time.time() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    pass
        else:
            raise AssertionError(f"chat did not exit; last output {seen[-300:]!r}")
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.close(fd)


# ---- --max-bytes is a soft limit (issue 23 item 4) ------------------------------------------------

@pytest.mark.parametrize("text, shown", [
    ("He met Mr. Smith. Then he le", "He met Mr. Smith."),  # an abbreviation is no end; the cut drops "Then he le"
    ("J. S. Bach was a comp", "J. S. Bach was a"),  # initials are no end: no sentence, so the last word end
    ("It is (e.g. this one). And mo", "It is (e.g. this one)."),
    ('He said "no." Then', 'He said "no."'),  # closing quotes stay with their sentence
    ("Done.\nNext par", "Done."),  # an end before a newline
    ("Why? Because it is", "Why?"),
    ("He lived in St. Louis and the U.S. Army wa", "He lived in St. Louis and the U.S. Army"),
    ("no sentence end here at al", "no sentence end here at"),
    ("no sentence end here at all ", "no sentence end here at all"),
    ("It was 3.", "It was"),  # a period at the very end may be "3.5": no known end, and "3." no known word
    ("The value is 3.5 km. It is", "The value is 3.5 km."),  # a single letter ("m.") would be an initial
    ("Zürich is a city. Ελλάδα is a χώρ", "Zürich is a city."),  # multi-byte characters, cut between words
    ("Ελλάδα και Κύπρο", "Ελλάδα και"),  # no sentence end, two-byte letters: the last word end
    ("東京は日本の首都。大阪は", "東京は日本の首都。"),  # the ideographic full stop needs no space
    ("Zürich", ""),  # no whitespace: no word is known to be whole
])
def test_finish_thought_cuts_at_the_last_sentence_end_else_word_end(text, shown):
    from cheaplm.sample import finish_thought

    assert finish_thought(text) == shown
    assert text.startswith(shown)


def test_finish_thought_reads_the_opening_for_abbreviations():
    from cheaplm.sample import finish_thought

    assert finish_thought(". Smith was he", before="It was Mr") == ". Smith was"  # no sentence end: a word end
    assert finish_thought(". Smith was he", before="It was Sam") == "."


def test_reply_cut_streaming_equals_the_rule_and_keeps_everything_when_not_cut():
    """Fed a character at a time, the released text is finish_thought's, and the rest is all
    the remainder (a reply ended by the article's end or a stop keeps it)."""
    from cheaplm.sample import ReplyCut, finish_thought

    texts = ["He met Mr. Smith. Then he left! Did he? Yes. And the", "Ελλάδα και Κύπρο", "東京は首都。大阪は",
             "One. Two. Three", "x", " leading space. and more"]
    for text in texts:
        cut = ReplyCut("The ")
        shown = "".join(cut.add(c) for c in text)
        assert shown == finish_thought(text, before="The ")
        assert shown + cut.rest() == text and cut.rest() == ""


def test_replies_cut_by_the_limit_end_at_a_sentence_or_word_end(run_dir):
    """On a trained model: a reply cut by --max-bytes is what the rule makes of all that was
    generated, never ends inside a word or a character; one that a stop ends keeps everything."""
    from cheaplm.sample import finish_thought

    model, history, _ = load_model(run_dir)
    prompt = "Café in Zürich. The river"
    seen_sentence = seen_word_only = 0
    for seed, limit in [(0, 40), (1, 60), (2, 90), (3, 150), (4, 33), (5, 200)]:
        g = Generator(model, history)
        g.feed(prompt.encode())
        start = g.t
        shown = "".join(generate(g, np.random.default_rng(seed), limit, Sampling(temperature=1.0, min_p=0.05),
                                 allow_end=False, opening=prompt.encode()))
        written = bytes(g.buf[start: g.t])
        assert len(written) >= limit  # it ran to the limit
        made = written.decode("utf-8")  # the limit never cut a character
        assert shown == finish_thought(made, before=prompt)
        assert len(shown.encode()) <= limit and made.startswith(shown)
        assert shown == "" or made[len(shown)].isspace()  # whitespace follows: no word is cut
        seen_sentence += shown.endswith((".", "!", "?"))
        seen_word_only += not shown.endswith((".", "!", "?"))
    assert seen_sentence and seen_word_only  # both rules were exercised
    g = Generator(model, history)
    g.feed(prompt.encode())
    start = g.t
    shown = "".join(generate(g, np.random.default_rng(0), 400, Sampling(), allow_end=False,
                             stop=lambda out: len(out) >= 57))
    assert shown.encode() == bytes(g.buf[start: g.t])  # ended by stop: nothing held back
