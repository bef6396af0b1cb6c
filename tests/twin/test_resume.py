"""The sharded twin resumes exactly: a crash at any point of a tick gives the same event log as no crash.

In-process (no Ray): the coordinator and its shards are rebuilt from Redis as a restarted actor would be, and a
shard that fails is spawned again by the coordinator. The reference is the same trace replayed without faults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from actors.twin.eventlog import RedisEventLog
from actors.twin.shard_service import TwinCoordinator, TwinShard
from actors.twin.shards import partition
from cluster.actuators.feedback import FeedbackSource, MergedSource
from cluster.telemetry.replay import ReplaySource

TRACE = Path(__file__).parents[1] / "scenarios" / "cooling_loss" / "trace.jsonl"
LAYOUT = partition(["n01", "n02"], 2)


def build(redis_url: str, ns: str, spawned: list[str] | None = None, fail: dict[tuple[str, int], int] | None = None
          ) -> TwinCoordinator:
    """A coordinator as a (re)started actor gets it: a fresh source, shards made by ``spawn`` from Redis."""

    def spawn(shard: str) -> Any:
        if spawned is not None:
            spawned.append(shard)
        core = TwinShard(shard, LAYOUT[shard], redis_url=redis_url, namespace=ns)
        return Flaky(core, fail) if fail is not None else core

    source = MergedSource(ReplaySource(TRACE), FeedbackSource(redis_url, ns))
    return TwinCoordinator(source, spawn, LAYOUT, redis_url, ns)


class Flaky:
    """A shard that dies (raises) the first time it is asked for a given tick: ``fail[(shard, tick)]`` times."""

    def __init__(self, shard: TwinShard, fail: dict[tuple[str, int], int]) -> None:
        self.shard = shard
        self.fail = fail

    async def work(self, tick: int, samples: list) -> Any:
        key = (self.shard.core.shard, tick)
        if self.fail.get(key, 0) > 0:
            self.fail[key] -= 1
            raise ConnectionError(f"shard {key[0]} died at tick {tick}")
        return await self.shard.work(tick, samples)

    async def snapshot(self) -> dict:
        return await self.shard.snapshot()

    async def topology(self) -> dict:
        return await self.shard.topology()


def log_of(redis_url: str, ns: str) -> list[bytes]:
    r = redis.Redis.from_url(redis_url)
    return [f[b"event"] for _, f in r.xrange(f"{ns}:events")]


async def run_to_end(twin: TwinCoordinator, steps: int | None = None) -> int:
    n = 0
    while (steps is None or n < steps) and not twin.source.sources[0].done:  # type: ignore[attr-defined]
        try:
            await twin.step()
        except Exception:  # noqa: BLE001 - a failed tick is retried, as run() does
            pass
        n += 1
    return n


@pytest.fixture
async def reference(redis_url: str) -> list[bytes]:
    await run_to_end(build(redis_url, "ref"))
    events = log_of(redis_url, "ref")
    assert len(events) > 5 and any(b"cooling_degraded" in e for e in events)
    return events


@pytest.mark.anyio
async def test_restarted_coordinator_and_shards_continue_the_same_log(redis_url: str, reference: list[bytes]) -> None:
    for crash_after in (1, 40, 41, 97):
        ns = f"crash{crash_after}"
        await run_to_end(build(redis_url, ns), steps=crash_after)
        assert 0 < len(log_of(redis_url, ns)) or crash_after < 20
        spawned: list[str] = []
        await run_to_end(build(redis_url, ns, spawned))  # everything restarted: state only from Redis
        assert spawned == list(LAYOUT)
        assert log_of(redis_url, ns) == reference, f"crash after {crash_after} steps changed the log"


@pytest.mark.anyio
async def test_a_failed_shard_is_spawned_again_and_the_tick_retried(redis_url: str, reference: list[bytes]) -> None:
    spawned: list[str] = []
    twin = build(redis_url, "flaky", spawned, fail={("s01", 30): 1, ("s02", 31): 2, ("s01", 120): 1})
    await run_to_end(twin)
    assert spawned == ["s01", "s02", "s01", "s02", "s02", "s01"], spawned
    assert twin.respawned == 4
    assert log_of(redis_url, "flaky") == reference


@pytest.mark.anyio
async def test_a_crash_between_the_shards_and_the_commit_redoes_the_tick(
    redis_url: str, reference: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shards have folded tick t (and checkpointed it) but the commit never happened: the restarted
    coordinator redoes t from its intent and the shards answer with their stored result, not a second fold."""
    twin = build(redis_url, "nocommit")
    await run_to_end(twin, steps=50)
    real_commit = RedisEventLog.commit

    async def lost(self: RedisEventLog, *args: Any, **kwargs: Any) -> list[str]:
        raise ConnectionError("Redis went away before the commit")

    monkeypatch.setattr(RedisEventLog, "commit", lost)
    with pytest.raises(ConnectionError):
        await twin.step()
    monkeypatch.setattr(RedisEventLog, "commit", real_commit)
    await run_to_end(build(redis_url, "nocommit"))
    assert log_of(redis_url, "nocommit") == reference


@pytest.mark.anyio
async def test_a_shard_answers_a_repeated_tick_with_the_same_result(redis_url: str) -> None:
    source = ReplaySource(TRACE)
    samples = [s for s in await source.read() if getattr(s, "node", None) == "n01"]
    shard = TwinShard("s01", ["n01"], redis_url=redis_url, namespace="rep")
    first = await shard.work(1, samples)
    again = await shard.work(1, samples)
    assert again is first
    reborn = TwinShard("s01", ["n01"], redis_url=redis_url, namespace="rep")
    repeated = await reborn.work(1, samples)
    assert repeated.events == first.events and repeated.clocks == first.clocks
    assert (await reborn.snapshot())["samples_seen"] == (await shard.snapshot())["samples_seen"]


def test_replay_source_seeks_to_a_position() -> None:
    import asyncio

    async def batches(src: ReplaySource, n: int) -> list[list]:
        return [await src.read() for _ in range(n)]

    whole = asyncio.run(batches(ReplaySource(TRACE), 10))
    src = ReplaySource(TRACE)
    src.seek(6)
    assert src.position() == 6
    assert asyncio.run(batches(src, 4)) == whole[6:]
    src.seek(10_000)
    assert src.done and asyncio.run(src.read()) == []
