"""`cheaplm chat`: a REPL where the model answers by continuing an encyclopedia article.

A model trained on Wikipedia knows how articles start, not how dialogues go, so each line is turned
into the start of an article about its subject and the model writes the rest of the lead:

    "What is a lighthouse?"   ->  new article titled "Lighthouse", text begins "A lighthouse is"
    "Who was Ada Lovelace?"   ->  article "Ada Lovelace", text begins "Ada Lovelace was"
    "Tell me about glaciers"  ->  article "Glaciers", text begins "Glaciers"
    anything else             ->  article titled by the line, text begins with the line itself

The article header is written the way the model's training text writes it: a WikiExtractor
`<doc ...>` line when the history holds those (wikibench), else the shard format (NUL, title,
blank line). The stream is never reset, so earlier turns stay in the model's memory, but each
turn starts a new document (Generator.new_document): earlier turns, like the training text, are
far back for the match model, whose recency inputs would otherwise make it copy them. `--raw` (or `!raw`) continues the typed text exactly, up to --max-bytes.

Recall (recall.py): when the subject is the title of an article in the memory text, that article's
lead is fed first, as the document before the question's, so the model's match model and reader
have it in their recent past and the reply is grounded in it (it quotes it, mostly). The frame
then uses the article's own title and its own opening words ("Elephants are"), which the match
model can follow into the article.
"""

from __future__ import annotations

import signal
import sys

import numpy as np
import regex

from .recall import TitleIndex, lead_bytes
from .sample import Generator, Sampling, generate, subject_words

_QUESTION = regex.compile(
    r"^\s*(?:(?P<wh>what|who|where)\s+(?P<verb>is|are|was|were)\s+|(?:tell me about|describe|explain)\s+)"
    r"(?P<subject>.+?)\s*[?.!]*\s*$", regex.I)
_ARTICLE = regex.compile(r"^(?:a|an|the)\s+", regex.I)

# the document words' weight while chat writes (Sampling.subject), the subject's return
# (Sampling.subject_drift, subject_return) and its hold (Sampling.subject_hold): a framed document
# starts with its title, so D's words are the subject's. On the 2-minute H200 model (bench/RESULTS.md,
# "The document words without the <doc> line"), 80 questions: 1.5, with 4 after 100 bytes off
# subject, held until the reply names it, made 0.85 of free answers name their subject; 0.75 at a
# constant 2 and 0.56 at 1 (the model as trained); the transformer trained as long 0.69 under the
# same hold, real leads 0.49. The judge reads them at 1.111 bits per byte (constant 2: 1.103; 1:
# 1.050; leads 1.083): naming the subject costs judge bits. That model's D skipped the whole <doc>
# line; it reads the title's words of it since (c8338ce). On the next 2-minute H200 model (9be964a)
# the same settings named the subject in 0.72 (constant 2: 0.56; 1: 0.26; the transformer 0.64).
# A gain above 1 scales the positive D weights only (stream.gained_weights).
# `sample` keeps 1, no return and no hold: a raw continuation's document is the history's last article.
SUBJECT = 1.5
SUBJECT_DRIFT = 100
SUBJECT_RETURN = 4.0
SUBJECT_HOLD = True
# the sentence search (Sampling.search): after the first sentence (or 100 bytes), each sentence (or
# 100-byte stretch of a run-on one) drawn 4 times, the kept one naming the subject where the reply
# needs it; with it, a stuttered word is drawn again. On two 2-minute H200 models (bench/RESULTS.md,
# "The hold's bar fixed"), 80 questions each: free answers name their subject in 0.91 and 0.84
# against 0.71 and 0.66 without it (the transformer trained as long, held the same way: 0.66 and
# 0.71), and the judge reads them better per answer (-0.060 and -0.056 bpb against no search;
# against the model as trained +0.015 and -0.039). On the 10-minute CPU model 0.90 against 0.82.
# The first byte is as soon; a whole reply takes longer (median 0.31 s against 0.12 s on the CPU).
SEARCH = 4
SAMPLING = Sampling(subject=SUBJECT, subject_drift=SUBJECT_DRIFT, subject_return=SUBJECT_RETURN,
                    subject_hold=SUBJECT_HOLD, search=SEARCH)
RECALL_BYTES = 700  # of the recalled article's body read before the question (whole paragraphs)
OPENING_BYTES = 160  # how far into the recalled article its opening verb is looked for

HELP = "commands: exit | quit | Ctrl-D to leave; Ctrl-C stops a reply; !multi ... !end for several lines; !raw toggles framing"
COMMANDS = ("!raw", "!multi")  # a typed line that is one of these is a command (!end only ends a !multi)
UNKNOWN = "unknown command {}; the commands are !raw (framing on/off), !multi ... !end (several lines), exit, quit"


def frame(question: str) -> tuple[str, str]:
    """(article title, start of the text) for a typed line."""
    m = _QUESTION.match(question)
    if m:
        subject = m.group("subject").strip()
        verb = (m.group("verb") or "").lower()
        title = _ARTICLE.sub("", subject)
        title = title[:1].upper() + title[1:]
        lead = subject[:1].upper() + subject[1:] + (f" {verb}" if verb else "")
    else:
        q = question.strip()
        title = regex.sub(r"[?.!]+$", "", q)[:80]
        lead = q[:1].upper() + q[1:]
    return title, lead


def separator(doc_style: bool) -> str:
    """What ends the document before a new one in the model's training format."""
    return "</doc>\n" if doc_style else "\x00"


def header(title: str, doc_style: bool, turn: int) -> str:
    """A new article's header (after the separator): how the training text starts one."""
    if doc_style:
        return f'<doc id="{900000 + turn}" url="?curid={900000 + turn}" title="{title}">\n{title}\n\n'
    return f"{title}\n\n"


def prompt_bytes(question: str, doc_style: bool, turn: int, index: TitleIndex | None, history) -> tuple[bytes, str, str | None]:
    """(bytes to feed, the reply's visible opening, the recalled article's title or None)."""
    title, lead = frame(question)
    sep = separator(doc_style)
    recalled = b""
    source = None
    if index is not None:
        article = index.find(title)
        if article is not None:
            source = article.title
            recalled = sep.encode() + lead_bytes(history, article, RECALL_BYTES)
            title = article.title
            lead = article_opening(bytes(history[article.text: article.text + OPENING_BYTES]), lead)
    return recalled + (sep + header(title, doc_style, turn) + lead).encode("utf-8"), lead, source


def ask(gen: Generator, question: str, doc_style: bool, turn: int, index: TitleIndex | None, history,
        join: bool = True) -> tuple[str, str | None]:
    """Feed a framed question as a new document (prompt_bytes); returns (the reply's visible
    opening, the recalled article's title or None). With `join`, the document words (docwords.py)
    read a recalled article as part of the question's document: its words are the reply's subject's.
    The title's words become gen.subject_words (Sampling.subject_drift watches for them)."""
    gen.new_document()  # earlier turns are past documents, not this reply's recent past
    data, lead, source = prompt_bytes(question, doc_style, turn, index, history)
    gen.subject_words = subject_words(source if source is not None else frame(question)[0])
    start = gen.t
    gen.feed(data)
    if join and source is not None:
        gen.join_documents(start, gen.t)
    return lead, source


_OPENING_VERB = regex.compile(r"^[^\n]*?\b(?:is|are|was|were)\b")


def article_opening(body: bytes, fallback: str) -> str:
    """The recalled article's own first words, through its first is/are/was/were: "Elephants are",
    not the question's "An elephant is". A reply that starts as the article does is one the match
    model can follow into the article read just before; starting from the question's words, it
    most often could not (measured: bench/NOTES.md §13). Without such a verb early on, the first
    three words of its first line; the question's words when even those are missing."""
    text = body.decode("utf-8", "ignore")
    m = _OPENING_VERB.match(text)
    if m:
        return m.group(0)
    words = text.split("\n", 1)[0].split(" ")[:3]  # no such verb (a lead WikiExtractor cut): its first words
    return " ".join(words) if len(words) == 3 else fallback


def reply_done(out: bytearray) -> bool:
    """A reply ends with its paragraph (once it has a sentence) or with the article."""
    return (out.endswith(b"\n") and len(out) > 40) or out.endswith(b"</doc>")


BAD_LINE = "\udcff"  # what _read returns for a line that is not UTF-8 (a lone surrogate: never typed)


def _read(read_line, prompt: str) -> str | None:
    """A typed line, None at the end of input (Ctrl-D, or stdin closed or gone), or BAD_LINE."""
    try:
        return read_line(prompt)
    except UnicodeDecodeError:  # a strict UTF-8 stdin given other bytes
        return BAD_LINE
    except (EOFError, OSError, RuntimeError):  # RuntimeError: input() with sys.stdin closed
        return None


def run_chat(gen: Generator, ckpt, console, raw: bool, seed: int, max_bytes: int, sampling: Sampling = SAMPLING,
             index: TitleIndex | None = None, read_line=input) -> int:
    doc_style = b'<doc id="' in bytes(gen.buf[: min(gen.h, 1 << 16)])
    history = gen.buf[: gen.h]
    cfg = gen.model.cfg
    console.print(f"cheaplm chat: {ckpt.parent.name}/{ckpt.name}, {len(cfg.contexts())} contexts, "
                  f"{gen.model.cfg.table_bytes() / 2**20:,.0f} MiB of count tables, {gen.h / 1e6:.1f} MB of memory text"
                  + (f", recall over {len(index):,} articles" if index is not None else ", recall off"))
    console.print(HELP)
    rng = np.random.default_rng(seed)
    turn = 0
    while True:
        try:
            line = _read(read_line, "> ")
        except KeyboardInterrupt:
            sys.stdout.write("\n")
            continue
        if line is None:
            sys.stdout.write("\n")
            return 0
        text = line.strip()
        if text in ("exit", "quit"):
            return 0
        if text.startswith("!") and text not in COMMANDS:  # a mistyped command is not a question
            console.print(UNKNOWN.format(text.split()[0]), markup=False, highlight=False, soft_wrap=True)
            continue
        if text == "!raw":
            raw = not raw
            console.print(f"raw mode {'on' if raw else 'off'}")
            continue
        if text == "!multi":
            lines = []
            while True:
                more = _read(read_line, "... ")
                if more is None or more.strip() == "!end":
                    break
                lines.append(more)
            text = "\n".join(lines)
        if not text:
            continue
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # input() decodes undecodable bytes to lone surrogates
            console.print("that line is not valid UTF-8; type it again")
            continue
        turn += 1
        if raw:
            gen.subject_words = ()  # a raw continuation has no subject to return to
            gen.feed(text.encode("utf-8"))
            sys.stdout.write(text)
        else:
            lead, source = ask(gen, text, doc_style, turn, index, history)
            if index is not None:
                console.print(f"[dim]from: {source}[/dim]" if source else "[dim]no article by that title: answering free[/dim]",
                              highlight=False)
            sys.stdout.write(lead)
        sys.stdout.flush()
        stop = {"flag": False}

        def on_sigint(signum, frame_):
            stop["flag"] = True

        old = signal.signal(signal.SIGINT, on_sigint)
        try:
            # framed replies end with their paragraph; raw continuations run to --max-bytes
            opening = (text if raw else lead).encode("utf-8")
            for piece in generate(gen, rng, max_bytes, sampling, stop=None if raw else reply_done,
                                  should_stop=lambda: stop["flag"], allow_end=not raw, opening=opening):
                sys.stdout.write(piece.replace("</doc>", ""))
                sys.stdout.flush()
        finally:
            signal.signal(signal.SIGINT, old)
        if stop["flag"]:
            sys.stdout.write(" [stopped]")
        sys.stdout.write("\n")
        sys.stdout.flush()
