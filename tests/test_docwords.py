"""The document words (docwords.py): its counts and distribution against a float64 pure-Python
oracle that counts the document's words with a dict, and its place in the memory-reader mix."""

import math

import numpy as np

from cheaplm import docwords
from cheaplm.docwords import DOC_SETS, DocWords, doc_inputs
from cheaplm.reader import mix_loss, mixed_distribution

TEXT = ("old page\x00Archimedes\n\nArchimedes of Syracuse was a Greek mathematician. Archimedes "
        "studied in Alexandria; Archimède (French) and Arquímedes. The Archimedean screw "
        "is named after Archimedes.\x00Next article here, Nexting\n").encode()


def is_word(b: int) -> bool:
    return 65 <= b <= 90 or 97 <= b <= 122 or b >= 128


def oracle(text: bytes, t: int):
    """(p_D over the next byte, context) at position t from the words of t's document, or None."""
    nul, tag = text.rfind(b"\x00", 0, t), text.rfind(b"<doc ", 0, t)
    tag = tag + 4 if tag >= 0 else -1
    start = max(nul, tag) + 1
    doc = text[start:t]
    k = 0
    while k < len(doc) and is_word(doc[len(doc) - 1 - k]):
        k += 1
    if k > docwords.MAX_WORD:
        return None
    w = doc[len(doc) - k:]
    words, cur = [], bytearray()
    counted = doc[: len(doc) - k]  # the word in progress is not yet counted
    if tag > nul:  # nor are the "<doc ...>" line's words, up to its ">", but for its title's
        close = counted.find(b">")
        line = counted if close < 0 else counted[:close]
        value = b""
        if line.find(b'title="') >= 0:
            v0 = line.find(b'title="') + 7
            v1 = line.find(b'"', v0)
            value = line[v0:] if v1 < 0 else line[v0:v1]
        counted = b" " + value + b" " + (b"" if close < 0 else counted[close + 1:])
    for b in counted + b" ":
        if is_word(b):
            cur.append(b)
        else:
            if 4 <= len(cur) <= docwords.MAX_WORD:
                words.append(bytes(cur))
            cur = bytearray()
    under = [x for x in words if x.startswith(w)]
    if not under:
        return None
    p = np.full(256, docwords.SMOOTH / 256)
    for x in under:
        if len(x) > k:
            p[x[k]] += 1.0
        else:
            p[: docwords.END_SPREAD] += 1.0 / docwords.END_SPREAD
    p /= len(under) + docwords.SMOOTH
    distinct = len(set(under))
    before = doc[: len(doc) - k].rstrip(b" ")
    sent = 1 if not before or before[-1:] in (b".", b"!", b"?", b"\n") else 0
    c = (min(k, 3) * 3 + (0 if distinct <= 1 else 1 if distinct <= 3 else 2)) * 2 + sent
    return p, c


def test_counts_match_a_python_oracle():
    data = np.frombuffer(TEXT, np.uint8)
    zd, cd = doc_inputs(data, [(0, len(data))])
    dw = DocWords(bits=16)
    spoke = 0
    for t in range(len(data)):
        dw.advance(data, t)
        got, c = dw.distribution()
        want = oracle(TEXT, t)
        if want is None:
            assert got is None and not zd[t].any()
            continue
        spoke += 1
        assert got is not None and c == want[1], t
        np.testing.assert_allclose(got, want[0], rtol=1e-12, atol=1e-15)
        # the path's bit probabilities: stretch(P(bit j = 1 | the true byte's bits above))
        y, lo, size = data[t], 0, 256
        for j in range(8):
            half = size // 2
            p1 = want[0][lo + half: lo + size].sum() / want[0][lo: lo + size].sum()
            z = math.log(min(max(p1, 1e-6), 1 - 1e-6) / (1 - min(max(p1, 1e-6), 1 - 1e-6)))
            assert abs(zd[t, j] - max(-8, min(8, z))) < 1e-4
            lo += half if (y >> (7 - j)) & 1 else 0
            size = half
        assert cd[t] == want[1]
    assert spoke > 60  # D spoke at many positions, so they were compared
    # the second article starts empty: nothing of "Archimedes" is predicted after its NUL
    nxt = TEXT.index(b"Next article")
    assert not zd[nxt: nxt + 5].any()  # its first word and the byte after it
    assert zd[TEXT.index(b"Nexting") + 2].any()  # ... until it has words of its own ("Next")


def test_document_starts_at_a_doc_line_too():
    text = b'x</doc>\n<doc id="1" url="?curid=1" title="Archimedes">\nArchimedes\n\nArchimedes was'
    data = np.frombuffer(text, np.uint8)
    t = text.rindex(b"Archimedes") + 2
    zd, cd = doc_inputs(data, [(t, t + 1)])
    want = oracle(text, t)
    assert want is not None and want[0][ord("c")] > 0.6 and cd[0] == want[1]
    assert docwords.doc_start(data, len(text), 1 << 20) == text.index(b'id="1"')


def test_ranges_read_from_their_documents_start():
    """A range's inputs do not depend on where reading starts: from the text's start or the range's."""
    data = np.frombuffer(TEXT, np.uint8)
    whole, cw = doc_inputs(data, [(0, len(data))])
    a, b = TEXT.index(b"studied"), TEXT.index(b"The Arch")
    part, cp = doc_inputs(data, [(a, b), (b + 5, b + 20)])
    assert np.array_equal(part, np.concatenate([whole[a:b], whole[b + 5: b + 20]]))
    assert np.array_equal(cp, np.concatenate([cw[a:b], cw[b + 5: b + 20]]))


def test_doc_mix_node_by_node_equals_the_path_mix():
    """Generation's mixed_distribution with D = 2^-(mix_loss of y's bits with D), and zero weights
    for D give the mix without it (the back-compat case)."""
    rng = np.random.default_rng(1)
    node_pm = rng.uniform(0.001, 0.999, 256)
    pr = rng.dirichlet(np.ones(256) * 0.3)
    pd = rng.dirichlet(np.ones(256) * 0.2)
    w = rng.normal(0.5, 0.3, (128, 3)).astype(np.float32)
    wd = rng.normal(0.4, 0.3, DOC_SETS).astype(np.float32)
    c = 13
    out, mass = np.zeros(256), np.zeros(512)
    mixed_distribution(node_pm, pr, w, mass, out, (pd, c, wd))
    plain = np.zeros(256)
    mixed_distribution(node_pm, pr, w, mass, plain)
    zero_w = np.zeros(256)
    mixed_distribution(node_pm, pr, w, mass, zero_w, (pd, c, np.zeros(DOC_SETS, np.float32)))
    assert abs(out.sum() - 1) < 1e-9 and np.array_equal(zero_w, plain) and not np.allclose(out, plain)

    def path(dist, y):
        s = np.zeros(512)
        s[256:] = dist
        for k in range(255, 0, -1):
            s[k] = s[2 * k] + s[2 * k + 1]
        return np.array([[s[2 * ((256 | y) >> (8 - j)) + 1] / s[(256 | y) >> (8 - j)] for j in range(8)]])

    for y in (0, 32, 65, 114, 200, 255):
        pm = np.array([[node_pm[(256 | y) >> (8 - j)] for j in range(8)]], np.float32)
        prb = path(pr, y).astype(np.float32)
        pdb = path(pd, y)[0]
        zd = np.array([[docwords.stretch(p) for p in pdb]], np.float32)
        bits = mix_loss(pm, prb, np.array([y], np.uint8), w, np.zeros((0, 3), np.float32),
                        (zd, np.array([c]), wd))[0]
        assert abs(-math.log2(out[y]) - bits) < 1e-4
        none = mix_loss(pm, prb, np.array([y], np.uint8), w, np.zeros((0, 3), np.float32))[0]
        zero = mix_loss(pm, prb, np.array([y], np.uint8), w, np.zeros((0, 3), np.float32),
                        (zd, np.array([c]), np.zeros(DOC_SETS, np.float32)))[0]
        assert none == zero


def test_mix_gradient_of_doc_weights_matches_finite_differences():
    rng = np.random.default_rng(2)
    n = 5
    pm, pr = rng.uniform(0.05, 0.95, (n, 8)).astype(np.float32), rng.uniform(0.05, 0.95, (n, 8)).astype(np.float32)
    y = rng.integers(0, 256, n).astype(np.uint8)
    zd = rng.normal(0, 2, (n, 8)).astype(np.float32)
    cd = rng.integers(0, docwords.CONTEXTS, n)
    w = rng.normal(0.5, 0.3, (128, 3)).astype(np.float32)
    wd = rng.normal(0.3, 0.3, DOC_SETS).astype(np.float64)
    gd = np.zeros(DOC_SETS)
    mix_loss(pm, pr, y, w, np.zeros_like(w), (zd, cd, wd), gd)
    for r in {int(j * docwords.CONTEXTS + cd[0]) for j in range(8)}:
        e = np.zeros(DOC_SETS)
        e[r] = 1e-5
        hi = mix_loss(pm, pr, y, w, np.zeros((0, 3), np.float32), (zd, cd, wd + e)).mean() * math.log(2)
        lo = mix_loss(pm, pr, y, w, np.zeros((0, 3), np.float32), (zd, cd, wd - e)).mean() * math.log(2)
        assert abs((hi - lo) / 2e-5 - gd[r]) < 1e-5


def test_a_joined_document_reads_the_one_before_it_as_its_own():
    """DocWords.join (chat's recalled article): inside [a, b) a separator starts no new document,
    so the question's document knows the recalled article's words; without it D abstains there.
    Joined, the reading equals the oracle's over the text with the separators taken out."""
    recalled = b"\x00Archimedes\n\nArchimedes of Syracuse invented the screw pump.\n"
    question = b'</doc>\n<doc id="9" url="?curid=9" title="Archimedes">\nArchimedes\n\nArchimedes was a scr'
    text = b"earlier turn words\x00" + recalled + question
    data = np.frombuffer(text, np.uint8)
    t = len(text)  # inside "scr": "screw" is only in the recalled article
    a = len(b"earlier turn words\x00")
    alone = DocWords()
    alone.advance(data, t)
    assert alone.distribution()[0] is None  # "scr..." is no word of the question's document
    joined = DocWords()
    joined.join(a, t - len(b"Archimedes was a scr"))
    joined.advance(data, t)
    p, c = joined.distribution()
    # the separators out, and the "<doc ...>" line's words, which D does not count
    merged = (recalled + question).replace(b"\x00", b" ").replace(b'<doc id="9" url="?curid=9" title="Archimedes">', b">")
    want = oracle(merged, len(merged))
    assert p is not None and np.allclose(p, want[0]) and c == want[1]
    assert p[ord("e")] > 0.6
    # incremental reading after the join equals a fresh reading of the same position
    joined.advance(data, t)
    assert np.array_equal(joined.distribution()[0], p)


def test_the_doc_lines_words_are_not_the_documents():
    """"curid" and "title" open every WikiExtractor article: D does not count the words of the
    "<doc ...>" line but its title's, so after a title with no word of 4+ letters it has nothing to
    say (it used to push c- and t-words there), after one with such a word it predicts the title
    line, and a range read from inside the line agrees with the whole text."""
    text = b'x</doc>\n<doc id="1" url="?curid=1" title="Archimedes of Syracuse">\nArchimedes'
    data = np.frombuffer(text, np.uint8)
    zd, cd = doc_inputs(data, [(0, len(data))])
    t = text.rindex(b"Archimedes") + 2  # the title line's "Ar|chimedes": known from the title's value
    want = oracle(text, t)
    assert want is not None and want[0][ord("c")] > 0.6 and zd[t].any() and cd[t] == want[1]
    text = b'x</doc>\n<doc id="1" url="?curid=1" title="Tea">\nTea\n\nTea is a c'
    data = np.frombuffer(text, np.uint8)
    dw = DocWords()
    for t in (len(text) - 1, len(text)):  # a word start, and inside "c..."
        dw.advance(data, t)
        assert dw.distribution()[0] is None and oracle(text, t) is None
    text += b"up of Assam tea. Assam"
    data = np.frombuffer(text, np.uint8)
    whole, _ = doc_inputs(data, [(0, len(data))])
    t = text.index(b"curid") + 2
    part, _ = doc_inputs(data, [(t, len(data))])
    assert np.array_equal(whole[t:], part) and whole[text.rindex(b"Assam") + 1].any()  # the line's words are not, the text's are
