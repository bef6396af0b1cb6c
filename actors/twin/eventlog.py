"""The event log on a Redis Stream: append by the twin, read through a consumer group by the agent.

A writer that commits in steps (the sharded twin: one tick at a time) appends with :meth:`RedisEventLog.commit`,
fenced by a counter in the same script: a commit whose counter is not the one it expects (its reply was lost and
the client sent it again, or another writer got there first) is refused as a whole, so no entry goes in twice.

At-least-once: an entry stays pending until acknowledged, and entries left pending by a crashed
consumer are claimed again (XAUTOCLAIM) after ``claim_idle_ms``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from actors.twin.events import Event


class EventLog(Protocol):
    """Where events go, and how a consumer group reads them back."""

    async def append(self, events: Sequence[Event], also: dict[str, bytes] | None = None) -> list[str]:
        """Append events in order, and set the ``also`` keys in the same transaction; returns the entry ids."""
        ...

    async def read(self, group: str, consumer: str, count: int, block_ms: int) -> list[tuple[str, Event]]:
        """Entries not yet delivered to ``group`` (first any left pending by a dead consumer)."""
        ...

    async def ack(self, group: str, entry_ids: Sequence[str]) -> None:
        """Mark entries as handled by ``group``."""
        ...

    async def recent(self, count: int) -> list[Event]:
        """The newest ``count`` events, oldest first."""
        ...

    async def length(self) -> int:
        """Number of events in the log."""
        ...


#: Append a tick's events and set its checkpoint keys only if the fence (KEYS[3]) holds ARGV[1] ('' = unset);
#: then the fence becomes ARGV[2]. KEYS: stream, counts, fence, also-keys...; ARGV: expected, new, n, events...,
#: kinds..., also-values.... One script runs atomically: all of it or, refused, none of it.
COMMIT_SCRIPT = """
local cur = redis.call('GET', KEYS[3]) or ''
if cur ~= ARGV[1] then return {0, cur} end
local n = tonumber(ARGV[3])
local ids = {}
for i = 1, n do
  ids[i] = redis.call('XADD', KEYS[1], '*', 'event', ARGV[3 + i])
  redis.call('HINCRBY', KEYS[2], ARGV[3 + n + i], 1)
end
for j = 4, #KEYS do redis.call('SET', KEYS[j], ARGV[2 * n + j]) end
redis.call('SET', KEYS[3], ARGV[2])
return {1, ids}
"""


class FenceError(RuntimeError):
    """A fenced commit was refused: the fence does not hold the value the writer expected."""

    def __init__(self, key: str, expected: str, found: str) -> None:
        super().__init__(f"commit refused: {key} is {found or 'unset'!r}, expected {expected or 'unset'!r} "
                         "(already committed, or another writer)")
        self.found = found


class RedisEventLog:
    """``EventLog`` on one Redis Stream."""

    def __init__(self, client: aioredis.Redis, stream: str, claim_idle_ms: int = 30_000) -> None:
        self.client = client
        self.stream = stream
        self.claim_idle_ms = claim_idle_ms
        self._groups: set[str] = set()

    async def append(self, events: Sequence[Event], also: dict[str, bytes] | None = None) -> list[str]:
        """Append ``events`` and set the ``also`` keys (a checkpoint) in one transaction: both or neither."""
        if not events and not also:
            return []
        async with self.client.pipeline(transaction=True) as pipe:
            for ev in events:
                pipe.xadd(self.stream, {"event": ev.to_json()})
            for ev in events:
                pipe.hincrby(f"{self.stream}:counts", ev.kind, 1)
            for key, value in (also or {}).items():
                pipe.set(key, value)
            replies = await pipe.execute()
            return [_s(i) for i in replies[: len(events)]]

    async def commit(self, events: Sequence[Event], fence: str, expected: str, new: str,
                     also: dict[str, bytes] | None = None) -> list[str]:
        """Append ``events`` and set ``also`` if, and only if, key ``fence`` holds ``expected`` ('' = unset); the
        fence then holds ``new``. Safe to send again: a repeat finds the fence moved and changes nothing.

        Raises:
            FenceError: the fence held something else; nothing was written.
        """
        also = also or {}
        keys = [self.stream, f"{self.stream}:counts", fence, *also]
        args = [expected, new, len(events), *(e.to_json() for e in events), *(e.kind for e in events), *also.values()]
        ok, got = await self.client.eval(COMMIT_SCRIPT, len(keys), *keys, *args)
        if not ok:
            raise FenceError(fence, expected, _s(got))
        return [_s(i) for i in got]

    async def _ensure_group(self, group: str) -> None:
        if group in self._groups:
            return
        try:
            await self.client.xgroup_create(self.stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(group)

    async def read(self, group: str, consumer: str, count: int, block_ms: int) -> list[tuple[str, Event]]:
        await self._ensure_group(group)
        reply = await self.client.xautoclaim(
            self.stream, group, consumer, min_idle_time=self.claim_idle_ms, start_id="0-0", count=count
        )
        entries = list(reply[1])  # Redis 7 adds a third element (deleted ids); 6.2 has two
        if not entries:
            resp = await self.client.xreadgroup(group, consumer, {self.stream: ">"}, count=count, block=block_ms)
            entries = [e for _, batch in resp for e in batch]
        return [(_s(eid), Event.model_validate_json(fields[b"event"])) for eid, fields in entries if fields]

    async def pending_for(self, group: str, consumer: str, count: int) -> list[tuple[str, Event]]:
        """Entries this consumer was given before and has not acknowledged (after its own restart)."""
        await self._ensure_group(group)
        resp = await self.client.xreadgroup(group, consumer, {self.stream: "0"}, count=count)
        entries = [e for _, batch in resp for e in batch]
        return [(_s(eid), Event.model_validate_json(fields[b"event"])) for eid, fields in entries if fields]

    async def ack(self, group: str, entry_ids: Sequence[str]) -> None:
        if entry_ids:
            await self.client.xack(self.stream, group, *entry_ids)

    async def recent(self, count: int) -> list[Event]:
        entries = await self.client.xrevrange(self.stream, count=count)
        return [Event.model_validate_json(f[b"event"]) for _, f in reversed(entries)]

    async def length(self) -> int:
        return int(await self.client.xlen(self.stream))

    async def counts(self) -> dict[str, int]:
        """Events appended so far, by kind."""
        raw = await self.client.hgetall(f"{self.stream}:counts")
        return {_s(k): int(v) for k, v in sorted(raw.items())}


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v
