"""Links and jobs: all-reduce time from the slowest link, network bottlenecks and stragglers.

A job's GPUs step in lockstep, so its step time is set by its slowest GPU plus an all-reduce whose time is
set by the slowest link it crosses (the seed's "one issue spreads": a degraded link slows every GPU of
every job that crosses it). Link names follow the trace format: ``n01-n02/ib0`` joins two nodes,
``n01/nvlink`` or ``n01/pcie0`` lives in one node. Bandwidth is in Gb/s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from actors.twin.events import Event
from actors.twin.state import need, num, strs
from cluster.telemetry.samples import JobSample, LinkSample

#: Nominal bandwidth per link type, Gb/s: NVLink4 900 GB/s, PCIe Gen5 x16 128 GB/s, InfiniBand NDR 400 Gb/s.
NOMINAL_GBPS = {"nvlink": 900 * 8.0, "pcie": 128 * 8.0, "ib": 400.0}
DEGRADED_FRAC = 0.7
RECOVERED_FRAC = 0.9
STRAGGLER_PCT = 5.0
CONFIRM = 3
COMM_SHARE = 0.3  # share of a step spent in all-reduce when no step time is reported (for the estimate)


def link_nodes(link: str) -> tuple[str, ...]:
    """Nodes a link touches, from its name (``n01-n02/ib0`` → n01, n02; ``n01/nvlink`` → n01)."""
    ends = link.split("/", 1)[0]
    return tuple(sorted(set(ends.split("-"))))


@dataclass
class LinkState:
    type: str
    bandwidth_gbps: float
    nominal_gbps: float
    streak: int = 0
    degraded: bool = False

    @property
    def frac(self) -> float:
        return self.bandwidth_gbps / self.nominal_gbps if self.nominal_gbps else 1.0


@dataclass
class JobState:
    gpus: tuple[str, ...]
    nodes: tuple[str, ...]
    step_ms: float = 0.0
    baseline_ms: float = float("inf")
    streak: int = 0
    straggling: bool = False
    steps: list[float] = field(default_factory=list)


class NetworkModel:
    """What the twin knows of links and jobs, and the bottleneck and straggler detectors."""

    def __init__(self) -> None:
        self.links: dict[str, LinkState] = {}
        self.jobs: dict[str, JobState] = {}
        self.job_gpus: dict[str, list[int]] = {}

    def to_state(self) -> dict:
        """Links, jobs and the jobs' GPU indices as plain data (see :mod:`actors.twin.state`)."""
        return {"links": {k: {"type": v.type, "bandwidth_gbps": v.bandwidth_gbps, "nominal_gbps": v.nominal_gbps,
                              "streak": v.streak, "degraded": v.degraded} for k, v in self.links.items()},
                "jobs": {k: {"gpus": list(v.gpus), "nodes": list(v.nodes), "step_ms": v.step_ms,
                             "baseline_ms": v.baseline_ms, "streak": v.streak, "straggling": v.straggling,
                             "steps": list(v.steps)} for k, v in self.jobs.items()},
                "job_gpus": {k: list(v) for k, v in self.job_gpus.items()}}

    @classmethod
    def from_state(cls, d: dict) -> NetworkModel:
        net = cls()
        for k, v in need(d["links"], dict, "links").items():
            if v["type"] not in NOMINAL_GBPS:
                raise ValueError(f"link {k!r} of unknown type {v['type']!r}")
            net.links[need(k, str, "link")] = LinkState(
                v["type"], num(v["bandwidth_gbps"], "bandwidth"), num(v["nominal_gbps"], "nominal"),
                need(v["streak"], int, "streak"), need(v["degraded"], bool, "degraded"))
        for k, v in need(d["jobs"], dict, "jobs").items():
            net.jobs[need(k, str, "job")] = JobState(
                tuple(strs(v["gpus"], "job gpus")), tuple(strs(v["nodes"], "job nodes")), num(v["step_ms"], "step"),
                num(v["baseline_ms"], "baseline"), need(v["streak"], int, "streak"),
                need(v["straggling"], bool, "straggling"), [num(x, "step") for x in need(v["steps"], list, "steps")])
        net.job_gpus = {need(k, str, "job"): [need(i, int, "gpu index") for i in need(v, list, "gpus")]
                        for k, v in need(d["job_gpus"], dict, "job gpus").items()}
        return net

    def crosses(self, job: JobState, link: str) -> bool:
        """Whether a job's traffic goes over ``link``."""
        ends = link_nodes(link)
        if len(ends) == 2:
            return all(n in job.nodes for n in ends)
        return ends[0] in job.nodes and sum(g.startswith(ends[0] + "/") for g in job.gpus) > 1

    def ingest(self, s: LinkSample | JobSample, clock_mhz: np.ndarray, index: dict[str, int]) -> list[Event]:
        """Fold one link or job sample; returns the events it gives rise to."""
        if isinstance(s, LinkSample):
            return self._link(s)
        return self._job(s, clock_mhz, index)

    def _link(self, s: LinkSample) -> list[Event]:
        st = self.links.get(s.link)
        if st is None:
            st = self.links[s.link] = LinkState(s.type, s.bandwidth_gbps, NOMINAL_GBPS[s.type])
        st.bandwidth_gbps = s.bandwidth_gbps
        st.streak = st.streak + 1 if st.frac < DEGRADED_FRAC else 0
        if st.streak >= CONFIRM and not st.degraded:
            st.degraded = True
            jobs = sorted(j for j, js in self.jobs.items() if self.crosses(js, s.link))
            costs = [self._job_cost(self.jobs[j], st) for j in jobs]
            data = {"link": s.link, "type": s.type, "bandwidth_gbps": s.bandwidth_gbps, "nominal_gbps": st.nominal_gbps,
                    "frac": round(st.frac, 3), "jobs": jobs, "gpus_affected": sum(len(self.jobs[j].gpus) for j in jobs),
                    "cost_pct": round(max(costs), 1) if costs else 0.0, "errors": s.errors,
                    "allreduce_slowdown_x": round(1.0 / max(st.frac, 1e-3), 2)}
            return [Event.make("network_bottleneck", s.link, s.ts, "warning", data)]
        if st.degraded and st.frac >= RECOVERED_FRAC:
            st.degraded = False
        return []

    @staticmethod
    def _job_cost(job: JobState, link: LinkState) -> float:
        """Per cent of the job's step lost: measured against its baseline, else estimated from the link."""
        if job.steps and np.isfinite(job.baseline_ms):
            return 100.0 * max(job.step_ms / job.baseline_ms - 1.0, 0.0)
        return 100.0 * COMM_SHARE * (1.0 / max(link.frac, 1e-3) - 1.0)

    def _job(self, s: JobSample, clock_mhz: np.ndarray, index: dict[str, int]) -> list[Event]:
        js = self.jobs.get(s.job)
        if js is None or js.gpus != s.gpus:
            nodes = tuple(sorted({g.split("/", 1)[0] for g in s.gpus}))
            js = self.jobs[s.job] = JobState(s.gpus, nodes)
        self.job_gpus[s.job] = [index[g] for g in s.gpus if g in index]
        js.step_ms = s.step_ms
        js.steps = (js.steps + [s.step_ms])[-64:]
        js.baseline_ms = min(js.baseline_ms, s.step_ms)
        excess = 100.0 * (s.step_ms / js.baseline_ms - 1.0)
        js.streak = js.streak + 1 if excess > STRAGGLER_PCT else 0
        if js.straggling and excess < STRAGGLER_PCT / 2:
            js.straggling = False
        if js.streak < CONFIRM or js.straggling:
            return []
        js.straggling = True
        culprit, culprit_kind, factor = self._culprit(js, clock_mhz, index)
        data = {"job": s.job, "culprit": culprit, "culprit_kind": culprit_kind, "step_ms": s.step_ms,
                "baseline_ms": round(js.baseline_ms, 3), "cost_pct": round(100.0 * (1 - js.baseline_ms / s.step_ms), 1),
                "slowdown_x": round(factor, 3), "gpus": len(js.gpus)}
        return [Event.make("straggler", s.job, s.ts, "warning", data)]

    def _culprit(self, js: JobState, clock_mhz: np.ndarray, index: dict[str, int]) -> tuple[str, str, float]:
        """The GPU or link that sets the step: the one that is slowest relative to its peers."""
        gi = [(g, index[g]) for g in js.gpus if g in index]
        clocks = np.array([clock_mhz[i] for _, i in gi]) if gi else np.zeros(0)
        gpu_factor, gpu = 1.0, ""
        if len(clocks) and clocks.min() > 0:
            k = int(np.argmin(clocks))
            gpu_factor, gpu = float(np.median(clocks) / clocks[k]), gi[k][0]
        crossed = [(name, st) for name, st in sorted(self.links.items()) if self.crosses(js, name)]
        link_factor, link = 1.0, ""
        if crossed:
            name, st = min(crossed, key=lambda kv: (kv[1].frac, kv[0]))
            link_factor, link = 1.0 / max(st.frac, 1e-3), name
        if link and link_factor > gpu_factor:
            return link, "link", link_factor
        return (gpu or "unknown"), "gpu", gpu_factor

    def snapshot(self) -> dict:
        """Links and jobs as the dashboard shows them."""
        return {
            "links": {k: {"type": v.type, "bandwidth_gbps": v.bandwidth_gbps, "frac": round(v.frac, 3),
                          "degraded": v.degraded} for k, v in sorted(self.links.items())},
            "jobs": {k: {"gpus": len(v.gpus), "step_ms": v.step_ms, "baseline_ms": v.baseline_ms
                         if np.isfinite(v.baseline_ms) else None, "straggling": v.straggling}
                     for k, v in sorted(self.jobs.items())},
        }
