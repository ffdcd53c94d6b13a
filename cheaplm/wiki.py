"""Stream pages out of Wikipedia sources in constant memory.

Every reader yields `RawPage(title, text, kind)` where kind says whether the page is an article to
keep (`article`, text still raw wikitext; `clean`, text already plain) or why it is skipped
(`redirect`, `namespace`). Cleaning happens elsewhere, in worker processes.

MediaWiki XML (export schema 0.3 to 0.11) is read with expat's pull parser fed in 1 MiB chunks;
each finished <page> is handled and then cleared from the tree, so memory does not grow with the
dump. Export 0.3 (enwik8) has no <ns>: the namespace then comes from the title prefix and the
<namespaces> list in <siteinfo>.
"""

from __future__ import annotations

import codecs
import html
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .sources import TAR, TEXT, WIKIEXTRACTOR, WIKITEXT, XML_DUMP, OpenedSource, SourceError, looks_like_wikitext
from .wikitext import is_redirect

CHUNK = 1 << 20

ARTICLE = "article"  # wikitext to clean
CLEAN = "clean"  # plain text already
REDIRECT = "redirect"
NAMESPACE = "namespace"

# Used when an export has no <siteinfo>/<ns> to go by (English Wikipedia's namespace names).
DEFAULT_NAMESPACES = {
    "media", "special", "talk", "user", "user talk", "wikipedia", "wikipedia talk", "file",
    "file talk", "image", "image talk", "mediawiki", "mediawiki talk", "template",
    "template talk", "help", "help talk", "category", "category talk", "portal", "portal talk",
    "draft", "draft talk", "module", "module talk", "timedtext", "timedtext talk", "book",
    "book talk", "education program", "gadget", "gadget definition", "topic",
}


@dataclass
class RawPage:
    title: str
    text: str
    kind: str


@dataclass
class ReadState:
    """What a reader learned about its source beyond the pages: filled in as it goes."""
    truncated: bool = False
    schema: str = ""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def read_pages(src: OpenedSource, state: ReadState) -> Iterator[RawPage]:
    if src.format == XML_DUMP:
        return read_xml_dump(src, state)
    if src.format == WIKIEXTRACTOR:
        return read_wikiextractor(src.path, src.stream)
    if src.format == TAR:
        return read_tar(src)
    if src.format == WIKITEXT:
        return read_single(src.path, src.stream, ARTICLE)
    if src.format == TEXT:
        return read_single(src.path, src.stream, CLEAN)
    raise SourceError(f"{src.path}: unknown format {src.format}")


def read_xml_dump(src: OpenedSource, state: ReadState) -> Iterator[RawPage]:
    parser = ET.XMLPullParser(events=("start", "end"))
    root = None
    namespaces: set[str] = set()
    pages_seen = 0
    while True:
        chunk = src.stream.read(CHUNK)
        try:
            if chunk:
                parser.feed(chunk)
            else:
                parser.close()
            events = list(parser.read_events())
        except ET.ParseError as exc:
            if not chunk and pages_seen and _is_truncation(exc):
                # The dump stops mid-element (e.g. the enwik8 prefix): keep the pages before the cut.
                state.truncated = True
                yield from _pages_of(_pending_events(parser), namespaces, state)
                return
            raise SourceError(f"{src.path}: malformed XML ({exc})") from None
        for event, elem in events:
            if event == "start":
                if root is None:
                    root = elem
                    if _local(elem.tag) != "mediawiki":
                        raise SourceError(f"{src.path}: XML root is <{_local(elem.tag)}>, not <mediawiki>")
                    state.schema = elem.get("version", "") or elem.tag.split("export-")[-1].rstrip("/}")
                continue
            name = _local(elem.tag)
            if name == "namespaces":
                namespaces = {(ns.text or "").strip().lower() for ns in elem if ns.get("key") != "0"}
                namespaces.discard("")
            elif name == "page":
                pages_seen += 1
                page = _page_from_element(elem, namespaces)
                if page is not None:
                    yield page
                root.clear()
        if not chunk:
            if root is None:
                raise SourceError(f"{src.path}: no <mediawiki> element found")
            return


def _pending_events(parser) -> list:
    try:
        return list(parser.read_events())
    except ET.ParseError:
        return []


def _pages_of(events, namespaces, state) -> Iterator[RawPage]:
    for event, elem in events:
        if event == "end" and _local(elem.tag) == "page":
            page = _page_from_element(elem, namespaces)
            if page is not None:
                yield page


def _is_truncation(exc: ET.ParseError) -> bool:
    msg = str(exc)
    return "no element found" in msg or "unclosed token" in msg


def _page_from_element(page, namespaces: set[str]) -> RawPage | None:
    title = ""
    ns = None
    redirect = False
    text = ""
    for child in page:
        name = _local(child.tag)
        if name == "title":
            title = child.text or ""
        elif name == "ns":
            ns = (child.text or "").strip()
        elif name == "redirect":
            redirect = True
        elif name == "revision":
            for field in child:
                if _local(field.tag) == "text":
                    text = field.text or ""
    if ns is None:
        prefix = title.split(":", 1)[0].lower() if ":" in title else ""
        ns = "1" if prefix and prefix in (namespaces or DEFAULT_NAMESPACES) else "0"
    if ns != "0":
        return RawPage(title, "", NAMESPACE)
    if redirect or is_redirect(text):
        return RawPage(title, "", REDIRECT)
    return RawPage(title, text, ARTICLE)


_DOC_OPEN = b"<doc "


def read_wikiextractor(path: Path, stream) -> Iterator[RawPage]:
    """`<doc id=.. url=.. title=..>` records; the body is plain text already."""
    import regex

    title_re = regex.compile(rb'title="([^"]*)"')
    title = None
    body: list[bytes] = []
    for lineno, line in enumerate(stream, 1):
        if line.startswith(_DOC_OPEN):
            m = title_re.search(line)
            if m is None:
                raise SourceError(f"{path}: line {lineno}: <doc> without a title attribute")
            title = _decode(path, m.group(1), lineno)
            body = []
        elif line.startswith(b"</doc>"):
            if title is None:
                raise SourceError(f"{path}: line {lineno}: </doc> without <doc>")
            text = _decode(path, b"".join(body), lineno).strip()
            # WikiExtractor repeats the title as the body's first line; the shard adds its own.
            first, _, rest = text.partition("\n")
            if first.strip() == title.strip():
                text = rest.strip()
            yield RawPage(html.unescape(title), text, CLEAN)
            title = None
        elif title is not None:
            body.append(line)


def _decode(path: Path, data: bytes, lineno: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: not UTF-8 near line {lineno} (byte 0x{data[exc.start]:02x})") from None


def read_tar(src: OpenedSource) -> Iterator[RawPage]:
    """A tar of article sources (one file per article, title from the file name)."""
    try:
        with tarfile.open(fileobj=src.stream, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                f = tar.extractfile(member)
                data = f.read() if f else b""
                name = Path(member.name)
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise SourceError(f"{src.path}: member {member.name} is not UTF-8 "
                                      f"(byte 0x{data[exc.start]:02x} at {exc.start:,})") from None
                title = name.stem.replace("_", " ").replace("-", " ")
                if is_redirect(text):
                    yield RawPage(title, "", REDIRECT)
                elif looks_like_wikitext(data[:1 << 16]):
                    yield RawPage(title, text, ARTICLE)
                else:
                    yield RawPage(title, text, CLEAN)
    except tarfile.TarError as exc:
        raise SourceError(f"{src.path}: broken tar archive ({exc})") from None


def read_single(path: Path, stream, kind: str) -> Iterator[RawPage]:
    """A file of plain text, or a single page of wikitext.

    Plain text streams: it is cut into documents of about 1 MiB at paragraph breaks, titled
    `name#k`, so a file of any size needs constant memory. A wikitext page is one document.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    base = path.name.split(".")[0].replace("_", " ")
    pending = ""
    offset = 0
    part = 0
    pieces: list[str] = []
    while True:
        chunk = stream.read(CHUNK)
        try:
            pending += decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            raise SourceError(f"{path}: not UTF-8 (invalid byte at offset {offset + exc.start:,})") from None
        offset += len(chunk)
        if kind == CLEAN and chunk:
            cut = pending.rfind("\n\n")
            if cut > 0:
                yield RawPage(f"{base}#{part}", pending[:cut].strip(), CLEAN)
                part += 1
                pending = pending[cut + 2:]
            continue
        if not chunk:
            break
        pieces.append(pending)
        pending = ""
    if kind == CLEAN:
        if pending.strip():
            yield RawPage(f"{base}#{part}", pending.strip(), CLEAN)
        return
    text = "".join(pieces) + pending
    if is_redirect(text):
        yield RawPage(base, "", REDIRECT)
    else:
        yield RawPage(base, text, ARTICLE)
