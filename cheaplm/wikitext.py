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

Nested constructs are resolved innermost first, repeatedly, so a link inside a file caption or a
template inside a table goes before its container.
"""

from __future__ import annotations

import html

import regex

_COMMENT = regex.compile(r"<!--.*?(?:-->|\Z)", regex.S)
_REF_SELF = regex.compile(r"<ref\b[^>]*/\s*>", regex.I)
_REF = regex.compile(r"<ref\b[^>]*>.*?</ref\s*>", regex.I | regex.S)
_BLOCKS = regex.compile(
    r"<(math|gallery|timeline|score|syntaxhighlight|source|pre|imagemap|mapframe|graph|"
    r"templatedata|chem|ce|hiero|references|table|noinclude|includeonly)\b[^>]*>.*?</\1\s*>",
    regex.I | regex.S)
# innermost template: no '{{' or '}}' inside (single braces allowed)
_TEMPLATE = regex.compile(r"\{\{((?:[^{}]|\{(?!\{)|\}(?!\}))*)\}\}")
_TABLE = regex.compile(r"\{\|(?:(?!\{\|)(?!\|\}).)*?\|\}", regex.S)
_LINK = regex.compile(r"\[\[([^\[\]]*)\]\]")
_EXTLINK = regex.compile(r"\[(?:https?:|ftp:|//)[^\s\]]*(?:\s+([^\]]*))?\]")
_QUOTES = regex.compile(r"'{2,}")
_HEADING = regex.compile(r"^(={1,6})\s*(.*?)\s*\1\s*$", regex.M)
_TAG = regex.compile(r"</?[a-zA-Z][a-zA-Z0-9]*\b[^<>]*>")
_MAGIC = regex.compile(r"__[A-Z]+__")
_LIST = regex.compile(r"^[*#:;]+\s*", regex.M)
_RULE = regex.compile(r"^-{4,}\s*$", regex.M)
_EMPTY_PARENS = regex.compile(r"\(\s*[,;:]?\s*\)")
_PAREN_OPEN_PUNCT = regex.compile(r"\(\s*[,;]\s*")
_PAREN_CLOSE_PUNCT = regex.compile(r"\s*[,;]\s*\)")
_SPACES = regex.compile(r"[ \t\u00a0]{2,}")
_SPACE_BEFORE_PUNCT = regex.compile(r" +([,.;:!?])")
_BLANK_LINES = regex.compile(r"\n\s*\n\s*\n+")
_LEFTOVER = regex.compile(r"\{\{|\}\}|\[\[|\]\]|\{\||\|\}|<ref\b[^>]*>?|</ref>", regex.I)

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
    return bool(regex.fullmatch(r"[-+\u2212]?[\d.,]+(?:e\d+)?|\d+/\d+", s))


def expand_template(body: str) -> str:
    """Text of one innermost template `{{body}}`: allow-listed ones keep words, others vanish."""
    parts = body.split("|")
    name = parts[0].strip().replace("_", " ").lower()
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
    target, _, anchor = inner.partition("|")
    target = target.strip()
    leading_colon = target.startswith(":")
    t = target.lstrip(":")
    if ":" in t:
        prefix = t.split(":", 1)[0].strip().lower()
        if prefix in DROP_LINK_PREFIXES or regex.fullmatch(r"[a-z]{2,3}(?:-[a-z]+)?", prefix):
            if not (leading_colon and anchor):
                return ""
    if anchor:
        # file captions can hold several '|' options; the caption is the last part
        return anchor.rsplit("|", 1)[-1].strip() if "|" in anchor else anchor
    if "#" in t:
        page, _, section = t.partition("#")
        return page or section
    return t


def _cut_trailing_sections(text: str) -> str:
    for m in _HEADING.finditer(text):
        if len(m.group(1)) == 2 and m.group(2).strip().lower() in TRAILING_SECTIONS:
            return text[: m.start()]
    return text


def _replace_until_stable(pattern, repl, text: str, limit: int = 50) -> str:
    for _ in range(limit):
        text, n = pattern.subn(repl, text)
        if not n:
            break
    return text


def clean_wikitext(text: str, title: str = "") -> str:
    """Plain text of an article's wikitext; the title is not included."""
    text = _COMMENT.sub("", text)
    text = _REF_SELF.sub("", text)
    text = _REF.sub("", text)
    text = _BLOCKS.sub("", text)
    text = _cut_trailing_sections(text)
    for _ in range(20):
        before = text
        text = _replace_until_stable(_TEMPLATE, lambda m: expand_template(m.group(1)), text)
        text = _replace_until_stable(_TABLE, "", text)
        if text == before:
            break
    text = _replace_until_stable(_LINK, lambda m: _link_text(m.group(1)), text)
    text = _EXTLINK.sub(lambda m: m.group(1) or "", text)
    text = _HEADING.sub(lambda m: "\n" + m.group(2) + "\n", text)
    text = _QUOTES.sub("", text)
    text = _MAGIC.sub("", text)
    text = _RULE.sub("", text)
    text = _LIST.sub("", text)
    text = _TAG.sub("", text)
    for _ in range(3):  # '&amp;nbsp;' needs two passes
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    text = _TAG.sub("", text)  # tags that were written as entities
    text = _LEFTOVER.sub("", text)
    text = _EMPTY_PARENS.sub("", text)
    text = _PAREN_OPEN_PUNCT.sub("(", text)
    text = _PAREN_CLOSE_PUNCT.sub(")", text)
    text = _SPACES.sub(" ", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    lines = [line.strip() for line in text.split("\n")]
    text = "\n".join(lines)
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def is_redirect(text: str) -> bool:
    return bool(regex.match(r"\s*#\s*redirect\b", text, regex.I))
