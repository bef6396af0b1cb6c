"""File makers for the knowledge tests: a minimal valid PDF and small runbooks."""

from __future__ import annotations

import zlib
from pathlib import Path


def make_pdf(path: Path, lines: list[str]) -> Path:
    """Write a minimal valid one-page PDF whose page shows ``lines`` (Helvetica, uncompressed fonts)."""
    ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
    for line in lines:
        esc = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        ops.append(f"({esc}) Tj T*")
    ops.append("ET")
    stream = zlib.compress("\n".join(ops).encode("latin-1"))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" /Filter /FlateDecode >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))
    return path


RUNBOOK = """---
id: {doc_id}
title: "{title}"
type: mop
equipment: [widget]
events: [sensor_fault]
actions:
  - kind: notify
    step: s1
    params: {{message: "{{summary}}"}}
risk: low
---
# {title}

## Purpose
{purpose}

### s1. First step
Do the first thing.

### s2. Second step
Do the second thing.
"""


def write_runbook(folder: Path, name: str, doc_id: str, title: str, purpose: str) -> Path:
    """A small valid Markdown runbook with front matter and two steps."""
    path = folder / name
    path.write_text(RUNBOOK.format(doc_id=doc_id, title=title, purpose=purpose))
    return path
