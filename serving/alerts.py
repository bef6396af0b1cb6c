"""The Alertmanager receiver: ``POST /api/alerts/alertmanager`` takes Alertmanager's webhook payloads (version 4).

Alertmanager posts a group of alerts as one JSON object (``version``, ``groupKey``, ``truncatedAlerts``,
``status``, ``receiver``, ``groupLabels``, ``commonLabels``, ``commonAnnotations``, ``externalURL`` and
``alerts[]``, each with ``status``, ``labels``, ``annotations``, ``startsAt``, ``endsAt``, ``generatorURL`` and
``fingerprint``). The route checks the bearer token Alertmanager sends (``http_config: authorization:
credentials:`` in its ``webhook_config``) against the configured one in constant time, validates the body
(400 ``bad_request`` naming each bad field), and appends each alert to the inbox stream ``{ns}:alerts:in``. It
answers 200 only after Redis has taken every alert of the body (one transaction: all or none), else 503, which
Alertmanager retries: nothing acknowledged is lost.

The receiver writes no event: the twin is the only writer of the event log. It reads the inbox as a telemetry
source (``cluster.telemetry.alerts.AlertSource``) and turns the alerts into ``alert_firing`` / ``alert_resolved``
events. The body size is bounded by the ingress's limit (``serving.limits``, 413 ``too_large``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr, StringConstraints, field_validator

from actors.gateway.auth import bearer

log = logging.getLogger("opsloop.alerts")

PATH = "/api/alerts/alertmanager"
#: The inbox stream (after the namespace) and its bound: an approximate cap, far above what a tick reads.
INBOX = "alerts:in"
INBOX_MAXLEN = 100_000

# The body's byte limit (http_max_body_bytes) bounds a payload as a whole; free text (annotations, URLs, the group
# key) has no bound of its own, so a long description never costs an alert (a 4xx is not retried by Alertmanager).
# Prometheus label names may be UTF-8 (Prometheus 3, Alertmanager 0.27+): only bounded, never blank.
_Name = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Labels = Annotated[dict[_Name, Annotated[str, StringConstraints(max_length=1024)]], Field(max_length=128)]
Annotations = Annotated[dict[_Name, str], Field(max_length=128)]
Status = Literal["firing", "resolved"]


def inbox_key(namespace: str) -> str:
    """The inbox stream of an installation: ``{namespace}:alerts:in``."""
    return f"{namespace}:{INBOX}"


class WebhookAlert(BaseModel):
    """One alert of a webhook payload (unknown fields, e.g. Grafana's ``silenceURL``, are ignored)."""

    # A foreign format: fields a newer Alertmanager adds are ignored, never a reason to lose the alert.
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    status: Status
    labels: Labels
    annotations: Annotations = Field(default_factory=dict)
    starts_at: AwareDatetime = Field(alias="startsAt", description="RFC 3339, when the alert started firing.")
    ends_at: AwareDatetime | None = Field(None, alias="endsAt", description=(
        "RFC 3339, when it resolved; Alertmanager sends Go's zero time 0001-01-01T00:00:00Z while it fires."))
    generator_url: str = Field("", alias="generatorURL")
    fingerprint: str | None = Field(None, pattern=r"^[A-Za-z0-9]{1,64}$", description=(
        "Alertmanager's id of the alert's label set; derived from the labels when a sender leaves it out."))

    @field_validator("ends_at", mode="after")
    @classmethod
    def _zero_is_none(cls, v: datetime | None) -> datetime | None:
        return None if v is not None and v.year <= 1 else v

    def key(self) -> str:
        """The fingerprint, or a hash of the labels when the sender gave none."""
        if self.fingerprint:
            return self.fingerprint
        return hashlib.sha256(json.dumps(self.labels, sort_keys=True).encode()).hexdigest()[:16]


class AlertmanagerWebhook(BaseModel):
    """An Alertmanager webhook payload, version 4 (prometheus.io/docs/alerting/latest/configuration/#webhook_config)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    version: Literal["4"]
    group_key: str = Field(alias="groupKey")
    truncated_alerts: int = Field(0, alias="truncatedAlerts", ge=0, description="Alerts left out (max_alerts).")
    status: Status
    receiver: str = Field(max_length=256)
    group_labels: Labels = Field(default_factory=dict, alias="groupLabels")
    common_labels: Labels = Field(default_factory=dict, alias="commonLabels")
    common_annotations: Annotations = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field("", alias="externalURL")
    alerts: list[WebhookAlert] = Field(min_length=1)


class InboxAlert(BaseModel):
    """One alert as the receiver stores it in the inbox stream (field ``alert``, this model's JSON)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    received_at: float = Field(ge=0, description="Unix seconds when the receiver took it (the sample's time).")
    receiver: str
    group_key: str
    external_url: str = ""
    status: Status
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: float
    ends_at: float | None = None
    generator_url: str = ""
    fingerprint: str = Field(min_length=1, max_length=64)

    @classmethod
    def of(cls, payload: AlertmanagerWebhook, alert: WebhookAlert, received_at: float) -> InboxAlert:
        return cls(received_at=received_at, receiver=payload.receiver, group_key=payload.group_key,
                   external_url=payload.external_url, status=alert.status, labels=alert.labels,
                   annotations=alert.annotations, starts_at=alert.starts_at.timestamp(),
                   ends_at=alert.ends_at.timestamp() if alert.ends_at is not None else None,
                   generator_url=alert.generator_url, fingerprint=alert.key())


class Accepted(BaseModel):
    """What the receiver took: every alert of the body, written to the inbox."""

    accepted: int
    firing: int
    resolved: int
    truncated_alerts: int = Field(description="Alerts Alertmanager left out of this body (its max_alerts).")


@dataclass
class AlertReceiver:
    """The receiver's configuration: where the inbox is and the token Alertmanager must send.

    Args:
        redis_url: opsloop's Redis (the twin reads the inbox from there).
        namespace: Prefix of the inbox stream's key.
        token: The bearer token Alertmanager sends (setting ``alertmanager_token``).
        clock: Unix seconds now (the receipt time each alert carries).
    """

    redis_url: str
    namespace: str
    token: SecretStr | str
    clock: Callable[[], float] = time.time
    maxlen: int = INBOX_MAXLEN
    _redis: Any = field(default=None, init=False, repr=False)  # made where it is used: a client does not pickle

    def allows(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries the token (compared in constant time, as digests)."""
        given = bearer(header)
        expected = self.token.get_secret_value() if isinstance(self.token, SecretStr) else self.token
        if given is None or not expected:
            return False
        return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest())

    async def put(self, payload: AlertmanagerWebhook) -> list[str]:
        """Append every alert of ``payload`` to the inbox in one transaction; returns the stream ids."""
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(self.redis_url)
        now = self.clock()
        pipe = self._redis.pipeline(transaction=True)
        for alert in payload.alerts:
            entry = InboxAlert.of(payload, alert, now).model_dump_json()
            pipe.xadd(inbox_key(self.namespace), {"alert": entry}, maxlen=self.maxlen, approximate=True)
        ids = await pipe.execute()
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]


_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"description": why, "content": {"application/json": {"schema": _ERROR}}}
    for code, why in ((400, "Not an Alertmanager v4 payload (each bad field named)"),
                      (401, "No or a wrong bearer token"), (404, "The receiver is off (no alertmanager_token set)"),
                      (413, "Request body too large"), (429, "Too many requests (see Retry-After)"),
                      (503, "The inbox could not be written; Alertmanager retries"))}


def build_alerts_router(receiver: AlertReceiver | None) -> APIRouter:
    """The ``POST /api/alerts/alertmanager`` route (``receiver`` None: it answers 404, the receiver is off).

    The token is checked before the body is validated, so a caller without it learns nothing of the schema.
    """
    router = APIRouter()

    async def authorized(request: Request) -> AlertReceiver:
        if receiver is None:
            raise HTTPException(404, "the Alertmanager receiver is off: set alertmanager_token "
                                     "(OPSLOOP_ALERTMANAGER_TOKEN) and restart")
        if not receiver.allows(request.headers.get("authorization")):
            raise HTTPException(401, "send Authorization: Bearer <alertmanager_token> (Alertmanager: "
                                     "webhook_configs: http_config: authorization: credentials)",
                                headers={"WWW-Authenticate": "Bearer"})
        return receiver

    checked = Depends(authorized)  # runs before the body is validated

    @router.post(PATH, response_model=Accepted, responses=_RESPONSES, tags=["alerts"])
    async def alertmanager(body: AlertmanagerWebhook, rx: AlertReceiver = checked) -> Accepted:
        """Take an Alertmanager webhook (version 4): each alert goes to the inbox the twin reads, and becomes an
        ``alert_firing`` or ``alert_resolved`` event there. 200 only once every alert is stored (503: none is;
        Alertmanager retries)."""
        try:
            await rx.put(body)
        except (aioredis.RedisError, OSError) as exc:
            log.error("alert inbox not written (%d alerts): %s", len(body.alerts), exc)
            raise HTTPException(503, f"the alert inbox could not be written ({type(exc).__name__}); "
                                     "nothing was stored, send again") from None
        if body.truncated_alerts:
            log.warning("Alertmanager left %d alerts out of group %s (max_alerts)", body.truncated_alerts,
                        body.group_key[:200])
        firing = sum(a.status == "firing" for a in body.alerts)
        return Accepted(accepted=len(body.alerts), firing=firing, resolved=len(body.alerts) - firing,
                        truncated_alerts=body.truncated_alerts)

    return router
