"""Turn MediaWiki wikitext into clean plain text with `regex`.

Policy (also in the README):
- links become their anchor text; file/image/category/interlanguage links are removed;
- templates are dropped, except an allow-list whose text matters in a sentence:
  convert/cvt (the value and unit as written), lang and lang-xx (the foreign text), nihongo
  (English, then the Japanese and romaji in parentheses), nowrap/nobr/small/sic/not a typo (their
  text), as of, circa/c., and the punctuation templates ', '', ", nbsp, ndash, mdash, snd;
- refs, comments, tables, galleries, math and similar blocks are removed;
- headings are kept as lines of their own; the trailing reference sections (References, External
  links, See also, Notes, Further reading, Sources, Bibliography) are cut;
- bold/italic quote marks and HTML tags are removed, HTML entities decoded.

Nested constructs are resolved innermost first, so a link inside a file caption or a template
inside a table goes before its container.

Every pass is linear in the page (a page is untrusted input: a regex that backtracks turned 2 KB of
spaces after a '=' into minutes): nested templates and tables are resolved by one scan with a stack;
paired tags (<ref>, <math>, ...) are paired by one scan over their tokens; patterns that scan to a
closing character stop at the next opening one, or are possessive, so no two attempts rescan the
same text. `clean_wikitext` also takes a deadline, checked between passes, for the worker's per-page
time budget.

Speed (prepare's workers spent two thirds of their CPU here, now about 40%): `regex` scans at about
10 ns a character for an alternation of literals, '^' in MULTILINE, a class first or regex.I over a
whole pattern, and at about 1 ns for a pattern that starts with a literal string. So such scans are
done with str.find or rewritten to start with a literal (or in `re` where it was faster, for
patterns whose meaning is the same in both), and a pass whose mark is not in the page is skipped.
tests/test_wikitext_scans.py checks each against the plain pattern it stands for.
"""

from __future__ import annotations

import bisect
import html
import re
import time

import regex

_COMMENT = regex.compile(r"<!--.*?(?:-->|\Z)", regex.S)
# Tags whose content goes with them. An opening tag's attributes stop at the next '<' or '>', so
# each attempt scans only its own stretch; closes are paired by index (see _strip_paired_tags).
_PAIRED = regex.compile(
    r"<(/?)(ref|math|gallery|timeline|score|syntaxhighlight|source|pre|imagemap|mapframe|graph|"
    r"templatedata|chem|ce|hiero|references|table|noinclude|includeonly)\b([^<>]*+)>",
    regex.I)
# innermost templates and links, for a fast first pass in C (one pass is linear: an attempt stops
# at the next opener, which is where the next attempt starts). A template's body is read a run of
# plain characters at a time (per character it was 3x slower); links in `re`, whose split was
# faster here (no class or flag whose meaning differs between the two)
_TEMPLATE_INNER = regex.compile(r"\{\{((?:[^{}]++|\{(?!\{)|\}(?!\}))*+)\}\}")
_LINK_INNER = re.compile(r"\[\[([^\[\]]*+)\]\]")
_EXTLINK_START = regex.compile(r"\[(?:https?:|ftp:|//)")
_WHITESPACE = regex.compile(r"\s+")
_EQUALS_LINE = regex.compile(r"^=[^\n]*+", regex.M)  # heading candidates, read by _heading()
_QUOTES = regex.compile(r"'{2,}")
_TAG = regex.compile(r"</?[a-zA-Z][a-zA-Z0-9]*+\b[^<>]*+>")
_MAGIC = regex.compile(r"__[A-Z]++__")
# list marks at a line's start, with the whitespace after them (_strip_list_marks)
_LIST_CHARS = frozenset("*#:;")
_LIST_MARKS = regex.compile(r"[*#:;]++\s*+")
_LIST_LINE = regex.compile(r"\n[*#:;]")
_RULE = regex.compile(r"^-{4,}+\s*$", regex.M)
_EMPTY_PARENS = regex.compile(r"\(\s*+(?:[,;:]\s*+)?\)")
_PAREN_OPEN_PUNCT = regex.compile(r"\(\s*+[,;]\s*+")
# the whitespace before it is stripped by _close_paren_punct (a pattern starting with '\s*' would
# be tried at every position of a run of whitespace, rescanning the run each time)
_PAREN_CLOSE_PUNCT = regex.compile(r"[,;]\s*+\)")
# whether there is any: found from the ')', which regex scans for fast, unlike '[,;]'
_PAREN_AFTER_PUNCT = regex.compile(r"\)(?<=[,;]\s*\))")
# two spaces written out, then more: regex scans for those two as a string (for '  ++' or
# ' {2,}' it did not, 5-8x slower); see _squeeze_spaces
_RUN_OF_SPACES = regex.compile(r"  [ ]*")
# linear because it runs after _squeeze_spaces: no two spaces in a row are left to rescan. In `re`
# (no class or flag whose meaning differs between the two) and as ' ' then '[ ]*+', which re scans
# for as a string: 4x faster than regex's ' +([,.;:!?])' or re's ' +(?=...)'
_SPACE_BEFORE_PUNCT = re.compile(r" [ ]*+(?=[,.;:!?])")
_BLANK_LINES = regex.compile(r"\n{3,}")  # lines are stripped by then
# case-insensitive in the tags' name only: with the whole pattern under regex.I, regex tried it at
# every position (5x slower)
_LEFTOVER = regex.compile(r"\{\{|\}\}|\[\[|\]\]|\{\||\|\}|<(?i:ref)\b[^<>]*+>?|</(?i:ref)>")
_LEFTOVER_MARKS = ("{{", "}}", "[[", "]]", "{|", "|}")
_LEFTOVER_REF = regex.compile(r"<(?:(?i:ref)\b[^<>]*+>?|/(?i:ref)>)")  # _LEFTOVER without them

# Templates nested deeper than this are dropped without expanding: expanding keeps inner text, and
# re-reading it at every level would make a page of deeply nested templates quadratic.
MAX_NESTING = 64


class CleanTimeout(Exception):
    """The page took longer than its time budget to clean."""

TRAILING_SECTIONS = {
    "references", "external links", "see also", "notes", "further reading", "sources",
    "bibliography", "footnotes", "notes and references", "citations",
}

# Namespaces and prefixes whose links are not prose.
DROP_LINK_PREFIXES = {
    "file", "image", "category", "media", "wikipedia", "wp", "template", "help", "portal",
    "special", "user", "talk", "wikt", "wiktionary", "s", "wikisource", "commons", "q",
    "wikiquote", "n", "wikinews", "b", "wikibooks", "v", "wikiversity", "species", "mw",
    "meta", "m", "user talk", "draft", "module", "mediawiki", "book", "timedtext",
}

_PUNCT_TEMPLATES = {
    "'": "'", "''": "''", '"': '"', "nbsp": " ", "ndash": "\u2013", "mdash": "\u2014",
    "snd": " \u2013 ", "spnd": " \u2013 ", "nbhyphen": "-", "'s": "'s", "-": "-",
}
_TEXT_TEMPLATES = {"nowrap", "nobr", "small", "sic", "not a typo", "smallcaps", "sc", "big",
                   "angbr", "em", "strong", "var", "code", "mono"}
# the names expand_template gives text for (besides lang-xx); any other template is dropped unread
_KEPT_TEMPLATES = set(_PUNCT_TEMPLATES) | _TEXT_TEMPLATES | {"convert", "cvt", "lang", "nihongo", "as of", "circa", "c."}
_NUMBER = regex.compile(r"[-+\u2212]?[\d.,]+(?:e\d+)?|\d+/\d+")
_LANG_PREFIX = regex.compile(r"[a-z]{2,3}(?:-[a-z]+)?")  # interlanguage links: 'fr:', 'zh-yue:'
_RANGE_WORDS = {"to", "-", "\u2013", "and", "or", "by", "x", "\u00d7", "and(-)", "to(-)", "+/-", "\u00b1"}


def _positional(parts: list[str]) -> list[str]:
    return [p.strip() for p in parts if "=" not in p.split("|")[0]]


def _convert(args: list[str]) -> str:
    """Value(s) and unit as written: {{convert|10|to|20|km|mi}} -> '10 to 20 km'."""
    out: list[str] = []
    for a in args:
        if not a:
            continue
        out.append(a)
        if not (_is_number(a) or a.lower() in _RANGE_WORDS):
            break  # the first word that is neither a number nor a range word is the unit
    return " ".join(out)


def _is_number(s: str) -> bool:
    return bool(_NUMBER.fullmatch(s))


def expand_template(body: str) -> str:
    """Text of one innermost template `{{body}}`: allow-listed ones keep words, others vanish."""
    name = body.partition("|")[0].strip().replace("_", " ").lower()
    if name not in _KEPT_TEMPLATES and not name.startswith("lang-"):
        return ""  # most templates (citations, infoboxes): their arguments are not split
    parts = body.split("|")
    if name in _PUNCT_TEMPLATES:
        return _PUNCT_TEMPLATES[name]
    args = _positional(parts[1:])
    if name in ("convert", "cvt"):
        return _convert(args)
    if name == "lang" and len(args) >= 2:
        return args[1]
    if name.startswith("lang-") and args:
        return args[0]
    if name == "nihongo" and args:
        extra = [a for a in args[1:3] if a]
        return args[0] + (f" ({', '.join(extra)})" if extra else "")
    if name in _TEXT_TEMPLATES and args:
        return args[0]
    if name == "as of" and args:
        return "As of " + " ".join(a for a in args[:3] if a)
    if name in ("circa", "c.") and args:
        return "c. " + args[0]
    return ""


def _link_text(inner: str) -> str:
    if "|" not in inner and ":" not in inner and "#" not in inner:
        return inner.strip()  # most links: what follows, for a plain target
    target, _, anchor = inner.partition("|")
    target = target.strip()
    leading_colon = target.startswith(":")
    t = target.lstrip(":")
    if ":" in t:
        prefix = t.split(":", 1)[0].strip().lower()
        if prefix in DROP_LINK_PREFIXES or _LANG_PREFIX.fullmatch(prefix):
            if not (leading_colon and anchor):
                return ""
    if anchor:
        # file captions can hold several '|' options; the caption is the last part
        return anchor.rsplit("|", 1)[-1].strip() if "|" in anchor else anchor
    if "#" in t:
        page, _, section = t.partition("#")
        return page or section
    return t


def _link_or_literal(inner: str) -> str:
    # a single bracket inside means this is not a link: it stays as written
    return "[[" + inner + "]]" if ("[" in inner or "]" in inner) else _link_text(inner)


def _heading(line: str) -> tuple[int, str] | None:
    """(level, text) of a heading line such as '== History ==', or None."""
    if not line.startswith("="):
        return None
    s = line.rstrip()
    lead = len(s) - len(s.lstrip("="))
    trail = len(s) - len(s.rstrip("="))
    level = min(lead, trail, 6, len(s) // 2)
    if level == 0:
        return None
    return level, s[level:len(s) - level].strip()


def _cut_trailing_sections(text: str) -> str:
    for m in _EQUALS_LINE.finditer(text):
        h = _heading(m.group())
        if h is not None and h[0] == 2 and h[1].lower() in TRAILING_SECTIONS:
            return text[:m.start()]
    return text


def _headings_as_lines(text: str) -> str:
    def repl(m):
        h = _heading(m.group())
        return m.group() if h is None else "\n" + h[1] + "\n"
    return _EQUALS_LINE.sub(repl, text)


def _strip_paired_tags(text: str) -> str:
    """Remove <ref>...</ref>, <math>...</math> and the like, with their content, in one scan.

    An opening tag pairs with the next closing tag of its name (a tag is not nested in itself);
    one without a closing tag stays (the leftover pass removes the tag alone); a self-closing
    <ref .../> goes by itself. Closes are found by bisection, so unclosed openings cost no rescan.
    The tags come from split: with no match objects, the loop takes a third of the time.
    """
    parts = _PAIRED.split(text)  # text, then (slash, name, attributes, text after) per tag
    n = len(parts) // 4
    if not n:
        return text
    closes: dict[str, list[int]] = {}
    for t in range(n):
        if parts[4 * t + 1] and not parts[4 * t + 3].strip():  # '</ref name="x">' closes nothing
            closes.setdefault(parts[4 * t + 2].lower(), []).append(t)
    out = [parts[0]]
    t = 0
    while t < n:
        at = 4 * t
        slash, name, attrs = parts[at + 1], parts[at + 2], parts[at + 3]
        t += 1
        if not slash:
            name_lower = name.lower()
            if attrs.rstrip().endswith("/"):
                if name_lower == "ref":
                    out.append(parts[at + 4])  # the tag goes, the text after it stays
                    continue
            else:
                later = closes.get(name_lower, ())
                k = bisect.bisect_left(later, t)
                if k < len(later):
                    t = later[k] + 1  # the tags and everything between them go
                    out.append(parts[4 * t])
                    continue
        out.append(f"<{slash}{name}{attrs}>")  # the tag as written: it stays
        out.append(parts[at + 4])
    return "".join(out)


def _sub_inner(pattern, expand, text: str) -> str:
    """pattern.sub(lambda m: expand(m.group(1)), text), with no match object or callback from C:
    split gives the text between matches and each match's group 1 in turn."""
    parts = pattern.split(text)
    if len(parts) > 1:
        parts[1::2] = map(expand, parts[1::2])
    return "".join(parts)


def _find_opener(text: str, opener: str, pos: int) -> int:
    """The first `opener` at or after pos; '[[' not followed by '[' ('[[[x]]' is '[' then the link '[[x]]')."""
    at = text.find(opener, pos)
    if opener == "[[":
        while at >= 0 and text.startswith("[", at + 2):
            at = text.find(opener, at + 1)
    return at


def _marks(text: str, opener: str, closer: str):
    """(offset, token) of each two-character opener and closer, left to right, not overlapping: what
    regex's finditer of 'opener|closer' gives, found by str.find (regex scanned for two alternatives
    at a tenth of find's speed). An offset found ahead is kept until passed, so each find scans a
    stretch once."""
    o = _find_opener(text, opener, 0)
    c = text.find(closer)
    while o >= 0 or c >= 0:
        if c < 0 or 0 <= o < c:
            at, token = o, opener
        else:
            at, token = c, closer
        yield at, token
        pos = at + 2
        if 0 <= o < pos:
            o = _find_opener(text, opener, pos)
        if 0 <= c < pos:
            c = text.find(closer, pos)


def _resolve_nested(text: str, opener: str, closer: str, expand) -> str:
    """Replace every `opener body closer` by `expand(body)`, innermost first, in one scan.

    A closer without an opener and an opener without a closer stay as written. `expand=None` drops
    the construct with everything in it. Nested deeper than MAX_NESTING, constructs are dropped
    rather than expanded.
    """
    if opener not in text:
        return text
    out: list[str] = []
    opened: list[int] = []  # indexes in `out` of the openers not closed yet
    pos = 0
    for at, token in _marks(text, opener, closer):
        out.append(text[pos:at])
        pos = at + 2
        if token == opener:
            opened.append(len(out))
            out.append(opener)
        elif opened:
            at = opened.pop()
            body = "".join(out[at + 1:]) if expand is not None and len(opened) < MAX_NESTING else None
            del out[at:]
            out.append(expand(body) if body is not None else "")
        else:
            out.append(token)
    out.append(text[pos:])
    return "".join(out)


def _replace_extlinks(text: str) -> str:
    """[http://example.org anchor text] -> anchor text; [http://example.org] -> nothing."""
    out = []
    pos = 0
    close = -1
    for m in _EXTLINK_START.finditer(text):
        if m.start() < pos:
            continue  # inside the link just replaced
        if close < m.end():
            close = text.find("]", m.end())
            if close < 0:
                break  # no ']' after here: no later link can close either
        body = text[m.end():close]
        gap = _WHITESPACE.search(body)
        out.append(text[pos:m.start()])
        out.append(body[gap.end():] if gap else "")
        pos = close + 1
    out.append(text[pos:])
    return "".join(out)


def _close_paren_punct(text: str) -> str:
    """'(a, b ; )' -> '(a, b)': a comma or semicolon, with whitespace around it, before ')'."""
    if _PAREN_AFTER_PUNCT.search(text) is None:
        return text  # most pages: scanning for '[,;]' would cost more than this
    out = []
    pos = 0
    for m in _PAREN_CLOSE_PUNCT.finditer(text):
        out.append(text[pos:m.start()].rstrip())
        out.append(")")
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def _strip_list_marks(text: str) -> str:
    """What regex's sub of '^[*#:;]++\\s*+' (MULTILINE: '^' is the start or after a line break)
    with '' gives, the lines found by their line break (regex tried '^' at every position). A
    match can end where a line starts ('*\\n*x': both marks go), so that line start is tried too."""
    out = []
    pos = 0
    if text[:1] in _LIST_CHARS:
        at = 0
    else:
        m = _LIST_LINE.search(text)
        at = m.start() + 1 if m else -1
    while at >= 0:
        out.append(text[pos:at])
        pos = _LIST_MARKS.match(text, at).end()
        if text[pos - 1] == "\n" and text[pos:pos + 1] in _LIST_CHARS:
            at = pos
        else:
            m = _LIST_LINE.search(text, pos)
            at = m.start() + 1 if m else -1
    out.append(text[pos:])
    return "".join(out)


def _squeeze_spaces(text: str) -> str:
    """Every run of two or more of ' ', tab and no-break space as one space ('[ \\t\\u00a0]{2,}' -> ' ').

    The runs are found in a copy with tabs and no-break spaces made spaces (the same length): regex
    scans for two spaces several times faster than for two characters of a class."""
    flat = text
    if "\t" in flat:
        flat = flat.replace("\t", " ")
    if "\u00a0" in flat:
        flat = flat.replace("\u00a0", " ")
    if flat is text:
        return _RUN_OF_SPACES.sub(" ", text)
    out = []
    pos = 0
    for m in _RUN_OF_SPACES.finditer(flat):
        out.append(text[pos:m.start()])
        out.append(" ")
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def _drop_leftovers(text: str) -> str:
    """_LEFTOVER.sub('', text); without any of its two-character marks, only the ref tags are sought
    (from their '<', which regex scans for fast). A mark is sought only where its first character
    is in the page: str's search for one character is 100x faster than for two."""
    if any(mark[0] in text and mark in text for mark in _LEFTOVER_MARKS):
        return _LEFTOVER.sub("", text)
    return _LEFTOVER_REF.sub("", text) if "<" in text else text


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise CleanTimeout


def clean_wikitext(text: str, title: str = "", deadline: float | None = None) -> str:
    """Plain text of an article's wikitext; the title is not included.

    `deadline` (a `time.monotonic()` value) is checked between passes: past it, CleanTimeout.
    """
    text = _COMMENT.sub("", text)
    text = _strip_paired_tags(text)
    text = _cut_trailing_sections(text)
    _check_deadline(deadline)
    for _ in range(20):
        before = text
        text = _sub_inner(_TEMPLATE_INNER, expand_template, text)
        text = _resolve_nested(text, "{{", "}}", expand_template)
        _check_deadline(deadline)
        text = _resolve_nested(text, "{|", "|}", None)
        _check_deadline(deadline)
        if text == before or ("{{" not in text and "{|" not in text):
            break
    text = _sub_inner(_LINK_INNER, _link_text, text)
    text = _resolve_nested(text, "[[", "]]", _link_or_literal)
    _check_deadline(deadline)
    text = _replace_extlinks(text)
    text = _headings_as_lines(text)
    text = _QUOTES.sub("", text)
    text = _MAGIC.sub("", text)
    text = _RULE.sub("", text)
    text = _strip_list_marks(text)
    text = _TAG.sub("", text)
    _check_deadline(deadline)
    for _ in range(3):  # '&amp;nbsp;' needs two passes
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    text = _TAG.sub("", text)  # tags that were written as entities
    text = _drop_leftovers(text)
    text = _EMPTY_PARENS.sub("", text)
    text = _PAREN_OPEN_PUNCT.sub("(", text)
    text = _close_paren_punct(text)
    text = _squeeze_spaces(text)
    text = _SPACE_BEFORE_PUNCT.sub("", text)
    lines = [line.strip() for line in text.split("\n")]
    text = "\n".join(lines)
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def is_redirect(text: str) -> bool:
    return bool(regex.match(r"\s*#\s*redirect\b", text, regex.I))
