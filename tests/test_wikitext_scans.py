"""The fast scans of wikitext.py against the plain patterns they stand for, on every string of a small
alphabet up to a length: each helper must give what the pattern (the reference) gives."""

import bisect
import itertools

import regex

from cheaplm import wikitext as W


def strings(alphabet, longest):
    for n in range(longest + 1):
        for letters in itertools.product(alphabet, repeat=n):
            yield "".join(letters)


def test_list_marks_as_the_multiline_pattern():
    reference = regex.compile(r"^[*#:;]++\s*+", regex.M)
    for s in strings(["*", "#", "\n", " ", "x", "\u2028"], 6):
        assert W._strip_list_marks(s) == reference.sub("", s), repr(s)


def test_runs_of_spaces_and_space_before_punctuation_as_the_class_patterns():
    spaces = regex.compile(r"[ \t\u00a0]{2,}")
    before_punct = regex.compile(r" +([,.;:!?])")
    for s in strings([" ", "\t", "\u00a0", "x", ","], 6):
        squeezed = W._squeeze_spaces(s)
        assert squeezed == spaces.sub(" ", s), repr(s)
        assert W._SPACE_BEFORE_PUNCT.sub("", squeezed) == before_punct.sub(r"\1", squeezed), repr(s)


def test_marks_as_finditer_of_the_alternatives():
    for opener, closer, pattern in [("{{", "}}", r"\{\{|\}\}"), ("{|", "|}", r"\{\||\|\}"),
                                    ("[[", "]]", r"\[\[(?!\[)|\]\]")]:
        reference = regex.compile(pattern)
        for s in strings(sorted(set(opener + closer)) + ["x"], 8):
            got = list(W._marks(s, opener, closer))
            assert got == [(m.start(), m.group()) for m in reference.finditer(s)], (opener, s)


def test_close_paren_punct_as_its_pattern():
    pattern = regex.compile(r"[,;]\s*+\)")

    def reference(text):
        out, pos = [], 0
        for m in pattern.finditer(text):
            out += [text[pos:m.start()].rstrip(), ")"]
            pos = m.end()
        return "".join(out + [text[pos:]])

    for s in strings([",", ";", " ", ")", "x", "\u2003", "("], 6):
        assert W._close_paren_punct(s) == reference(s), repr(s)


def test_leftovers_as_the_pattern():
    reference = regex.compile(r"\{\{|\}\}|\[\[|\]\]|\{\||\|\}|<ref\b[^<>]*+>?|</ref>", regex.I)
    for s in strings(["{{", "}", "]]", "[", "<ref>", "</REF>", "<", "ref", " ", "x>"], 4):
        assert W._drop_leftovers(s) == reference.sub("", s), repr(s)


def test_paired_tags_as_the_finditer_loop():
    def reference(text):  # the loop over match objects that _strip_paired_tags replaced
        tokens = list(W._PAIRED.finditer(text))
        closes = {}
        for i, m in enumerate(tokens):
            if m.group(1) and not m.group(3).strip():
                closes.setdefault(m.group(2).lower(), []).append(i)
        out, pos, i = [], 0, 0
        while i < len(tokens):
            m = tokens[i]
            i += 1
            if m.group(1):
                continue
            name = m.group(2).lower()
            if m.group(3).rstrip().endswith("/"):
                if name == "ref":
                    out.append(text[pos:m.start()])
                    pos = m.end()
                continue
            later = closes.get(name, [])
            k = bisect.bisect_left(later, i)
            if k == len(later):
                continue
            out.append(text[pos:m.start()])
            pos = tokens[later[k]].end()
            i = later[k] + 1
        return "".join(out + [text[pos:]])

    for s in strings(["<ref>", "</ref>", "<REF name=a/>", "<ref/ >", "</ref x>", "<math>", "</Math>", "x",
                      "<gallery >"], 4):
        assert W._strip_paired_tags(s) == reference(s), repr(s)


def test_innermost_by_split_as_sub_with_a_callback():
    for pattern, expand, alphabet in [(W._TEMPLATE_INNER, W.expand_template, ["{{", "}}", "{", "}", "|", "x"]),
                                      (W._LINK_INNER, W._link_text, ["[[", "]]", "[", "|", "a:", "#"])]:
        for s in strings(alphabet, 5):
            assert W._sub_inner(pattern, expand, s) == pattern.sub(lambda m: expand(m.group(1)), s), repr(s)


def test_expand_template_and_link_text_fast_paths():
    # the allow-list shortcut and the plain-target shortcut give what the full reading gives
    assert W.expand_template(" Cite_web |url=x|title=y") == ""
    assert W.expand_template("Lang-de|Haus") == "Haus"
    assert W.expand_template("c.|1900") == "c. 1900"
    assert W._link_text("  New York ") == "New York"
    assert W._link_text("fr:Paris") == ""
    assert W._link_text(":fr:Paris|Paris") == "Paris"
