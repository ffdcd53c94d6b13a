"""Stream pages out of Wikipedia sources in constant memory.

Every reader yields `RawPage(title, text, kind)` where kind says whether the page is an article to
keep (`article`, text still raw wikitext; `clean`, text already plain) or why it is skipped
(`redirect`, `namespace`). Cleaning happens elsewhere, in worker processes.

MediaWiki XML (export schema 0.3 to 0.11) is read with expat, fed in 1 MiB chunks: its callbacks
keep only the fields of the current <page> (title, ns, redirect, the revision's text and
timestamp), so memory does not grow with the dump. Export 0.3 (enwik8) has no <ns>: the
namespace then comes from the title prefix and the <namespaces> list in <siteinfo>.

A multistream .bz2's chunks (multistream.py) can be read by the workers themselves: prepare passes
a task that decodes a chunk and reads its whole pages with `page_run` (from the first `<page>` to
the last `</page>`, parsed in the same handler as a fragment of the document), and the main parser
is fed only the bytes before and after them (a page cut by a stream boundary: rare, as dumps cut
their streams between pages) and, in their place, whitespace with the same line breaks (an error
message's line and column stay the same). That is the same reading as the main parser's only where
the run starts between two pages of the root: `<page>` can then only be a tag (`<` in text is
`&lt;`, in attribute values it is forbidden), as long as no comment, CDATA section, processing
instruction or DOCTYPE (entities) is about. So a worker gives up (returns the decoded bytes, which
the main parser reads) on a chunk that holds `<!` or `<?`, a carriage return or a page without
<ns> (its namespace would come from <siteinfo>); and the main parser takes a run only while
everything it has read holds no `<!` or `<?` besides the XML declaration, which
must declare UTF-8, and where it stands between pages after the run's head. Where it does not,
it decodes the chunk itself and reads it: slower, the same pages.

A page is at most `ReadState.max_page_chars` characters: past that, its text is dropped as it
arrives and the page is yielded as `oversized`, so one huge page (a 357 KB bz2 can hold a 2 GB one)
costs no memory. A reader never holds more than that, whatever its input: WikiExtractor bodies
and tar members are capped the same way, and plain text is cut into documents of about 1 MiB.
"""

from __future__ import annotations

import codecs
import html
import tarfile
import xml.parsers.expat as expat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .multistream import decompress_streams
from .sources import TAR, TEXT, WIKIEXTRACTOR, WIKITEXT, XML_DUMP, OpenedSource, SourceError, looks_like_wikitext
from .wikitext import is_redirect

CHUNK = 1 << 20

ARTICLE = "article"  # wikitext to clean
CLEAN = "clean"  # plain text already
REDIRECT = "redirect"
NAMESPACE = "namespace"
OVERSIZED = "oversized"  # longer than ReadState.max_page_chars: skipped and counted

MAX_PAGE_CHARS = 16 << 20  # MediaWiki's own limit is 2 MiB of wikitext per page
DOC_CHARS = 1 << 20  # plain text is cut into documents of about this size

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
    timestamp: str = ""  # the revision's <timestamp> (ISO 8601, UTC) where a dump gives one


@dataclass
class PageRun:
    """The whole pages of a decoded chunk, read by a worker (`page_run`); the main parser reads
    `head` and `tail` and, in place of the pages, `filler()`."""
    head: bytes
    tail: bytes
    count: int  # pages in the run
    pages: list  # RawPage; a worker may replace them with what it made of them (prepare: cleaned)
    lines: int  # line breaks in the run
    column: int  # bytes (ASCII) after its last line break

    def filler(self) -> bytes:
        return b"\n" * self.lines + b" " * self.column


@dataclass
class ReadState:
    """The reader's limit, and what it learned about its source beyond the pages (filled in as it goes)."""
    max_page_chars: int = MAX_PAGE_CHARS
    # (function, args): a multistream .bz2 dump's chunks go to function(chunk, *args) (multistream.py),
    # which may return a ParsedChunk of a PageRun (page_run); the run is yielded in its pages' place
    chunk_task: tuple | None = None
    truncated: bool = False
    schema: str = ""


def read_pages(src: OpenedSource, state: ReadState) -> Iterator[RawPage]:
    """The pages of a source, in order; with state.chunk_task, a dump's page runs too (PageRun)."""
    if src.format == XML_DUMP:
        return read_xml_dump(src, state)
    if src.format == WIKIEXTRACTOR:
        return read_wikiextractor(src.path, src.stream, state.max_page_chars)
    if src.format == TAR:
        return read_tar(src, state.max_page_chars)
    if src.format == WIKITEXT:
        return read_single(src.path, src.stream, ARTICLE, state.max_page_chars)
    if src.format == TEXT:
        return read_single(src.path, src.stream, CLEAN, state.max_page_chars)
    raise SourceError(f"{src.path}: unknown format {src.format}")


def _dump_parser(handler: "_DumpHandler"):
    parser = expat.ParserCreate()
    parser.buffer_text = True  # one callback per run of text, not per line or entity
    parser.StartElementHandler = handler.start
    parser.EndElementHandler = handler.end
    parser.CharacterDataHandler = handler.data
    # never fetch external entities (XXE); expat refuses one with an error
    parser.ExternalEntityRefHandler = lambda *args: 0
    return parser


def read_xml_dump(src: OpenedSource, state: ReadState) -> Iterator[RawPage]:
    chunk_task = state.chunk_task
    handler = _DumpHandler(src.path, state.max_page_chars)
    parser = _dump_parser(handler)
    plain = _Plain()
    parser.XmlDeclHandler = plain.declaration
    asked = False  # chunks go to chunk_task

    def feed(data: bytes) -> None:
        plain.saw(data)
        try:
            parser.Parse(data, False)
        except expat.ExpatError as exc:
            raise SourceError(f"{src.path}: malformed XML ({exc})") from None
        state.schema = handler.schema

    while True:
        if chunk_task is not None and asked != plain.ok and (handler.pages_seen or handler._page is not None):
            # past the header: from here on the workers read the chunks' pages, or no longer do
            asked = plain.ok
            src.parse_ahead(*(chunk_task if asked else (decompress_streams,)))
        # with chunk_task, at most the rest of one decoded chunk: the switch above comes before the next is cut
        chunk = src.stream.read(CHUNK) if chunk_task is None else src.stream.read1(CHUNK)
        if not chunk and chunk_task is not None and (got := src.take_parsed()) is not None:
            data, parsed = got
            run = parsed.value
            fed = 0
            if plain.ok:
                feed(run.head)
                yield from handler.take()
                fed = len(run.head)
                if plain.ok and handler.between_pages():
                    handler.pages_seen += run.count
                    yield run
                    parser.Parse(run.filler(), False)  # whitespace between pages: nothing to fail
                    feed(run.tail)
                    yield from handler.take()
                    continue
            feed(decompress_streams(data)[fed:])  # the chunk read here after all
            yield from handler.take()
            continue
        if chunk:
            plain.saw(chunk)
        try:
            parser.Parse(chunk, not chunk)
        except expat.ExpatError as exc:
            if not chunk and handler.pages_seen and _is_truncation(exc):
                # The dump stops mid-element (e.g. the enwik8 prefix): keep the pages before the cut.
                state.truncated = True
                yield from handler.take()
                return
            raise SourceError(f"{src.path}: malformed XML ({exc})") from None
        state.schema = handler.schema
        yield from handler.take()
        if not chunk:
            return


class _Plain:
    """Whether the bytes the main parser has read hold only elements and text (module docstring)."""

    def __init__(self):
        self.ok = True
        self._last = b""  # the last byte read: '<' and then '!' may come in two reads
        self._first = True

    def saw(self, data: bytes) -> None:
        if not data:
            return
        if self._first:  # the XML declaration is allowed
            self._first = False
            if data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
            if data.startswith(b"<?xml"):
                end = data.find(b"?>")
                if end < 0:
                    self.ok = False
                data = data[end + 2:]
        if self.ok and (b"<!" in data or b"<?" in data
                        or (self._last == b"<" and data[:1] in (b"!", b"?"))):
            self.ok = False
        self._last = data[-1:]

    def declaration(self, version, encoding, standalone) -> None:
        if encoding is not None and encoding.lower() != "utf-8":
            self.ok = False


def page_run(xml: bytes, max_chars: int) -> PageRun | None:
    """Worker: the whole pages of a decoded piece of a dump, read as the main parser would read them
    there, with what lies before and after; None where that is not certain (module docstring)."""
    if b"<!" in xml or b"<?" in xml or b"\r" in xml:
        return None
    start, end = xml.find(b"<page>"), xml.rfind(b"</page>")
    if start < 0 or end < start:
        return None
    end += len(b"</page>")
    middle = xml[start:end]
    last_line = middle[middle.rfind(b"\n") + 1:]
    if not last_line.isascii():
        return None
    handler = _DumpHandler(Path("page run"), max_chars)
    parser = _dump_parser(handler)
    try:
        parser.Parse(b"<mediawiki>", False)
        parser.Parse(middle, False)
        parser.Parse(b"</mediawiki>", True)
    except (expat.ExpatError, SourceError):
        return None
    if handler.without_ns:
        return None
    pages = handler.take()
    return PageRun(xml[:start], xml[end:], len(pages), pages, middle.count(b"\n"), len(last_line))


class _DumpHandler:
    """expat callbacks that keep the fields of the current <page> and collect finished pages."""

    def __init__(self, path: Path, max_chars: int):
        self.path = path
        self.max_chars = max_chars
        self.schema = ""
        self.pages_seen = 0
        self.namespaces: set[str] = set()
        self._done: list[RawPage] = []
        self._path: list[str] = []  # names of the open elements, root first
        self._page: dict | None = None
        self._field: str | None = None  # the field whose text is being collected
        self._parts: list[str] = []
        self._size = 0
        self._over = False  # the field outgrew max_chars: its text is dropped
        self._ns_key: str | None = None
        self.without_ns = 0  # pages without <ns> (page_run gives up on them)

    def between_pages(self) -> bool:
        """Directly inside the root, no page open."""
        return len(self._path) == 1 and self._page is None and self._field is None

    def take(self) -> list[RawPage]:
        done, self._done = self._done, []
        return done

    def start(self, tag: str, attrs: dict) -> None:
        name = _local(tag)
        path = self._path
        if not path and name != "mediawiki":
            raise SourceError(f"{self.path}: XML root is <{name}>, not <mediawiki>")
        if not path:
            self.schema = attrs.get("version", "") or attrs.get("xmlns", "").rstrip("/").split("export-")[-1]
        path.append(name)
        depth = len(path)
        if name == "page" and depth == 2:
            self._page = {}
        elif self._page is not None:
            parent = path[-2]
            if parent == "page" and name in ("title", "ns"):
                self._collect(name)
            elif parent == "page" and name == "redirect":
                self._page["redirect"] = True
            elif name in ("text", "timestamp") and parent == "revision" and depth == 4:
                self._collect(name)
        elif name == "namespace" and path[-2] == "namespaces":
            self._ns_key = attrs.get("key")
            self._collect(name)

    def _collect(self, field: str) -> None:
        self._field = field
        self._parts = []
        self._size = 0
        self._over = False

    def data(self, text: str) -> None:
        if self._field is None or self._over:
            return
        self._size += len(text)
        if self._size > self.max_chars:
            self._over = True
            self._parts = []
        else:
            self._parts.append(text)

    def end(self, tag: str) -> None:
        name = self._path.pop()
        if self._field is not None and name == self._field:
            value = "".join(self._parts)
            self._parts = []
            self._field = None
            if name == "namespace":
                if self._ns_key != "0" and value.strip():
                    self.namespaces.add(value.strip().lower())
            elif self._page is not None:
                self._page[name] = None if self._over else value  # None: too long, dropped
        elif name == "page" and self._page is not None and not self._path[1:]:
            self.pages_seen += 1
            if self._page.get("ns") is None:
                self.without_ns += 1
            self._done.append(_page_of(self._page, self.namespaces))
            self._page = None


def _page_of(fields: dict, namespaces: set[str]) -> RawPage:
    oversized = None in fields.values()
    title = fields.get("title") or ""
    ns = fields.get("ns")
    ns = ns.strip() if ns is not None else None
    text = fields.get("text") or ""
    if ns is None:
        prefix = title.split(":", 1)[0].lower() if ":" in title else ""
        ns = "1" if prefix and prefix in (namespaces or DEFAULT_NAMESPACES) else "0"
    if ns != "0":
        return RawPage(title, "", NAMESPACE)
    if fields.get("redirect") or is_redirect(text):
        return RawPage(title, "", REDIRECT)
    if oversized:
        return RawPage(title, "", OVERSIZED)
    return RawPage(title, text, ARTICLE, (fields.get("timestamp") or "").strip())


def _local(tag: str) -> str:
    return tag.rsplit(":", 1)[-1]


def _is_truncation(exc: expat.ExpatError) -> bool:
    msg = str(exc)
    return "no element found" in msg or "unclosed token" in msg


_DOC_OPEN = b"<doc "


def read_wikiextractor(path: Path, stream, max_chars: int = MAX_PAGE_CHARS) -> Iterator[RawPage]:
    """`<doc id=.. url=.. title=..>` records; the body is plain text already.

    Lines are read in pieces of at most CHUNK bytes (a file with no line break costs no more), and
    a body over `max_chars` bytes is dropped as it is read and the record yielded as oversized.
    """
    import regex

    title_re = regex.compile(rb'title="([^"]*)"')
    title = None
    body: list[bytes] = []
    size = 0
    lineno = 0
    at_line_start = True
    while True:
        line = stream.readline(CHUNK)
        if not line:
            break
        starts_line = at_line_start
        at_line_start = line.endswith(b"\n")
        if starts_line:
            lineno += 1
        if starts_line and line.startswith(_DOC_OPEN):
            m = title_re.search(line)
            if m is None:
                raise SourceError(f"{path}: line {lineno}: <doc> without a title attribute")
            title = _decode(path, m.group(1), lineno)
            body = []
            size = 0
        elif starts_line and line.startswith(b"</doc>"):
            if title is None:
                raise SourceError(f"{path}: line {lineno}: </doc> without <doc>")
            if size > max_chars:
                yield RawPage(html.unescape(title), "", OVERSIZED)
                title = None
                continue
            text = _decode(path, b"".join(body), lineno).strip()
            # WikiExtractor repeats the title as the body's first line; the shard adds its own.
            first, _, rest = text.partition("\n")
            if first.strip() == title.strip():
                text = rest.strip()
            yield RawPage(html.unescape(title), text, CLEAN)
            title = None
        elif title is not None:
            size += len(line)
            if size <= max_chars:
                body.append(line)
            else:
                body = []


def _decode(path: Path, data: bytes, lineno: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: not UTF-8 near line {lineno} (byte 0x{data[exc.start]:02x})") from None


def read_tar(src: OpenedSource, max_chars: int = MAX_PAGE_CHARS) -> Iterator[RawPage]:
    """A tar of article sources (one file per article, title from the file name)."""
    try:
        with tarfile.open(fileobj=src.stream, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                # member names are bytes; tarfile hands over undecodable ones as surrogates
                name = Path(member.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
                title = name.stem.replace("_", " ").replace("-", " ")
                if member.size > 4 * max_chars:  # more bytes than any page of max_chars characters
                    yield RawPage(title, "", OVERSIZED)
                    continue
                f = tar.extractfile(member)
                data = f.read() if f else b""
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise SourceError(f"{src.path}: member {name} is not UTF-8 "
                                      f"(byte 0x{data[exc.start]:02x} at {exc.start:,})") from None
                if is_redirect(text):
                    yield RawPage(title, "", REDIRECT)
                elif len(text) > max_chars:
                    yield RawPage(title, "", OVERSIZED)
                elif looks_like_wikitext(data[:1 << 16]):
                    yield RawPage(title, text, ARTICLE)
                else:
                    yield RawPage(title, text, CLEAN)
    except tarfile.TarError as exc:
        raise SourceError(f"{src.path}: broken tar archive ({exc})") from None


def read_single(path: Path, stream, kind: str, max_chars: int = MAX_PAGE_CHARS) -> Iterator[RawPage]:
    """A file of plain text, or a single page of wikitext.

    Plain text streams: it is cut into documents of about DOC_CHARS at paragraph breaks (at a line
    break, a space or anywhere when a stretch that long has none), titled `name#k`, so a file of any
    size needs constant memory. A wikitext page is one document, oversized past `max_chars`.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    base = path.name.split(".")[0].replace("_", " ")
    pending = ""
    offset = 0
    part = 0
    pieces: list[str] = []
    size = 0
    while True:
        chunk = stream.read(CHUNK)
        try:
            new = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            raise SourceError(f"{path}: not UTF-8 (invalid byte at offset {offset + exc.start:,})") from None
        offset += len(chunk)
        if kind == CLEAN:
            searched = max(len(pending) - 1, 0)  # only the new text can hold a new break
            pending += new
            cut = pending.rfind("\n\n", searched)
            if cut > 0:
                cut += 2
            elif len(pending) >= DOC_CHARS:
                cut = _fallback_cut(pending)
            if cut > 0 and chunk:
                yield RawPage(f"{base}#{part}", pending[:cut].strip(), CLEAN)
                part += 1
                pending = pending[cut:]
            if chunk:
                continue
            break
        if not chunk:
            break
        size += len(new)
        if size <= max_chars:
            pieces.append(new)
        else:
            pieces = []
    if kind == CLEAN:
        if pending.strip():
            yield RawPage(f"{base}#{part}", pending.strip(), CLEAN)
        return
    if size > max_chars:
        yield RawPage(base, "", OVERSIZED)
        return
    text = "".join(pieces)
    if is_redirect(text):
        yield RawPage(base, "", REDIRECT)
    else:
        yield RawPage(base, text, ARTICLE)


def _fallback_cut(text: str) -> int:
    """Where to end a document that has no paragraph break: after the last line break or space, or at the end."""
    for sep in ("\n", " "):
        at = text.rfind(sep)
        if at > 0:
            return at + 1
    return len(text)
