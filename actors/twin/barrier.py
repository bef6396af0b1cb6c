"""The barrier the sharded twin waits at every tick, and what each tick's wait cost.

Every tick each shard does its modification work, propagates its delta and then waits until all shards
reach the same tick ("work & wait to make same state"). :class:`Barrier` records those arrivals, lets the
coordinator await a tick (:meth:`Barrier.wait_tick`) and turns each completed tick into :class:`TickStats`
(span, per-shard waits, the shard everyone waited for); :meth:`Barrier.summary` rolls them up for the status
snapshot. Pure (no Ray, no IO); the twin checkpoints it through ``actors.twin.state``. What a barrier
*should* cost (``E[max of N]``) is :mod:`actors.twin.barrier_theory`.

Times passed to :meth:`Barrier.arrive` are seconds on one clock (``time.time()`` across processes of one
host, or synchronised clocks across hosts); every statistic is reported in milliseconds.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, deque
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class TickStats(BaseModel):
    """What one completed tick cost: its span, the per-shard waits and the shard everyone waited for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tick: int = Field(description="The tick every shard reached.")
    shards: int = Field(description="Number of shards in the barrier.")
    started: float = Field(description="Earliest start of work among the shards, seconds.")
    ended: float = Field(description="Last arrival at the barrier, seconds.")
    span_ms: float = Field(description="Last arrival minus earliest start.")
    busy_ms: float = Field(description="Sum over shards of arrival minus own start (work + propagation).")
    mean_wait_ms: float = Field(description="Mean over shards of last arrival minus own arrival.")
    p99_wait_ms: float = Field(description="99th percentile of the per-shard waits (linear interpolation).")
    max_wait_ms: float = Field(description="Longest per-shard wait.")
    efficiency: float = Field(description="busy / (shards * span); 1.0 means nobody waited.")
    slowest: str = Field(description="The shard that arrived last, the one everyone waited for.")
    waits_ms: dict[str, float] = Field(description="Per-shard wait, keyed by shard id.")


#: Completed ticks of history a checkpoint keeps (the whole window would make every tick's checkpoint ~200 kB).
KEEP_ON_RESTART = 100


class Barrier:
    """Records shard arrivals tick by tick and computes the wait cost of each tick.

    One tick is open at a time: a shard cannot pass the barrier before every shard has reached it. The
    class is not thread-safe; in an async actor call :meth:`arrive` and :meth:`wait_tick` from the event
    loop's thread (any actor method does).

    Args:
        shards: The shard ids taking part; unique and non-empty.
        window: How many completed ticks :meth:`summary` rolls over.
    """

    def __init__(self, shards: Sequence[str], window: int = 1000) -> None:
        ids = tuple(shards)
        if not ids:
            raise ValueError("a barrier needs at least one shard")
        if len(set(ids)) != len(ids):
            dupes = sorted(s for s, c in Counter(ids).items() if c > 1)
            raise ValueError(f"duplicate shard ids: {', '.join(dupes)}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self._shards = ids
        self._known = frozenset(ids)
        self._open_tick: int | None = None
        self._arrivals: dict[str, tuple[float, float]] = {}  # shard -> (started, arrived) for the open tick
        self._last_tick: dict[str, int] = {}
        self._last_completed: int | None = None
        self._history: deque[TickStats] = deque(maxlen=window)
        self._completed = 0
        self._waiters: dict[int, asyncio.Future[TickStats]] = {}

    def __getstate__(self) -> dict:
        """Picklable (the twin checkpoints it every tick): waiters are futures of a running loop and are not
        kept, and of the history only the newest ``KEEP_ON_RESTART`` ticks (a restart's summary rolls over those)."""
        recent = list(self._history)[-KEEP_ON_RESTART:]
        return {**self.__dict__, "_waiters": {}, "_history": deque(recent, maxlen=self._history.maxlen)}

    @property
    def shards(self) -> tuple[str, ...]:
        """The shard ids, in the order given."""
        return self._shards

    @property
    def open_tick(self) -> int | None:
        """The tick some shards have reached and others not yet, if any."""
        return self._open_tick

    @property
    def pending(self) -> tuple[str, ...]:
        """Shards not yet arrived at the open tick (all shards when no tick is open)."""
        return tuple(s for s in self._shards if s not in self._arrivals)

    @property
    def last(self) -> TickStats | None:
        """Statistics of the most recently completed tick."""
        return self._history[-1] if self._history else None

    def arrive(self, shard: str, tick: int, started: float, arrived: float) -> TickStats | None:
        """Record that ``shard`` finished its work for ``tick`` and reached the barrier.

        Args:
            shard: A shard id given at construction.
            tick: The tick the shard reached; each shard's ticks strictly increase.
            started: When the shard started its work for this tick, seconds.
            arrived: When it reached the barrier, seconds; not before ``started``.

        Returns:
            The tick's statistics when this was the last arrival, else ``None``.

        Raises:
            ValueError: Unknown shard, duplicate arrival, a tick going backwards, a shard running ahead of
                the open tick, or non-finite / reversed times.
        """
        if shard not in self._known:
            raise ValueError(f"arrival for unknown shard {shard!r} (known: {', '.join(self._shards)})")
        if not (math.isfinite(started) and math.isfinite(arrived)):
            raise ValueError(f"shard {shard!r} tick {tick}: times must be finite, got {started}, {arrived}")
        if arrived < started:
            raise ValueError(f"shard {shard!r} tick {tick}: arrived ({arrived}) before it started ({started})")
        previous = self._last_tick.get(shard)
        if previous is not None and tick == previous:
            raise ValueError(f"duplicate arrival of shard {shard!r} at tick {tick}")
        if previous is not None and tick < previous:
            raise ValueError(f"tick went backwards for shard {shard!r}: {tick} after {previous}")
        if self._open_tick is None:
            if self._last_completed is not None and tick <= self._last_completed:
                raise ValueError(f"tick went backwards: {tick} is not after completed tick {self._last_completed}")
            self._open_tick = tick
        elif tick < self._open_tick:
            raise ValueError(f"tick went backwards for shard {shard!r}: {tick} while tick {self._open_tick} is open")
        elif tick > self._open_tick:
            raise ValueError(
                f"shard {shard!r} ran ahead to tick {tick} while tick {self._open_tick} is still open "
                f"(waiting for {', '.join(self.pending)})"
            )
        self._last_tick[shard] = tick
        self._arrivals[shard] = (started, arrived)
        if len(self._arrivals) < len(self._shards):
            return None
        return self._complete(tick)

    def _complete(self, tick: int) -> TickStats:
        arrivals = [(s, *self._arrivals[s]) for s in self._shards]
        ended = max(a for _, _, a in arrivals)
        started = min(st for _, st, _ in arrivals)
        span = ended - started
        waits = {s: (ended - a) * 1000.0 for s, _, a in arrivals}
        busy = sum(a - st for _, st, a in arrivals)
        wait_values = np.fromiter(waits.values(), dtype=float)
        # Ties go to the first shard in construction order: max() keeps the first maximum.
        slowest = max(arrivals, key=lambda row: row[2])[0]
        stats = TickStats(
            tick=tick,
            shards=len(arrivals),
            started=started,
            ended=ended,
            span_ms=span * 1000.0,
            busy_ms=busy * 1000.0,
            mean_wait_ms=float(wait_values.mean()),
            p99_wait_ms=float(np.percentile(wait_values, 99)),
            max_wait_ms=float(wait_values.max()),
            efficiency=busy / (len(arrivals) * span) if span > 0 else 1.0,
            slowest=slowest,
            waits_ms=waits,
        )
        self._history.append(stats)
        self._completed += 1
        self._last_completed = tick
        self._open_tick = None
        self._arrivals = {}
        for waited in sorted(t for t in self._waiters if t <= tick):
            waiter = self._waiters.pop(waited)
            if waiter.done():
                continue
            if waited == tick:
                waiter.set_result(stats)
            else:  # ticks may skip forward; a skipped tick never completes
                waiter.set_exception(ValueError(f"tick {waited} was skipped: the shards went on to tick {tick}"))
        return stats

    def stats(self, tick: int) -> TickStats:
        """Statistics of a completed tick still inside the rolling window.

        Raises:
            KeyError: The tick has not completed or has left the window.
        """
        for stats in reversed(self._history):
            if stats.tick == tick:
                return stats
        raise KeyError(f"tick {tick} is not a completed tick in the window")

    async def wait_tick(self, tick: int, timeout_s: float) -> TickStats:
        """Wait until every shard has reached ``tick``; the barrier wait itself.

        Args:
            tick: The tick to wait for (open, or not yet opened).
            timeout_s: Named limit on the wait, applied with ``asyncio.wait_for``.

        Returns:
            The completed tick's statistics.

        Raises:
            TimeoutError: Some shard did not arrive in time; the message names the missing shards.
            ValueError: The tick completed long ago and left the window.
        """
        if self._last_completed is not None and tick <= self._last_completed:
            try:
                return self.stats(tick)
            except KeyError:
                raise ValueError(f"tick {tick} completed and left the window") from None
        waiter = self._waiters.get(tick)
        if waiter is None:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters[tick] = waiter
        try:
            # shield: one waiter timing out must not cancel the shared future the others wait on.
            return await asyncio.wait_for(asyncio.shield(waiter), timeout=timeout_s)
        except TimeoutError:
            missing = ", ".join(self.pending) if self._open_tick == tick else "all shards"
            raise TimeoutError(f"barrier tick {tick} not complete after {timeout_s:g} s; missing: {missing}") from None

    def summary(self) -> dict[str, float | int | str | None]:
        """Rolling statistics over the window, for a status snapshot.

        Returns:
            ``ticks`` (completed since construction), ``window`` (ticks summarised), ``shards``,
            ``mean_wait_ms``, ``p99_wait_ms`` (over every per-shard wait in the window), ``mean_span_ms``,
            ``efficiency`` (total busy / (shards * total span)), ``slowest_shard`` (most often last),
            ``slowest_count`` and ``slowest_share``. Statistics are ``None`` before the first tick.
        """
        out: dict[str, float | int | str | None] = {
            "ticks": self._completed,
            "window": len(self._history),
            "shards": len(self._shards),
            "mean_wait_ms": None,
            "p99_wait_ms": None,
            "mean_span_ms": None,
            "efficiency": None,
            "slowest_shard": None,
            "slowest_count": 0,
            "slowest_share": None,
        }
        if not self._history:
            return out
        waits = np.array([w for s in self._history for w in s.waits_ms.values()], dtype=float)
        spans = sum(s.span_ms for s in self._history)
        busy = sum(s.busy_ms for s in self._history)
        counts = Counter(s.slowest for s in self._history)
        # most_common orders ties by first occurrence; prefer construction order for determinism.
        top = max(counts.values())
        name = next(s for s in self._shards if counts.get(s) == top)
        out.update(
            mean_wait_ms=float(waits.mean()),
            p99_wait_ms=float(np.percentile(waits, 99)),
            mean_span_ms=spans / len(self._history),
            efficiency=busy / (len(self._shards) * spans) if spans > 0 else 1.0,
            slowest_shard=name,
            slowest_count=top,
            slowest_share=top / len(self._history),
        )
        return out
