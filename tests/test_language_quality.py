"""The subject measures of bench/language_quality.py (issue 23 item 1) on fixed strings: no model,
no torch (the script imports torch only where the judge runs)."""

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parent.parent / "bench" / "language_quality.py"


@pytest.fixture(scope="module")
def lq():
    spec = importlib.util.spec_from_file_location("language_quality", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_importing_the_script_needs_no_torch():
    import subprocess

    code = (f"import sys, importlib.util; sys.modules['torch'] = None; "
            f"s = importlib.util.spec_from_file_location('lq', {str(_PATH)!r}); m = importlib.util.module_from_spec(s); "
            f"s.loader.exec_module(m); print(m.names_subject('Honey bee', 'The honeybee.'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "True", r.stderr


@pytest.mark.parametrize("title, reply, named", [
    ("Elephant", " the largest land animals. Elephants are", True),  # plural, case-insensitive
    ("Bulgaria", " a country. The Bulgarian language", True),  # a word starting with it
    ("Isaac Newton", " an English physicist, NEWTON's laws", True),  # any 4+ letter word of the subject
    ("Isaac Newton", " an English physicist and mathematician.", False),
    ("Honey bee", " an insect that makes honey.", True),  # "bee" is too short to count; "honey" counts
    ("Honey bee", " an insect of the genus Apis, a bee.", False),
    ("Tea", " a drink. Teas are", True),  # no word of 4+ letters: the word itself (or with s)
    ("Tea", " a drink made by a team of teachers.", False),
    ("Volcano", " " + "x" * 300 + " volcano", False),  # named only after the first 300 characters
    ("Zürich", " ist eine Stadt. ZÜRICHS Altstadt", True),  # multi-byte letters, case-folded
])
def test_names_subject(lq, title, reply, named):
    assert lq.names_subject(title, reply) == named


def test_sentences_split_at_chat_s_sentence_ends_and_newlines(lq):
    text = " was born in St. Louis, U.S. in 1900. He met J. S. Bach! Did he?\nHistory\nIt is"
    assert lq.sentences(text) == ["was born in St. Louis, U.S. in 1900.", "He met J. S. Bach!", "Did he?",
                                  "History", "It is"]


def test_grounded_counts_sentences_with_half_their_content_words_in_the_article(lq):
    article = set(lq.content_words("The elephant is the largest land animal. Elephants live in Africa and Asia, "
                                   "in savannah and forest; their trunk is long."))
    reply = (" the largest land animals of Africa. They live in savannah and forest. "  # all their content words are in it
             "It was a professional sports field in the 1900 season. "  # 0 of professional, sports, field, season
             "It is so. "  # no content word: not counted
             "Elephants have a long trunk and play football.")  # elephants, long, trunk in; play, football not: 3/5
    good, n = lq.grounded(reply, article)
    assert (good, n) == (3, 4)
    assert lq.grounded("", article) == (0, 0)


def test_subject_rates_and_the_summary(lq):
    group = [{"source": None, "names_subject": True}, {"source": None, "names_subject": False},
             {"source": "Elephant", "names_subject": True, "grounded": (3, 4)},
             {"source": "Hydrogen", "names_subject": True, "grounded": (1, 1)},
             {"source": "Dodo", "names_subject": False, "grounded": (1, 4)}]
    r = lq.subject_rates(group)
    assert r["names_subject_free"] == 0.5 and r["names_subject_recalled"] == pytest.approx(2 / 3)
    assert r["grounded_sentences"] == pytest.approx(5 / 9) and r["grounded_90_answers"] == pytest.approx(1 / 3)
    none = lq.subject_rates([{"source": None, "names_subject": True}])
    assert none["names_subject_recalled"] is None and none["grounded_sentences"] is None
    rows = [dict(row=lq.ROWS[0][0], **r), dict(row=lq.ROWS[1][0], **none),
            dict(row=lq.TRANSFORMER_ROW, **lq.subject_rates(group[:2]))]
    s = lq.on_subject_summary(rows)
    assert s["cheaplm free"] == 1.0 and s["cheaplm recall"] == pytest.approx(2 / 3) and s["transformer"] == 0.5
    for row in rows:
        row.update(judge_bpb=None, loop_rate=0.0, copy_rate=0.0, mean_bytes=100.0)
    t = lq.table(rows)
    assert "names subject (free)" in t and "| 0.67 |" in t and "| — |" in t


def test_copies_are_found_and_elided_so_no_data_text_is_written(lq):
    """copy_cover marks the bytes inside a 64-byte window that occurs in the training text;
    elide_copies shows each such run as its length only, and keeps what the model wrote."""
    import numpy as np

    rng = np.random.default_rng(3)
    train = rng.integers(97, 123, 5000, dtype=np.uint8)
    quote = bytes(train[1000:1100])
    text = b"The model wrote this, " + quote + b" and then this."
    (mask,) = lq.copy_cover([text], train)
    start = len(b"The model wrote this, ")
    assert mask.sum() == len(quote) and mask[start:start + len(quote)].all()
    shown = lq.elide_copies(text, mask)
    assert shown == f"The model wrote this, [... {len(quote)} bytes of the training text ...] and then this."
    (none,) = lq.copy_cover([b"x" * 80], train)
    assert not none.any() and lq.elide_copies(b"x" * 80, none) == "x" * 80


def test_the_questions_name_distinct_subjects_and_chat_frames_each(lq):
    """Two questions on one subject would count one subject twice; every question must frame to a
    title (chat.frame) with a word the subject measures can look for."""
    from cheaplm import chat

    titles = [chat.frame(q)[0].casefold() for q, _ in lq.PROMPTS]
    assert len(lq.PROMPTS) == 80 and len(set(titles)) == len(titles)
    assert all(any(lq._subject_words(t)) for t in titles)


@pytest.mark.parametrize("text, degraded", [
    (" of the family Maiden October 1–1 – – 1 March 1–1 – 1 km – “In the 1–0 mm", True),
    (" “A “I “I “I am the “We", True),
    (" (30 August 1974 – 15 February 2001) was a Spanish cyclist known as “El Tigre”.", False),  # three marks
    (" a planned rail-and-trail hiking trail, the state's first-ever long-distance one-way route", False),
    (" “one” " + "x" * 60 + " “two”", False),  # four marks, but not within 48 characters
])
def test_mark_run_flags_replies_that_degrade_into_dashes_and_quote_marks(lq, text, degraded):
    assert lq.mark_run(text) == degraded


def test_paired_compares_rows_answer_by_answer(lq):
    """`paired`: A - B over the prompts both rows answered, with an interval around the mean; a row
    against itself differs by exactly nothing; a prompt only one row answered is left out."""
    def row(label, bpbs, named):
        return {"row": label, "per_answer": [{"prompt": i, "judge_bpb": b, "names_subject": n}
                                             for i, (b, n) in enumerate(zip(bpbs, named))]}
    a = row("a", [1.0, 1.2, 0.8, 1.1, 0.9, 1.3], [True, True, False, True, True, True])
    b = row("b", [1.1, 1.2, 1.0, 1.1, 1.0, 1.3, 5.0], [False, True, False, False, True, True, True])
    r = lq.paired([a, b], "a", "b")
    assert r["answers"] == 6
    assert r["judge_bpb"]["mean"] == pytest.approx(-0.4 / 6)
    assert r["judge_bpb"]["lo"] <= r["judge_bpb"]["mean"] <= r["judge_bpb"]["hi"] <= 0.0
    assert r["names_subject"]["mean"] == pytest.approx(2 / 6)
    same = lq.paired([a, b], "a", "a")
    assert same["judge_bpb"] == {"mean": 0.0, "lo": 0.0, "hi": 0.0}
