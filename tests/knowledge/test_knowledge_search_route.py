"""``GET /api/knowledge/search``: its logic as a plain function (``serving.api.search_knowledge``) and the route in
the app (in-process ASGI, no Ray, no server): tokens, bad parameters as 4xx JSON, and that it wins over the
dashboard's ``GET /api/knowledge/{doc_id}`` while that one still serves documents."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from knowledge.retrieval import KnowledgeBase
from serving.api import ApiError, build_app, search_knowledge
from serving.dashboard import build_dashboard_router

TOKENS = {"tok-viewer": {"name": "victor", "role": "viewer"}}


class Gate:
    """The one gateway call the route needs: who a token belongs to."""

    async def authenticate(self, token: str) -> dict | None:
        return TOKENS.get(token)


class DenseKb:
    """A knowledge base that says it has the embedding model; records what it was asked."""

    dense = True

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def search(self, query: str, **kwargs: Any) -> list[Any]:
        self.calls.append({"query": query, **kwargs})
        return []


def test_search_answers_what_the_knowledge_base_finds(kb: KnowledgeBase) -> None:
    answer = search_knowledge(kb, "coolant flow low", top_k=3, type="eop")
    expected = kb.search("coolant flow low", top_k=3, type="eop", mode="bm25")
    assert answer["mode"] == "bm25" and answer["dense"] is False and answer["query"] == "coolant flow low"
    assert [r["citation"]["doc_id"] for r in answer["results"]] == [p.citation.doc_id for p in expected]
    assert answer["results"] and all(r["citation"]["type"] == "eop" for r in answer["results"])
    assert set(answer["results"][0]) == {"citation", "text", "flags"}


def test_default_mode_is_hybrid_only_with_the_embedding_model() -> None:
    dense = DenseKb()
    assert search_knowledge(dense, "pump", equipment="")["mode"] == "hybrid"
    assert search_knowledge(dense, "pump", mode="bm25")["mode"] == "bm25"
    assert dense.calls[0] == {"query": "pump", "top_k": 5, "type": None, "equipment": None, "mode": "hybrid"}


@pytest.mark.parametrize(("kwargs", "code", "words"), [
    ({"q": "  "}, "bad_request", "blank query"),
    ({"top_k": 0}, "bad_request", "top_k"),
    ({"top_k": 51}, "bad_request", "top_k"),
    ({"type": "memo"}, "bad_request", "type: one of manual"),
    ({"mode": "fuzzy"}, "bad_request", "mode: one of"),
    ({"mode": "hybrid"}, "unsupported_mode", "BM25 only"),
    ({"mode": "dense"}, "unsupported_mode", "BM25 only"),
])
def test_bad_requests_are_refused_with_a_reason(kb: KnowledgeBase, kwargs: dict, code: str, words: str) -> None:
    with pytest.raises(ApiError) as caught:
        search_knowledge(kb, **{"q": "coolant", **kwargs})
    # a valid request this knowledge base cannot serve is a conflict with what it is, not a malformed one
    status = 409 if code == "unsupported_mode" else 400
    assert (caught.value.status, caught.value.code) == (status, code) and words in caught.value.message


@pytest.fixture
async def client(kb: KnowledgeBase) -> AsyncIterator[httpx.AsyncClient]:
    gate = Gate()
    # as the ingress mounts it: the API with the knowledge base, then the dashboard's routes over the same one
    app = build_app(gate, None, None, knowledge=kb,  # type: ignore[arg-type] - these routes need only the gateway
                    routers=[(build_dashboard_router(gate, None, None, knowledge=kb), None)])  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://opsloop",
                                 headers={"Authorization": "Bearer tok-viewer"}) as c:
        yield c


@pytest.mark.anyio
async def test_route_searches_as_a_viewer(client: httpx.AsyncClient, kb: KnowledgeBase) -> None:
    resp = await client.get("/api/knowledge/search", params={"q": "coolant flow low", "top_k": 2, "equipment": "cdu"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["mode"] == "bm25" and len(body["results"]) == 2
    want = kb.search("coolant flow low", top_k=2, equipment="cdu")
    assert [r["citation"]["doc_id"] for r in body["results"]] == [p.citation.doc_id for p in want]
    # the dashboard's document route is still there beside it
    doc = await client.get(f"/api/knowledge/{want[0].citation.doc_id}")
    assert doc.status_code == 200 and doc.json()["doc_id"] == want[0].citation.doc_id


@pytest.mark.anyio
async def test_route_refuses_bad_requests_as_json(client: httpx.AsyncClient) -> None:
    cases = [({}, 400, "bad_request"), ({"q": "   "}, 400, "bad_request"), ({"q": "x", "top_k": 0}, 400, "bad_request"),
             ({"q": "x", "top_k": "many"}, 400, "bad_request"), ({"q": "x", "type": "memo"}, 400, "bad_request"),
             ({"q": "x", "mode": "hybrid"}, 409, "unsupported_mode")]
    for params, status, code in cases:
        resp = await client.get("/api/knowledge/search", params=params)
        assert (resp.status_code, resp.json()["error"]["code"]) == (status, code), (params, resp.text)
        assert resp.json()["error"]["message"]
    anonymous = await client.get("/api/knowledge/search", params={"q": "x"}, headers={"Authorization": ""})
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthorized"


@pytest.mark.anyio
async def test_without_a_knowledge_base_the_route_answers_404() -> None:
    app = build_app(Gate(), None, None)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://opsloop") as c:
        resp = await c.get("/api/knowledge/search", params={"q": "x"}, headers={"Authorization": "Bearer tok-viewer"})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
