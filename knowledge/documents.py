"""Documents of the knowledge base: manuals, SOP/MOP/EOP runbooks and experience, and their loaders.

A document is read from Markdown (optionally with YAML front matter), plain text, HTML or PDF. Everything
that is wrong with a file becomes a :class:`DocumentError` naming the file and the reason, so an indexer
can report it and carry on with the rest of a directory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# DocumentError lives with the loaders (which raise it first) and is re-exported here, where callers look.
from knowledge.limits import NUMERIC_PARAMS, ParamLimit
from knowledge.loaders import SUPPORTED_SUFFIXES, DocumentError, read_text

DocType = Literal["manual", "sop", "mop", "eop", "experience"]
DOC_TYPES: tuple[str, ...] = ("manual", "sop", "mop", "eop", "experience")

#: Flag set on a document whose text looks like it tries to instruct a language model.
INJECTION_FLAG = "suspected_injection"

_FRONT_MATTER = re.compile(r"\A\ufeff?---[ \t]*\r?\n(.*?)\r?\n(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.S)
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
# "s3. Lower the setpoint", "Step 3: Lower the setpoint", "3) Lower the setpoint"
_STEP_HEADING = re.compile(r"^(?:(s)(\d{1,3})|step[ \t]*(\d{1,3})|(\d{1,3}))[.:)][ \t]*(.+)$", re.I)
_INJECTION = re.compile(
    r"(ignore|disregard|forget|override)\s+(all\s+|any\s+|the\s+|your\s+)*(previous|prior|above|earlier|preceding|"
    r"system|safety)\s+(instructions|prompts?|rules|messages|guidelines|policies)"
    r"|you\s+are\s+now\s+(a|an|the|in)\b"
    r"|\b(reveal|print|show|repeat|leak|ignore|override)\s+(the\s+|your\s+)?(system|developer)\s+prompt"
    r"|\bnew\s+instructions\s*:"
    r"|\b(approve|execute|run)\s+(all|every|any)\s+(pending\s+)?(actions?|proposals?|requests?)\b"
    r"|without\s+(human\s+|operator\s+)?(approval|confirmation|review)\b"
    r"|do\s+not\s+(tell|inform|notify)\s+the\s+(operator|user|human)s?"
    r"|<\s*/?\s*(system|assistant|im_start|im_end)\s*>",
    re.I,
)


class Step(BaseModel):
    """One numbered step of a procedure (``### s3. Lower the supply setpoint`` → ``s3``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    step_id: str
    title: str
    text: str


class ActionTemplate(BaseModel):
    """An action a document prescribes; ``"{name}"`` placeholders in params are filled from incident facts, and
    each parameter under ``limits`` is derived from its :class:`~knowledge.limits.ParamLimit` and the live facts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str
    step: str | None = None
    params: dict[str, str | float | int] = Field(default_factory=dict)
    limits: dict[str, ParamLimit] = Field(default_factory=dict)

    def unlimited(self) -> list[str]:
        """The numeric parameters of this action kind that no limit bounds (what ``knowledge lint`` reports)."""
        return [p for p in NUMERIC_PARAMS.get(self.kind, ()) if p not in self.limits]


class Document(BaseModel):
    """A manual, runbook or experience record, parsed into metadata, steps and body text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    doc_id: str
    title: str
    type: DocType
    equipment: list[str] = Field(default_factory=list)
    events: list[str] = Field(default_factory=list)
    actions: list[ActionTemplate] = Field(default_factory=list)
    risk: str = "low"
    steps: list[Step] = Field(default_factory=list)
    body: str
    source: str = ""
    flags: list[str] = Field(default_factory=list)

    @field_validator("doc_id")
    @classmethod
    def _doc_id(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", v):
            raise ValueError(f"doc_id {v!r} must be 1-128 letters, digits, '.', '_', ':' or '-'")
        return v

    @field_validator("risk")
    @classmethod
    def _risk(cls, v: str) -> str:
        if v not in ("low", "medium", "high"):
            raise ValueError(f"risk must be low, medium or high, not {v!r}")
        return v

    def step(self, step_id: str) -> Step | None:
        """The step with this id, or ``None``."""
        return next((s for s in self.steps if s.step_id == step_id), None)


def detect_injection(text: str) -> bool:
    """Whether text contains phrases that try to instruct a language model rather than inform an operator."""
    return _INJECTION.search(text) is not None


def split_front_matter(text: str, path: Path | str = "<text>") -> tuple[dict[str, object], str]:
    """Separate YAML front matter (``---`` … ``---`` at the very top) from the body.

    Raises:
        DocumentError: the front matter is not valid YAML or not a mapping.
    """
    m = _FRONT_MATTER.match(text)
    if not m:
        if text.lstrip("\ufeff").startswith("---\n") or text.startswith("---\r\n"):
            raise DocumentError(path, "front matter opened with '---' but never closed")
        return {}, text
    try:
        meta = yaml.load(m.group(1), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 2})" if line is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise DocumentError(path, f"front matter is not valid YAML{where}: {problem}") from None
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise DocumentError(path, "front matter must be a YAML mapping of keys to values")
    return {str(k): v for k, v in meta.items()}, text[m.end() :]


def parse_steps(body: str) -> list[Step]:
    """Numbered step headings and the text under each, with stable ids ``s<N>``."""
    steps: list[Step] = []
    current: tuple[str, str, int] | None = None  # (step_id, title, heading level)
    lines: list[str] = []
    seen: set[str] = set()

    def close() -> None:
        if current is not None and current[0] not in seen:
            seen.add(current[0])
            steps.append(Step(step_id=current[0], title=current[1], text="\n".join(lines).strip()))

    for line in body.splitlines():
        h = _HEADING.match(line)
        if h:
            level = len(h.group(1))
            sm = _STEP_HEADING.match(h.group(2))
            if sm:
                close()
                num = sm.group(2) or sm.group(3) or sm.group(4)
                current, lines = (f"s{int(num)}", sm.group(5).strip(), level), []
                continue
            if current is not None and level <= current[2]:
                close()
                current, lines = None, []
                continue
        if current is not None:
            lines.append(line)
    close()
    return steps


def _str_list(value: object, field: str, path: Path) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return [str(v) for v in value]
    raise DocumentError(path, f"front matter field '{field}' must be a list of strings")


def _infer_type(stem: str, title: str) -> str:
    for word in re.split(r"[^a-z]+", f"{stem} {title}".lower()):
        if word in ("sop", "mop", "eop", "manual", "experience"):
            return word
    if re.search(r"\b(emergency|eop)\b", title, re.I):
        return "eop"
    return "manual"


def _title_from(body: str, stem: str) -> str:
    for line in body.splitlines():
        h = _HEADING.match(line)
        if h:
            return h.group(2).strip()
    for line in body.splitlines():
        if line.strip():
            return line.strip()[:120]
    return stem.replace("_", " ").replace("-", " ")


def build_document(meta: dict[str, object], body: str, path: Path, source: str | None = None) -> Document:
    """Make a :class:`Document` from front matter and body, filling defaults from the file name.

    Raises:
        DocumentError: a field has the wrong shape or value.
    """
    stem = path.stem
    title = str(meta.get("title") or _title_from(body, stem)).strip()
    doc_type = str(meta.get("type") or _infer_type(stem, title)).strip().lower()
    if doc_type not in DOC_TYPES:
        raise DocumentError(path, f"type must be one of {', '.join(DOC_TYPES)}, not {doc_type!r}")
    raw_actions = meta.get("actions") or []
    if not isinstance(raw_actions, list):
        raise DocumentError(path, "front matter field 'actions' must be a list of {kind, step, params}")
    steps = parse_steps(body)
    flags = [str(f) for f in _str_list(meta.get("flags"), "flags", path) if f != INJECTION_FLAG]
    if detect_injection(title + "\n" + body):
        flags.append(INJECTION_FLAG)
    try:
        actions = [ActionTemplate.model_validate(a) for a in raw_actions]
        return Document(
            doc_id=str(meta.get("id") or meta.get("doc_id") or stem).strip(),
            title=title,
            type=doc_type,  # type: ignore[arg-type]
            equipment=_str_list(meta.get("equipment"), "equipment", path),
            events=_str_list(meta.get("events"), "events", path),
            actions=actions,
            risk=str(meta.get("risk") or "low").strip().lower(),
            steps=steps,
            body=body.strip(),
            source=source if source is not None else str(path),
            flags=flags,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise DocumentError(path, f"invalid front matter ({loc}): {err['msg']}") from None


def load_document(path: Path) -> Document:
    """Load one Markdown, text, HTML or PDF file as a :class:`Document`.

    Args:
        path: the file; its stem is the ``doc_id`` unless front matter gives an ``id``.

    Raises:
        DocumentError: the file is empty, too large, binary, corrupt, unsupported, or its front matter is bad.
    """
    path = Path(path)
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise DocumentError(path, f"unsupported file type {path.suffix or '(none)'!r}")
    text = read_text(path)
    meta, body = split_front_matter(text, path)
    if not body.strip():
        raise DocumentError(path, "document has front matter but no text")
    return build_document(meta, body, path)
