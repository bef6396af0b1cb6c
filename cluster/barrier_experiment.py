"""The barrier experiment on Ray: N async worker actors, R rounds, one barrier, measured against theory.

The workers stand for remote GPU nodes, so by default their "work" is ``asyncio.sleep`` (a remote node is
busy, this machine is not) and they reserve no CPU (``num_cpus=0``): N is not bounded by local cores.
Each round the coordinator actor sends every worker its draw and a common start time; a worker's reply is
its arrival at the barrier (the coordinator keeps the pure :class:`actors.twin.barrier.Barrier` and waits
on it with a named timeout), and the round ends when the last worker has arrived. The result sets the
measurement beside :func:`actors.twin.barrier_theory.theory` for the same workers, work and straggler.

Ray's per-call cost is real (~1-2 ms per actor call on a 2-core machine, so ~N ms to reach N workers). If
each worker started on receipt, that dispatch skew would blur into the work and no subtraction could undo
it (it overlaps the work). So the coordinator announces the tick's start time, a measured margin ahead,
and every worker starts then: a round splits cleanly into ``lead`` (dispatch, before the common start),
``span`` (common start to last arrival: the work and the wait the theory describes) and ``tail`` (replies
after the last arrival). ``measured_round_ms`` is the span; ``overhead_ms = lead + tail`` and
``raw_round_ms`` (all of it) are reported beside it, and a worker that got its call after the start is
counted in ``late_starts`` and its lateness stays inside the span.

Actor classes carry no decorators; :func:`run_experiment` applies ``ray.remote`` (this module is part of
the composition root).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import ray
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from actors.twin.barrier import Barrier
from actors.twin.barrier_theory import BarrierTheory, WorkDist, rounds_for_precision, theory

#: Named limits on every wait (seconds). A round may also take as long as its longest draw.
BARRIER_TIMEOUT_S = 30.0
STARTUP_TIMEOUT_S = 180.0
#: Rounds run before measuring: warm-up (discarded), then zero-work rounds that measure the fixed overhead.
WARMUP_ROUNDS = 5
CALIBRATION_ROUNDS = 20
#: The common start is this much past the calibrated dispatch time (p95 * factor + floor).
LEAD_FACTOR = 1.25
LEAD_FLOOR_MS = 2.0
#: Target relative standard error of the mean round time when the caller does not fix the rounds.
TARGET_REL_SE = 0.03

WorkMode = Literal["sleep", "cpu"]


class ExperimentConfig(BaseModel):
    """One barrier experiment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workers: int = Field(default=8, ge=1, description="Number of worker actors (barrier participants).")
    rounds: int | None = Field(default=None, ge=1, description="Rounds; None picks enough for 3 % std error.")
    work: WorkDist = Field(description="Per-worker work distribution (ms is the mean).")
    straggler: float = Field(default=1.0, gt=0, description="Factor applied to worker w00's work.")
    seed: int = Field(default=0, description="Seed of the numpy Generator that draws the work.")
    work_mode: WorkMode = Field(default="sleep", description="sleep: remote-node stand-in; cpu: burn local CPU.")

    def resolved_rounds(self) -> int:
        """The rounds to run: as given, or enough that sampling noise stays well inside 15 %."""
        if self.rounds is not None:
            return self.rounds
        return rounds_for_precision(self.work, self.workers, self.straggler, rel_se=TARGET_REL_SE)


class ExperimentResult(BaseModel):
    """Measured and theoretical barrier cost. Times are milliseconds per round unless named otherwise."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workers: int
    rounds: int
    work: str
    straggler: float
    straggler_worker: str | None
    seed: int
    work_mode: WorkMode
    measured_round_ms: float = Field(description="Mean span: common start to last arrival (work + wait).")
    stderr_round_ms: float = Field(description="Standard error of measured_round_ms.")
    p99_round_ms: float = Field(description="99th percentile of the spans.")
    theory: BarrierTheory = Field(description="What theory expects for the same workers, work and straggler.")
    ratio: float = Field(description="measured_round_ms / theory.round_ms.")
    drawn_round_ms: float = Field(description="Mean of the max of the actual draws: theory for this sample.")
    raw_round_ms: float = Field(description="Mean round, dispatch to last reply: span plus Ray overhead.")
    raw_ratio: float = Field(description="raw_round_ms / theory.round_ms.")
    overhead_ms: float = Field(description="Mean lead + tail: the Ray cost of a round outside the span.")
    lead_ms: float = Field(description="Dispatch to common start (margin over the calibrated dispatch time).")
    tail_ms: float = Field(description="Last arrival to the coordinator holding every reply.")
    dispatch_ms: float = Field(description="Mean time for the round's calls to reach the last worker.")
    zero_work_round_ms: float = Field(description="Mean raw round with zero work and no lead (calibration).")
    late_starts: int = Field(description="Worker-rounds whose call arrived after the common start.")
    driver_round_ms: float = Field(description="Mean round seen by the driver (one more Ray call).")
    measured_wait_ms: float = Field(description="Mean per-worker wait at the barrier.")
    p99_wait_ms: float = Field(description="99th percentile of all per-worker waits.")
    mean_round_p99_wait_ms: float = Field(description="Mean over rounds of each round's p99 wait.")
    efficiency: float = Field(description="busy / (workers * span) over all rounds.")
    slowest_worker: str | None
    slowest_share: float | None = Field(description="Fraction of rounds the slowest worker was last.")
    elapsed_s: float = Field(description="Wall time of the measured rounds.")


class BarrierWorker:
    """A stand-in for a remote GPU node: works for its draw and reports its start and arrival stamps."""

    def __init__(self, name: str, work_mode: WorkMode = "sleep") -> None:
        self._name = name
        self._mode = work_mode

    async def ready(self) -> str:
        """Answer once the actor is up."""
        return self._name

    async def work(self, tick: int, work_ms: float, start_at: float) -> tuple[float, float, float]:
        """Wait for the tick's common start, work ``work_ms``; returns ``(received, started, arrived)`` (s)."""
        received = time.time()
        if start_at > received:
            await asyncio.sleep(start_at - received)
        started = time.time()
        if self._mode == "sleep":
            await asyncio.sleep(work_ms / 1000.0)
        else:  # burn this machine's CPU on purpose: shows what happens when N exceeds the local cores
            end = time.perf_counter() + work_ms / 1000.0
            while time.perf_counter() < end:
                pass
        return received, started, time.time()


class BarrierCoordinator:
    """Starts each round on every worker and keeps the barrier; a worker's reply is its arrival.

    One Ray call per worker per round: the dispatch carries the draw and the common start time, its reply
    carries the arrival. (Workers calling back into the coordinator and blocking there until released
    doubles the calls; on a 2-core machine that doubled the overhead.)
    """

    def __init__(self, names: Sequence[str], timeout_s: float = BARRIER_TIMEOUT_S) -> None:
        self._names = tuple(names)
        self._timeout_s = timeout_s
        self._workers: list[Any] = []
        self._barrier = Barrier(self._names)

    async def attach(self, workers: list[Any]) -> int:
        """Take the worker handles, in the order of the names."""
        self._workers = list(workers)
        return len(self._workers)

    async def reset(self, window: int) -> None:
        """Start a fresh barrier (drops warm-up and calibration ticks) rolling over ``window`` ticks."""
        self._barrier = Barrier(self._names, window=max(window, 1))

    async def run_round(self, tick: int, draws_ms: list[float], lead_ms: float) -> dict[str, Any]:
        """Run one round starting ``lead_ms`` from now; returns its timing split and the tick's statistics."""
        limit = self._timeout_s + (lead_ms + max(draws_ms, default=0.0)) / 1000.0
        t0 = time.time()
        start_at = t0 + lead_ms / 1000.0
        refs = [w.work.remote(tick, d, start_at) for w, d in zip(self._workers, draws_ms, strict=True)]
        done = asyncio.ensure_future(self._barrier.wait_tick(tick, limit))
        received: list[float] = []

        async def arrival(name: str, ref: Any) -> None:
            got, started, arrived = await ref
            received.append(got)
            self._barrier.arrive(name, tick, started, arrived)

        await asyncio.wait_for(asyncio.gather(*(arrival(n, r) for n, r in zip(self._names, refs, strict=True))),
                               timeout=limit)
        stats = await done
        t1 = time.time()
        return {
            "raw_ms": (t1 - t0) * 1000.0,
            "lead_ms": (stats.started - t0) * 1000.0,
            "tail_ms": (t1 - stats.ended) * 1000.0,
            "dispatch_ms": (max(received) - t0) * 1000.0,
            "late": sum(r > start_at for r in received),
            "stats": stats.model_dump(),
        }

    async def summary(self) -> dict[str, Any]:
        """The barrier's rolling summary."""
        return self._barrier.summary()


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[None]:
    """Join ``address``, or start a private local Ray (4 logical CPUs, short temp dir); shut down after."""
    temp_dir: str | None = None
    if address:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    else:
        # Unix socket paths are limited to ~107 bytes, so keep the temp dir short.
        temp_dir = tempfile.mkdtemp(prefix="olb-", dir="/tmp")
        ray.init(address="local", num_cpus=4, include_dashboard=False, _temp_dir=temp_dir,
                 logging_level=logging.ERROR, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)


def run_experiment(config: ExperimentConfig, progress: bool = False) -> ExperimentResult:
    """Run one experiment on the connected Ray cluster and compare it with theory.

    Args:
        config: Workers, rounds, work distribution, straggler, seed and work mode.
        progress: Show a tqdm bar over the rounds on stderr.

    Returns:
        Measured figures beside the theory for the same configuration.
    """
    n, rounds = config.workers, config.resolved_rounds()
    names = [f"w{i:02d}" for i in range(n)]
    rng = np.random.default_rng(config.seed)
    draws = config.work.sample(rng, (rounds, n))
    if config.straggler != 1.0:
        draws[:, 0] *= config.straggler
    timeout_s = BARRIER_TIMEOUT_S + float(draws.max(initial=0.0)) / 1000.0

    coordinator_cls = ray.remote(num_cpus=0, max_concurrency=max(1000, 4 * n))(BarrierCoordinator)
    worker_cls = ray.remote(num_cpus=0)(BarrierWorker)
    coordinator = coordinator_cls.remote(names, timeout_s)
    workers = [worker_cls.remote(name, config.work_mode) for name in names]
    try:
        ray.get([coordinator.attach.remote(workers), *[w.ready.remote() for w in workers]], timeout=STARTUP_TIMEOUT_S)
        zero = [0.0] * n
        for tick in range(WARMUP_ROUNDS):
            ray.get(coordinator.run_round.remote(tick, zero, 0.0), timeout=timeout_s)
        ray.get(coordinator.reset.remote(CALIBRATION_ROUNDS))
        calibration = [ray.get(coordinator.run_round.remote(t, zero, 0.0), timeout=timeout_s)
                       for t in range(CALIBRATION_ROUNDS)]
        lead_ms = LEAD_FACTOR * float(np.percentile([c["dispatch_ms"] for c in calibration], 95)) + LEAD_FLOOR_MS
        ray.get(coordinator.reset.remote(rounds))

        outs: list[dict[str, Any]] = []
        driver_ms: list[float] = []
        began = time.perf_counter()
        bar = tqdm(range(rounds), desc=f"barrier N={n}", unit="round", file=sys.stderr, disable=not progress,
                   leave=False)
        for tick in bar:
            t0 = time.perf_counter()
            ref = coordinator.run_round.remote(tick, draws[tick].tolist(), lead_ms)
            outs.append(ray.get(ref, timeout=2 * timeout_s))
            driver_ms.append((time.perf_counter() - t0) * 1000.0)
        elapsed = time.perf_counter() - began
        summary = ray.get(coordinator.summary.remote(), timeout=timeout_s)
    finally:
        for handle in [*workers, coordinator]:
            ray.kill(handle)

    span = np.array([o["stats"]["span_ms"] for o in outs])
    raw = float(np.mean([o["raw_ms"] for o in outs]))
    lead = float(np.mean([o["lead_ms"] for o in outs]))
    tail = float(np.mean([o["tail_ms"] for o in outs]))
    expected = theory(config.work, n, config.straggler)
    measured = float(span.mean())
    per_theory = expected.round_ms if expected.round_ms > 0 else float("nan")
    return ExperimentResult(
        workers=n,
        rounds=rounds,
        work=config.work.spec,
        straggler=config.straggler,
        straggler_worker=names[0] if config.straggler != 1.0 else None,
        seed=config.seed,
        work_mode=config.work_mode,
        measured_round_ms=measured,
        stderr_round_ms=float(span.std(ddof=1) / np.sqrt(rounds)) if rounds > 1 else 0.0,
        p99_round_ms=float(np.percentile(span, 99)),
        theory=expected,
        ratio=measured / per_theory,
        drawn_round_ms=float(draws.max(axis=1).mean()),
        raw_round_ms=raw,
        raw_ratio=raw / per_theory,
        overhead_ms=lead + tail,
        lead_ms=lead,
        tail_ms=tail,
        dispatch_ms=float(np.mean([o["dispatch_ms"] for o in outs])),
        zero_work_round_ms=float(np.mean([c["raw_ms"] for c in calibration])),
        late_starts=int(sum(o["late"] for o in outs)),
        driver_round_ms=float(np.mean(driver_ms)),
        measured_wait_ms=float(summary["mean_wait_ms"]),
        p99_wait_ms=float(summary["p99_wait_ms"]),
        mean_round_p99_wait_ms=float(np.mean([o["stats"]["p99_wait_ms"] for o in outs])),
        efficiency=float(summary["efficiency"]),
        slowest_worker=summary["slowest_shard"],
        slowest_share=summary["slowest_share"],
        elapsed_s=elapsed,
    )


def run_sweep(config: ExperimentConfig, ns: Sequence[int], progress: bool = False) -> list[ExperimentResult]:
    """Run the same experiment for each worker count in ``ns`` (for the wait-cost-vs-N plot)."""
    return [run_experiment(config.model_copy(update={"workers": n}), progress=progress) for n in ns]
