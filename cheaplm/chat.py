"""`cheaplm chat`: a REPL where the model answers by continuing an encyclopedia article.

A model trained on Wikipedia knows how articles start, not how dialogues go, so each line is turned
into the start of an article about its subject and the model writes the rest of the lead:

    "What is a lighthouse?"   ->  new article titled "Lighthouse", text begins "A lighthouse is"
    "Who was Ada Lovelace?"   ->  article "Ada Lovelace", text begins "Ada Lovelace was"
    "Tell me about glaciers"  ->  article "Glaciers", text begins "Glaciers"
    anything else             ->  article titled by the line, text begins with the line itself

The article header is written the way the model's training text writes it: a WikiExtractor
`<doc ...>` line when the history holds those (wikibench), else the shard format (NUL, title,
blank line). The stream is never reset, so earlier turns stay in the model's context (its match
model can copy from them). `--raw` (or `!raw`) continues the typed text exactly, up to --max-bytes.
"""

from __future__ import annotations

import signal
import sys

import numpy as np
import regex

from .sample import Generator, generate

_QUESTION = regex.compile(
    r"^\s*(?:(?P<wh>what|who|where)\s+(?P<verb>is|are|was|were)\s+|(?:tell me about|describe|explain)\s+)"
    r"(?P<subject>.+?)\s*[?.!]*\s*$", regex.I)
_ARTICLE = regex.compile(r"^(?:a|an|the)\s+", regex.I)

HELP = "commands: exit | quit | Ctrl-D to leave; Ctrl-C stops a reply; !multi ... !end for several lines; !raw toggles framing"


def frame(question: str, doc_style: bool, turn: int) -> tuple[str, str]:
    """(article header, start of the text) for a typed line."""
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
    if doc_style:
        header = f'</doc>\n<doc id="{900000 + turn}" url="?curid={900000 + turn}" title="{title}">\n{title}\n\n'
    else:
        header = f"\x00{title}\n\n"
    return header, lead


def reply_done(out: bytearray) -> bool:
    """A reply ends with its paragraph (once it has a sentence) or with the article."""
    return (out.endswith(b"\n") and len(out) > 40) or out.endswith(b"</doc>")


def run_chat(gen: Generator, ckpt, console, raw: bool, seed: int, max_bytes: int, temperature: float,
             top_k: int, top_p: float, read_line=input) -> int:
    doc_style = b'<doc id="' in bytes(gen.buf[: min(gen.h, 1 << 16)])
    cfg = gen.model.cfg
    console.print(f"cheaplm chat: {ckpt.parent.name}/{ckpt.name}, {len(cfg.contexts())} contexts, "
                  f"{gen.model.cfg.table_bytes() / 2**20:,.0f} MiB of count tables, {gen.h / 1e6:.1f} MB of memory text")
    console.print(HELP)
    rng = np.random.default_rng(seed)
    turn = 0
    while True:
        try:
            line = read_line("> ")
        except EOFError:
            sys.stdout.write("\n")
            return 0
        except KeyboardInterrupt:
            sys.stdout.write("\n")
            continue
        text = line.strip()
        if text in ("exit", "quit"):
            return 0
        if text == "!raw":
            raw = not raw
            console.print(f"raw mode {'on' if raw else 'off'}")
            continue
        if text == "!multi":
            lines = []
            while True:
                try:
                    more = read_line("... ")
                except EOFError:
                    break
                if more.strip() == "!end":
                    break
                lines.append(more)
            text = "\n".join(lines)
        if not text:
            continue
        turn += 1
        if raw:
            gen.feed(text.encode("utf-8"))
            sys.stdout.write(text)
        else:
            header, lead = frame(text, doc_style, turn)
            gen.feed((header + lead).encode("utf-8"))
            sys.stdout.write(lead)
        sys.stdout.flush()
        stop = {"flag": False}

        def on_sigint(signum, frame_):
            stop["flag"] = True

        old = signal.signal(signal.SIGINT, on_sigint)
        try:
            # framed replies end with their paragraph; raw continuations run to --max-bytes
            for piece in generate(gen, rng, max_bytes, temperature, top_k, top_p, stop=None if raw else reply_done,
                                  should_stop=lambda: stop["flag"], allow_end=not raw):
                sys.stdout.write(piece.replace("</doc>", ""))
                sys.stdout.flush()
        finally:
            signal.signal(signal.SIGINT, old)
        if stop["flag"]:
            sys.stdout.write(" [stopped]")
        sys.stdout.write("\n")
        sys.stdout.flush()
