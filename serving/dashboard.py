"""The live dashboard: static assets at ``/`` and ``/static/…``, a live stream and a runbook viewer.

The page is plain HTML, CSS and ES modules shipped in the package (``serving/static/``) with a vendored
Chart.js build; nothing Node runs at run time. It acts only through the REST API, so decisions made on the
dashboard follow the same rules and reach the same audit trail as any HTTP client. The page runs under the
ingress's strict Content-Security-Policy (``serving.headers``): every script and stylesheet is a file under
``/static``, no inline script, style or ``on*`` attribute. ``/docs`` is the OpenAPI page: a vendored Swagger UI
(``static/vendor/swagger-ui``) over ``/openapi.json``, loaded from here, never from a CDN.

Live updates come from ``GET /api/stream``, a ``text/event-stream`` read with ``fetch`` (not
``EventSource``): ``fetch`` can send ``Authorization: Bearer <token>``, so the token never travels in a URL
(where proxies and access logs would keep it). One :class:`LiveFeed` per ingress replica polls the layers
about once a second while anybody watches and pushes only what changed: ``snapshot``, ``events`` (new
ones), ``approvals``, ``incidents``, ``status``, ``barrier`` and ``llm``. A new watcher first gets the whole
state, including the per-GPU history the feed kept since the first watcher arrived.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import mimetypes
from collections import deque
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from actors.gateway.auth import bearer
from serving.ports import Agent, Gateway, Twin

log = logging.getLogger("opsloop.dashboard")

STATIC_DIR = Path(__file__).parent / "static"
#: Every call a poll makes to a layer gets this long; a slow layer leaves its panel as it was.
PORT_TIMEOUT_S = 5.0
POLL_EVERY_S = 1.0
HEARTBEAT_S = 15.0
HISTORY_POINTS = 600
EVENTS_KEPT = 200


async def authenticate(gateway: Gateway, request: Request) -> dict[str, str] | None:
    """Who is calling (``{"name", "role"}``), or ``None`` without a valid token."""
    token = bearer(request.headers.get("authorization"))
    if token is None:
        return None
    try:
        user = await asyncio.wait_for(gateway.authenticate(token), PORT_TIMEOUT_S)
        return {"name": str(user["name"]), "role": str(user["role"])} if user else None
    except Exception:  # noqa: BLE001 - an unreachable gateway authenticates nobody
        log.warning("authenticate failed", exc_info=True)
        return None


def _unauthorized() -> JSONResponse:
    return JSONResponse({"error": {"code": "unauthorized", "message": "an API token is needed"}}, status_code=401,
                        headers={"WWW-Authenticate": "Bearer"})


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class LiveFeed:
    """Polls the layers while anyone watches and fans out what changed to every watcher.

    Args:
        gateway, twin, agent: the loop's ports (the LLM serving panel reads the twin snapshot's ``llm`` view).
        every_s: seconds between polls.
    """

    def __init__(self, gateway: Gateway, twin: Twin, agent: Agent, every_s: float = POLL_EVERY_S) -> None:
        self.gateway, self.twin, self.agent = gateway, twin, agent
        self.every_s = every_s
        self.state: dict[str, Any] = {}
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY_POINTS)
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        self._seen: set[str] = set()
        self._last_json: dict[str, str] = {}
        self._watchers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def _call(self, what: Awaitable[Any], default: Any) -> Any:
        try:
            return await asyncio.wait_for(what, PORT_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - a slow or dead layer leaves its panel stale, not the page broken
            log.debug("dashboard poll call failed", exc_info=True)
            return default

    async def poll(self) -> list[dict[str, Any]]:
        """One round: read every layer, update the state, return the messages of what changed."""
        snap, status, agent, approvals, events, counts = await asyncio.gather(
            self._call(self.twin.snapshot(), None), self._call(self.twin.status(), None),
            self._call(self.agent.status(), None), self._call(self.gateway.list(None, 100), None),
            self._call(self.twin.recent_events(EVENTS_KEPT), []), self._call(self.gateway.counts(), None),
        )
        parts: dict[str, Any] = {}
        if snap is not None:
            parts["snapshot"] = snap
            self._record(snap)
        if status is not None:
            parts["status"] = {"twin": {k: v for k, v in status.items() if k != "barrier"}, "approvals": counts or {},
                               "agent": {k: v for k, v in (agent or {}).items() if k != "open_incidents"}}
        barrier = (status or {}).get("barrier") or (snap or {}).get("barrier")
        parts["barrier"] = barrier
        if agent is not None:
            parts["incidents"] = agent.get("open_incidents", [])
        if approvals is not None:
            parts["approvals"] = approvals
        parts["llm"] = (snap or {}).get("llm")
        out = []
        for kind, value in parts.items():
            text = json.dumps(value, sort_keys=True, default=str)
            if self._last_json.get(kind) != text:
                self._last_json[kind] = text
                self.state[kind] = value
                out.append({"type": kind, "data": value})
        fresh = [e for e in events if e.get("event_id") not in self._seen]
        for e in fresh:
            self._seen.add(e["event_id"])
            self.events.append(e)
        if len(self._seen) > 4 * EVENTS_KEPT:  # forget ids that left the window
            self._seen = {e["event_id"] for e in self.events}
        if fresh:
            out.append({"type": "events", "data": fresh})
        return out

    def _record(self, snap: dict[str, Any]) -> None:
        ts = snap.get("ts")
        if ts is None or (self.history and self.history[-1]["ts"] == ts):
            return
        self.history.append({"ts": ts, "gpus": {
            g["gpu"]: [g.get("sensed_c"), g.get("est_c"), g.get("clock_mhz"), g.get("power_w")]
            for g in snap.get("gpus", [])
        }})

    def hello(self) -> dict[str, Any]:
        """The whole state a new watcher starts from."""
        return {"type": "hello", "data": {**self.state, "history": list(self.history), "events": list(self.events)}}

    async def _run(self) -> None:
        while self._watchers:
            try:
                for msg in await self.poll():
                    for q in list(self._watchers):
                        q.put_nowait(msg)
            except Exception:  # noqa: BLE001 - keep feeding; the next round may succeed
                log.warning("dashboard poll failed", exc_info=True)
            await asyncio.sleep(self.every_s)

    async def subscribe(self) -> AsyncIterator[dict[str, Any]]:
        """Messages for one watcher: ``hello`` with the whole state, then every change, until closed."""
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        async with self._lock:
            if not self.state:
                await self.poll()
            self._watchers.add(q)
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._run())
        try:
            yield self.hello()
            while True:
                try:
                    yield await asyncio.wait_for(q.get(), HEARTBEAT_S)
                except TimeoutError:
                    yield {"type": "ping", "data": None}
        finally:
            self._watchers.discard(q)


def _sse(msg: dict[str, Any]) -> bytes:
    return f"event: {msg['type']}\ndata: {json.dumps(msg['data'], default=str)}\n\n".encode()


def build_dashboard_router(
    gateway: Gateway, twin: Twin, agent: Agent, knowledge: Any = None, every_s: float = POLL_EVERY_S,
) -> APIRouter:
    """The dashboard's routes over the loop's ports.

    Args:
        gateway, twin, agent: the loop's ports (``gateway.authenticate(token)`` names the caller).
        knowledge: anything with ``document(doc_id)`` (sync or async) returning a knowledge document; the
            runbook viewer's source. ``None``: citations show their title only.
        every_s: seconds between the live feed's polls.
    """
    router = APIRouter(tags=["dashboard"])
    feed = LiveFeed(gateway, twin, agent, every_s)
    router.feed = feed  # type: ignore[attr-defined] - reachable for tests and the ingress

    @router.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        """The dashboard page."""
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    @router.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        """The OpenAPI page: the vendored Swagger UI over ``/openapi.json`` (under the same strict CSP)."""
        return FileResponse(STATIC_DIR / "docs.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    @router.get("/static/{path:path}", include_in_schema=False)
    async def static(path: str) -> Response:
        """A file of ``serving/static`` (nothing outside it)."""
        root = STATIC_DIR.resolve()
        target = (root / path).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            return JSONResponse({"error": {"code": "not_found", "message": f"no file {path}"}}, status_code=404)
        media = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if target.suffix == ".js":
            media = "text/javascript"
        return FileResponse(target, media_type=media, headers={"Cache-Control": "no-cache"})

    @router.get("/api/stream", response_model=None)
    async def stream(request: Request) -> Response:
        """Server-sent events of the live state; needs ``Authorization: Bearer <token>`` (any role)."""
        if await authenticate(gateway, request) is None:
            return _unauthorized()

        async def body() -> AsyncIterator[bytes]:
            async for msg in feed.subscribe():
                if await request.is_disconnected():
                    return
                yield _sse(msg)

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @router.get("/api/knowledge/{doc_id}", response_model=None)
    async def document(doc_id: str, request: Request) -> Response:
        """A runbook or manual with its steps (the dashboard opens a cited step from here)."""
        if await authenticate(gateway, request) is None:
            return _unauthorized()
        doc = await _maybe_await(knowledge.document(doc_id)) if knowledge is not None else None
        if doc is None:
            return JSONResponse({"error": {"code": "not_found", "message": f"no document {doc_id}"}}, status_code=404)
        data = doc.model_dump(mode="json") if hasattr(doc, "model_dump") else dict(doc)
        keep = ("doc_id", "title", "type", "equipment", "risk", "steps", "body", "source")
        return JSONResponse({k: data.get(k) for k in keep})

    return router
