"""Alerts as telemetry: the Alertmanager receiver's inbox (``{ns}:alerts:in``) read as :class:`AlertSample` s.

``POST /api/alerts/alertmanager`` (``serving.alerts``) stores each alert it is sent; the twin reads them here
beside its other sources and makes them ``alert_firing`` / ``alert_resolved`` events (``actors.twin.alerts``),
so the event log keeps one writer. Like the feedback stream, the read position is kept in Redis and handed to
the twin's checkpoint (``position()`` / ``seek()``): a restarted or redone tick reads the same alerts again,
none is lost or read twice.

Which part of the fleet an alert is about comes from its labels: the node from ``node``, else ``Hostname``
(dcgm-exporter's), else ``instance`` without its port; the GPU from ``gpu`` (an index, as dcgm-exporter labels
it). A label value that is not a valid host name or index is kept among the labels and names nothing.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from pydantic import TypeAdapter, ValidationError

from cluster.telemetry.samples import AlertSample
from policies.actions import NodeName
from serving.alerts import InboxAlert, inbox_key

log = logging.getLogger("opsloop.alerts")

#: Labels that name the node, most specific first.
NODE_LABELS = ("node", "Hostname", "instance")
_NODE: TypeAdapter[str] = TypeAdapter(NodeName)
_PORT = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:]+)):\d+$")


def node_of(labels: dict[str, str]) -> str | None:
    """The node an alert's labels name (``node``, ``Hostname``, or ``instance`` without its port), if valid."""
    for name in NODE_LABELS:
        value = labels.get(name, "").strip()
        if name == "instance" and (m := _PORT.match(value)):
            value = m.group("v6") or m.group("host")
        if value:
            try:
                return _NODE.validate_python(value)
            except ValidationError:
                continue
    return None


def gpu_of(labels: dict[str, str]) -> int | None:
    """The GPU index of the ``gpu`` label (``"3"``, ``"gpu3"``), if it is one."""
    value = labels.get("gpu", "").strip().removeprefix("gpu")
    return int(value) if value.isdigit() and int(value) <= 255 else None


def alert_sample(entry: InboxAlert) -> AlertSample:
    """The sample of one stored alert (``ts``: when the receiver took it).

    Raises:
        pydantic.ValidationError: the alert does not make a valid sample.
    """
    labels, notes = entry.labels, entry.annotations
    node = node_of(labels)
    severity = labels.get("severity", "").strip().lower()[:64] or None
    summary = (notes.get("summary") or notes.get("description") or "")[:1024]
    return AlertSample(ts=entry.received_at, alertname=(labels.get("alertname") or "unnamed")[:256],
                       status=entry.status, severity=severity, node=node,
                       gpu=gpu_of(labels) if node is not None else None, labels=dict(list(labels.items())[:64]),
                       starts_at=entry.starts_at, ends_at=entry.ends_at, fingerprint=entry.fingerprint,
                       summary=summary)


@dataclass
class Rejected:
    """Inbox entries that did not make a sample, by reason (``opsloop_samples_quarantined_total``)."""

    rejected: dict[str, Counter[str]] = field(default_factory=dict)

    def count(self, reason: str) -> None:
        self.rejected.setdefault("alertmanager", Counter())[reason] += 1


class AlertSource:
    """A ``TelemetrySource`` over the Alertmanager receiver's inbox; resumable (``position()`` / ``seek()``)."""

    name = "alertmanager"

    def __init__(self, redis_url: str, namespace: str, count: int = 500) -> None:
        self.redis_url = redis_url
        self._redis: aioredis.Redis | None = None  # made where it is used: a client does not pickle into an actor
        self.stream = inbox_key(namespace)
        self.pos_key = f"{self.stream}:pos"
        self.count = count
        self._pos: str | None = None  # the last entry read; loaded from pos_key on the first read
        self.validator = Rejected()

    def position(self) -> str | None:
        """The last entry read (a twin that checkpoints its state keeps this with it)."""
        return self._pos

    def seek(self, position: str | None) -> None:
        """Read on after entry ``position`` (None: from where ``pos_key`` says)."""
        if position is not None and not re.fullmatch(r"\d+-\d+", str(position)):
            raise ValueError(f"not a stream position: {str(position)[:40]}")
        self._pos = position

    async def read(self) -> list[AlertSample]:
        """The alerts stored since the last read (at most ``count``), in the order they arrived."""
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(self.redis_url)
        if self._pos is None:
            self._pos = (await self._redis.get(self.pos_key) or b"0-0").decode()
        rows = await self._redis.xrange(self.stream, min=f"({self._pos}", count=self.count)
        out: list[AlertSample] = []
        for sid, fields in rows:
            out += self._parse(sid, fields)
        if rows:
            last = rows[-1][0]
            self._pos = last.decode() if isinstance(last, bytes) else str(last)
            await self._redis.set(self.pos_key, self._pos)
        return out

    def _parse(self, sid: Any, fields: dict[bytes, bytes]) -> list[AlertSample]:
        raw = fields.get(b"alert")
        if raw is None:
            self.validator.count("missing_field")
            log.warning("skipping inbox entry %s: no alert field", sid)
            return []
        try:
            return [alert_sample(InboxAlert.model_validate_json(raw))]
        except ValidationError as exc:
            self.validator.count("invalid")
            log.warning("skipping inbox entry %s: %s", sid, exc.errors(include_input=False)[:1])
            return []
