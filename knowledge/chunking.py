"""Cut documents into retrievable chunks along section and step boundaries.

Every chunk keeps its document's id, type, equipment and events, and the step id when it is a step. Each
document also gets an *overview* chunk (title, scope, first section) so a question about the document as a
whole finds it even when no single step matches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from knowledge.documents import Document

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_STEP = re.compile(r"^(?:(s)(\d{1,3})|step[ \t]*(\d{1,3})|(\d{1,3}))[.:)][ \t]*(.+)$", re.I)

#: Target chunk size in words; all-MiniLM-L6-v2 reads at most 256 word pieces.
MAX_WORDS = 170
OVERVIEW_WORDS = 120

TYPE_WORDS = {
    "manual": "equipment manual reference",
    "sop": "standard operating procedure SOP",
    "mop": "method of procedure MOP maintenance",
    "eop": "emergency operating procedure EOP emergency",
    "experience": "experience past incident lessons learned",
}


@dataclass(frozen=True)
class Chunk:
    """A piece of one document as the retrievers see it."""

    chunk_id: str
    doc_id: str
    title: str
    type: str
    equipment: tuple[str, ...]
    events: tuple[str, ...]
    step_id: str | None
    section: str
    text: str
    flags: tuple[str, ...] = field(default=())

    def index_text(self) -> str:
        """Text for the lexical index: title and section repeated (a simple field boost) plus metadata words."""
        head = f"{self.title}. {self.section}" if self.section else self.title
        meta = " ".join((*self.equipment, *self.events, TYPE_WORDS.get(self.type, "")))
        return f"{head}\n{head}\n{self.text}\n{meta}"

    def embed_text(self) -> str:
        """Text for the dense encoder: heading context first, since the encoder truncates long input."""
        head = f"{self.title} — {self.section}" if self.section else self.title
        return f"{head}. {self.text}"


def _windows(text: str, max_words: int = MAX_WORDS) -> list[str]:
    """Split text into pieces of at most ``max_words`` words, preferring paragraph then sentence breaks."""
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    units: list[str] = []
    for p in paras:
        if len(p.split()) <= max_words:
            units.append(p)
            continue
        sentences = re.split(r"(?<=[.!?])\s+|\n", p)
        for s in sentences:
            words = s.split()
            for i in range(0, len(words), max_words):
                units.append(" ".join(words[i : i + max_words]))
    out: list[str] = []
    cur: list[str] = []
    n = 0
    for u in units:
        w = len(u.split())
        if cur and n + w > max_words:
            out.append("\n\n".join(cur))
            cur, n = [], 0
        cur.append(u)
        n += w
    if cur:
        out.append("\n\n".join(cur))
    return [o for o in out if o.strip()]


def _sections(body: str) -> list[tuple[str, str | None, int, str]]:
    """(section title, step id, heading level, text) for every heading-delimited part of a body."""
    parts: list[tuple[str, str | None, int, str]] = []
    title, step, level, lines = "", None, 0, []
    for line in body.splitlines():
        h = _HEADING.match(line)
        if h:
            parts.append((title, step, level, "\n".join(lines).strip()))
            heading = h.group(2).strip()
            sm = _STEP.match(heading)
            if sm:
                num = sm.group(2) or sm.group(3) or sm.group(4)
                title, step = sm.group(5).strip(), f"s{int(num)}"
            else:
                title, step = heading, None
            level, lines = len(h.group(1)), []
        else:
            lines.append(line)
    parts.append((title, step, level, "\n".join(lines).strip()))
    return parts


def chunk_document(doc: Document) -> list[Chunk]:
    """Chunks of one document: an overview, then one or more per section, one per step.

    Args:
        doc: a parsed document.

    Returns:
        Chunks in document order with stable ids ``<doc_id>#<part>``.
    """
    base = dict(
        doc_id=doc.doc_id,
        title=doc.title,
        type=doc.type,
        equipment=tuple(doc.equipment),
        events=tuple(doc.events),
        flags=tuple(doc.flags),
    )
    chunks: list[Chunk] = []
    parts = _sections(doc.body)
    # Overview: the text before the first heading plus the first real section, shortened.
    lead = [text for (_t, step, level, text) in parts[:3] if text and step is None and level <= 2]
    overview = " ".join(" ".join(lead).split()[:OVERVIEW_WORDS])
    chunks.append(Chunk(chunk_id=f"{doc.doc_id}#overview", step_id=None, section="", text=overview, **base))
    used: set[str] = set()
    parent = ""
    for i, (title, step, level, text) in enumerate(parts):
        if step is None and level and level <= 2:
            parent = title
        if not text:
            continue
        if step is not None:
            key = step if step not in used else f"{step}-{i}"
            used.add(key)
            section = f"{parent} › {title}" if parent and parent != title else title
            for j, piece in enumerate(_windows(text, MAX_WORDS * 2)):
                cid = f"{doc.doc_id}#{key}" + (f".{j}" if j else "")
                chunks.append(Chunk(chunk_id=cid, step_id=step, section=section, text=piece, **base))
            continue
        section = title if level <= 2 or not parent or parent == title else f"{parent} › {title}"
        for j, piece in enumerate(_windows(text)):
            chunks.append(Chunk(chunk_id=f"{doc.doc_id}#p{i}.{j}", step_id=None, section=section, text=piece, **base))
    return chunks
