"""Acceptance (issue #14): a recorded trace that carries vLLM engine samples, replayed through the twin, gives its
``kv_cache_pressure`` (and ``llm_queue_backlog``) events byte for byte (canonical JSON): twice through the model,
through the sharded twin, and through the coordinator that appends them to the event log in Redis (the only
writer of telemetry-derived events), also when it crashes midway and resumes from its checkpoint.

The trace (``data/llm_engine_trace.jsonl``) and its events (``data/llm_engine_events.jsonl``) were recorded by
``tests/twin/llm_trace.py``: two replicas' real ``prometheus_client`` pages read by ``VllmSource``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from actors.twin.events import Event
from actors.twin.model import TwinModel
from actors.twin.shard_service import TwinCoordinator, TwinShard
from actors.twin.shards import ShardedTwin, partition
from actors.twin.state import load, pack
from cluster.actuators.feedback import FeedbackSource, MergedSource
from cluster.telemetry.quality import Validator
from cluster.telemetry.replay import ReplaySource, read_batches
from tests.twin.llm_trace import EVENTS, TRACE, record

LAYOUT = partition(["n01", "n02"], 2)


def batches(path: Path = TRACE) -> list[list[Any]]:
    out = []
    for samples, bad in read_batches(path, Validator()):
        assert not bad, bad
        out.append(samples)
    return out


def canonical(events: list[Event]) -> bytes:
    return "".join(e.to_json() + "\n" for e in events).encode()


def replay(twin: TwinModel | ShardedTwin) -> list[Event]:
    return [e for b in batches() for e in twin.ingest(b)]


def test_the_trace_is_what_the_vllm_source_records() -> None:
    assert TRACE.read_text() == record(), "llm_trace.py and the trace disagree: python -m tests.twin.llm_trace"


def test_replaying_the_trace_twice_gives_its_events_byte_for_byte() -> None:
    first, second = canonical(replay(TwinModel())), canonical(replay(TwinModel()))
    assert first == second == EVENTS.read_bytes()
    kinds = [Event.model_validate_json(line).kind for line in first.splitlines()]
    assert kinds == ["kv_cache_pressure", "llm_queue_backlog", "kv_cache_pressure"]


def test_the_sharded_twin_folds_them_at_the_coordinator_and_gives_the_same_bytes() -> None:
    twin = ShardedTwin(LAYOUT)
    events = replay(twin)
    assert canonical(events) == EVENTS.read_bytes()
    assert all("llm" not in c.model.snapshot() for c in twin.cores.values()), "LLM samples are fleet-level"
    llm = twin.snapshot()["llm"]
    assert [r["replica"] for r in llm["replicas"]] == ["r1", "r2"] and llm["ts"] == 180.0


def test_a_checkpoint_at_any_tick_goes_on_with_the_same_events() -> None:
    """The detector's state is in the model's checkpoint (msgpack): a model rebuilt from it after every tick gives
    the same events as one that never stopped, so a tick redone after a crash gives the same bytes."""
    model, events = TwinModel(), []
    for b in batches():
        events += model.ingest(b)
        model = load(pack("test.model", model.to_state()), "test.model", "k", TwinModel.from_state)
    assert canonical(events) == EVENTS.read_bytes()
    sharded, events = ShardedTwin(LAYOUT), []
    for b in batches():
        events += sharded.ingest(b)
        sharded = load(pack("test.sharded", sharded.to_state()), "test.sharded", "k", ShardedTwin.from_state)
    assert canonical(events) == EVENTS.read_bytes()


# --- the coordinator: the event log in Redis ------------------------------------------------------------------
def build(redis_url: str, ns: str) -> TwinCoordinator:
    """A coordinator as a (re)started actor gets it: a fresh source; shards in-process, resuming from Redis."""

    def spawn(shard: str) -> TwinShard:
        return TwinShard(shard, LAYOUT[shard], redis_url=redis_url, namespace=ns)

    return TwinCoordinator(MergedSource(ReplaySource(TRACE), FeedbackSource(redis_url, ns)), spawn, LAYOUT,
                           redis_url, ns)


async def run_to_end(twin: TwinCoordinator, steps: int | None = None) -> None:
    n = 0
    while (steps is None or n < steps) and not twin.source.sources[0].done:  # type: ignore[attr-defined]
        await twin.step()
        n += 1


def log_of(redis_url: str, ns: str) -> bytes:
    """The event log's events, canonical JSON a line (what the log holds, written by the coordinator alone),
    traceparent aside."""
    rows = redis.Redis.from_url(redis_url).xrange(f"{ns}:events")
    # The traceparent is a random trace id when a tracer is installed (another test may have installed one in this
    # process): not part of what the twin concludes, so it is compared blank, as bench/chaos.py does.
    return b"".join(Event.model_validate_json(f[b"event"]).model_copy(update={"traceparent": None}).to_json().encode()
                    + b"\n" for _, f in rows)


@pytest.mark.anyio
async def test_the_coordinator_appends_the_recorded_events_also_across_a_crash(redis_url: str) -> None:
    await run_to_end(build(redis_url, "llm-ref"))
    assert log_of(redis_url, "llm-ref") == EVENTS.read_bytes()
    # Inside r1's first episode, inside r2's backlog, the tick before r1's preemption: a detector that forgot
    # would raise an episode again, or miss the preemption (no reading to compare with).
    for crash_after in (9, 15, 23):
        ns = f"llm-crash{crash_after}"
        await run_to_end(build(redis_url, ns), steps=crash_after)
        await run_to_end(build(redis_url, ns))  # restarted: the detector's state only from the checkpoint
        assert log_of(redis_url, ns) == EVENTS.read_bytes(), f"a crash after {crash_after} ticks changed the log"
