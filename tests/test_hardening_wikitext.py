"""The wikitext cleaner on hostile pages: every pass linear, so no page can hang `prepare` (issue 12, item 13)."""

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cheaplm import wikitext
from cheaplm.wikitext import clean_wikitext

MB = 1 << 20


def adversarial_pages(n: int) -> dict:
    """Pages of about n characters that made the old regexes backtrack for minutes to hours."""
    rng = random.Random(12)
    tokens = ["{{", "}}", "[[", "]]", "{|", "|}", "<ref>", "</ref>", "<ref name=x/>", "<math>", "</math>",
              "<!--", "-->", "=", "==", "\n", " ", "  ", "(", ")", ",", ";", "|", "'''", "[http://x ", "]",
              "&amp;", "a", "word ", "<b>", "__TOC__", "*", "----"]
    random_page = "".join(rng.choice(tokens) for _ in range(n // 3))
    return {
        "heading then spaces": "=" + " " * n,
        "unclosed ref": "<ref>" + "x" * n,
        "many unclosed refs": "<ref>a" * (n // 6),
        "ref name without >": "<ref name=" * (n // 10),
        "many unclosed math": "<math>" * (n // 6),
        "external link then spaces": "[http:// " + " " * n,
        "many unclosed external links": "[http://a " * (n // 10),
        "parenthesis then spaces": "(" + " " * n + "x",
        "spaces before a comma": "(a" + " \t" * (n // 2) + "b",
        "nested templates": "{{" * (n // 4) + "}}" * (n // 4),
        "nested kept templates": "{{nowrap|a" * (n // 10) + "}}" * (n // 10),
        "unclosed kept templates": "{{nowrap|a" * (n // 10),
        "nested tables": "{|" * (n // 4) + "|}" * (n // 4),
        "nested links": "[[a|b" * (n // 5) + "]]" * (n // 5),
        "tags without >": "<a " * (n // 3),
        "random markup": random_page,
    }


CHILD = """
import json, sys, time
sys.path.insert(0, {tests!r})
from test_hardening_wikitext import adversarial_pages
from cheaplm.wikitext import clean_wikitext
for name, page in adversarial_pages({n}).items():
    t = time.perf_counter()
    clean_wikitext(page)
    print(json.dumps([name, time.perf_counter() - t]), flush=True)
"""


def test_adversarial_pages_of_1mb_clean_in_linear_time():
    # a child process, so that a pattern that backtracks fails the test instead of hanging it
    tests = str(Path(__file__).parent)
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(tests=tests, n=MB)], stdout=subprocess.PIPE, text=True)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    times = dict(json.loads(line) for line in out.splitlines())
    missing = [name for name in adversarial_pages(64) if name not in times]
    assert not missing, f"did not finish in 60 s: {missing[0]} (done: {times})"
    slow = {name: round(t, 2) for name, t in times.items() if t > 3.0}
    assert not slow, slow


def test_hostile_markup_is_still_cleaned():
    assert clean_wikitext("a<ref>x</ref name=\"y\"> b</ref> c") == "a c"  # a broken close closes nothing
    assert clean_wikitext("a <ref name=n/> b <math>x</math> c") == "a b c"
    assert clean_wikitext("a <ref>never closed b") == "a never closed b"
    assert clean_wikitext("x {{a|{{b|{{c}}}}}} y") == "x y"
    assert clean_wikitext("x " + "{{nowrap|" * 100 + "deep" + "}}" * 100 + " y") == "x y"  # past the nesting cap
    assert clean_wikitext("x " + "{{nowrap|" * 10 + "deep" + "}}" * 10 + " y") == "x deep y"
    assert clean_wikitext("[[File:a.jpg|thumb|a [[b|c]] d]] e [[f]] [[[g]]]") == "e f [g]"
    assert clean_wikitext("see [http://example.org the site] and [//x.org] (a, ;) b ,)") == "see the site and (a,) b)"
    assert clean_wikitext("== History ==\nText.\n== References ==\nx") == "History\n\nText."
    assert clean_wikitext("=" + " " * 1000 + "\nok") == "=\nok"


def test_page_past_its_deadline_raises():
    with pytest.raises(wikitext.CleanTimeout):
        clean_wikitext("{{a}} [[b]] text", deadline=time.monotonic() - 1)
    assert clean_wikitext("{{a}} [[b]] text", deadline=time.monotonic() + 60) == "b text"


def test_prepare_skips_and_counts_a_page_over_its_time_budget(tmp_path):
    from cheaplm.prepare import PrepareOptions, clean_batch, prepare

    batch = [("Slow", "{{a}} text", "article"), ("Plain", "text", "clean")]
    assert [(t, a is None, r) for t, a, r in clean_batch(batch, False, 1, 1e-9)] == [
        ("Slow", True, "timeout"), ("Plain", False, "")]
    page = tmp_path / "page.wiki"
    page.write_text("'''Bay''' is a [[bay]] with {{convert|3|km}} of [[shore]].")
    m = prepare([str(page)], tmp_path / "out", PrepareOptions(workers=1, page_seconds=1e-9))
    assert m["pages"] == {"read": 1, "kept": 0, "skipped": {"timeout": 1}}
