"""Turn files into text: Markdown and plain text as they are, HTML via the stdlib parser, PDF via pypdf.

HTML headings become Markdown headings so that chunking by section works the same for every format.
"""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser
from pathlib import Path

MARKDOWN_SUFFIXES = (".md", ".markdown")
TEXT_SUFFIXES = (".txt", ".text", ".rst")
HTML_SUFFIXES = (".html", ".htm")
PDF_SUFFIXES = (".pdf",)
SUPPORTED_SUFFIXES = MARKDOWN_SUFFIXES + TEXT_SUFFIXES + HTML_SUFFIXES + PDF_SUFFIXES

#: Larger files are refused: a runbook is kilobytes; megabytes of text are a log or a mistake.
MAX_BYTES = 5 * 1024 * 1024


class DocumentError(Exception):
    """A file that cannot become a document; ``reason`` says why in words an operator understands."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def _error(path: Path, reason: str) -> DocumentError:
    return DocumentError(path, reason)


def _decode(path: Path, raw: bytes) -> str:
    if b"\x00" in raw[:65536]:
        raise _error(path, "binary content (NUL bytes), not a text document")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
    sample = text[:65536]
    if sample:
        bad = sum(1 for c in sample if (ord(c) < 32 and c not in "\t\n\r\f") or c == "\ufffd")
        if bad / len(sample) > 0.05:
            raise _error(path, "binary content (unprintable bytes), not a text document")
    return text


class _HtmlText(HTMLParser):
    _SKIP = frozenset({"script", "style", "head", "noscript", "template"})
    _BLOCK = frozenset({"p", "div", "br", "li", "tr", "table", "section", "article", "pre", "ul", "ol", "dd", "dt"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if tag in self._SKIP:
            self._skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif re.fullmatch(r"h[1-6]", tag) or tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if not self._skip:
            self.parts.append(re.sub(r"[ \t\r\n]+", " ", data))


def html_to_text(html: str) -> str:
    """Visible text of an HTML page, headings rendered as Markdown ``#`` lines."""
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    text = "\n".join(line.strip() for line in text.splitlines())
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    if parser.title.strip() and not re.search(r"^# ", text, re.M):
        text = f"# {parser.title.strip()}\n\n{text}"
    return text


def pdf_to_text(path: Path, raw: bytes) -> str:
    """Text of every page of a PDF.

    Raises:
        DocumentError: the PDF is corrupt, encrypted, or has no extractable text.
    """
    try:
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError
    except ImportError:  # pragma: no cover - pypdf is a dependency of knowledge
        raise _error(path, "PDF support needs the pypdf package") from None
    if not raw.startswith(b"%PDF-"):
        raise _error(path, "corrupt PDF: missing %PDF- header")
    try:
        reader = PdfReader(io.BytesIO(raw), strict=False)
        if reader.is_encrypted:
            raise _error(path, "encrypted PDF: cannot read its text")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as exc:
        raise _error(path, f"corrupt PDF: {type(exc).__name__}: {exc}"[:300]) from None
    text = "\n\n".join(p for p in pages if p)
    if not text.strip():
        raise _error(path, "PDF has no extractable text (scanned image?)")
    return text


def read_text(path: Path) -> str:
    """Read a supported file as text, refusing empty, oversized, binary and corrupt files.

    Raises:
        DocumentError: with a reason an operator can act on.
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise _error(path, f"cannot read: {exc.strerror or exc}") from None
    if size == 0:
        raise _error(path, "empty file")
    if size > MAX_BYTES:
        raise _error(path, f"file too large ({size / 1e6:.1f} MB; the limit is {MAX_BYTES / 1e6:.0f} MB)")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _error(path, f"cannot read: {exc.strerror or exc}") from None
    suffix = path.suffix.lower()
    if suffix in PDF_SUFFIXES:
        return pdf_to_text(path, raw)
    text = _decode(path, raw)
    if suffix in HTML_SUFFIXES:
        text = html_to_text(text)
    if not text.strip():
        raise _error(path, "empty file (only whitespace)")
    return text
