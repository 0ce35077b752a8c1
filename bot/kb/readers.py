"""Reading knowledge-base files into titled, sectioned chunks.

Readers turn one file into either articles (Markdown with YAML front matter, HTML, plain text, PDF) or
FAQ entries (JSON array, JSON Lines, CSV with question/answer columns). Articles are cut along their
headings (Markdown `#`-`###`, HTML `h1`-`h3`); a long section is split at paragraph boundaries into
chunks of about `CHUNK_CHARS` characters that overlap a little, so a fact on a boundary is never lost.
Every reader raises `UnreadableFile` with a one-line, operator-facing reason for a file it cannot use
(binary, not UTF-8, empty, unparsable); the caller reports it and goes on with the next file.

The text of every chunk becomes index terms in `bot.kb.analysis`.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.language import detect_language
from bot.types import Lang

CHUNK_CHARS = 1200  # target size of one chunk: a few paragraphs, fits many into a small model's context
OVERLAP_CHARS = 150  # carried over from the previous chunk of the same section
ARTICLE_SUFFIXES = frozenset({".md", ".markdown", ".html", ".htm", ".txt", ".text", ".pdf"})
FAQ_SUFFIXES = frozenset({".json", ".jsonl", ".ndjson", ".csv"})
SUFFIXES = ARTICLE_SUFFIXES | FAQ_SUFFIXES
PARSER_VERSION = 1  # bump when readers or analysis (bot.kb.analysis) change: files are then re-read although unchanged


class UnreadableFile(Exception):
    """A knowledge-base file that cannot be ingested; the message is the reason shown to the operator."""


@dataclass(frozen=True)
class Chunk:
    """A passage of an article: its section heading and plain text."""

    section: str
    text: str


@dataclass(frozen=True)
class Article:
    """One document read from a Markdown, HTML, text or PDF file."""

    title: str
    lang: Lang
    chunks: tuple[Chunk, ...]
    url: str = ""
    category: str = ""


@dataclass(frozen=True)
class FaqEntry:
    """One question/answer pair; `number` is its 1-based position in the file."""

    question: str
    answer: str
    lang: Lang
    number: int
    category: str = ""
    url: str = ""


@dataclass(frozen=True)
class ParsedFile:
    """What one file contains: articles or FAQ entries."""

    articles: tuple[Article, ...] = field(default_factory=tuple)
    faqs: tuple[FaqEntry, ...] = field(default_factory=tuple)


# -- reading -----------------------------------------------------------------------------------------
def decode(data: bytes) -> str:
    """Strict UTF-8 text (a BOM is allowed); UnreadableFile for binary or wrongly encoded data."""
    if not data.strip():
        raise UnreadableFile("empty file")
    if b"\x00" in data[:8192]:
        raise UnreadableFile("binary file (contains NUL bytes)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"not valid UTF-8 text (byte offset {exc.start})") from exc
    if not text.strip():
        raise UnreadableFile("empty file")
    return text


def read_file(path: Path, default_lang: Lang = "en") -> ParsedFile:
    """Parse one file by its suffix; raises UnreadableFile with the reason."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UnreadableFile(f"unsupported file type {suffix or '(none)'}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableFile(f"cannot read file: {exc.strerror or exc}") from exc
    if suffix == ".pdf":
        return ParsedFile(articles=(parse_pdf(data, path.stem, default_lang),))
    text = decode(data)
    if suffix in (".md", ".markdown"):
        article = parse_markdown(text, path.stem, default_lang)
    elif suffix in (".html", ".htm"):
        article = parse_html(text, path.stem, default_lang)
    elif suffix in (".txt", ".text"):
        article = parse_text(text, path.stem, default_lang)
    elif suffix == ".csv":
        return ParsedFile(faqs=parse_faq_csv(text, default_lang))
    elif suffix == ".json":
        return ParsedFile(faqs=parse_faq_json(text, default_lang))
    else:
        return ParsedFile(faqs=parse_faq_jsonl(text, default_lang))
    return ParsedFile(articles=(article,))


def _lang(declared: Any, text: str, default: Lang) -> Lang:
    value = str(declared or "").strip().lower()[:2]
    if value in ("en", "de"):
        return value  # type: ignore[return-value]
    return detect_language(text[:3000], fallback=default)


def _make_article(title: str, sections: list[tuple[str, str]], meta: dict[str, Any], default: Lang) -> Article:
    chunks = tuple(chunk_sections(sections))
    if not chunks:
        raise UnreadableFile("no text found")
    body = " ".join(c.text for c in chunks)
    return Article(
        title=title.strip() or "untitled",
        lang=_lang(meta.get("lang") or meta.get("language"), f"{title}\n{body}", default),
        chunks=chunks,
        url=str(meta.get("url") or ""),
        category=str(meta.get("category") or ""),
    )


_FRONT = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.S)
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")


def parse_markdown(text: str, stem: str, default_lang: Lang = "en") -> Article:
    """A Markdown article; YAML front matter gives title, lang, url, category."""
    meta: dict[str, Any] = {}
    m = _FRONT.match(text)
    if m:
        try:
            loaded = yaml.safe_load(m.group(1))
        except yaml.YAMLError as exc:
            raise UnreadableFile(f"invalid YAML front matter: {str(exc).splitlines()[0]}") from exc
        if isinstance(loaded, dict):
            meta = loaded
        text = text[m.end() :]
    sections: list[tuple[str, str]] = []
    lines: list[str] = []
    heading, title, fenced = "", str(meta.get("title") or ""), False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        h = None if fenced else _HEADING.match(line)
        if h and len(h.group(1)) <= 3:
            sections.append((heading, "\n".join(lines)))
            lines, heading = [], _clean_inline(h.group(2))
            if len(h.group(1)) == 1 and not title:
                title, heading = heading, ""
        else:
            lines.append(line)
    sections.append((heading, "\n".join(lines)))
    sections = [(h, _clean_markdown(b)) for h, b in sections]
    return _make_article(title or _humanize(stem), sections, meta, default_lang)


_DROP_TAGS = ("script", "style", "nav", "header", "footer", "aside", "noscript", "form", "svg", "iframe", "template")
_DROP_ROLES = ["navigation", "banner", "contentinfo", "search", "complementary", "dialog"]
_BLOCK_TAGS = (
    "p", "div", "li", "ul", "ol", "br", "tr", "table", "section", "article", "main",
    "blockquote", "pre", "dd", "dt", "h4", "h5", "h6",
)  # fmt: skip


def _soup(text: str) -> Any:
    from bs4 import BeautifulSoup

    return BeautifulSoup(text, "html.parser")


def parse_html(text: str, stem: str, default_lang: Lang = "en") -> Article:
    """An HTML page: title from <title> or the first <h1>, text from the body, split at h1-h3."""
    soup = _soup(text)
    meta: dict[str, Any] = {}
    html_tag = soup.find("html")
    if html_tag is not None and html_tag.get("lang"):
        meta["lang"] = html_tag.get("lang")
    for tag in soup.find_all("link", rel="canonical"):
        meta.setdefault("url", tag.get("href") or "")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    h1 = soup.find("h1")
    if not title and h1 is not None:
        title = h1.get_text(" ", strip=True)
    for tag in soup.find_all(_DROP_TAGS) + soup.find_all(attrs={"role": _DROP_ROLES}):
        tag.decompose()
    if soup.head is not None:
        soup.head.decompose()
    body = soup.find("main") or soup.find("article") or soup.body or soup  # the content, not the page frame
    sections: list[tuple[str, str]] = []
    heading, parts = "", list[str]()
    for node in body.descendants:
        name = getattr(node, "name", None)
        if name in ("h1", "h2", "h3"):
            sections.append((heading, "".join(parts)))
            heading, parts = node.get_text(" ", strip=True), []
            if name == "h1" and heading == title:
                heading = ""
        elif name in _BLOCK_TAGS:
            parts.append("\n\n")
        elif name is None and not _inside_heading(node):
            parts.append(str(node))
    sections.append((heading, "".join(parts)))
    return _make_article(title or _humanize(stem), [(h, _squash(b)) for h, b in sections], meta, default_lang)


def _inside_heading(node: Any) -> bool:
    return any(getattr(p, "name", None) in ("h1", "h2", "h3") for p in node.parents)


def parse_text(text: str, stem: str, default_lang: Lang = "en") -> Article:
    """A plain-text article: the first short line is its title."""
    lines = text.strip().splitlines()
    title = lines[0].strip() if lines and len(lines[0].strip()) <= 120 and len(lines) > 1 else ""
    body = "\n".join(lines[1:]) if title else text
    return _make_article(title or _humanize(stem), [("", _squash(body))], {}, default_lang)


def parse_pdf(data: bytes, stem: str, default_lang: Lang = "en") -> Article:
    """A PDF: one section per page ("page N"), title from the metadata or the first line."""
    from pypdf import PdfReader

    if not data.strip():
        raise UnreadableFile("empty file")
    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = str(reader.metadata.get("/Title") or "") if reader.metadata else ""
    except Exception as exc:  # pypdf raises many types for broken files
        raise UnreadableFile(
            f"cannot parse PDF: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    first = next((ln.strip() for p in pages for ln in p.splitlines() if ln.strip()), "")
    title = meta_title.strip() or (first if len(first) <= 120 else "") or _humanize(stem)
    sections = [(f"page {i}", _squash(p)) for i, p in enumerate(pages, 1)]
    return _make_article(title, sections, {}, default_lang)


# -- FAQ collections -----------------------------------------------------------------------------------
_QUESTION_KEYS = ("question", "frage", "q", "title")
_ANSWER_KEYS = ("answer", "antwort", "a", "text")


def _faq_entries(rows: Iterable[tuple[int, Any]], default_lang: Lang) -> tuple[FaqEntry, ...]:
    out: list[FaqEntry] = []
    for number, row in rows:
        if not isinstance(row, dict):
            raise UnreadableFile(f"entry {number}: expected an object with question and answer")
        low = {str(k).strip().lower(): v for k, v in row.items()}
        question = next((str(low[k]).strip() for k in _QUESTION_KEYS if low.get(k)), "")
        answer = html_to_text(next((str(low[k]) for k in _ANSWER_KEYS if low.get(k)), ""))
        if not question or not answer:
            raise UnreadableFile(f"entry {number}: needs a non-empty question and answer")
        lang = _lang(low.get("lang") or low.get("language") or low.get("sprache"), f"{question} {answer}", default_lang)
        out.append(
            FaqEntry(
                question=" ".join(html_to_text(question).split()),
                answer=answer,
                lang=lang,
                number=number,
                category=str(low.get("category") or low.get("kategorie") or ""),
                url=str(low.get("url") or ""),
            )
        )
    if not out:
        raise UnreadableFile("no FAQ entries found")
    return tuple(out)


def parse_faq_json(text: str, default_lang: Lang = "en") -> tuple[FaqEntry, ...]:
    """A JSON array of {question, answer, lang?, category?} (or an object holding one such array)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UnreadableFile(f"invalid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from exc
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else None
    if not isinstance(data, list):
        raise UnreadableFile("JSON is not a FAQ collection (expected an array of question/answer objects)")
    return _faq_entries(enumerate(data, 1), default_lang)


def parse_faq_jsonl(text: str, default_lang: Lang = "en") -> tuple[FaqEntry, ...]:
    """JSON Lines, one {question, answer, ...} object per line."""
    rows: list[tuple[int, Any]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append((len(rows) + 1, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise UnreadableFile(f"invalid JSON on line {lineno}: {exc.msg}") from exc
    return _faq_entries(rows, default_lang)


def parse_faq_csv(text: str, default_lang: Lang = "en") -> tuple[FaqEntry, ...]:
    """CSV with a header row naming question and answer columns (+ optional lang, category, url)."""
    sample = text[:4096]
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    try:
        reader = csv.DictReader(io.StringIO(text), dialect=dialect)
        fields = {str(f).strip().lower() for f in (reader.fieldnames or [])}
        if not fields & set(_QUESTION_KEYS) or not fields & set(_ANSWER_KEYS):
            raise UnreadableFile("CSV needs a header row with 'question' and 'answer' columns")
        rows = list(enumerate(reader, 1))
    except csv.Error as exc:
        raise UnreadableFile(f"invalid CSV: {exc}") from exc
    return _faq_entries(rows, default_lang)


# -- text cleaning and chunking ------------------------------------------------------------------------
def html_to_text(text: str) -> str:
    """Reduce an HTML fragment to plain text (paragraphs and line breaks kept)."""
    if "<" not in text and "&" not in text:
        return text.strip()
    soup = _soup(text)
    for tag in soup.find_all(_DROP_TAGS):
        tag.decompose()
    for tag in soup.find_all(["br", "p", "div", "li", "tr"]):
        tag.insert_before("\n")
    return _squash(soup.get_text())


_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_MD_EMPH = re.compile(r"(\*\*|__|`)")
_HTML_TAG = re.compile(r"</?[a-zA-Z][^>]*>")


def _clean_inline(text: str) -> str:
    text = _MD_IMAGE.sub(r"\1", text)
    text = _MD_LINK.sub(r"\1", text)
    text = _MD_EMPH.sub("", text)
    return _HTML_TAG.sub("", text).strip()


def _clean_markdown(text: str) -> str:
    lines = [_clean_inline(ln) for ln in text.splitlines() if not ln.lstrip().startswith(("```", "~~~"))]
    return _squash("\n".join(lines))


def _squash(text: str) -> str:
    """Collapse runs of spaces; keep paragraph breaks (blank lines) and single line breaks."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\xa0", " "))
    lines = [" ".join(ln.split()) for ln in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _humanize(stem: str) -> str:
    return re.sub(r"[-_]+", " ", stem).strip().capitalize()


def chunk_sections(sections: Iterable[tuple[str, str]], size: int = CHUNK_CHARS) -> list[Chunk]:
    """Split each (heading, text) section into chunks of about `size` characters at paragraph borders."""
    out: list[Chunk] = []
    for heading, text in sections:
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
        pieces: list[str] = []
        for p in paragraphs:
            pieces.extend(_split_long(p, size))
        current = ""
        for piece in pieces:
            if current and len(current) + len(piece) + 2 > size:
                out.append(Chunk(heading, current))
                current = _tail(current) + piece
            else:
                current = f"{current}\n\n{piece}" if current else piece
        if current:
            out.append(Chunk(heading, current))
    return out


def _split_long(paragraph: str, size: int) -> list[str]:
    if len(paragraph) <= size:
        return [paragraph]
    sentences = re.split(r"(?<=[.!?])\s+", paragraph)
    out, current = [], ""
    for s in sentences:
        while len(s) > size:  # a "sentence" longer than a chunk: cut at a space
            cut = s.rfind(" ", 0, size)
            cut = cut if cut > size // 2 else size
            out.append(s[:cut].strip())
            s = s[cut:].strip()
        if current and len(current) + len(s) + 1 > size:
            out.append(current)
            current = s
        else:
            current = f"{current} {s}".strip()
    if current:
        out.append(current)
    return out


def _tail(text: str) -> str:
    """The last ~OVERLAP_CHARS characters of a chunk, starting at a word, as the next chunk's lead-in."""
    if len(text) <= OVERLAP_CHARS:
        return text + "\n\n"
    start = text.find(" ", len(text) - OVERLAP_CHARS)
    return "… " + text[start + 1 :] + "\n\n" if start >= 0 else ""
