"""The sharded twin (seed: parallel processing): modification work per shard, propagation, the barrier.

The fleet is split across shards by node or by rack (a rack = the nodes one cooling unit serves). Each
tick every shard folds its own GPUs' samples (the modification work), returns its delta (GPU clocks, which
jobs spanning shards need; cooling units span shards too, so the coordinator owns them), then the tick
waits at the :class:`~actors.twin.barrier.Barrier` until every shard has arrived. Pure: the Ray shell in
:mod:`actors.twin.shard_service` calls the same methods across processes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from actors.twin.barrier import Barrier
from actors.twin.events import Event
from actors.twin.model import Thresholds, TwinModel
from actors.twin.state import (
    StateError,
    barrier_from_state,
    barrier_to_state,
    events_from_state,
    events_to_state,
    need,
    num,
    strs,
)
from cluster.telemetry.samples import CoolingSample, GpuSample, JobSample, LinkSample, Sample

COORDINATOR_KINDS = {"cooling_degraded", "cooling_recovered", "action_executed", "action_failed"}


def partition(nodes: list[str], n_shards: int, by: Literal["node", "rack"] = "node",
              node_unit: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Split nodes into shards ``s01…``: contiguous blocks of nodes, or whole racks (cooling units).

    Raises:
        ValueError: no shards, or more shards than nodes (or racks).
    """
    if by == "rack":
        racks: dict[str, list[str]] = {}
        for n in nodes:
            racks.setdefault((node_unit or {}).get(n, "rack0"), []).append(n)
        groups = [racks[k] for k in sorted(racks)]
    else:
        groups = [[n] for n in nodes]
    if not 1 <= n_shards <= len(groups):
        raise ValueError(f"{n_shards} shards for {len(groups)} {by}s: need 1..{len(groups)}")
    bounds = np.linspace(0, len(groups), n_shards + 1).round().astype(int)
    return {f"s{k + 1:02d}": [n for g in groups[bounds[k]:bounds[k + 1]] for n in g] for k in range(n_shards)}


@dataclass
class ShardResult:
    """What one shard hands back for one tick: its events, its delta and its barrier timestamps."""

    shard: str
    tick: int
    events: list[Event]
    clocks: dict[str, float] = field(default_factory=dict)  # delta: GPU → SM clock, for jobs across shards
    started: float = 0.0
    arrived: float = 0.0

    def to_state(self) -> dict:
        """The answer as plain data (its events as their canonical JSON)."""
        return {"shard": self.shard, "tick": self.tick, "events": events_to_state(self.events),
                "clocks": dict(self.clocks), "started": self.started, "arrived": self.arrived}

    @classmethod
    def from_state(cls, d: dict) -> ShardResult:
        return cls(need(d["shard"], str, "shard"), need(d["tick"], int, "tick"), events_from_state(d["events"]),
                   {need(g, str, "gpu"): num(c, "clock") for g, c in need(d["clocks"], dict, "clocks").items()},
                   num(d["started"], "started"), num(d["arrived"], "arrived"))


class ShardCore:
    """One shard's twin: the GPUs of its nodes (cooling samples only teach it which unit serves a node)."""

    def __init__(self, shard: str, nodes: list[str], sensor_tau_s: float = 15.0) -> None:
        self.shard = shard
        self.nodes = set(nodes)
        self.model = TwinModel(sensor_tau_s=sensor_tau_s)

    def to_state(self) -> dict:
        """The shard's id, nodes and model as plain data."""
        return {"shard": self.shard, "nodes": sorted(self.nodes), "model": self.model.to_state()}

    @classmethod
    def from_state(cls, d: dict) -> ShardCore:
        core = cls(need(d["shard"], str, "shard"), strs(d["nodes"], "nodes"))
        core.model = TwinModel.from_state(need(d["model"], dict, "model"))
        return core

    def work(self, tick: int, samples: list[Sample]) -> ShardResult:
        """Modification work for one tick, then the delta to propagate."""
        started = time.time()
        events = [e for e in self.model.ingest(samples) if e.kind not in COORDINATOR_KINDS]
        touched = {s.name for s in samples if isinstance(s, GpuSample)}
        m = self.model
        clocks = {g: float(m.clock_mhz[m.index[g]]) for g in sorted(touched)}
        return ShardResult(self.shard, tick, events, clocks, started, time.time())


class ShardedTwin:
    """Routes samples to shards, runs a tick, records barrier arrivals and merges the deltas.

    In-process the shards run one after another (their arrivals are still recorded honestly); the Ray
    shell runs the same ``ShardCore.work`` in parallel actors and feeds :meth:`merge` the results.
    """

    def __init__(self, shards: dict[str, list[str]], sensor_tau_s: float = 15.0, with_cores: bool = True,
                 thresholds: Thresholds | None = None) -> None:
        self.layout = shards
        self.shard_of = {n: s for s, nodes in shards.items() for n in nodes}
        # Without cores when the shards run elsewhere (the Ray coordinator): only routing, merge and the fleet.
        self.cores = {s: ShardCore(s, nodes, sensor_tau_s) for s, nodes in shards.items()} if with_cores else {}
        self.barrier = Barrier(list(shards))
        # Cooling, links, jobs, action results, the LLM facility; ``thresholds`` are its (the shards' are defaults).
        self.fleet = TwinModel(sensor_tau_s=sensor_tau_s, thresholds=thresholds)
        self.clocks: dict[str, float] = {}
        self.tick = 0

    def to_state(self) -> dict:
        """Layout, barrier, fleet model, clocks and tick as plain data (and the cores, when it has them)."""
        return {"layout": self.layout, "barrier": barrier_to_state(self.barrier), "fleet": self.fleet.to_state(),
                "clocks": dict(self.clocks), "tick": self.tick,
                "cores": {s: c.to_state() for s, c in self.cores.items()}}

    @classmethod
    def from_state(cls, d: dict) -> ShardedTwin:
        layout = {need(s, str, "shard"): strs(nodes, "nodes") for s, nodes in need(d["layout"], dict, "layout").items()}
        fleet = TwinModel.from_state(need(d["fleet"], dict, "fleet"))
        twin = cls(layout, fleet.sensor_tau_s, with_cores=False)
        twin.barrier, twin.fleet = barrier_from_state(d["barrier"]), fleet
        if set(twin.barrier.shards) != set(layout):
            raise StateError("the barrier's shards are not the layout's")
        twin.clocks = {need(g, str, "gpu"): num(c, "clock") for g, c in need(d["clocks"], dict, "clocks").items()}
        twin.tick = need(d["tick"], int, "tick")
        twin.cores = {need(s, str, "shard"): ShardCore.from_state(c) for s, c in need(d["cores"], dict, "").items()}
        return twin

    def route(self, samples: list[Sample]) -> tuple[dict[str, list[Sample]], list[Sample]]:
        """Per-shard sample lists, plus the fleet-level samples the coordinator folds itself."""
        per: dict[str, list[Sample]] = {s: [] for s in self.layout}
        fleet: list[Sample] = []
        for s in samples:
            if isinstance(s, GpuSample):
                per[self.shard_of.get(s.node, next(iter(self.layout)))].append(s)
                self.fleet.now = max(self.fleet.now, s.ts)  # the fleet model keeps the twin's time (stamps results)
            elif isinstance(s, CoolingSample):
                fleet.append(s)
                for shard in sorted({self.shard_of[n] for n in s.serves if n in self.shard_of}):
                    per[shard].append(s)
            else:
                fleet.append(s)
        return per, fleet

    def merge(self, results: list[ShardResult], fleet_samples: list[Sample]) -> list[Event]:
        """Record arrivals, propagate the deltas and fold the fleet-level samples; events in a fixed order."""
        for r in results:
            self.barrier.arrive(r.shard, r.tick, r.started, r.arrived)
            self.clocks.update(r.clocks)
        names = sorted(self.clocks)
        index = {g: k for k, g in enumerate(names)}
        clock = np.array([self.clocks[g] for g in names])
        events: list[Event] = [e for r in sorted(results, key=lambda r: r.shard) for e in r.events]
        for s in fleet_samples:
            if isinstance(s, LinkSample | JobSample):
                events += self.fleet.net.ingest(s, clock, index)
            else:  # cooling, action results and every other fleet-level kind: the fleet model folds it
                events += self.fleet.ingest([s])
        return sorted(events, key=lambda e: (e.ts, e.kind != "cooling_degraded", e.subject, e.kind))

    def ingest(self, samples: list[Sample]) -> list[Event]:
        """One tick in-process: every shard works, arrives at the barrier, then the deltas merge."""
        self.tick += 1
        per, fleet = self.route(samples)
        results = [self.cores[s].work(self.tick, per[s]) for s in self.layout]
        return self.merge(results, fleet)

    def snapshot(self, shard_snaps: list[dict] | None = None) -> dict:
        """The fleet as one snapshot (the shards' GPUs merged) with the barrier's wait cost."""
        snaps = shard_snaps if shard_snaps is not None else [c.model.snapshot() for c in self.cores.values()]
        return merge_snapshots(snaps, self.fleet.snapshot(), self.barrier, self.job_members())

    def job_members(self) -> dict[str, tuple[str, ...]]:
        """Job → its GPUs' names (jobs span shards; the coordinator's fleet model knows them)."""
        return {j: tuple(js.gpus) for j, js in self.fleet.net.jobs.items()}


def merge_energy(snaps: list[dict], jobs: dict[str, tuple[str, ...]]) -> dict:
    """The fleet's energy from the shards': joules per node (each node is in one shard), per job (summed over its
    GPUs, whichever shards they are in), and the share lost to throttling weighted by each shard's joules."""
    total = sum(s["energy"]["total_j"] for s in snaps)
    lost = sum(s["energy"]["total_j"] * s["energy"]["throttle_lost_share"] for s in snaps)
    per_gpu = {g["gpu"]: g["energy_j"] for s in snaps for g in s["gpus"]}
    nodes = {n: j for s in snaps for n, j in s["energy"]["nodes_j"].items()}
    return {"total_j": round(total, 1), "nodes_j": dict(sorted(nodes.items())),
            "jobs_j": {j: round(sum(per_gpu.get(g, 0.0) for g in gpus), 1) for j, gpus in sorted(jobs.items())},
            "throttle_lost_share": round(lost / total, 4) if total else 0.0}


def merge_snapshots(snaps: list[dict], fleet: dict, barrier: Barrier,
                    jobs: dict[str, tuple[str, ...]] | None = None) -> dict:
    """One snapshot from the shards' snapshots plus the coordinator's fleet-level view (``jobs``: job → GPUs)."""
    gpus = sorted((g for s in snaps for g in s["gpus"]), key=lambda g: g["gpu"])
    sensed = [g["sensed_c"] for g in gpus]
    last = barrier.last
    return {
        "ts": max([s["ts"] for s in snaps] + [fleet["ts"]]),
        "gpus": gpus,
        "units": fleet["units"],
        "nodes": sorted({n for s in snaps for n in s["nodes"]}),
        "hot_gpus": [g["gpu"] for g in gpus if g["alarm"]],
        "max_sensed_c": max(sensed) if sensed else None,
        "samples_seen": sum(s["samples_seen"] for s in snaps) + fleet["samples_seen"],
        "energy": merge_energy(snaps, jobs or {}),
        "network": fleet["network"],
        **({"llm": fleet["llm"]} if "llm" in fleet else {}),  # the LLM facility (actors.twin.llm_engine)
        "barrier": {**barrier.summary(), "last_tick": last.model_dump() if last else None},
    }
