"""One knowledge base under the data directory (issue #15 item 5): the agent records experience in it, the chat
(another process, another KnowledgeBase on the same store) finds it without a restart, and a restart keeps it."""

from __future__ import annotations

from pathlib import Path

from knowledge.experience import Experience
from knowledge.retrieval import KnowledgeBase

DECIDED = Experience(
    incident_id="inc-42", events=({"kind": "cooling_degraded", "subject": "cu07"},),
    proposal={"actions": [{"kind": "set_cooling_setpoint", "unit": "cu07", "supply_c": 21.0}],
              "rationale": "strainer clogged on cu07"},
    decision="rejected", reason="facilities are replacing the cu07 pump impeller tonight",
)
QUESTION = "why was the cu07 setpoint change rejected pump impeller"


def test_experience_reaches_the_other_reader_and_survives_a_restart(tmp_path: Path) -> None:
    store = tmp_path / "knowledge"
    agent = KnowledgeBase.bundled(store=store, dense=False)
    chat = KnowledgeBase.bundled(store=store, dense=False)
    assert all(p.citation.doc_id != "exp-inc-42" for p in chat.search(QUESTION, top_k=3))
    agent.add_experience(DECIDED)
    assert chat.search(QUESTION, top_k=1)[0].citation.doc_id == "exp-inc-42", "the chat sees it at once"
    assert not chat.refresh(), "nothing changed since: no reload"
    del agent, chat
    again = KnowledgeBase.bundled(store=store, dense=False)
    hit = again.search(QUESTION, top_k=1)[0]
    assert hit.citation.doc_id == "exp-inc-42" and "impeller" in hit.text
    assert (store / "experience" / "exp-inc-42.md").exists()


def test_an_in_memory_index_never_reloads() -> None:
    kb = KnowledgeBase.bundled(dense=False)
    assert not kb.refresh()


def test_the_chat_cites_a_past_decision_after_a_restart(tmp_path: Path) -> None:
    """The chat endpoint's own grounding, on a fresh KnowledgeBase over the store the agent wrote before."""
    import asyncio

    from serving.chat import ChatRequest, ChatService
    from serving.llm import NoModel

    store = tmp_path / "knowledge"
    KnowledgeBase.bundled(store=store, dense=False).add_experience(DECIDED)
    chat = ChatService(NoModel(), None, None, KnowledgeBase.bundled(store=store, dense=False))
    req = ChatRequest.model_validate({"model": "opsloop", "messages": [{"role": "user", "content": QUESTION}]})
    grounding = asyncio.run(chat.ground([m.model_dump() for m in req.messages]))
    assert grounding.citations[0].doc_id == "exp-inc-42"
