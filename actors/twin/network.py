"""Links and jobs: all-reduce time from the slowest link, network bottlenecks and stragglers.

A job's GPUs step in lockstep, so its step time is set by its slowest GPU plus an all-reduce whose time is
set by the slowest link it crosses (the seed's "one issue spreads": a degraded link slows every GPU of
every job that crosses it). Link names follow the trace format: ``n01-n02/ib0`` joins two nodes,
``n01/nvlink`` or ``n01/pcie0`` lives in one node. Bandwidth is in Gb/s.

Stragglers. Each job's step time is judged against a rolling baseline of its last ``WINDOW`` steps: the
median, and the spread ``1.4826·MAD`` (the standard deviation, were the steps Gaussian, yet blind to a few
outliers). A step is *over* when it exceeds ``median + max(K·spread, MIN_EXCESS_FRAC·median)`` (the floor
keeps a job with no jitter from flagging a 0.5 % wobble); the job straggles when ``CONFIRM_OVER`` of its
last ``CONFIRM_OF`` steps were over (one event an episode; it closes after ``CONFIRM_OF`` steps in a row
under the line). The constants are set for a healthy job with 2 % Gaussian step jitter (coefficient of
variation), a false alarm budget of ≤ 1 a day even at 10 steps/s (864 000 steps), and a GPU at 0.9× clock
in a job that computes 70 % of its step (+7.8 % = 3.9 σ) named within 10 steps:

- a step is over with probability ``p = Q(K + e)`` where ``e`` is the error of the window's median and
  spread (with 256 steps their noise is ±0.08 σ and ±0.07 σ; with 64 steps, twice that, which forces a
  higher K or a longer confirmation and misses the 10-step deadline);
- false straggler events per step ≈ ``E_e[P(Binomial(10, p) ≥ 6)]``: for K = 2.25, 6 of 10 and 256 steps
  that is 1.6e-8 (averaged over 200 000 simulated baselines), 0.0014 a day at 1 step/s and 0.014 a day
  at 10 steps/s; the job's first 256 steps (judged from ``MIN_STEPS`` on, over a shorter window) add
  about 0.003 once. Measured: 0 events in 864 000 healthy steps (tests/twin/test_stragglers.py has a day);
- a 3.9 σ slowdown makes each step over with probability ≈ 0.95, so 6 of the first 10 are over in
  99.97 % of cases (20 000 simulated onsets).

Blame goes by cost share, not by slowdown ratio: each GPU's excess compute time over the job's median
GPU (the compute share of the baseline times ``median clock / its clock − 1``), taken as its median over
the steps that were over (a momentary clock dip of a neighbour does not count), against the worst link's
excess all-reduce time (the all-reduce share times ``1 / bandwidth fraction − 1``). The larger cost is
the culprit; ``cost_share`` is that cost over the job's lost time (its median step over the line minus
the baseline). The event prices it: ``excess_ms`` is the culprit's extra time per step, ``wait_gpu_s`` the
GPU-seconds the job waits for it per step (``excess·(N − 1)`` for a GPU, whose N − 1 peers idle at the
barrier; ``excess·N`` for a link, which every GPU waits on), and ``gpu_h_per_h`` that over the slow step,
the GPU-hours it costs per hour of the job.

Link health, beside bandwidth, from what the port reports (``LinkSample``): symbol errors growing by more than
``SYMBOL_ERRORS_PER_MIN`` within a minute (the fabric manual's line for checking the cable or transceiver), a
port trained below its nominal width or lane rate (downtrained: its bandwidth is capped whatever the traffic),
and ``FLAPS`` or more downs within ``FLAP_WINDOW_S`` (one down is a transceiver pulled or a cable reseated).
Each is a reason of a ``link_degraded`` event (``reason`` the one that appeared, ``reasons`` all that hold),
raised once when the reason appears and cleared when the condition has gone: errors back under half the line
for a minute, the port at its nominal training, no down within the window.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from actors.twin.events import Event
from actors.twin.state import StateError, need, num, strs
from cluster.telemetry.samples import JobSample, LinkSample

#: Nominal bandwidth per link type, Gb/s: NVLink4 900 GB/s, PCIe Gen5 x16 128 GB/s, InfiniBand NDR 400 Gb/s.
NOMINAL_GBPS = {"nvlink": 900 * 8.0, "pcie": 128 * 8.0, "ib": 400.0}
DEGRADED_FRAC = 0.7
RECOVERED_FRAC = 0.9
CONFIRM = 3  # link samples below DEGRADED_FRAC in a row before a bottleneck is reported
COMM_SHARE = 0.3  # share of a step spent in all-reduce (the rest is compute), for costs and estimates
WINDOW = 256  # steps in a job's rolling baseline
MIN_STEPS = 20  # steps a job's baseline needs before its steps are judged
K = 2.25  # a step is over at median + K·spread
MAD_SIGMA = 1.4826  # MAD → standard deviation of a Gaussian
MIN_EXCESS_FRAC = 0.02  # ... and never closer than 2 % of the median
CONFIRM_OVER, CONFIRM_OF = 6, 10  # a job straggles when 6 of its last 10 steps were over
_LAST = (1 << CONFIRM_OF) - 1
SYMBOL_ERRORS_PER_MIN = 10  # knowledge/corpus/manual-ib-switch.md: "more than 10 per minute"
ERROR_WINDOW_S = 60.0
FLAPS, FLAP_WINDOW_S = 2, 600.0
HEALTH_REASONS = ("symbol_errors", "downtrained", "flapping")


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
    errors_seen: list[tuple[float, int]] = field(default_factory=list)  # (ts, symbol errors) over the last minute
    downed: int = -1  # the port's down counter at the last reading (-1: none yet)
    downs: list[float] = field(default_factory=list)  # when it went down, within FLAP_WINDOW_S
    health: list[str] = field(default_factory=list)  # link_degraded reasons raised and not cleared

    def to_state(self) -> dict:
        return {"type": self.type, "bandwidth_gbps": self.bandwidth_gbps, "nominal_gbps": self.nominal_gbps,
                "streak": self.streak, "degraded": self.degraded, "errors_seen": [list(e) for e in self.errors_seen],
                "downed": self.downed, "downs": list(self.downs), "health": list(self.health)}

    @classmethod
    def from_state(cls, name: str, v: dict) -> LinkState:
        if v["type"] not in NOMINAL_GBPS:
            raise ValueError(f"link {name!r} of unknown type {v['type']!r}")
        seen = [(num(t, "error ts"), need(c, int, "symbol errors")) for t, c in need(v.get("errors_seen", []), list,
                                                                                    "errors seen")]
        health = strs(v.get("health", []), "link health")
        if not set(health) <= set(HEALTH_REASONS):
            raise StateError(f"link {name!r}: unknown health reasons {health}")
        return cls(v["type"], num(v["bandwidth_gbps"], "bandwidth"), num(v["nominal_gbps"], "nominal"),
                   need(v["streak"], int, "streak"), need(v["degraded"], bool, "degraded"), seen,  # the last four are
                   need(v.get("downed", -1), int, "downed"),  # absent in older checkpoints
                   [num(t, "down ts") for t in need(v.get("downs", []), list, "downs")], health)

    @property
    def frac(self) -> float:
        return self.bandwidth_gbps / self.nominal_gbps if self.nominal_gbps else 1.0


@dataclass
class JobState:
    gpus: tuple[str, ...]
    nodes: tuple[str, ...]
    step_ms: float = 0.0
    baseline_ms: float = float("inf")  # median of the window (inf before the first step)
    spread_ms: float = 0.0  # 1.4826·MAD of the window
    over: int = 0  # bit b set: the step b steps ago was over the line (b < CONFIRM_OF)
    straggling: bool = False
    steps: list[float] = field(default_factory=list)  # the last WINDOW step times, oldest first
    clocks: list[np.ndarray] = field(default_factory=list)  # the GPUs' clocks at the last CONFIRM_OF steps
    # The twin's index of each GPU (-1 not seen yet), resolved when the job or the twin's GPUs change: a job
    # sample names hundreds of GPUs, and looking each up on every step would cost more than the rest of it.
    pos: np.ndarray | None = field(default=None, repr=False, compare=False)
    pos_of: int = field(default=-1, repr=False, compare=False)  # how many GPUs the twin knew then

    def to_state(self) -> dict:
        return {"gpus": list(self.gpus), "nodes": list(self.nodes), "step_ms": self.step_ms,
                "baseline_ms": self.baseline_ms, "spread_ms": self.spread_ms, "over": self.over,
                "straggling": self.straggling, "steps": list(self.steps),
                "clocks": [np.asarray(c, float).tolist() for c in self.clocks]}

    @classmethod
    def from_state(cls, v: dict) -> JobState:
        js = cls(tuple(strs(v["gpus"], "job gpus")), tuple(strs(v["nodes"], "job nodes")), num(v["step_ms"], "step"),
                 num(v["baseline_ms"], "baseline"), num(v.get("spread_ms", 0.0), "spread"),  # absent in older
                 need(v.get("over", 0), int, "over") & _LAST, need(v["straggling"], bool, "straggling"),  # checkpoints
                 [num(x, "step") for x in need(v["steps"], list, "steps")][-WINDOW:],
                 [np.array([num(c, "clock") for c in need(row, list, "clocks")], float)
                  for row in need(v.get("clocks", []), list, "clocks")])
        if any(len(row) != len(js.gpus) for row in js.clocks):
            raise StateError(f"job clocks rows do not match its {len(js.gpus)} GPUs")
        return js


class NetworkModel:
    """What the twin knows of links and jobs, and the bottleneck and straggler detectors."""

    def __init__(self) -> None:
        self.links: dict[str, LinkState] = {}
        self.jobs: dict[str, JobState] = {}
        self.job_gpus: dict[str, list[int]] = {}

    def to_state(self) -> dict:
        """Links, jobs and the jobs' GPU indices as plain data (see :mod:`actors.twin.state`)."""
        return {"links": {k: v.to_state() for k, v in self.links.items()},
                "jobs": {k: v.to_state() for k, v in self.jobs.items()},
                "job_gpus": {k: list(v) for k, v in self.job_gpus.items()}}

    @classmethod
    def from_state(cls, d: dict) -> NetworkModel:
        net = cls()
        for k, v in need(d["links"], dict, "links").items():
            net.links[need(k, str, "link")] = LinkState.from_state(k, need(v, dict, "link"))
        for k, v in need(d["jobs"], dict, "jobs").items():
            net.jobs[need(k, str, "job")] = JobState.from_state(need(v, dict, "job"))
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
        """Fold one link or job sample; returns the events it gives rise to.

        ``index`` (GPU name → row of ``clock_mhz``) only grows: a name keeps its row, so a job's rows are
        looked up again only when the number of GPUs changes."""
        if isinstance(s, LinkSample):
            return self._link(s)
        return self._job(s, clock_mhz, index)

    def _link(self, s: LinkSample) -> list[Event]:
        st = self.links.get(s.link)
        if st is None:
            st = self.links[s.link] = LinkState(s.type, s.bandwidth_gbps, NOMINAL_GBPS[s.type])
        st.bandwidth_gbps = s.bandwidth_gbps
        st.streak = st.streak + 1 if st.frac < DEGRADED_FRAC else 0
        events = self._health(s, st)
        if st.streak >= CONFIRM and not st.degraded:
            st.degraded = True
            jobs = sorted(j for j, js in self.jobs.items() if self.crosses(js, s.link))
            costs = [self._job_cost(self.jobs[j], st) for j in jobs]
            data = {"link": s.link, "type": s.type, "bandwidth_gbps": s.bandwidth_gbps, "nominal_gbps": st.nominal_gbps,
                    "frac": round(st.frac, 3), "jobs": jobs, "gpus_affected": sum(len(self.jobs[j].gpus) for j in jobs),
                    "cost_pct": round(max(costs), 1) if costs else 0.0, "errors": s.errors,
                    "allreduce_slowdown_x": round(1.0 / max(st.frac, 1e-3), 2)}
            return [*events, Event.make("network_bottleneck", s.link, s.ts, "warning", data)]
        if st.degraded and st.frac >= RECOVERED_FRAC:
            st.degraded = False
        return events

    def _health(self, s: LinkSample, st: LinkState) -> list[Event]:
        """Symbol errors, training and flaps of the port (see the module docstring): a ``link_degraded`` event
        for each reason that appears."""
        facts: dict[str, object] = {}
        active: set[str] = set()
        if s.symbol_errors is not None:
            if st.errors_seen and s.symbol_errors < st.errors_seen[-1][1]:
                st.errors_seen = []  # the counter was cleared: a new baseline
            st.errors_seen = [e for e in st.errors_seen if e[0] >= s.ts - ERROR_WINDOW_S] + [(s.ts, s.symbol_errors)]
            grew = s.symbol_errors - st.errors_seen[0][1]
            facts["symbol_errors_last_min"] = grew
            if grew > SYMBOL_ERRORS_PER_MIN or ("symbol_errors" in st.health and grew > SYMBOL_ERRORS_PER_MIN / 2):
                active.add("symbol_errors")
        below = [(have, nominal) for have, nominal in ((s.width, s.width_nominal), (s.lane_gbps, s.lane_gbps_nominal))
                 if have is not None and nominal is not None]
        if below:
            facts.update(width=s.width, width_nominal=s.width_nominal, lane_gbps=s.lane_gbps,
                         lane_gbps_nominal=s.lane_gbps_nominal)
            if any(have < nominal for have, nominal in below):
                active.add("downtrained")
        elif "downtrained" in st.health:
            active.add("downtrained")  # no training reported this time: nothing says it recovered
        if s.downed is not None:
            if 0 <= st.downed < s.downed:
                st.downs += [s.ts] * (s.downed - st.downed)
            st.downed = s.downed
        st.downs = [t for t in st.downs if t > s.ts - FLAP_WINDOW_S]
        facts["flaps"] = len(st.downs)
        if len(st.downs) >= FLAPS or ("flapping" in st.health and st.downs):
            active.add("flapping")
        if s.symbol_errors is None and "symbol_errors" in st.health:
            active.add("symbol_errors")
        new = [r for r in HEALTH_REASONS if r in active and r not in st.health]
        st.health = [r for r in HEALTH_REASONS if r in active]
        if not new:
            return []
        jobs = sorted(j for j, js in self.jobs.items() if self.crosses(js, s.link))
        data = {"link": s.link, "type": s.type, "reason": new[0], "reasons": list(st.health), **facts,
                "jobs": jobs, "gpus_affected": sum(len(self.jobs[j].gpus) for j in jobs)}
        return [Event.make("link_degraded", s.link, s.ts, "warning", data)]

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
        if js.pos is None or js.pos_of != len(index):
            js.pos, js.pos_of = np.fromiter((index.get(g, -1) for g in s.gpus), np.int64, len(s.gpus)), len(index)
            self.job_gpus[s.job] = js.pos[js.pos >= 0].tolist()
        pos = js.pos
        js.step_ms = s.step_ms
        over = self._judge(js, s.step_ms)
        js.over = ((js.over << 1) | over) & _LAST
        js.steps.append(s.step_ms)
        del js.steps[:-WINDOW]
        known = pos >= 0
        js.clocks.append(np.where(known, clock_mhz[np.where(known, pos, 0)], np.nan) if len(clock_mhz)
                         else np.full(len(pos), np.nan))
        del js.clocks[:-CONFIRM_OF]
        n_over = js.over.bit_count()
        if js.straggling and n_over == 0:
            js.straggling = False
        if n_over < CONFIRM_OVER or js.straggling:
            return []
        js.straggling = True
        return [self._straggler(s, js)]

    @staticmethod
    def _judge(js: JobState, step_ms: float) -> bool:
        """Whether ``step_ms`` is over the line of the job's window so far (which it updates)."""
        if not js.steps:
            return False
        w = np.asarray(js.steps)
        med = float(np.median(w))
        js.baseline_ms, js.spread_ms = med, MAD_SIGMA * float(np.median(np.abs(w - med)))
        return len(w) >= MIN_STEPS and step_ms > med + max(K * js.spread_ms, MIN_EXCESS_FRAC * med)

    @staticmethod
    def _line(js: JobState) -> float:
        """The step time above which a step is over."""
        return js.baseline_ms + max(K * js.spread_ms, MIN_EXCESS_FRAC * js.baseline_ms)

    def _straggler(self, s: JobSample, js: JobState) -> Event:
        flagged = [b for b in range(min(CONFIRM_OF, len(js.steps))) if js.over >> b & 1]  # b steps ago
        slow_ms = float(np.median([js.steps[-1 - b] for b in flagged]))
        lost = slow_ms - js.baseline_ms
        culprit, kind, cost, factor = self._culprit(js, flagged)
        n = len(js.gpus)
        wait_gpu_s = cost / 1000.0 * (n - 1 if kind == "gpu" else n)  # a GPU's peers wait; all wait on a link
        data = {"job": s.job, "culprit": culprit, "culprit_kind": kind, "step_ms": s.step_ms,
                "baseline_ms": round(js.baseline_ms, 3), "cost_pct": round(100.0 * (1 - js.baseline_ms / s.step_ms), 1),
                "slowdown_x": round(factor, 3), "gpus": len(js.gpus),
                "cost_share": round(min(cost / lost, 1.0), 3) if lost > 0 else 0.0,
                "excess_ms": round(cost, 3), "wait_gpu_s": round(wait_gpu_s, 3),
                "gpu_h_per_h": round(wait_gpu_s * 1000.0 / slow_ms, 3),
                "threshold_ms": round(self._line(js), 3), "spread_ms": round(js.spread_ms, 3)}
        return Event.make("straggler", s.job, s.ts, "warning", data)

    def _culprit(self, js: JobState, flagged: list[int]) -> tuple[str, str, float, float]:
        """The GPU or link that costs the job the most time per step: (name, kind, cost in ms, slowdown factor)."""
        gpu, gpu_cost, gpu_factor = "", 0.0, 1.0
        rows = np.array([js.clocks[-1 - b] for b in flagged if b < len(js.clocks)], float).reshape(-1, len(js.gpus))
        rows[~(rows > 0)] = np.nan  # a clock not known (or not read) says nothing
        rows = rows[np.isfinite(rows).any(axis=1)]
        seen = np.isfinite(rows).any(axis=0)
        if seen.any():
            ratio = np.nanmedian(rows[:, seen], axis=1, keepdims=True) / rows[:, seen]  # median clock / own clock
            ratio = np.nan_to_num(ratio, nan=1.0)
            excess = np.median(np.maximum(ratio - 1.0, 0.0), axis=0) * js.baseline_ms * (1.0 - COMM_SHARE)
            k = int(np.argmax(excess))
            if excess[k] > 0:
                gpu, gpu_cost = np.array(js.gpus)[seen][k], float(excess[k])
                gpu_factor = float(np.median(ratio[:, k]))
        crossed = [(name, st) for name, st in sorted(self.links.items()) if self.crosses(js, name)]
        if crossed:
            name, st = min(crossed, key=lambda kv: (kv[1].frac, kv[0]))
            factor = 1.0 / max(st.frac, 1e-3)
            cost = js.baseline_ms * COMM_SHARE * (factor - 1.0)
            if cost > gpu_cost:
                return name, "link", cost, factor
        return (str(gpu) or "unknown"), "gpu", gpu_cost, gpu_factor

    def snapshot(self) -> dict:
        """Links and jobs as the dashboard shows them."""
        return {
            "links": {k: {"type": v.type, "bandwidth_gbps": v.bandwidth_gbps, "frac": round(v.frac, 3),
                          "degraded": v.degraded} for k, v in sorted(self.links.items())},
            "jobs": {k: {"gpus": len(v.gpus), "step_ms": v.step_ms, "baseline_ms": v.baseline_ms
                         if np.isfinite(v.baseline_ms) else None, "straggling": v.straggling}
                     for k, v in sorted(self.jobs.items())},
        }
