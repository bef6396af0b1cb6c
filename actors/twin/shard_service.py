"""The Ray shell of the sharded twin: ``TwinShard`` actors and a ``TwinCoordinator`` (no decorators here).

The coordinator has the same async methods as :class:`~actors.twin.service.TwinService` (``run, stop,
step, snapshot, topology, status, recent_events``); ``cluster/twin_deploy.py`` applies ``ray.remote``.

**Resuming exactly** (the chaos bench kills these at random). Every tick is committed in one Redis
script: its events and the coordinator's checkpoint (fleet model, barrier, tick, source position), *fenced* by
the committed tick (``<ns>:twin:tick``): a commit goes in only if the fence still holds the tick it was computed
after, so a tick is never appended twice, whoever sends it again (a client resending a commit whose reply was
lost, an old coordinator instance still running when its replacement has taken over). What
was read and not yet committed is written first as the *intent*, so a restarted coordinator redoes those
ticks with the same samples instead of losing them. A shard checkpoints its model and its last result
after every tick, and answers a repeated tick with that result: a tick redone after a crash gives the same
events, byte for byte. The coordinator supervises its shards: a shard that fails is spawned again (on a live
node, from its checkpoint) and the tick is retried. A checkpoint written with another shard layout is ignored.

**State is data** (:mod:`actors.twin.state`): checkpoints, answers and intents are versioned msgpack, never
pickle. A stored value that does not parse or validate is refused with an error naming its key; the shard then
starts afresh, the coordinator from a fresh model after the committed tick (the fence says which).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from actors.metrics import Metrics
from actors.twin.eventlog import FenceError, RedisEventLog
from actors.twin.model import Thresholds
from actors.twin.service import count_samples, trace_events, twin_metrics
from actors.twin.shards import ShardCore, ShardedTwin, ShardResult, merge_snapshots
from actors.twin.state import StateError, load, need, pack, samples_from_state, samples_to_state
from cluster.telemetry.samples import TelemetrySource, source_position

log = logging.getLogger("opsloop.twin")

POLL_S = 0.25
SOURCE_TIMEOUT_S = 10.0
SHARD_TIMEOUT_S = 30.0
SHARD_KIND, CKPT_KIND, INTENT_KIND = "twin.shard", "twin.coordinator", "twin.intent"


def _shard_state(d: dict) -> tuple[ShardCore, ShardResult | None]:
    return ShardCore.from_state(need(d["core"], dict, "core")), (
        ShardResult.from_state(need(d["last"], dict, "last")) if d["last"] is not None else None)


def _coordinator_state(d: dict) -> tuple[ShardedTwin, dict[str, str], Any]:
    acted = {need(k, str, "target"): need(v, str, "trace") for k, v in need(d["acted"], dict, "acted").items()}
    return ShardedTwin.from_state(need(d["twin"], dict, "twin")), acted, d["source"]


def _intent_state(d: dict) -> tuple[list[tuple[int, list]], Any]:
    groups = [(need(t, int, "tick"), samples_from_state(g)) for t, g in need(d["groups"], list, "groups")]
    return groups, d["source"]


class TwinShard:
    """One shard's twin in its own actor; with ``redis_url`` it checkpoints every tick and resumes from it."""

    def __init__(self, shard: str, nodes: list[str], sensor_tau_s: float = 15.0, redis_url: str | None = None,
                 namespace: str = "opsloop") -> None:
        self.core = ShardCore(shard, nodes, sensor_tau_s)
        self.last: ShardResult | None = None
        self.redis = aioredis.Redis.from_url(redis_url) if redis_url else None
        self.key = f"{namespace}:twin:shard:{shard}"
        self._restored = self.redis is None
        self._saved = True  # the last result is in the checkpoint
        self.refused: str | None = None  # why a stored checkpoint was refused, if one was
        self._lock = asyncio.Lock()  # a retried call can arrive while the first is still saving

    async def _restore(self) -> None:
        """Load the checkpoint once (call under ``_lock``: a second load finishing late would roll back what a
        tick folded meanwhile)."""
        if not self._restored:
            raw = await self.redis.get(self.key)  # type: ignore[union-attr]
            if raw is not None:
                try:
                    core, last = load(raw, SHARD_KIND, self.key, _shard_state)
                except StateError as exc:
                    self.refused = str(exc)
                    log.error("refusing twin shard checkpoint: %s; shard %s starts afresh", exc, self.core.shard)
                else:
                    if core.nodes == self.core.nodes:
                        self.core, self.last = core, last
            self._restored = True

    def _checkpoint(self) -> bytes:
        return pack(SHARD_KIND, {"core": self.core.to_state(),
                                 "last": self.last.to_state() if self.last is not None else None})

    async def work(self, tick: int, samples: list) -> ShardResult:
        """Fold this tick's samples; returns events, delta and barrier timestamps (a repeated tick: the same)."""
        async with self._lock:
            await self._restore()
            if self.last is None or tick != self.last.tick:
                if self.last is not None and tick < self.last.tick:
                    log.warning("shard %s is at tick %d and was asked for %d (Redis lost writes?): folding it anyway",
                                self.core.shard, self.last.tick, tick)
                self.last, self._saved = self.core.work(tick, samples), False
            if not self._saved and self.redis is not None:  # saved before answering: what was answered survives
                await self.redis.set(self.key, self._checkpoint())
            self._saved = True
            return self.last

    async def _ready(self) -> None:
        if not self._restored:
            async with self._lock:
                await self._restore()

    async def snapshot(self) -> dict:
        await self._ready()
        return self.core.model.snapshot()

    async def topology(self) -> dict[str, list[str]]:
        await self._ready()
        return self.core.model.topology()


class TwinCoordinator:
    """Reads the source, fans a tick out to the shards, waits at the barrier, appends the merged events.

    Args:
        source: The telemetry source; if it has ``position()``/``seek()`` it resumes where the last commit was.
        spawn: Shard id → a port with async ``work``, ``snapshot`` and ``topology`` (a ``RemotePort`` to a new
            or existing shard actor under Ray, a ``TwinShard`` in-process). Called at start and for a shard
            that failed.
        layout: Shard id → its nodes.
        redis_url: Where the event log and the checkpoints live; ``namespace`` prefixes their keys.
        thresholds: The fleet model's (e.g. the LLM facility's); a checkpoint keeps the ones it was made with.
    """

    def __init__(self, source: TelemetrySource, spawn: Callable[[str], Any], layout: dict[str, list[str]],
                 redis_url: str, namespace: str, sensor_tau_s: float = 15.0, thresholds: Thresholds | None = None
                 ) -> None:
        self.source = source
        self.thresholds = thresholds
        self.spawn = spawn
        self.layout = layout
        self.sensor_tau_s = sensor_tau_s
        self.shards: dict[str, Any] = {}
        self.twin = ShardedTwin(layout, sensor_tau_s, with_cores=False, thresholds=thresholds)
        self.redis = aioredis.Redis.from_url(redis_url)
        self.log = RedisEventLog(self.redis, f"{namespace}:events")
        self.ckpt_key = f"{namespace}:twin:ckpt"
        self.intent_key = f"{namespace}:twin:intent"
        self.fence_key = f"{namespace}:twin:tick"  # the last committed tick: a commit goes in once
        self.committed = ""  # what the fence held at the last restore or commit ('' = nothing committed)
        self.refused: list[str] = []  # stored values refused as invalid (also logged), newest last
        self._stop = asyncio.Event()
        self.meter = Metrics()
        self.acted: dict[str, str] = {}  # action target -> its trace (outcome spans)
        self.pending: list[tuple[int, list]] = []  # (tick, samples) read, written as intent, not yet committed
        self.position: Any = None  # the source's position after the read that gave ``pending``
        self.respawned = 0
        self._restored = False
        self._lock = asyncio.Lock()  # one tick or one restore at a time (snapshot calls interleave with run)
        self._inflight: asyncio.Future | None = None  # a read that timed out is awaited again, never dropped

    async def _restore(self) -> None:
        """Load the last commit and the intent after it (a fresh start when there is none)."""
        self.twin = ShardedTwin(self.layout, self.sensor_tau_s, with_cores=False, thresholds=self.thresholds)
        self.acted, self.pending, self.position = {}, [], None
        fence, raw = await self.redis.mget(self.fence_key, self.ckpt_key)
        self.committed = fence.decode() if fence is not None else ""
        if raw is not None:
            try:
                twin, acted, position = load(raw, CKPT_KIND, self.ckpt_key, _coordinator_state)
                if str(twin.tick) != self.committed:
                    raise StateError(f"{self.ckpt_key}: at tick {twin.tick}, but {self.fence_key} says "
                                     f"{self.committed or 'nothing'} was committed")
            except StateError as exc:
                self._refuse(exc)
            else:
                if twin.layout == self.layout:
                    self.twin, self.acted, self.position = twin, acted, position
                else:
                    log.warning("the twin's checkpoint has another shard layout; starting afresh")
        if self.twin.tick == 0 and self.committed.isdigit():
            self.twin.tick = int(self.committed)  # afresh, after what is committed: no tick goes in twice
        raw = await self.redis.get(self.intent_key)
        if raw is not None:
            try:
                groups, source = load(raw, INTENT_KIND, self.intent_key, _intent_state)
            except StateError as exc:
                self._refuse(exc)
            else:
                todo = [(t, g) for t, g in groups if t > self.twin.tick]
                if todo and todo[0][0] == self.twin.tick + 1:
                    self.pending, self.position = todo, source
        seek = getattr(self.source, "seek", None)
        if self.position is not None and callable(seek):
            try:
                seek(self.position)
            except (TypeError, ValueError, IndexError) as exc:  # a position that is not one of this source's
                self._refuse(StateError(f"{self.ckpt_key}: source position {str(self.position)[:80]}: {exc}"))
                self.pending = []
        for s in self.layout:
            if s not in self.shards:
                self.shards[s] = self.spawn(s)
        self._restored = True

    def _refuse(self, exc: StateError) -> None:
        """A stored value that is not a valid state: reported, never used (the twin goes on from what it can prove)."""
        log.error("refusing the twin's stored state: %s; going on without it", exc)
        self.refused = [*self.refused[-9:], str(exc)]

    async def _read(self) -> None:
        """Read the source into ``pending`` (one barrier tick per instant) and write it down as the intent."""
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self.source.read())
        try:
            samples = await asyncio.wait_for(asyncio.shield(self._inflight), SOURCE_TIMEOUT_S)
        finally:
            if self._inflight.done():  # read or failed: the next step reads anew (a timed-out one is awaited again)
                self._inflight = None
        count_samples(self.meter, self.source, samples)
        groups: list[list] = []
        for s in samples:  # a read may carry several ticks of a fast simulator
            if not groups or s.ts != groups[-1][-1].ts:
                groups.append([])
            groups[-1].append(s)
        if not groups:
            return
        self.pending = [(self.twin.tick + k + 1, g) for k, g in enumerate(groups)]
        self.position = source_position(self.source)
        intent = {"groups": [[t, samples_to_state(g)] for t, g in self.pending], "source": self.position}
        await self.redis.set(self.intent_key, pack(INTENT_KIND, intent))

    async def _fan_out(self, tick: int, per: dict[str, list]) -> list[ShardResult]:
        """Every shard's work for ``tick``; a shard that failed is spawned again and the error re-raised."""
        ids = list(self.layout)
        got = await asyncio.gather(
            *(asyncio.wait_for(self.shards[s].work(tick, per[s]), SHARD_TIMEOUT_S) for s in ids),
            return_exceptions=True,
        )
        failed = [(s, r) for s, r in zip(ids, got, strict=True) if isinstance(r, BaseException)]
        for s, err in failed:
            log.warning("twin shard %s failed at tick %d (%r); spawning it again", s, tick, err)
            try:
                self.shards[s] = self.spawn(s)
                self.respawned += 1
            except Exception:  # noqa: BLE001 - e.g. the old name not yet released: the next tick tries again
                log.exception("could not spawn twin shard %s yet", s)
        if failed:
            raise RuntimeError(f"tick {tick}: shards {', '.join(s for s, _ in failed)} failed") from failed[0][1]
        return list(got)  # type: ignore[arg-type]

    async def step(self) -> int:
        """Commit the pending ticks, or read and commit new ones; returns the number of events appended.

        If anything fails midway the in-memory state is dropped and the next step resumes from Redis.
        """
        async with self._lock:
            return await self._step()

    async def _step(self) -> int:
        if not self._restored:
            await self._restore()
        started = time.time_ns()
        if not self.pending:
            await self._read()
        total = 0
        try:
            while self.pending:
                tick, group = self.pending[0]
                per, fleet = self.twin.route(group)
                results = await self._fan_out(tick, per)
                events = trace_events(self.twin.merge(results, fleet), started, self.acted)
                self.twin.tick = tick
                state = pack(CKPT_KIND, {"twin": self.twin.to_state(), "acted": self.acted, "source": self.position})
                await self.log.commit(events, self.fence_key, self.committed, str(tick), also={self.ckpt_key: state})
                self.committed = str(tick)
                self.pending.pop(0)
                if self.twin.barrier.last is not None:
                    self.meter.observe("opsloop_barrier_wait_seconds", self.twin.barrier.last.mean_wait_ms / 1000)
                total += len(events)
        except FenceError as exc:  # committed already (or by another instance): go on from what is committed
            log.warning("twin tick %d not committed again: %s", self.pending[0][0] if self.pending else -1, exc)
            self._restored = False
            raise
        except BaseException:
            self._restored = False  # merge may have changed the model: resume from the last commit
            raise
        return total

    async def run(self) -> None:
        """Loop until ``stop``; a failed tick is logged and retried from the last commit."""
        while not self._stop.is_set():
            try:
                await self.step()
            except Exception:  # noqa: BLE001 - keep the twin alive through a source, shard or Redis hiccup
                log.exception("sharded twin step failed; retrying")
            await asyncio.sleep(POLL_S)

    async def stop(self) -> None:
        self._stop.set()

    async def _ready(self) -> None:
        if not self._restored:
            async with self._lock:
                if not self._restored:
                    await self._restore()

    async def snapshot(self) -> dict:
        await self._ready()
        snaps = await asyncio.gather(*(self.shards[s].snapshot() for s in self.twin.layout))
        return merge_snapshots(list(snaps), self.twin.fleet.snapshot(), self.twin.barrier, self.twin.job_members())

    async def topology(self) -> dict[str, list[str]]:
        await self._ready()
        tops = await asyncio.gather(*(self.shards[s].topology() for s in self.twin.layout))
        fleet = self.twin.fleet.topology()
        return {"gpu": sorted(g for t in tops for g in t["gpu"]), "node": sorted(n for t in tops for n in t["node"]),
                "unit": fleet["unit"], "link": fleet["link"], "job": fleet["job"]}

    async def status(self) -> dict:
        snap = await self.snapshot()
        return {
            "ts": snap["ts"], "gpus": len(snap["gpus"]), "nodes": snap["nodes"], "hot_gpus": snap["hot_gpus"],
            "max_sensed_c": snap["max_sensed_c"], "units": snap["units"], "samples_seen": snap["samples_seen"],
            "events_total": await self.log.length(), "events_by_kind": await self.log.counts(),
            "shards": {s: nodes for s, nodes in self.twin.layout.items()}, "barrier": snap["barrier"],
        }

    async def metrics(self) -> list[dict]:
        """Samples, quarantined records, events by kind and the barrier's wait (``actors.metrics`` dump)."""
        return await twin_metrics(self.meter, self.source, self.log)

    async def recent_events(self, count: int = 50) -> list[dict]:
        return [e.model_dump(mode="json") for e in await self.log.recent(count)]
