"""The bundled corpus: enough documents, every one loads, and its metadata agrees with the action catalogue."""

from __future__ import annotations

import re

from knowledge.documents import load_document
from knowledge.events import EVENT_WORDS
from knowledge.retrieval import BUNDLED_CORPUS
from policies.actions import ACTION_KINDS

PLACEHOLDERS = {"gpu", "node", "unit", "link", "job", "summary", "severity"}


def test_corpus_is_complete_and_consistent() -> None:
    files = sorted(BUNDLED_CORPUS.glob("*.md"))
    assert len(files) >= 40
    docs = [load_document(f) for f in files]
    assert len({d.doc_id for d in docs}) == len(docs)
    types = {d.type for d in docs}
    assert {"manual", "sop", "mop", "eop", "experience"} <= types
    for d in docs:
        assert d.flags == [], d.doc_id
        assert set(d.events) <= set(EVENT_WORDS), d.doc_id
        step_ids = {s.step_id for s in d.steps}
        for a in d.actions:
            assert a.kind in ACTION_KINDS, (d.doc_id, a.kind)
            assert a.step is None or a.step in step_ids, (d.doc_id, a.step)
            for value in a.params.values():
                for name in re.findall(r"\{(\w+)\}", str(value)):
                    assert name in PLACEHOLDERS, (d.doc_id, name)
            assert a.unlimited() == [], f"{d.doc_id}#{a.step}: {a.kind} sets numbers its step does not bound"


def test_demo_eop_prescribes_setpoint_then_power_then_ticket() -> None:
    doc = load_document(BUNDLED_CORPUS / "eop-cooling-degradation.md")
    assert doc.type == "eop"
    assert {"cooling_degraded", "thermal_slowdown_predicted", "thermal_slowdown", "gpu_overheat"} <= set(doc.events)
    kinds = [a.kind for a in doc.actions]
    assert kinds[:3] == ["set_cooling_setpoint", "set_power_limit", "open_ticket"]
    assert doc.actions[0].params == {"unit": "{unit}"}
    supply = doc.actions[0].limits["supply_c"]
    assert (supply.from_, supply.change, supply.min) == ("setpoint_c", (-4.0, -2.0), 18.0), "s3: 2–4 °C, never < 18"
    assert doc.actions[1].limits["watts"].models == {"H100-SXM": (450.0, 500.0), "A100-SXM": (300.0, 300.0)}
