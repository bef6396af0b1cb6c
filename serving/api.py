"""The REST API: health, status, events, approvals, users, the audit trail and knowledge search. Exceptions become
HTTP errors only here.

Every error is JSON: ``{"error": {"code": "...", "message": "..."}}`` with a 4xx status for anything the
caller can fix, so a script can act on it. Every route but ``/healthz`` needs ``Authorization: Bearer
<token>``: reads need ``viewer``, edits ``operator``, decisions ``approver``, users ``admin`` (401
``unauthorized`` without a valid token, 403 ``forbidden`` with too small a role). The ingress asks the
gateway who a token belongs to, so serving holds no secrets and needs no Redis.
The one exception is Alertmanager's receiver (``serving.alerts``): it checks a token of its own
(``alertmanager_token``) and stores the alerts in Redis for the twin to read.

Before any route, ``serving.limits`` refuses bodies over ``max_body_bytes`` (413 ``too_large``) and callers over
their rate (429 ``rate_limited`` with ``Retry-After``). ``/metrics`` renders every process's metrics in the
Prometheus text format; ``/api/traces/{incident_id}`` reads the incident's spans from the JSON Lines files
that ``cluster.tracing`` writes (``traces_dir``; on a multi-node cluster only the spans of the processes that
share the ingress's data directory: use OTLP there). Every route documents its answers in ``/openapi.json``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from actors.gateway.auth import ROLES, allows, bearer
from actors.gateway.replies import Reply
from actors.metrics import Metrics
from actors.tracing import incident_timeline
from knowledge.documents import DOC_TYPES
from serving import limits
from serving.alerts import AlertReceiver, build_alerts_router
from serving.headers import secure
from serving.metrics import CONTENT_TYPE, gather, render
from serving.ports import Agent, Gateway, Twin

#: Where the audit's ``channel`` comes from (README, HTTP API): never from the body.
CHANNEL_RULE = "http for this REST API, whoever the client is; slack only for signature-verified Slack requests"
#: The channel of everything decided, edited or created through these routes; ``client`` (the User-Agent) is
#: kept beside it for information only, as the client says it and nothing more.
CHANNEL = "http"
REFUSAL_STATUS = {"not_found": 404, "conflict": 409, "stale": 409, "forbidden": 403, "blocked": 409, "invalid": 400}
NAME_PATTERN = r"^[A-Za-z0-9_.@-]+$"
APPROVAL_STATES = ("pending", "approved", "rejected", "denied", "expired", "executing", "executed", "failed")
SEARCH_MODES = ("hybrid", "bm25", "dense")
#: The most documents one knowledge search answers.
SEARCH_MAX_TOP_K = 50


class _NoChannel(BaseModel):
    """A body that may not claim the channel it came through: the server records that from the route."""

    @model_validator(mode="before")
    @classmethod
    def _no_channel(cls, data: Any) -> Any:
        if isinstance(data, dict) and "channel" in data:
            raise ValueError(f"channel: not accepted (the server records the channel from the route: {CHANNEL_RULE})")
        return data


#: A character someone can see: not whitespace (Python's or JSON Schema's: they differ on \x1c-\x1f, \x85 and
#: \ufeff, so those are named) and not a control character. One pattern for the schema and the check below.
VISIBLE = r"[^\s\u0000-\u001f\u0085\ufeff]"


class DecisionBody(_NoChannel):
    """An operator's decision on one approval, bound to the action they were shown by its ``action_hash``."""

    # The rule below, in the schema too (a rejection's reason has a non-blank character), so clients see it.
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "if": {"properties": {"decision": {"const": "reject"}}, "required": ["decision"]},
        "then": {"properties": {"reason": {"pattern": VISIBLE}}, "required": ["reason"]},
    })

    decision: Literal["approve", "reject"]
    reason: str = Field("", max_length=2000)
    # Required, but checked by the gateway: a missing hash is refused like a stale one (409), not as a bad body.
    action_hash: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description=(
        "Required: the action_hash of the approval as it was shown (GET /api/approvals/{id}). A missing or "
        "stale one is refused with 409 `stale` and the approval stays pending."))

    @model_validator(mode="after")
    def _reason_for_reject(self) -> DecisionBody:
        if self.decision == "reject" and not re.search(VISIBLE, self.reason):
            raise ValueError("a rejection needs a reason (it goes back to the agent)")
        return self


class EditBody(_NoChannel):
    """An operator's change of a pending action's parameters (the action is verified and judged again)."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = Field(min_length=1)
    reason: str = Field(min_length=1, max_length=2000)


class UndoBody(_NoChannel):
    """An operator's request to undo an executed action: its recorded inverse is proposed as a new approval."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=2000)


class UserBody(_NoChannel):
    """A user to create (or to give a new token)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)
    role: Literal[ROLES]  # type: ignore[valid-type]


class ErrorDetail(BaseModel):
    """What went wrong: a stable ``code`` for scripts, a ``message`` for people (and ``problems`` per field)."""

    model_config = ConfigDict(extra="allow")

    code: str
    message: str


class ErrorBody(BaseModel):
    """Every error answer of the API."""

    error: ErrorDetail


class Me(BaseModel):
    """Who a token belongs to."""

    name: str
    role: str


class Health(BaseModel):
    """Liveness of the ingress and whether the twin has seen telemetry."""

    status: Literal["ok"]
    samples_seen: int
    ts: float


class SpanRecord(BaseModel):
    """One span of an incident's trace (``actors.tracing.span_record``)."""

    model_config = ConfigDict(extra="allow")

    trace_id: str
    span_id: str
    parent_id: str | None = None
    name: str
    stage: str | None = None
    start_ns: int | None = None
    end_ns: int | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    process: dict[str, Any] = Field(default_factory=dict)


class Timeline(BaseModel):
    """An incident's trace: its spans in start order, from the sample to the observed outcome."""

    incident_id: str
    trace_ids: list[str]
    spans: list[SpanRecord]


class KnowledgeCitation(BaseModel):
    """Where a passage comes from (``knowledge.retrieval.Citation``): ``text`` is its first 300 characters."""

    doc_id: str
    title: str
    type: str
    step_id: str | None
    score: float
    text: str


class KnowledgePassage(BaseModel):
    """One retrieved passage (``knowledge.retrieval.Passage``); ``flags`` marks untrusted text."""

    citation: KnowledgeCitation
    text: str
    flags: list[str]


class KnowledgeResults(BaseModel):
    """The best passage of each of the most relevant documents, best first, and the retriever that ranked them."""

    query: str
    mode: Literal[SEARCH_MODES]  # type: ignore[valid-type]
    dense: bool = Field(description="whether this knowledge base can do dense (and so hybrid) retrieval")
    results: list[KnowledgePassage]


_WHY = {400: "Malformed request", 401: "No valid token", 403: "Role too small or refused by policy",
        404: "Not found", 409: "Conflict (decided, expired, stale or blocked)", 413: "Request body too large",
        429: "Too many requests (see Retry-After)"}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error codes plus the limits every route has (413, 429)."""
    out: dict[int | str, dict[str, Any]] = {c: {"model": ErrorBody, "description": _WHY[c]} for c in (*codes, 413)}
    out[429] = {"model": ErrorBody, "description": _WHY[429],
                "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}}
    return out


AUTH = (401, 403)
INCIDENT_ID = r"^[A-Za-z0-9_.:-]{1,128}$"


class ApiError(Exception):
    """A 4xx answer raised from a dependency (authentication, roles)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status_code=status)


def _answer(reply: Reply) -> Any:
    """A gateway command's reply as HTTP: the approval's JSON, or its refusal as an error with the code's status."""
    if reply.refusal is not None:
        r = reply.refusal
        return _error(REFUSAL_STATUS[r.code], r.code, r.message)
    return reply.as_json()["approval"]


def search_knowledge(
    kb: Any, q: str, top_k: int = 5, type: str | None = None, equipment: str | None = None, mode: str | None = None,
) -> dict[str, Any]:
    """A knowledge search as ``GET /api/knowledge/search`` answers it (blocking: the route runs it in a thread).

    Args:
        kb: the loop's knowledge base (``knowledge.retrieval.KnowledgeBase``: ``search``, ``dense``).
        q: free text; blank is refused.
        top_k, type, equipment: as ``KnowledgeBase.search`` takes them.
        mode: ``bm25``, ``hybrid`` or ``dense``; None: hybrid when ``kb`` has the embedding model, else bm25.

    Raises:
        ApiError: 400 ``bad_request`` for a blank query or a bad value; 409 ``unsupported_mode`` for hybrid or
            dense on a knowledge base without the embedding model (a valid request this one cannot serve).
    """
    if not q.strip():
        raise ApiError(400, "bad_request", "q: a blank query (give some words, e.g. q=coolant flow low)")
    if not 1 <= top_k <= SEARCH_MAX_TOP_K:
        raise ApiError(400, "bad_request", f"top_k: between 1 and {SEARCH_MAX_TOP_K}, not {top_k}")
    if type is not None and type not in DOC_TYPES:
        raise ApiError(400, "bad_request", f"type: one of {', '.join(DOC_TYPES)}, not {type!r}")
    if mode is not None and mode not in SEARCH_MODES:
        raise ApiError(400, "bad_request", f"mode: one of {', '.join(SEARCH_MODES)}, not {mode!r}")
    chosen = mode or ("hybrid" if kb.dense else "bm25")
    if chosen != "bm25" and not kb.dense:
        raise ApiError(409, "unsupported_mode", f"mode {chosen}: this knowledge base searches with BM25 only (it "
                       "was built without the embedding model); ask for mode=bm25, or leave mode out")
    passages = kb.search(q, top_k=top_k, type=type, equipment=equipment or None, mode=chosen)
    return {"query": q, "mode": chosen, "dense": bool(kb.dense),
            "results": [p.model_dump(mode="json") if hasattr(p, "model_dump") else dict(p) for p in passages]}


def build_app(
    gateway: Gateway, twin: Twin, agent: Agent, *, traces_dir: str | Path | None = None,
    max_body_bytes: int = limits.MAX_BODY_BYTES, rate_per_s: float = limits.RATE_PER_S, burst: int = limits.BURST,
    routers: Sequence[tuple[APIRouter, str | None]] = (), alerts: AlertReceiver | None = None,
    knowledge: Any = None,
) -> FastAPI:
    """The FastAPI app over the three layers' ports.

    Args:
        gateway, twin, agent: the layers (service objects in-process, ``RemotePort`` s under Ray).
        traces_dir: where ``cluster.tracing`` writes JSON Lines spans (None: no incident timelines here).
        max_body_bytes: larger request bodies get 413.
        rate_per_s, burst: each caller's token bucket (429 beyond it).
        routers: more routes (chat, dashboard, Slack), each with the role a token needs for it (None: the
            router checks its callers itself).
        alerts: the Alertmanager receiver (``POST /api/alerts/alertmanager``, its own token); None: that route
            answers 404.
        knowledge: the loop's knowledge base (the one the chat grounds its answers in), searched by
            ``GET /api/knowledge/search``; None: that route answers 404.
    """
    # FastAPI's own /docs and /redoc load their scripts from a CDN: serving.dashboard serves /docs locally instead
    app = FastAPI(title="opsloop", version="0.1.0", description="Closed-loop AI operations for GPU data centers.",
                  docs_url=None, redoc_url=None)
    meter = Metrics()
    app.add_middleware(limits.LimitsMiddleware, max_body_bytes=max_body_bytes, rate_per_s=rate_per_s, burst=burst,
                       meter=meter)
    # added last, so outermost: every answer (API, dashboard, chat, Slack, the limits' errors) gets the CSP
    secure(app)
    spans_dir = Path(traces_dir) if traces_dir is not None else None

    def role(needed: str) -> Any:
        async def check(request: Request) -> dict:
            token = bearer(request.headers.get("authorization"))
            if token is None:
                raise ApiError(401, "unauthorized", "send Authorization: Bearer <token> (opsloop users add NAME)")
            user = await gateway.authenticate(token)
            if user is None:
                raise ApiError(401, "unauthorized", "unknown or replaced token")
            if not allows(user["role"], needed):
                raise ApiError(403, "forbidden", f"{user['name']} is {user['role']}; this needs {needed}")
            return user

        return Depends(check)

    viewer, operator, approver, admin = (role(r) for r in ROLES)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        text = "; ".join(f"{p['field'] or 'body'}: {p['message']}" for p in problems)
        return _error(400, "bad_request", f"invalid request: {text}", problems=problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
                503: "unavailable"}.get(exc.status_code, "http_error")
        response = _error(exc.status_code, code, str(exc.detail))
        response.headers.update(exc.headers or {})  # 405 keeps its Allow header
        return response

    @app.get("/healthz", response_model=Health, responses=errors())
    async def healthz() -> dict:
        """Liveness: the ingress answers and the twin has seen telemetry."""
        st = await twin.status()
        return {"status": "ok", "samples_seen": st["samples_seen"], "ts": st["ts"]}

    @app.get("/api/me", response_model=Me, responses=errors(*AUTH))
    async def me(user: dict = viewer) -> dict:
        """Who the token belongs to."""
        return user

    @app.get("/api/status", responses=errors(*AUTH))
    async def status(_: dict = viewer) -> dict:
        """Fleet summary, approvals by state, event counts and open incidents."""
        return {"twin": await twin.status(), "approvals": await gateway.counts(), "agent": await agent.status()}

    @app.get("/api/snapshot", responses=errors(*AUTH))
    async def snapshot(_: dict = viewer) -> dict:
        """The twin's full view of every GPU and cooling unit."""
        return await twin.snapshot()

    @app.get("/api/events", responses=errors(400, *AUTH))
    async def events(limit: int = Query(50, ge=1, le=1000), _: dict = viewer) -> list[dict]:
        """The newest events of the log, oldest first."""
        return await twin.recent_events(limit)

    @app.get("/api/approvals", responses=errors(400, *AUTH))
    async def approvals(status: Literal[APPROVAL_STATES] | None = None, _: dict = viewer) -> list[dict]:  # type: ignore[valid-type]
        """Approvals, newest first, optionally only those in one state."""
        return await gateway.list(status)

    @app.get("/api/approvals/{approval_id}", responses=errors(*AUTH, 404))
    async def approval(approval_id: str, _: dict = viewer) -> Any:
        """One approval."""
        ap = await gateway.get(approval_id)
        return ap if ap is not None else _error(404, "not_found", f"no approval {approval_id}")

    @app.post("/api/approvals/{approval_id}/decision", responses=errors(400, *AUTH, 404, 409))
    async def decision(approval_id: str, body: DecisionBody, request: Request, user: dict = approver) -> Any:
        """Approve or reject as the token's user, bound to the action shown (``action_hash``: 409 ``stale`` when
        it is missing or the action changed since); an approval that becomes approved executes before the
        answer returns (409 ``blocked`` when a change window or blast-radius limit holds it back)."""
        client = (request.headers.get("user-agent") or "")[:200]
        return _answer(await gateway.decide(approval_id, {**body.model_dump(), "by": user["name"],
                                                          "role": user["role"], "channel": CHANNEL, "client": client}))

    @app.post("/api/approvals/{approval_id}/edit", responses=errors(400, *AUTH, 404, 409))
    async def edit(approval_id: str, body: EditBody, user: dict = operator) -> Any:
        """Change a pending action's parameters; it is verified and judged again, earlier approvals void."""
        return _answer(await gateway.edit(approval_id, body.params, user["name"], CHANNEL, body.reason))

    @app.post("/api/approvals/{approval_id}/undo", responses=errors(400, *AUTH, 404, 409))
    async def undo(approval_id: str, body: UndoBody | None = None, user: dict = operator) -> Any:
        """Undo an executed action: its inverse (recorded as it ran: the previous power limit or setpoint, the resume
        of a drain) opens as a new approval citing this one (``undo_of``), judged by the same policy; the token's
        user is its proposer and cannot approve it. 409 ``conflict`` when it did not execute or has no inverse; a
        repeat answers the undo already open."""
        return _answer(await gateway.undo(approval_id, user["name"], CHANNEL, body.reason if body else ""))

    @app.get("/api/users", responses=errors(*AUTH))
    async def users(_: dict = admin) -> list[dict]:
        """Every user (names and roles; tokens are never shown again)."""
        return await gateway.list_users()

    @app.post("/api/users", responses=errors(400, *AUTH))
    async def add_user(body: UserBody, user: dict = admin) -> dict:
        """Create a user (or replace its token); the answer carries the token, once."""
        return await gateway.create_user(body.name, body.role, user["name"], CHANNEL)

    @app.get("/api/audit", responses=errors(400, *AUTH))
    async def audit(incident: str | None = None, approval: str | None = None, _: dict = viewer) -> list[dict]:
        """Audit entries, oldest first, optionally of one incident or approval."""
        return await gateway.audit_entries(incident, approval)

    @app.get("/api/audit/verify", responses=errors(*AUTH))
    async def audit_verify(_: dict = viewer) -> dict:
        """Check the hash chain; ``problem`` names the first bad entry by seq and stream id."""
        return (await gateway.audit_verify()).model_dump()

    @app.get("/metrics", response_class=Response, responses={
        200: {"content": {CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}},
              "description": "Prometheus text format"}, **errors(*AUTH)})
    async def metrics(_: dict = viewer) -> Response:
        """Every process's metrics in the Prometheus text format (send the token as a bearer token)."""
        ports = [("twin", twin), ("agent", agent), ("gateway", gateway)]
        dumps = [*await gather(ports), meter.dump()]
        return Response(render(dumps), media_type=CONTENT_TYPE)

    @app.get("/api/traces/{incident_id}", response_model=Timeline, responses=errors(400, *AUTH, 404))
    async def traces(incident_id: str = PathParam(pattern=INCIDENT_ID), _: dict = viewer) -> Any:
        """The incident's trace (sample → event → incident → retrieval → LLM → proposal → approval → action →
        outcome), its spans in start order; 404 when tracing is off or no span of it is here."""
        if spans_dir is None:
            return _error(404, "not_found", "tracing is off here (no span files to read)")
        spans = await run_in_threadpool(incident_timeline, spans_dir, incident_id)
        if not spans:
            return _error(404, "not_found", f"no spans of incident {incident_id} in {spans_dir.name}/")
        return {"incident_id": incident_id, "trace_ids": sorted({s["trace_id"] for s in spans}), "spans": spans}

    # Declared before the routers, so it wins over the dashboard's GET /api/knowledge/{doc_id}.
    @app.get("/api/knowledge/search", response_model=KnowledgeResults, responses={
        **errors(400, *AUTH, 404), 409: {"model": ErrorBody, "description": "This knowledge base cannot search in that "
                                         "mode (hybrid and dense need the embedding model): unsupported_mode"}})
    async def knowledge_search(
        q: str = Query(min_length=1, max_length=1000, pattern=VISIBLE,
                       description="free text (not blank), e.g. coolant flow low on cdu-1"),
        top_k: int = Query(5, ge=1, le=SEARCH_MAX_TOP_K, description="how many documents"),
        type: Literal[DOC_TYPES] | None = Query(None, description="only documents of this type"),  # type: ignore[valid-type]
        equipment: str | None = Query(None, max_length=100, description="only documents about this equipment"),
        mode: Literal[SEARCH_MODES] | None = Query(  # type: ignore[valid-type]
            None, description="retriever (default: hybrid when the knowledge base has the embedding model, else "
            "bm25; hybrid or dense without it: 409 unsupported_mode)"),
        _: dict = viewer,
    ) -> Any:
        """The best passage of each of the ``top_k`` documents most relevant to ``q``, from the loop's own knowledge
        base (the one the agent and the chat cite), best first."""
        if knowledge is None:
            return _error(404, "not_found", "no knowledge base here")
        return await run_in_threadpool(search_knowledge, knowledge, q, top_k, type, equipment, mode)

    app.include_router(build_alerts_router(alerts))  # checks Alertmanager's token itself
    for router, needed in routers:
        app.include_router(router, dependencies=[role(needed)] if needed else [])
    return app
