"""The runtime barrier: arrivals, per-tick statistics, the rolling summary and the wait; pure, no Ray."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from pydantic import ValidationError

from actors.twin.barrier import Barrier, TickStats


def test_tick_stats_waits_span_efficiency_and_slowest() -> None:
    b = Barrier(["a", "b", "c"])
    assert b.arrive("a", 1, started=0.0, arrived=0.010) is None
    assert b.arrive("b", 1, started=0.002, arrived=0.030) is None
    assert b.pending == ("c",)
    stats = b.arrive("c", 1, started=0.001, arrived=0.020)
    assert isinstance(stats, TickStats)
    assert stats.slowest == "b"
    assert stats.span_ms == pytest.approx(30.0)
    assert stats.waits_ms == pytest.approx({"a": 20.0, "b": 0.0, "c": 10.0})
    assert stats.mean_wait_ms == pytest.approx(10.0)
    assert stats.max_wait_ms == pytest.approx(20.0)
    assert stats.p99_wait_ms == pytest.approx(float(np.percentile([20.0, 0.0, 10.0], 99)))
    assert stats.busy_ms == pytest.approx(10.0 + 28.0 + 19.0)
    assert stats.efficiency == pytest.approx(57.0 / (3 * 30.0))
    assert b.open_tick is None and b.last == stats and b.stats(1) == stats
    with pytest.raises(ValidationError):  # frozen
        stats.tick = 2  # type: ignore[misc]


def test_summary_rolls_and_names_the_usual_straggler() -> None:
    b = Barrier(["a", "b"], window=3)
    assert b.summary()["mean_wait_ms"] is None and b.summary()["ticks"] == 0
    for tick, (ta, tb) in enumerate([(1, 3), (1, 3), (3, 1), (1, 5)]):
        b.arrive("a", tick, tick * 10.0, tick * 10.0 + ta / 1000)
        b.arrive("b", tick, tick * 10.0, tick * 10.0 + tb / 1000)
    s = b.summary()
    assert s["ticks"] == 4 and s["window"] == 3 and s["shards"] == 2
    # window holds ticks 1..3: waits a=2,b=0 | a=0,b=2 | a=4,b=0
    assert s["mean_wait_ms"] == pytest.approx(8.0 / 6)
    assert s["p99_wait_ms"] == pytest.approx(float(np.percentile([2, 0, 0, 2, 4, 0], 99)))
    assert s["efficiency"] == pytest.approx((1 + 3 + 3 + 1 + 1 + 5) / (2 * (3 + 3 + 5)))
    assert s["slowest_shard"] == "b" and s["slowest_count"] == 2
    assert s["slowest_share"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("calls", "message"),
    [
        ([("x", 1)], "unknown shard 'x'"),
        ([("a", 1), ("a", 1)], "duplicate arrival of shard 'a' at tick 1"),
        ([("a", 2), ("b", 2), ("a", 1)], "tick went backwards for shard 'a'"),
        ([("a", 2), ("b", 2), ("c", 1)], "tick went backwards"),
        ([("a", 1), ("a", 2)], "ran ahead to tick 2 while tick 1 is still open"),
    ],
)
def test_bad_arrivals_raise_clear_value_errors(calls: list[tuple[str, int]], message: str) -> None:
    b = Barrier(["a", "b"] if calls[-1][0] != "c" else ["a", "b", "c"])
    if calls[-1][0] == "c":  # complete tick 2 with c too, then c goes back to 1
        calls = [("a", 2), ("b", 2), ("c", 2), ("c", 1)]
    with pytest.raises(ValueError, match=message):
        for shard, tick in calls:
            b.arrive(shard, tick, 0.0, 0.001)


def test_bad_times_and_construction() -> None:
    b = Barrier(["a"])
    with pytest.raises(ValueError, match="before it started"):
        b.arrive("a", 1, 1.0, 0.5)
    with pytest.raises(ValueError, match="finite"):
        b.arrive("a", 1, 0.0, math.nan)
    with pytest.raises(ValueError, match="duplicate shard ids: a"):
        Barrier(["a", "a"])
    with pytest.raises(ValueError, match="at least one shard"):
        Barrier([])


def test_wait_tick_releases_all_waiters_and_times_out_by_name() -> None:
    async def scenario() -> None:
        b = Barrier(["a", "b"])
        waiters = [asyncio.create_task(b.wait_tick(7, timeout_s=5.0)) for _ in range(3)]
        await asyncio.sleep(0)
        b.arrive("a", 7, 0.0, 0.01)
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiters)
        stats = b.arrive("b", 7, 0.0, 0.02)
        assert [await w for w in waiters] == [stats] * 3
        assert await b.wait_tick(7, timeout_s=0.01) == stats  # already complete
        b.arrive("a", 8, 1.0, 1.01)
        with pytest.raises(TimeoutError, match="tick 8 not complete after 0.05 s; missing: b"):
            await b.wait_tick(8, timeout_s=0.05)
        late = asyncio.create_task(b.wait_tick(8, timeout_s=5.0))  # the shared future survived the timeout
        await asyncio.sleep(0)
        assert not late.done()
        b.arrive("b", 8, 1.0, 1.02)
        assert (await late).tick == 8

    asyncio.run(scenario())
