"""Fleet outcome: what acting on the twin's early warning is worth over a week of faults (issue #17 item 7).

One run draws one seeded week of faults for a fleet of ``--gpus`` H100s and plays it three times, side by side,
under three responders that differ only in *when* they act (what they do is the same remedy, so the table
measures the timing):

- ``threshold``: what threshold tools do. Nothing happens until a GPU's hardware slowdown fires (NVML's
  ``hw_thermal_slowdown``, the GPU is already throttled); an operator then acts ``--threshold-delay-s`` later.
  The operator is held to the same blast-radius limits as opsloop (a change process has them too).
- ``opsloop+human``: the twin's early warnings (a GPU heading over the slowdown line; a cooling unit whose supply
  runs above its setpoint, whose fans fall under 40 %, a node whose coolant flow falls under 80 % — the twin's
  own thresholds, ``actors.twin.model.Thresholds``) open an incident, looked at again every ``REVIEW_S`` while
  the cooling signal lasts; a human approves each remedy ``--human-delay-s`` after it is proposed, gated by the
  bundled approval policy's blast-radius limits.
- ``opsloop auto``: the same warnings, the remedy runs at once under an ``auto`` policy (the bundled policy with
  the remedy's kinds switched to ``auto``, its blast-radius limits kept).

**The remedy** (one function for all three): the cooling unit of a short-handed unit goes to full fans and a
setpoint low enough (not under 18 °C, above the dew point of a typical hall) for its GPUs to settle at
``TARGET_C`` at full power; GPUs still over it get a power limit that settles them there; a node that would need
under ``DRAIN_BELOW_W`` is drained and its job requeued on a spare (a checkpoint first, then a restart). What a
GPU settles at is the physics' own steady state (``supply + R·P``, ``R`` from ``FleetPhysics``): the what-if a
twin with a fitted thermal resistance would make. When a fault is repaired every remedy on what it touched is
undone.

**Faults** (the same list for every responder; ``draw_faults``):

- hard interruptions at Llama 3's rate: 419 unexpected interruptions in 54 days on 16,384 H100s (*The Llama 3
  Herd of Models*, 2024, §3.3.4 and Table 5), ≈ 0.47 per 1,000 GPU-days. Causes drawn by Table 5's counts:
  faulty GPU 148, GPU HBM3 72, software bug 54, network switch/cable 35, host maintenance 32, GPU SRAM 19, GPU
  system processor 17, NIC 7, NCCL watchdog 7, silent data corruption 6, GPU thermal interface + sensor 6, SSD,
  power supply 3 each, five more at 2 (the paper: GPU issues 58.7 %, >90 % effective training time). None of
  the responders prevents these: each costs its job the work since its last checkpoint plus a restart.
- cooling and thermal events. No public per-unit rate exists at this granularity; these are *assumptions*,
  sized so a week at 1,024 GPUs has a few of each (scale them with ``--thermal-scale``): a cooling unit losing
  capacity (supply drifting ``CAPACITY_LOSS_C`` above its setpoint over 10–60 min, repaired after 4 h) once per
  unit per 14 days (through the coolant loop, ``actors.twin.loop``: the unit removes ``G·loss`` less heat, so a
  fully loaded unit's supply settles ``loss`` above its setpoint and a less loaded one lower); part of a
  unit's fan array failing (fans held at 10–25 %, repaired after 8 h) once per unit per 30 days; a node's
  cold plates losing flow (thermal resistance rising as flow falls to 30–60 % over 1–6 h, repaired 12 h
  later) once per node per 180 days. The physics keeps one thermal resistance per node (die and HBM), so a cold
  plate's or interface's degradation is modelled at node granularity.

**Detection.** The real twin (``TwinModel.ingest``) takes a ``GpuSample`` per GPU per tick: a week at 1,024
GPUs is ~18 M samples per responder, hours of pydantic alone. So the bench applies the twin's detection rule
to the simulated sensor instead: the twin's own observer (``ThermalEstimator``, sensor τ 15 s, 0.3 °C noise; fed
what the twin's ingest feeds it: each GPU's power, its unit's sensed supply, its node's flow and its unit's fan
speed) and the twin's own warning decision (``actors.twin.model.warn_now``, the function
``TwinModel._detect_thermal`` calls: the crossing probability at or above ``warn_p`` on ``warn_confirm_ticks``
readings in a row) with its thresholds, and ``_detect_thermal``'s slowdown and recovery rule, on GPUs whose reading
is within ``TRACK_BELOW_C`` of the slowdown line (the estimator watches only GPUs within a few degrees of it, so
the others cannot warn). A GPU that reaches its shutdown temperature is lost (``FleetPhysics.lost``): its job
restarts like on any failure and the GPU is reset when the job does.

**Metrics.** Jobs are data-parallel over ``--nodes-per-job`` nodes and step in lockstep (``job_step_ms``:
``actors.twin.collectives``), so one slow GPU slows its whole job. *Slow steps* is GPU-hours lost to steps
longer than the healthy 100 ms (thermal throttling and the remedies' own power caps); *failures* the restarts
and lost work of interruptions; *requeues* the restarts of drains; *goodput* the share of the jobs' GPU-hours
that advanced training; *ETTR* the effective training time ratio of the Llama 3 paper (time training on
progress kept / wall time: slow steps still count as training); *energy* the GPUs' own (MWh; spares
excluded) and the facility's (chillers, pumps and fans of the coolant loops, ``CoolantLoop.reading``), with the
week's PUE; *barrier* the GPU-hours spent waiting for the slowest GPU's jitter (the same in every row
when nothing is slow; it is part of the healthy step).

Usage: ``python bench/fleet_outcome.py [--seed S] [--gpus N] [--days D] [--tick-s T]``
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

import numpy as np

from actors.twin.estimator import ThermalEstimator
from actors.twin.model import Thresholds, warn_now
from actors.twin.physics import NOMINAL_FAN_PCT, FleetPhysics, Topology
from policies.actions import DrainNode, SetCoolingSetpoint, SetFanSpeed, SetPowerLimit
from policies.policy import Executed, Policy, load_policy

DAY_S = 86_400.0
#: Llama 3 (The Llama 3 Herd of Models, 2024): 419 unexpected interruptions, 54 days, 16,384 GPUs.
INTERRUPTIONS_PER_GPU_DAY = 419 / (54 * 16_384)
LLAMA3_CAUSES = {
    "faulty GPU": 148, "GPU HBM3 memory": 72, "software bug": 54, "network switch/cable": 35,
    "host maintenance": 32, "GPU SRAM memory": 19, "GPU system processor": 17, "NIC": 7, "NCCL watchdog timeout": 7,
    "silent data corruption": 6, "GPU thermal interface + sensor": 6, "SSD": 3, "power supply": 3,
    "server chassis": 2, "IO expansion board": 2, "dependency": 2, "CPU": 2, "system memory": 2,
}
# Assumed rates of cooling and thermal events (see the module docstring): per unit-day, per unit-day, per node-day.
CAPACITY_LOSS_PER_UNIT_DAY = 1 / 14
FAN_FAILURE_PER_UNIT_DAY = 1 / 30
FLOW_LOSS_PER_NODE_DAY = 1 / 180
CAPACITY_LOSS_C = (12.0, 24.0)  # how far the supply drifts above setpoint; 15 °C takes a healthy GPU to slowdown
FAN_LEFT_PCT = (10.0, 25.0)
FLOW_LEFT = (0.3, 0.6)
# Remedy
NOMINAL_SUPPLY_C = 25.0
SETPOINT_FLOOR_C = 18.0
TARGET_BELOW_C = 3.0  # settle GPUs this far under slowdown (at max-operating on an H100: 86 °C)
REVIEW_S = 300.0  # an open cooling incident is looked at again this often while its signal lasts
EXPECTED_REPAIR_S = 4 * 3600.0  # what the remedy assumes a fault lasts, to weigh a power cap against a requeue
SPARE_NODE_SHARE = 1 / 32  # hot spares a drained node's job can move to (4 for 128 nodes)
TRACK_BELOW_C = 12.0
NOISE_C = 0.3
REMEDY_KINDS = ("set_power_limit", "set_cooling_setpoint", "set_fan_speed", "drain_node")


@dataclass(frozen=True)
class Scenario:
    """The fleet and its operating figures (defaults: the bench's published run)."""

    gpus: int = 1024
    days: float = 7.0
    seed: int = 17
    tick_s: float = 5.0
    gpus_per_node: int = 8
    nodes_per_unit: int = 16
    nodes_per_job: int = 16
    checkpoint_s: float = 1800.0  # a checkpoint every 30 min: an interruption loses U(0, 30 min) of work
    restart_s: float = 600.0  # requeue, reload the checkpoint, warm up
    thermal_scale: float = 1.0
    threshold_delay_s: float = 900.0
    human_delay_s: float = 300.0

    def __post_init__(self) -> None:
        if self.gpus < self.gpus_per_node or self.gpus % self.gpus_per_node:
            raise ValueError(f"--gpus must be a positive multiple of {self.gpus_per_node}, got {self.gpus}")
        if self.days <= 0 or self.tick_s <= 0 or self.thermal_scale < 0:
            raise ValueError("days and tick must be positive, the thermal scale not negative")

    @property
    def nodes(self) -> int:
        return self.gpus // self.gpus_per_node

    @property
    def units(self) -> int:
        return max(1, -(-self.nodes // self.nodes_per_unit))

    def topology(self) -> Topology:
        return Topology.build(self.nodes, self.gpus_per_node, self.units).with_jobs(self.nodes_per_job)


@dataclass(frozen=True)
class Fault:
    """One fault: ``kind`` hits ``target`` (a GPU, unit or node index) at ``at_s``, ramps over ``ramp_s`` to
    ``size`` and is repaired ``repair_s`` after it began (an interruption's size is the work it loses, s)."""

    kind: str  # interruption | capacity_loss | fan_failure | flow_loss
    at_s: float
    target: int
    size: float
    ramp_s: float = 0.0
    repair_s: float = 0.0
    cause: str = ""

    def level(self, t: float) -> float:
        """How far the fault has developed at ``t`` (0 before or after it, 1 at full)."""
        if not self.at_s <= t < self.at_s + self.repair_s:
            return 0.0
        return 1.0 if self.ramp_s <= 0 else min(1.0, (t - self.at_s) / self.ramp_s)


def draw_faults(sc: Scenario) -> list[Fault]:
    """The week's faults: Poisson counts at the rates above, uniform times, seeded by ``sc.seed``."""
    rng = np.random.default_rng(sc.seed)
    horizon = sc.days * DAY_S
    out: list[Fault] = []
    causes, weights = list(LLAMA3_CAUSES), np.array(list(LLAMA3_CAUSES.values()), float)
    for _ in range(rng.poisson(INTERRUPTIONS_PER_GPU_DAY * sc.gpus * sc.days)):
        cause = str(rng.choice(causes, p=weights / weights.sum()))
        out.append(Fault("interruption", float(rng.uniform(0, horizon)), int(rng.integers(sc.gpus)),
                         float(rng.uniform(0, sc.checkpoint_s)), cause=cause))
    s = sc.thermal_scale * sc.days
    for _ in range(rng.poisson(CAPACITY_LOSS_PER_UNIT_DAY * sc.units * s)):
        out.append(Fault("capacity_loss", float(rng.uniform(0, horizon)), int(rng.integers(sc.units)),
                         float(rng.uniform(*CAPACITY_LOSS_C)), float(rng.uniform(600, 3600)), 4 * 3600.0))
    for _ in range(rng.poisson(FAN_FAILURE_PER_UNIT_DAY * sc.units * s)):
        out.append(Fault("fan_failure", float(rng.uniform(0, horizon)), int(rng.integers(sc.units)),
                         float(rng.uniform(*FAN_LEFT_PCT)), 0.0, 8 * 3600.0))
    for _ in range(rng.poisson(FLOW_LOSS_PER_NODE_DAY * sc.nodes * s)):
        ramp = float(rng.uniform(3600, 6 * 3600))
        out.append(Fault("flow_loss", float(rng.uniform(0, horizon)), int(rng.integers(sc.nodes)),
                         float(rng.uniform(*FLOW_LEFT)), ramp, ramp + 12 * 3600.0))
    return sorted(out, key=lambda f: (f.at_s, f.kind, f.target))


@dataclass(frozen=True)
class Responder:
    """Who acts, on what, how late: ``sees`` is ``slowdown`` (the hardware's own) or ``twin`` (its warnings)."""

    name: str
    sees: str
    delay_s: float
    policy: Policy  # the approval policy whose blast-radius gate every action passes


def auto_policy() -> Policy:
    """The bundled policy with the remedy's kinds switched to ``auto`` (limits kept)."""
    base = load_policy()
    rules = {k: r.model_copy(update={"mode": "auto"}) if k in REMEDY_KINDS else r for k, r in base.rules.items()}
    return base.model_copy(update={"rules": rules})


def responders(sc: Scenario) -> tuple[Responder, ...]:
    return (Responder("threshold", "slowdown", sc.threshold_delay_s, load_policy()),
            Responder("opsloop+human", "twin", sc.human_delay_s, load_policy()),
            Responder("opsloop auto", "twin", 0.0, auto_policy()))


@dataclass
class Outcome:
    """What one responder's week came to."""

    name: str
    slow_gpu_h: float = 0.0
    hw_slowdown_gpu_h: float = 0.0
    failure_gpu_h: float = 0.0
    requeue_gpu_h: float = 0.0
    barrier_gpu_h: float = 0.0
    job_gpu_h: float = 0.0
    energy_mwh: float = 0.0
    facility_mwh: float = 0.0
    throttle_onsets: int = 0
    warned_first: int = 0
    leads_s: list[float] = field(default_factory=list)
    actions: dict[str, int] = field(default_factory=dict)
    refused: int = 0
    gpus_lost: int = 0
    faults: list[Fault] = field(default_factory=list)

    @property
    def goodput(self) -> float:
        return 1.0 - (self.slow_gpu_h + self.failure_gpu_h + self.requeue_gpu_h) / self.job_gpu_h

    @property
    def pue(self) -> float:
        """(IT + facility) / IT energy over the run (IT: the GPUs; facility: chillers, pumps and fans)."""
        return (self.energy_mwh + self.facility_mwh) / self.energy_mwh if self.energy_mwh > 0 else 1.0

    @property
    def ettr(self) -> float:
        return 1.0 - (self.failure_gpu_h + self.requeue_gpu_h) / self.job_gpu_h


class FleetRun:
    """One fleet under one responder: physics, faults, detection, decisions, accounting, tick by tick."""

    def __init__(self, sc: Scenario, faults: list[Fault], who: Responder) -> None:
        self.sc, self.faults, self.who = sc, faults, who
        self.topo = sc.topology()
        p = self.p = FleetPhysics(self.topo, supply_c=NOMINAL_SUPPLY_C)
        self.names = self.topo.gpu_names
        self.rng = np.random.default_rng(sc.seed + 1)  # sensor noise: the same draws for every responder
        self.out = Outcome(who.name, faults=faults)
        n_job = len(self.topo.jobs)
        self.job_n = np.bincount(p.job_of_gpu[p.job_of_gpu >= 0], minlength=n_job).astype(float)
        self.job_down_until = np.zeros(n_job)
        self.drained = np.zeros(sc.nodes, bool)
        self.fan_cmd = np.full(sc.units, NOMINAL_FAN_PCT)
        self.fan_cap = np.full(sc.units, 100.0)
        self.target_c = p.slowdown_c - TARGET_BELOW_C
        self.was_capped = np.zeros(len(self.names), bool)
        self.last_warn = np.full(len(self.names), -np.inf)
        self.lost_seen = np.zeros(len(self.names), bool)
        self.pending: dict[tuple[str, int], float] = {}  # incident (scope, index) -> when its decision is due
        self.executed: dict[str, list[Executed]] = {k: [] for k in REMEDY_KINDS}
        self.fleet = {"gpu": len(self.names), "node": sc.nodes, "unit": sc.units}
        self.spares = max(1, int(sc.nodes * SPARE_NODE_SHARE))
        # cooling signals raised, and when an incident was last opened on them
        self.unit_bad, self.node_bad = np.zeros(sc.units, bool), np.zeros(sc.nodes, bool)
        self.unit_seen, self.node_seen = np.zeros(sc.units), np.zeros(sc.nodes)
        self.th = Thresholds()
        self.est = ThermalEstimator(p.sensor_tau_s)
        self.est.grow(len(self.names))
        n = len(self.names)
        self.streak = np.zeros(n, int)
        self.reset_at = np.full(n, np.inf)  # when a lost GPU is reset (its job's restart)
        self.predicted, self.slowed, self.alarm = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
        self.calm_since = np.full(n, np.inf)
        self.t = 0.0
        self.next_fault = 0

    # --- the week ---------------------------------------------------------------------------------------
    def run(self) -> Outcome:
        ticks = int(round(self.sc.days * DAY_S / self.sc.tick_s))
        for _ in range(ticks):
            self.tick()
        self.out.energy_mwh = float(self.p.energy_j.sum()) / 3.6e9
        return self.out

    def tick(self) -> None:
        p, dt = self.p, self.sc.tick_s
        self.t += dt
        while self.next_fault < len(self.faults) and self.faults[self.next_fault].at_s <= self.t:
            f = self.faults[self.next_fault]
            if f.kind == "interruption":
                self._restart(int(p.job_of_gpu[f.target]), f.size, "failure")
            self.next_fault += 1
        self._apply_faults()
        self._set_util()
        p.step(dt)
        reading = p.sensed_c + self.rng.normal(0.0, NOISE_C, len(self.names))
        capped = p.thermal_capped.copy()
        onset = np.flatnonzero(capped & ~self.was_capped)
        self.out.throttle_onsets += len(onset)
        lead = self.t - self.last_warn[onset]
        self.out.warned_first += int(np.isfinite(lead).sum())
        self.out.leads_s += lead[np.isfinite(lead)].tolist()
        self.last_warn[onset] = -np.inf
        self._incident("node", onset)  # the hardware slowdown (for the twin, its thermal_slowdown event: a backstop)
        if self.who.sees == "twin":
            self._twin_warnings(reading, capped)
            self._cooling_signals()
        self.was_capped = capped
        for key, due in sorted(self.pending.items(), key=lambda kv: kv[1]):
            if due <= self.t:
                del self.pending[key]
                self._remedy(*key)
        self._lost_gpus()
        self._account(dt)

    # --- faults -----------------------------------------------------------------------------------------
    def _active(self) -> list[Fault]:
        return [f for f in self.faults[:self.next_fault] if f.kind != "interruption" and f.level(self.t) > 0]

    def _apply_faults(self) -> None:
        p, sc = self.p, self.sc
        loss, cap, flow = np.zeros(sc.units), np.full(sc.units, 100.0), np.ones(sc.nodes)
        for f in self._active():
            lv = f.level(self.t)
            if f.kind == "capacity_loss":
                loss[f.target] += f.size * lv
            elif f.kind == "fan_failure":
                cap[f.target] = min(cap[f.target], f.size)
            else:
                flow[f.target] = min(flow[f.target], 1.0 - (1.0 - f.size) * lv)
        for u in np.flatnonzero((self.fan_cap < 100.0) & (cap >= 100.0)):
            self._repaired_unit(int(u))
        for n in np.flatnonzero((p.flow_frac < 1.0) & (flow >= 1.0)):
            self._repaired_node(int(n))
        was_loss = p.capacity_loss_c > 0
        for u in np.flatnonzero(was_loss & (loss <= 0)):
            self._repaired_unit(int(u))
        p.capacity_loss_c[:] = loss
        self.fan_cap = cap
        p.fan_pct[:] = np.minimum(self.fan_cmd, cap)
        p.flow_frac[:] = flow

    def _repaired_unit(self, u: int) -> None:
        """A unit's fault is fixed: its setpoint and fans go back, and so does every remedy on its nodes."""
        self.p.setpoint_c[u] = NOMINAL_SUPPLY_C
        self.fan_cmd[u] = NOMINAL_FAN_PCT
        for n in np.flatnonzero(self.p.node_unit == u):
            self._repaired_node(int(n))

    def _repaired_node(self, n: int) -> None:
        gpus = self.p.gpu_node == n
        self.p.power_limit_w[gpus] = self.p.tdp_w[gpus]
        self.drained[n] = False

    def _restart(self, job: int, lost_s: float, cause: str) -> None:
        """The job stops for a restart (and loses ``lost_s`` of work since its last checkpoint)."""
        if job < 0:
            return
        gpu_h = self.job_n[job] * (lost_s + self.sc.restart_s) / 3600.0
        if cause == "failure":
            self.out.failure_gpu_h += gpu_h
        else:
            self.out.requeue_gpu_h += gpu_h
        self.job_down_until[job] = max(self.job_down_until[job], self.t + self.sc.restart_s)

    def _set_util(self) -> None:
        p = self.p
        job_up = np.append(self.job_down_until <= self.t, False)  # index -1 (no job) is idle
        util = (job_up[p.job_of_gpu] & ~self.drained[p.gpu_node]).astype(float)
        util[p.lost] = 0.0  # off the bus until reset
        if not np.array_equal(util, p.util):
            p.util[:] = util

    def _lost_gpus(self) -> None:
        """A GPU the physics reports lost (shutdown temperature) interrupts its job like any failure; it is reset
        (``nvidia-smi -r``) when its job restarts, and shuts down again if its cooling has not been fixed."""
        p = self.p
        back = np.flatnonzero(p.lost & (self.reset_at <= self.t))
        if len(back):
            p.reset(back)
            self.lost_seen[back] = False
            self.reset_at[back] = np.inf
        new = np.flatnonzero(p.lost & ~self.lost_seen)
        for i in new:
            self.out.gpus_lost += 1
            self._restart(int(p.job_of_gpu[i]), self.sc.checkpoint_s / 2, "failure")
            self.reset_at[i] = self.t + self.sc.restart_s
        self.lost_seen[new] = True

    # --- detection --------------------------------------------------------------------------------------
    def _incident(self, scope: str, idx: np.ndarray | list[int]) -> None:
        """Open an incident on each named GPU's node (scope ``node``, GPU indices) or unit; its decision is due
        after the responder's delay. An incident already waiting for its decision absorbs the new signal."""
        for i in idx:
            key = (scope, int(self.p.gpu_node[i]) if scope == "node" else int(i))
            self.pending.setdefault(key, self.t + self.who.delay_s)

    def _twin_warnings(self, reading: np.ndarray, capped: np.ndarray) -> None:
        """The twin's early-warning rule (``TwinModel._detect_thermal``) on the GPUs near the line."""
        th, est, p = self.th, self.est, self.p
        idx = np.flatnonzero((reading > p.slowdown_c - TRACK_BELOW_C) | self.alarm)  # an open episode must close
        if not len(idx):
            return
        ts, y, slowdown = np.full(len(idx), self.t), reading[idx], p.slowdown_c[idx]
        node = p.gpu_node[idx]
        unit = p.node_unit[node]
        # What the twin's ingest hands the estimator: the GPU's power, its unit's sensed supply, its node's flow and
        # its unit's fan speed (the cooling unit's own report).
        est.update(idx, ts, y, slowdown, power=p.power_w[idx], supply=p.supply_sensed_c[unit],
                   flow=p.flow_frac[node], fan=p.fan_pct[unit])
        filt, true_c, proj = est.sensor(idx), est.true_c(idx), est.proj[idx]
        prob, _ = est.crossing(idx, slowdown)
        self.streak[idx], sure = warn_now(prob, self.streak[idx], th)
        fire = idx[sure & ~self.predicted[idx] & ~self.slowed[idx] & (y < slowdown) & (filt < slowdown)]
        self.predicted[fire] = self.alarm[fire] = True
        self.last_warn[fire] = self.t
        self._incident("node", fire)
        slow = idx[((filt >= slowdown) | capped[idx]) & ~self.slowed[idx]]
        self.slowed[slow] = self.alarm[slow] = True
        line = p.max_operating_c[idx] - th.recover_margin_c
        calm = (y < line) & (true_c < line) & (proj < slowdown) & ~capped[idx]
        self.calm_since[idx] = np.where(calm & self.alarm[idx], np.minimum(self.calm_since[idx], ts), np.inf)
        done = idx[self.alarm[idx] & calm & (ts - self.calm_since[idx] >= th.recover_hold_s)]
        self.predicted[done] = self.slowed[done] = self.alarm[done] = False
        self.streak[done] = 0
        self.last_warn[done] = -np.inf

    def _cooling_signals(self) -> None:
        """The twin's cooling-unit and flow signals (``actors.twin.cooling``): a unit's supply above its setpoint,
        its fans low, a node's flow low. Each opens an incident when it starts and, while it lasts, every
        ``REVIEW_S`` again (an open incident's remedy is re-proposed as the fault develops)."""
        p, th = self.p, self.th
        unit_bad = (p.supply_c - p.setpoint_c > th.supply_excess_c) | (p.fan_pct < th.fan_degraded_pct)
        node_bad = p.flow_frac < th.flow_degraded
        due_u = unit_bad & (~self.unit_bad | (self.t - self.unit_seen >= REVIEW_S))
        due_n = node_bad & (~self.node_bad | (self.t - self.node_seen >= REVIEW_S))
        self._incident("unit", np.flatnonzero(due_u))
        self._incident("node", np.flatnonzero(due_n) * self.sc.gpus_per_node)  # a GPU of the node names it
        self.unit_seen = np.where(due_u, self.t, self.unit_seen)
        self.node_seen = np.where(due_n, self.t, self.node_seen)
        self.unit_bad, self.node_bad = unit_bad, node_bad

    # --- the remedy -------------------------------------------------------------------------------------
    def _node_r(self, fans: np.ndarray) -> np.ndarray:
        """Each node's thermal resistance with the units' fans at ``fans`` (the physics' own law)."""
        p = self.p
        now = p.fan_pct.copy()
        p.fan_pct[:] = fans
        r = p._node_r()[0]  # die → coolant (the second is HBM's)
        p.fan_pct[:] = now
        return r

    def _remedy(self, scope: str, k: int) -> None:
        """Decide and act on a node (or every node of a unit), cooling first: full fans and a lower setpoint
        when the unit is short-handed or one of its nodes would settle over the target; then power limits set
        to what settles each GPU at the target (raised again when cooling made room), or a drain."""
        p = self.p
        units = [k] if scope == "unit" else [int(p.node_unit[k])]
        nodes = [int(n) for n in np.flatnonzero(p.node_unit == k)] if scope == "unit" else [k]
        fans_after = p.fan_pct.copy()
        r_now = self._node_r(p.fan_pct)
        tdp = p.tdp_w[:: self.sc.gpus_per_node]  # per node (one GPU model a node)
        for u in units:
            short = max(float(p.supply_c[u] - p.setpoint_c[u]), 0.0)
            failed = p.fan_pct[u] < self.fan_cmd[u] - 1.0  # fans not delivering what they were told
            served = np.flatnonzero((p.node_unit == u) & ~self.drained)
            settle = p.setpoint_c[u] + short + r_now[served] * tdp[served]  # each node's die at full power
            hot = bool(len(served)) and float(settle.max()) > self.target_c[0]
            if short <= self.th.supply_excess_c and not failed and not hot:
                continue
            if self.fan_cmd[u] < 100.0:
                self._act(SetFanSpeed(unit=self.topo.units[u], percent=100.0))
            fans_after[u] = min(100.0, self.fan_cap[u])
            if len(served):
                heat = float(np.max(self._node_r(fans_after)[served] * tdp[served]))
                want = float(np.clip(self.target_c[0] - heat - short, SETPOINT_FLOOR_C, p.setpoint_c[u]))
                if want < p.setpoint_c[u] - 0.25:
                    self._act(SetCoolingSetpoint(unit=self.topo.units[u], supply_c=round(want, 1)))
        r = self._node_r(fans_after)
        for n in nodes:
            if self.drained[n]:
                continue
            u = int(p.node_unit[n])
            supply = p.setpoint_c[u] + max(float(p.supply_c[u] - p.setpoint_c[u]), 0.0)
            gpus = np.flatnonzero(p.gpu_node == n)
            watts = np.clip((self.target_c[gpus] - supply) / r[n], 200.0, p.tdp_w[gpus])
            change = np.abs(watts - p.power_limit_w[gpus]) > 5.0
            if (watts < p.power_limit_w[gpus] - 5.0).any() and self.drained.sum() < self.spares \
                    and self._cap_costs_more_than_requeue(gpus, watts):
                self._act(DrainNode(node=self.topo.nodes[n]))
                continue
            for i in gpus[change]:
                self._act(SetPowerLimit(gpu=self.names[i], watts=round(float(watts[gpus == i][0]))))

    def _cap_costs_more_than_requeue(self, gpus: np.ndarray, watts: np.ndarray) -> bool:
        """Whether capping ``gpus`` at ``watts`` would cost their job more over the expected repair time than a
        requeue (its GPUs × a restart): the slowdown priced by the job step at the capped clocks."""
        p = self.p
        span = p.tdp_w[gpus] - p.idle_w[gpus]
        ratio = np.ones(len(self.names))
        ratio[gpus] = np.cbrt(np.clip((watts - p.idle_w[gpus]) / span, 0.0, 1.0))
        job = int(p.job_of_gpu[gpus[0]])
        slow = 1.0 - (p.compute_ms + p.comm_ms) / float(p.job_step_ms(ratio)[job])
        return slow * EXPECTED_REPAIR_S > self.sc.restart_s

    def _act(self, action: SetFanSpeed | SetCoolingSetpoint | SetPowerLimit | DrainNode) -> None:
        """Execute one action, if the responder's approval policy lets it run now (blast radius)."""
        p, kind = self.p, action.kind
        target = str(getattr(action, {"set_power_limit": "gpu", "drain_node": "node"}.get(kind, "unit")))
        if self.who.policy.gate(action, self.t, self.executed[kind], self.fleet):
            self.out.refused += 1
            return
        self.executed[kind].append(Executed(ts=self.t, target=target))
        self.out.actions[kind] = self.out.actions.get(kind, 0) + 1
        if isinstance(action, SetFanSpeed):
            self.fan_cmd[self.topo.units.index(target)] = action.percent
        elif isinstance(action, SetCoolingSetpoint):
            p.setpoint_c[self.topo.units.index(target)] = action.supply_c
        elif isinstance(action, SetPowerLimit):
            i = self.names.index(target)
            p.power_limit_w[i] = min(action.watts, p.tdp_w[i])
        else:
            n = self.topo.nodes.index(target)
            self.drained[n] = True
            gpus = p.gpu_node == n
            # A spare takes the node's place in the job: cool, at full clock (its own energy is not counted).
            p.thermal_cap_mhz[gpus] = p.f_max[gpus]
            p.temp_c[gpus] = p.sensed_c[gpus] = p.supply_c[p.node_unit[n]] + p.idle_w[gpus] * p._node_r()[0][n]
            self._restart(int(p.job_of_gpu[np.flatnonzero(gpus)[0]]), 0.0, "requeue")  # checkpointed first

    # --- accounting -------------------------------------------------------------------------------------
    def _account(self, dt: float) -> None:
        p = self.p
        up = self.job_down_until <= self.t
        healthy_ms = p.compute_ms + p.comm_ms
        self.out.job_gpu_h += float(self.job_n.sum()) * dt / 3600.0
        self.out.hw_slowdown_gpu_h += float((p.thermal_capped & (p.util > 0)).sum()) * dt / 3600.0
        self.out.slow_gpu_h += float((self.job_n * (1.0 - healthy_ms / p.step_ms))[up].sum()) * dt / 3600.0
        self.out.facility_mwh += p.loop.reading.facility_kw * dt / 3.6e6
        steps = dt * 1e3 / p.step_ms
        self.out.barrier_gpu_h += float((p.jitter_wait_gpu_s * steps)[up].sum()) / 3600.0


def run(sc: Scenario, faults: list[Fault] | None = None, only: tuple[str, ...] | None = None) -> list[Outcome]:
    """Every responder's week on the same faults (drawn from ``sc`` unless given)."""
    faults = draw_faults(sc) if faults is None else faults
    return [FleetRun(sc, faults, who).run() for who in responders(sc) if only is None or who.name in only]


def table(outcomes: list[Outcome]) -> str:
    """The outcome as a Markdown table."""
    head = ("| responder | GPU-h lost: slow steps | failures | requeues | goodput | ETTR | GPU energy (MWh) "
            "| facility (MWh), PUE | GPUs lost (shutdown) | GPU-h in hw slowdown "
            "| throttle onsets (warned first, median lead) | actions (refused) "
            "| barrier wait (GPU-h) |")
    rows = [head, "|" + "---|" * 13]
    for o in outcomes:
        lead = f"{np.median(o.leads_s):.0f} s" if o.leads_s else "–"
        acts = ", ".join(f"{k} {v}" for k, v in sorted(o.actions.items())) or "none"
        rows.append(f"| {o.name} | {o.slow_gpu_h:,.1f} | {o.failure_gpu_h:,.1f} | {o.requeue_gpu_h:,.1f} "
                    f"| {o.goodput:.4f} | {o.ettr:.4f} | {o.energy_mwh:,.2f} | {o.facility_mwh:,.2f}, {o.pue:.3f} "
                    f"| {o.gpus_lost} | {o.hw_slowdown_gpu_h:,.1f} "
                    f"| {o.throttle_onsets} ({o.warned_first}, {lead}) | {acts} ({o.refused}) "
                    f"| {o.barrier_gpu_h:,.1f} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="Fault rates, responders and metrics: see the module docstring.")
    ap.add_argument("--seed", type=int, default=17, help="seed of the faults and the sensor noise (default 17)")
    ap.add_argument("--gpus", type=int, default=1024, help="fleet size, a multiple of 8 (default 1024)")
    ap.add_argument("--days", type=float, default=7.0, help="simulated days (default 7)")
    ap.add_argument("--tick-s", type=float, default=5.0, help="simulation tick in seconds (default 5)")
    ap.add_argument("--thermal-scale", type=float, default=1.0, help="multiply the cooling/thermal fault rates")
    ap.add_argument("--threshold-delay-s", type=float, default=900.0, help="operator delay after a slowdown")
    ap.add_argument("--human-delay-s", type=float, default=300.0, help="approval delay after a twin warning")
    a = ap.parse_args()
    try:
        sc = Scenario(gpus=a.gpus, days=a.days, seed=a.seed, tick_s=a.tick_s, thermal_scale=a.thermal_scale,
                      threshold_delay_s=a.threshold_delay_s, human_delay_s=a.human_delay_s)
    except ValueError as exc:
        ap.error(str(exc))
    faults = draw_faults(sc)
    kinds = {k: sum(f.kind == k for f in faults) for k in ("interruption", "capacity_loss", "fan_failure", "flow_loss")}
    print(f"{sc.gpus} GPUs ({sc.nodes} nodes, {sc.units} cooling units, {len(sc.topology().jobs)} jobs of "
          f"{sc.nodes_per_job * sc.gpus_per_node} GPUs), {sc.days:g} days at {sc.tick_s:g} s ticks, seed {sc.seed}")
    print("faults: " + ", ".join(f"{k} {v}" for k, v in kinds.items()))
    t0 = time.perf_counter()
    outcomes = run(sc, faults)
    print(table(outcomes))
    print(f"({time.perf_counter() - t0:.0f} s for the three runs)")


if __name__ == "__main__":
    main()
