"""The dashboard's routes and its live feed over small in-process ports (no browser)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from serving.dashboard import LiveFeed, build_dashboard_router
from tests.serving.test_dashboard_harness import knowledge

pytestmark = [pytest.mark.timeout(60), pytest.mark.anyio]
TOKENS = {"tok-viewer": {"name": "victor", "role": "viewer"}}


class Ports:
    def __init__(self) -> None:
        self.ts = 1.0
        self.approvals: list[dict] = [{"approval_id": "ap-1", "status": "pending"}]
        self.events = [{"event_id": "ev-1", "ts": 1.0, "kind": "cooling_degraded", "subject": "cu01"}]

    async def authenticate(self, token: str) -> dict | None:
        return TOKENS.get(token)

    async def list(self, status: str | None = None, limit: int = 500) -> list[dict]:
        return self.approvals

    async def counts(self) -> dict[str, int]:
        return {"pending": len(self.approvals)}

    async def snapshot(self) -> dict:
        return {"ts": self.ts, "gpus": [{"gpu": "n01/gpu0", "node": "n01", "sensed_c": 80.0, "est_c": 82.0,
                                         "clock_mhz": 1980.0, "power_w": 650.0}]}

    async def status(self) -> dict:
        return {"ts": self.ts, "gpus": 1, "barrier": {"ticks": 3, "last_tick": {"tick": 3, "slowest": "s1"}}}

    async def recent_events(self, count: int = 50) -> list[dict]:
        return self.events[-count:]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    ports = Ports()
    app = FastAPI()
    app.include_router(build_dashboard_router(ports, ports, ports, knowledge=knowledge()))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://opsloop") as c:
        yield c


async def test_page_and_assets_are_served_and_nothing_outside_static(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and "/static/js/app.js" in page.text
    js = await client.get("/static/js/app.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert (await client.get("/static/vendor/chart.umd.min.js")).status_code == 200
    for bad in ("/static/../dashboard.py", "/static/%2e%2e/dashboard.py", "/static/nope.js"):
        assert (await client.get(bad)).status_code == 404, bad


async def test_stream_and_runbooks_need_a_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/stream")).status_code == 401
    assert (await client.get("/api/stream", headers={"Authorization": "Bearer wrong"})).status_code == 401
    assert (await client.get("/api/knowledge/eop-cooling-degradation")).status_code == 401
    auth = {"Authorization": "Bearer tok-viewer"}
    doc = await client.get("/api/knowledge/eop-cooling-degradation", headers=auth)
    assert doc.status_code == 200 and any(s["step_id"] == "s3" for s in doc.json()["steps"])
    assert (await client.get("/api/knowledge/no-such-doc", headers=auth)).status_code == 404


async def test_live_feed_sends_everything_first_then_only_changes() -> None:
    ports = Ports()
    feed = LiveFeed(ports, ports, ports, every_s=0.01)  # type: ignore[arg-type]
    stream = feed.subscribe()
    hello = await anext(stream)
    assert hello["type"] == "hello"
    assert hello["data"]["approvals"][0]["approval_id"] == "ap-1" and hello["data"]["barrier"]["ticks"] == 3
    assert [e["event_id"] for e in hello["data"]["events"]] == ["ev-1"] and len(hello["data"]["history"]) == 1

    ports.approvals = [{"approval_id": "ap-1", "status": "executed"}]
    ports.events.append({"event_id": "ev-2", "ts": 2.0, "kind": "action_executed", "subject": "cu01"})
    seen: dict[str, object] = {}
    while not {"approvals", "events"} <= seen.keys():
        msg = await anext(stream)
        seen[msg["type"]] = msg["data"]
    assert seen["approvals"] == ports.approvals
    assert [e["event_id"] for e in seen["events"]] == ["ev-2"]  # type: ignore[union-attr]
    assert "snapshot" not in seen  # unchanged parts are not sent again
    await stream.aclose()
    assert not feed._watchers


class PortsWithLlm(Ports):
    """A twin whose snapshot carries the ``llm`` view the twin folds from vLLM replicas' metrics."""

    def __init__(self) -> None:
        super().__init__()
        self.llm: dict | None = None

    async def snapshot(self) -> dict:
        return {**await super().snapshot(), **({"llm": self.llm} if self.llm is not None else {})}


async def test_the_llm_panel_reads_the_twin_snapshots_llm_view() -> None:
    ports = PortsWithLlm()
    feed = LiveFeed(ports, ports, ports, every_s=0.01)  # type: ignore[arg-type]
    await feed.poll()
    assert feed.state["llm"] is None, "no vLLM replica read yet: the panel has nothing"
    ports.llm = {"ts": 2.0, "kv_cache_usage": 0.93, "running": 2, "waiting": 5}
    changed = {m["type"]: m["data"] for m in await feed.poll()}
    assert changed["llm"] == ports.llm and feed.state["llm"] == ports.llm
    assert "llm" not in {m["type"] for m in await feed.poll()}, "an unchanged view is not sent again"
