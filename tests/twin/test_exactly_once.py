"""A tick is committed once, even when the commit's reply is lost and the Redis client sends it again.

A commit was a MULTI/EXEC whose effect only the client knew of: sent twice, it appended twice. Whoever sends it
again (a client resending a command whose reply timed out: redis-py 8 gives every connection a 5 s socket
timeout; an old coordinator instance still running while Ray has started its replacement), the tick now goes
in once: the commit is a script fenced by the committed tick. No Ray here: a real Redis, injected faults.
"""

from __future__ import annotations

import collections
import json
from typing import Any

import pytest
import redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from actors.twin.eventlog import FenceError, RedisEventLog
from actors.twin.events import Event
from actors.twin.shard_service import TwinCoordinator, TwinShard
from tests.twin.test_resume import LAYOUT, build, log_of, run_to_end


def _has_entry_id(reply: Any) -> bool:
    """Whether a reply carries a stream entry id (the commit's reply does; nothing else in a step does)."""
    if isinstance(reply, list | tuple):
        return any(_has_entry_id(r) for r in reply)
    return isinstance(reply, bytes) and reply.count(b"-") == 1 and reply.replace(b"-", b"").isdigit()


@pytest.fixture
async def reference(redis_url: str) -> list[bytes]:
    await run_to_end(build(redis_url, "ref"))
    return log_of(redis_url, "ref")


class LostReply:
    """Arms a fault: the next reply carrying an entry id is read from the socket, then dropped as a timeout."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.armed = False
        self.fired = 0
        real = AbstractConnection.read_response

        async def read_response(conn: AbstractConnection, *args: Any, **kwargs: Any) -> Any:
            reply = await real(conn, *args, **kwargs)
            if self.armed and _has_entry_id(reply):
                self.armed, self.fired = False, self.fired + 1
                raise redis.exceptions.TimeoutError("Timeout reading from socket (injected: the reply was lost)")
            return reply

        monkeypatch.setattr(AbstractConnection, "read_response", read_response)


@pytest.mark.anyio
async def test_a_commit_whose_reply_was_lost_is_not_appended_again(
    redis_url: str, reference: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    fault = LostReply(monkeypatch)
    twin = build(redis_url, "lost")
    # The client resends a command whose reply timed out, as redis-py's own default client does (10 retries;
    # from_url gives none today): the commit must be safe to send twice.
    twin.redis.set_retry(Retry(NoBackoff(), 3))
    while len(log_of(redis_url, "lost")) < 3:  # to just after the first commits that carry events
        await twin.step()
    for _ in range(3):  # lose the replies of the next three commits that append events
        fault.armed = True
        while fault.armed and not twin.source.sources[0].done:  # type: ignore[attr-defined]
            try:
                await twin.step()
            except Exception:  # noqa: BLE001 - a failed tick is retried, as run() does
                pass
    await run_to_end(twin)
    assert fault.fired == 3
    got = log_of(redis_url, "lost")
    ids = [json.loads(e)["event_id"] for e in got]
    twice = [i for i, n in collections.Counter(ids).items() if n > 1]
    assert not twice, f"events appended twice: {twice}"
    assert got == reference


@pytest.mark.anyio
async def test_a_fenced_commit_goes_in_once(redis_url: str) -> None:
    r = redis.asyncio.Redis.from_url(redis_url)
    log = RedisEventLog(r, "fence:events")
    ev = [Event.make("xid_error", "n01/gpu0", 1.0, "critical")]
    await log.commit(ev, "fence:tick", "", "1", also={"fence:ckpt": b"one"})
    with pytest.raises(FenceError, match="expected 'unset'"):
        await log.commit(ev, "fence:tick", "", "1", also={"fence:ckpt": b"two"})
    assert await log.length() == 1 and await r.get("fence:ckpt") == b"one" and await log.counts() == {"xid_error": 1}
    assert await log.commit([], "fence:tick", "1", "2", also={"fence:ckpt": b"three"}) == []
    assert await r.get("fence:tick") == b"2" and await r.get("fence:ckpt") == b"three"
    await r.aclose()


@pytest.mark.anyio
async def test_an_old_coordinator_that_commits_a_tick_again_is_refused(redis_url: str, reference: list[bytes]) -> None:
    """Ray restarts a coordinator whose node it lost while the old process still runs for a moment: both compute
    the next tick from the same state and the same samples (the same named shard actors), and both commit it.
    The log takes it once; the old instance is told so and goes on from what is committed."""
    probe, appended = build(redis_url, "probe"), []
    while not probe.source.sources[0].done:  # type: ignore[attr-defined]
        appended.append(await probe.step())
    at = next(i for i, n in enumerate(appended) if i >= 10 and n > 0)  # a step that appends events
    shards: dict[str, TwinShard] = {}

    def build_shared() -> TwinCoordinator:
        coord = build(redis_url, "two")
        coord.spawn = lambda s: shards.setdefault(s, TwinShard(s, LAYOUT[s], redis_url=redis_url, namespace="two"))
        return coord

    old = build_shared()
    await run_to_end(old, steps=at)
    new = build_shared()  # the replacement resumes from Redis
    assert await new.step() == appended[at]
    before = log_of(redis_url, "two")
    with pytest.raises(FenceError):  # the old instance, still running, commits the same tick
        await old.step()
    assert log_of(redis_url, "two") == before
    assert await old.step() >= 0  # told, it resumes from what is committed
    await run_to_end(new)
    assert log_of(redis_url, "two") == reference


def test_two_actions_on_one_target_in_one_instant_are_two_events() -> None:
    """An event id is a hash of kind, subject and instant: two actions' results on one unit in the same simulated
    second (two approvals executed between two ticks) used to share an id, so the log seemed to hold one twice."""
    from actors.twin.model import TwinModel
    from cluster.telemetry.samples import ActionResult

    def result(action_id: str) -> ActionResult:
        return ActionResult(ts=42.0, action_id=action_id, approval_id=f"ap-{action_id}", action_kind="set_fan_speed",
                            targets=("cu02",), status="executed")

    first, second = TwinModel().ingest([result("a1"), result("a2")])
    assert first.subject == second.subject == "cu02" and first.ts == second.ts
    assert first.event_id != second.event_id
    assert TwinModel().ingest([result("a1")])[0].event_id == first.event_id  # still deterministic
