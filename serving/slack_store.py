"""What the Slack bot must remember: the message of each approval, each incident's thread, signatures seen.

:class:`SlackStore` is the protocol; :class:`RedisSlackStore` keeps it under ``{ns}:slack:*`` so that replicas
and restarts share it (a version compare-and-set keeps two replicas from telling the same change twice),
:class:`MemorySlackStore` keeps it in one process.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

REPLAY_TTL_S = 600  # longer than the 5-minute window plus clock skew
RECORD_TTL_S = 30 * 86400


class SlackStore(Protocol):
    """The bot's memory (see the module docstring)."""

    async def first_time(self, signature: str) -> bool:
        """Record a request signature; False if it was seen before (a replay)."""
        ...

    async def claim(self, approval_id: str) -> bool:
        """Reserve posting this approval; False if someone already did."""
        ...

    async def release(self, approval_id: str) -> None:
        """Undo a claim whose post failed."""
        ...

    async def record(self, approval_id: str) -> dict[str, str] | None:
        """``{"channel", "ts", "thread", "version"}`` of the approval's message."""
        ...

    async def save(self, approval_id: str, rec: dict[str, str]) -> None: ...

    async def advance(self, approval_id: str, old: str, new: str) -> bool:
        """Move the message's version from ``old`` to ``new``; False if someone else moved it."""
        ...

    async def thread(self, incident_id: str, ts: str | None = None) -> str | None:
        """The incident's thread; with ``ts``, make it the thread unless there is one already."""
        ...


class MemorySlackStore:
    """:class:`SlackStore` in this process (tests, a single replica that may forget on restart)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.records: dict[str, dict[str, str]] = {}
        self.threads: dict[str, str] = {}

    async def first_time(self, signature: str) -> bool:
        fresh = signature not in self.seen
        self.seen.add(signature)
        return fresh

    async def claim(self, approval_id: str) -> bool:
        if approval_id in self.records:
            return False
        self.records[approval_id] = {"version": "posting"}
        return True

    async def release(self, approval_id: str) -> None:
        self.records.pop(approval_id, None)

    async def record(self, approval_id: str) -> dict[str, str] | None:
        return self.records.get(approval_id)

    async def save(self, approval_id: str, rec: dict[str, str]) -> None:
        self.records[approval_id] = dict(rec)

    async def advance(self, approval_id: str, old: str, new: str) -> bool:
        rec = self.records.get(approval_id)
        if rec is None or rec.get("version") != old:
            return False
        rec["version"] = new
        return True

    async def thread(self, incident_id: str, ts: str | None = None) -> str | None:
        if ts is not None:
            self.threads.setdefault(incident_id, ts)
        return self.threads.get(incident_id)


_CAS = "if redis.call('hget', KEYS[1], 'version') == ARGV[1] then " \
       "redis.call('hset', KEYS[1], 'version', ARGV[2]) return 1 else return 0 end"


class RedisSlackStore:
    """:class:`SlackStore` in Redis (``{ns}:slack:seen:*``, ``{ns}:slack:msg:*``, ``{ns}:slack:incident:*``)."""

    def __init__(self, redis_url: str, namespace: str) -> None:
        import redis.asyncio as aioredis

        self.redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
        self.ns = f"{namespace}:slack"

    async def first_time(self, signature: str) -> bool:
        key = f"{self.ns}:seen:{hashlib.sha256(signature.encode()).hexdigest()}"
        return bool(await self.redis.set(key, "1", nx=True, ex=REPLAY_TTL_S))

    async def claim(self, approval_id: str) -> bool:
        key = f"{self.ns}:msg:{approval_id}"
        ok = bool(await self.redis.hsetnx(key, "version", "posting"))
        if ok:
            await self.redis.expire(key, RECORD_TTL_S)
        return ok

    async def release(self, approval_id: str) -> None:
        await self.redis.delete(f"{self.ns}:msg:{approval_id}")

    async def record(self, approval_id: str) -> dict[str, str] | None:
        return await self.redis.hgetall(f"{self.ns}:msg:{approval_id}") or None

    async def save(self, approval_id: str, rec: dict[str, str]) -> None:
        await self.redis.hset(f"{self.ns}:msg:{approval_id}", mapping=rec)

    async def advance(self, approval_id: str, old: str, new: str) -> bool:
        return bool(await self.redis.eval(_CAS, 1, f"{self.ns}:msg:{approval_id}", old, new))

    async def thread(self, incident_id: str, ts: str | None = None) -> str | None:
        key = f"{self.ns}:incident:{incident_id}"
        if ts is not None:
            await self.redis.set(key, ts, nx=True, ex=RECORD_TTL_S)
        return await self.redis.get(key)
