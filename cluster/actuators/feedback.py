"""Feedback as telemetry: ``ActionResult`` samples the gateway publishes on ``{ns}:feedback`` (outcome misses,
and results of actuators that do not report through the simulator), read by the twin beside its source.

The twin reads this stream like any telemetry source (writes stay downstream-only: the gateway never writes
into the twin's event log). Its read position is kept in Redis, so a restarted twin neither loses nor repeats
feedback.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis.asyncio as aioredis

from cluster.telemetry.samples import Sample, TelemetrySource, parse_sample, source_position

log = logging.getLogger("opsloop.feedback")


class FeedbackSource:
    """A ``TelemetrySource`` over the gateway's feedback stream."""

    def __init__(self, redis_url: str, namespace: str, count: int = 500) -> None:
        self.redis_url = redis_url
        self._redis: aioredis.Redis | None = None  # made where it is used: a client does not pickle into an actor
        self.stream = f"{namespace}:feedback"
        self.pos_key = f"{namespace}:feedback:pos"
        self.count = count
        self._pos: str | None = None  # the last entry read; loaded from pos_key on the first read

    def position(self) -> str | None:
        """The last entry read (a twin that checkpoints its state keeps this with it)."""
        return self._pos

    def seek(self, position: str | None) -> None:
        """Read on after entry ``position`` (None: from where ``pos_key`` says)."""
        self._pos = position

    async def read(self) -> list[Sample]:
        """Samples published since the last read."""
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(self.redis_url)
        if self._pos is None:
            self._pos = (await self._redis.get(self.pos_key) or b"0-0").decode()
        rows = await self._redis.xrange(self.stream, min=f"({self._pos}", count=self.count)
        out: list[Sample] = []
        for sid, fields in rows:
            try:
                out.append(parse_sample(json.loads(fields[b"sample"])))
            except (KeyError, ValueError) as exc:
                log.warning("skipping a bad feedback entry %s: %s", sid, exc)
        if rows:
            self._pos = rows[-1][0].decode() if isinstance(rows[-1][0], bytes) else rows[-1][0]
            await self._redis.set(self.pos_key, self._pos)
        return out


class MergedSource:
    """Several telemetry sources read as one (in order)."""

    def __init__(self, *sources: TelemetrySource) -> None:
        self.sources = sources

    async def read(self) -> list[Any]:
        out: list[Any] = []
        for s in self.sources:
            out += await s.read()
        return out

    def position(self) -> list[Any]:
        """Each part's position (None for a part that cannot resume, like the live simulator)."""
        return [source_position(s) for s in self.sources]

    def seek(self, position: list[Any]) -> None:
        for s, pos in zip(self.sources, position, strict=False):
            if pos is not None and hasattr(s, "seek"):
                s.seek(pos)

