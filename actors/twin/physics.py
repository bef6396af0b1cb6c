"""Vectorised physics of a GPU fleet: DVFS power, two throttling controllers, die heating, sensor lag.

One ``FleetPhysics`` holds every GPU in flat numpy arrays and advances them together: no per-GPU Python
loop in ``step``. The simulator uses it as the ground truth of a data center; the twin uses the same
equations for what-if predictions.

Model (per GPU, time step ``dt``):
- power ``P = P_idle + (TDP - P_idle) * util * (f / f_max)**3``: DVFS moves voltage with frequency, so
  ``P ∝ V²f ∝ f³`` over the dynamic range (seed: *GPU throttling*);
- power-budget controller: when ``P`` at the current clock would exceed the power limit, the clock walks
  *linearly* down toward the clock that meets the limit (slow, linear step-down), and back up the same way;
- thermal safety controller: at or above the slowdown temperature the clock is cut *hard* (×0.85 of
  the present clock per step), and recovers slowly once the die is 3 °C below; the priority gate takes the lower clock;
- die temperature is a first-order response (τ_die) to ``T_supply + P * R``, where the thermal resistance
  ``R`` rises when coolant flow to the node drops or the unit's fans slow;
- the temperature sensor is a first-order lag (τ_sensor): 63.2 % of a step at τ, 86.5 % at 2τ.
All first-order updates use the exact discretisation ``x += (target - x) * (1 - exp(-dt / τ))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from actors.twin import collectives as coll
from actors.twin.loop import CoolantLoop
from actors.twin.profiles import profile

R_BASE_K_PER_W = 0.045  # die to cold plate
R_FLOW_K_PER_W = 0.025  # cold plate to coolant at nominal flow and fan speed
NOMINAL_FAN_PCT = 70.0
TAU_DIE_S = 20.0
TAU_SUPPLY_S = 30.0
POWER_STEP_MHZ_PER_S = 60.0  # the power controller's slow linear slew
THERMAL_CUT = 0.85  # the thermal controller's hard multiplicative step-down
THERMAL_RECOVER_MHZ_PER_S = 30.0

# Collectives (actors.twin.collectives): the log-spread of one GPU's compute time a step (the project's lockstep
# figure: σ = 0.06 per GPU gives a 64-GPU job its 2 % step spread, tests/twin/test_stragglers.py), the share of
# compute that is backward, and the share of the all-reduce that overlaps it (assumed: gradient buckets
# reduce while later layers still compute backward; not measured here).
COMPUTE_SPREAD = 0.06
BACKWARD_SHARE = 2.0 / 3.0
COMM_OVERLAP = 0.5

THROTTLE_REASONS = ("sw_power_cap", "hw_slowdown", "hw_thermal_slowdown", "sw_thermal_slowdown", "hw_power_brake")


def lag_alpha(dt: float, tau: float) -> float:
    """Fraction of the remaining gap a first-order system closes in ``dt`` (exact discretisation)."""
    return float(1.0 - np.exp(-dt / tau))


@dataclass
class Topology:
    """Names and wiring of the fleet: nodes, their GPUs, and which cooling unit serves which node."""

    nodes: list[str]
    gpus_per_node: int
    units: list[str]
    node_unit: list[int]  # index into units, per node
    models: list[str] = field(default_factory=list)  # per node; default H100-SXM
    jobs: list[list[int]] = field(default_factory=list)  # per job, the node indices it spans (all their GPUs)

    @classmethod
    def build(cls, n_nodes: int, gpus_per_node: int, n_units: int = 1, model: str = "H100-SXM") -> Topology:
        """``n_nodes`` nodes named n01…, served round-robin by ``n_units`` cooling units cu01…."""
        nodes = [f"n{i + 1:02d}" for i in range(n_nodes)]
        units = [f"cu{i + 1:02d}" for i in range(n_units)]
        return cls(nodes, gpus_per_node, units, [i % n_units for i in range(n_nodes)], [model] * n_nodes)

    def with_jobs(self, nodes_per_job: int) -> Topology:
        """The same fleet with one job over every ``nodes_per_job`` consecutive nodes (job01, job02, …)."""
        n = len(self.nodes)
        self.jobs = [list(range(k, min(k + nodes_per_job, n))) for k in range(0, n, max(nodes_per_job, 1))]
        return self

    @property
    def job_names(self) -> list[str]:
        return [f"job{j + 1:02d}" for j in range(len(self.jobs))]

    @property
    def links(self) -> list[tuple[str, str]]:
        """(name, type): one NVLink fabric per node and an InfiniBand link between ring neighbours."""
        out = [(f"{n}/nvlink", "nvlink") for n in self.nodes]
        ring = [(self.nodes[k], self.nodes[(k + 1) % len(self.nodes)]) for k in range(len(self.nodes))]
        out += [(f"{a}-{b}/ib0", "ib") for a, b in ring if a < b or len(self.nodes) > 2]
        return list(dict.fromkeys(out))

    @property
    def gpu_names(self) -> list[str]:
        return [f"{n}/gpu{g}" for n in self.nodes for g in range(self.gpus_per_node)]

    def unit_nodes(self, unit: str) -> list[str]:
        u = self.units.index(unit)
        return [n for n, nu in zip(self.nodes, self.node_unit, strict=True) if nu == u]


def _link_ends(link: str, node_ix: dict[str, int]) -> tuple[int, int]:
    """Node indices a link joins (``a-b/ib0``: a and b; ``a/nvlink``: a twice); node names may hold a ``-``, so
    the split is the one that leaves two known nodes. (-1, -1) when it names no known nodes."""
    ends = link.split("/", 1)[0]
    if ends in node_ix:
        return node_ix[ends], node_ix[ends]
    for k, c in enumerate(ends):
        if c == "-" and ends[:k] in node_ix and ends[k + 1:] in node_ix:
            return node_ix[ends[:k]], node_ix[ends[k + 1:]]
    return -1, -1


@dataclass
class _Buffers:
    """Scratch arrays reused by every step (no allocation per tick for the big ones)."""

    lo: np.ndarray
    hi: np.ndarray
    f: np.ndarray
    ratio: np.ndarray
    t: np.ndarray
    mask: np.ndarray


class FleetPhysics:
    """The true state of every GPU and cooling unit, advanced together."""

    def __init__(self, topo: Topology, supply_c: float = 25.0, sensor_tau_s: float = 15.0) -> None:
        self.topo = topo
        n_gpu = len(topo.nodes) * topo.gpus_per_node
        self.gpu_node = np.repeat(np.arange(len(topo.nodes)), topo.gpus_per_node)
        profs = [profile(m or "H100-SXM") for m in (topo.models or ["H100-SXM"] * len(topo.nodes))]
        per_node = lambda attr: np.repeat(np.array([getattr(p, attr) for p in profs], float), topo.gpus_per_node)  # noqa: E731
        self.tdp_w, self.idle_w = per_node("tdp_w"), per_node("idle_w")
        self.f_max, self.f_min = per_node("clock_max_mhz"), per_node("clock_min_mhz")
        self.slowdown_c, self.max_operating_c = per_node("slowdown_c"), per_node("max_operating_c")
        self.sensor_tau_s = sensor_tau_s
        # GPU state
        self.util = np.ones(n_gpu)
        self.power_limit_w = self.tdp_w.copy()
        self.clock_mhz = self.f_max.copy()
        self.thermal_cap_mhz = self.f_max.copy()
        self.power_w = self.idle_w + (self.tdp_w - self.idle_w) * self.util
        self.temp_c = np.full(n_gpu, supply_c) + self.power_w * (R_BASE_K_PER_W + R_FLOW_K_PER_W)
        self.sensed_c = self.temp_c.copy()
        self.energy_j = np.zeros(n_gpu)
        self.work_lost = np.zeros(n_gpu)  # GPU-seconds of full-clock work lost to throttling
        self.power_capped = np.zeros(n_gpu, bool)
        self.thermal_capped = np.zeros(n_gpu, bool)
        # cooling state
        n_unit = len(topo.units)
        self.setpoint_c = np.full(n_unit, supply_c)
        self.supply_c = np.full(n_unit, supply_c)
        self.capacity_loss_c = np.zeros(n_unit)  # how far above its setpoint a unit can no longer hold supply
        self.fan_pct = np.full(n_unit, NOMINAL_FAN_PCT)
        self.flow_frac = np.ones(len(topo.nodes))  # coolant flow per node, fraction of nominal
        self.node_unit = np.array(topo.node_unit)
        self.loop = CoolantLoop(self.node_unit, np.bincount(self.node_unit[self.gpu_node], weights=self.tdp_w,
                                                            minlength=n_unit), TAU_SUPPLY_S, NOMINAL_FAN_PCT)
        it_w = np.bincount(self.node_unit[self.gpu_node], weights=self.power_w, minlength=n_unit)
        start = self.loop.steady(it_w, self.supply_c, self.fan_pct, self.flow_frac)
        self.supply_sensed_c, self.return_sensed_c = self.supply_c.copy(), start.return_c.copy()  # facility sensors
        # network: every job's GPUs step in lockstep; its all-reduce runs at the pace of its slowest link
        self.link_names = [name for name, _ in topo.links]
        self.link_frac = np.ones(len(self.link_names))  # achieved bandwidth, fraction of nominal
        self.job_of_gpu = np.full(n_gpu, -1)
        for j, nodes in enumerate(topo.jobs):
            self.job_of_gpu[np.isin(self.gpu_node, nodes)] = j
        self.job_links = self._job_links()
        self.compute_ms, self.comm_ms = 70.0, 30.0  # a step at full clock and full bandwidth
        self.step_ms = np.full(len(topo.jobs), self.compute_ms + self.comm_ms)

    # --- the step ---------------------------------------------------------------------------------------
    def step(self, dt: float) -> None:
        """Advance the whole fleet by ``dt`` seconds.

        Written for memory passes, not elegance: constants are precomputed, the thermal resistance is
        worked out per node (GPUs of a node share coolant and fans) then gathered once, the power
        controller's target clock is recomputed only when limits or utilisation change, and the thermal
        controller's arithmetic runs only where a GPU is hot or still capped.
        """
        b = self._buffers()
        self.loop.step(dt, np.bincount(self._gpu_unit, weights=self.power_w, minlength=len(self.supply_c)),
                       self.supply_c, self.setpoint_c, self.capacity_loss_c, self.fan_pct, self.flow_frac,
                       self.supply_sensed_c, self.return_sensed_c)
        # Power-budget controller: the clock at which P meets the limit; walk toward it linearly.
        f_power = self._power_target()
        step = POWER_STEP_MHZ_PER_S * dt
        np.subtract(self.clock_mhz, step, out=b.lo)
        np.add(self.clock_mhz, step, out=b.hi)
        f_pc = np.clip(f_power, b.lo, b.hi, out=b.f)
        # Thermal safety controller: hard cut at slowdown, slow recovery 3 °C below it.
        hot = np.greater_equal(self.temp_c, self.slowdown_c, out=b.mask)
        if hot.any():
            cut = np.minimum(self.thermal_cap_mhz, self.clock_mhz) * THERMAL_CUT
            np.maximum(cut, self.f_min, out=cut)
            np.copyto(self.thermal_cap_mhz, cut, where=hot)
        # Recovery only matters where a cap is below f_max (checked each tick: callers may set caps directly).
        if np.less(self.thermal_cap_mhz, self._f_max_m1, out=b.mask).any():
            cool = np.less(self.temp_c, self._recover_below_c, out=b.mask)
            recovered = np.minimum(self.thermal_cap_mhz + THERMAL_RECOVER_MHZ_PER_S * dt, self.f_max)
            np.copyto(self.thermal_cap_mhz, recovered, where=cool)
        # Priority gate: the lower clock wins.
        np.minimum(f_pc, self.thermal_cap_mhz, out=self.clock_mhz)
        np.clip(self.clock_mhz, self.f_min, self.f_max, out=self.clock_mhz)
        np.less(self.thermal_cap_mhz, self._f_max_m1, out=self.thermal_capped)
        ratio = np.divide(self.clock_mhz, self.f_max, out=b.ratio)
        np.multiply(ratio, ratio, out=b.t)
        b.t *= ratio
        b.t *= self._span_util
        np.add(self.idle_w, b.t, out=self.power_w)
        # Die temperature: first order toward supply + P·R (R per node, then one gather).
        np.take(self._node_r(), self.gpu_node, out=b.t)
        b.t *= self.power_w
        b.t += np.take(self.supply_c, self._gpu_unit)
        b.t -= self.temp_c
        b.t *= lag_alpha(dt, TAU_DIE_S)
        self.temp_c += b.t
        np.subtract(self.temp_c, self.sensed_c, out=b.t)
        b.t *= lag_alpha(dt, self.sensor_tau_s)
        self.sensed_c += b.t
        if dt == 1.0:
            self.energy_j += self.power_w
        else:
            np.multiply(self.power_w, dt, out=b.t)
            self.energy_j += b.t
        np.subtract(1.0, ratio, out=b.t)
        b.t *= self.util
        if dt != 1.0:
            b.t *= dt
        self.work_lost += b.t
        if len(self.step_ms):
            self.step_ms = self.job_step_ms(ratio)

    def _job_links(self) -> tuple[np.ndarray, np.ndarray]:
        """Which links each job crosses, as sparse (job, link) index pairs sorted by job, then link: a link whose
        nodes are all the job's (an NVLink fabric only where a node has more than one GPU). A dense jobs × links
        matrix would be 78 M cells at 100k GPUs; a job crosses about two links per node it spans."""
        topo, n_jobs = self.topo, max(len(self.topo.jobs), 1)
        node_ix = {n: k for k, n in enumerate(topo.nodes)}
        ends = np.array([_link_ends(name, node_ix) for name in self.link_names], np.int64).reshape(-1, 2)
        end_a, end_b = ends[:, 0], ends[:, 1]
        usable = (end_a >= 0) & ((end_a != end_b) | (topo.gpus_per_node > 1))
        # every (node, job) membership as one sorted key node·J + job
        job_ix = np.repeat(np.arange(len(topo.jobs), dtype=np.int64), [len(nodes) for nodes in topo.jobs])
        node_of = np.concatenate([np.asarray(nodes, np.int64) for nodes in topo.jobs]) if topo.jobs else job_ix
        key = np.unique(node_of * n_jobs + job_ix)
        # candidates: each link with every job holding its first end; kept when the job holds the other end too
        lo = np.searchsorted(key, end_a * n_jobs)
        counts = np.searchsorted(key, (end_a + 1) * n_jobs) - lo
        link = np.repeat(np.arange(len(end_a)), counts)
        pos = np.arange(len(link)) + np.repeat(lo - np.cumsum(counts) + counts, counts)
        job = key[pos] % n_jobs
        keep = usable[link] & np.isin(end_b[link] * n_jobs + job, key)
        job, link = job[keep], link[keep]
        order = np.lexsort((link, job))
        return job[order], link[order]

    # --- step helpers ---------------------------------------------------------------------------------
    def _buffers(self) -> _Buffers:
        b = getattr(self, "_b", None)
        if b is None or len(b.f) != len(self.clock_mhz):
            n = len(self.clock_mhz)
            b = self._b = _Buffers(*(np.empty(n) for _ in range(5)), np.empty(n, bool))
            self._f_max_m1 = self.f_max - 1.0
            self._recover_below_c = self.slowdown_c - 3.0
            self._gpu_unit = self.node_unit[self.gpu_node]
            self._last_limit: np.ndarray | None = None
        return b

    def _power_target(self) -> np.ndarray:
        """The clock each GPU's power controller walks toward; recomputed when limits or utilisation change."""
        same = (self._last_limit is not None and np.array_equal(self._last_limit, self.power_limit_w)
                and np.array_equal(self._last_util, self.util))
        if not same:
            span = self.tdp_w - self.idle_w
            self._span_util = span * self.util
            headroom = np.clip((self.power_limit_w - self.idle_w) / np.maximum(self._span_util, 1e-9), 0.0, None)
            self._f_power = np.clip(self.f_max * np.cbrt(headroom), self.f_min, self.f_max)
            self.power_capped = self._f_power < self.f_max - 1.0
            self._last_limit, self._last_util = self.power_limit_w.copy(), self.util.copy()
        return self._f_power

    def _node_r(self) -> np.ndarray:
        """Thermal resistance die → coolant per node (K/W): worse with less flow or slower fans."""
        fan = np.take(self.fan_pct, self.node_unit)
        return R_BASE_K_PER_W + R_FLOW_K_PER_W / np.maximum(self.flow_frac, 0.05) * np.sqrt(
            NOMINAL_FAN_PCT / np.maximum(fan, 1.0)
        )

    def job_step_ms(self, ratio: np.ndarray) -> np.ndarray:
        """Each job's step (ms): the expected slowest GPU's compute plus the all-reduce it cannot hide.

        Priced by :mod:`actors.twin.collectives`. ``compute_ms`` and ``comm_ms`` are what a healthy job shows at
        full clock and bandwidth (its compute *with* the wait for its slowest GPU, its exposed all-reduce), so a
        healthy job steps in ``compute_ms + comm_ms`` whatever its size; from them follow each GPU's median
        compute, the ring's message size and how much of it backward compute hides. A GPU at clock ratio ``r``
        computes ``1/r`` as long (the barrier then prices it against its peers' jitter); the ring runs at its
        slowest link's per-direction bandwidth times that link's achieved fraction. ``jitter_wait_gpu_s`` keeps
        each job's GPU-seconds at the barrier in the step just priced.
        """
        n_jobs = len(self.step_ms)
        c = getattr(self, "_coll", None)
        if c is None:  # per-job constants, from the job × link pairs once
            member = np.flatnonzero(self.job_of_gpu >= 0)
            job = self.job_of_gpu[member]
            n = np.maximum(np.bincount(job, minlength=n_jobs), 1).astype(float)
            kinds = [kind for _, kind in self.topo.links]
            link_job, link_idx = self.job_links
            nominal = np.array([coll.LINK_BYTES_PER_S[k] for k in kinds], float)
            alpha = np.zeros(n_jobs)
            np.maximum.at(alpha, link_job, np.array([coll.LINK_ALPHA_S[k] for k in kinds], float)[link_idx])
            b0 = np.full(n_jobs, np.inf)
            np.minimum.at(b0, link_job, nominal[link_idx])
            ring = np.isfinite(b0) & (n > 1)
            # Whole all-reduce at nominal whose exposed part is comm_ms: comm/(1−φ) while φ·t fits in backward.
            total_ms = min(self.comm_ms / (1.0 - COMM_OVERLAP), self.comm_ms + BACKWARD_SHARE * self.compute_ms)
            steps = 2.0 * (n - 1.0)
            per_byte_s = np.maximum(total_ms / 1e3 - steps * alpha, 0.0) / np.maximum(steps, 1.0)
            size = np.where(ring, per_byte_s * np.where(ring, b0, 0.0) * n, 0.0)  # bytes that take total_ms
            log_m = np.log(self.compute_ms) - COMPUTE_SPREAD * coll.blom_max_z(n)
            c = self._coll = {"member": member, "job": job, "n": n, "link_idx": link_idx, "link_job": link_job,
                              "nominal": nominal, "alpha": alpha, "ring": ring, "size": size, "log_m": log_m,
                              "total_ms": total_ms}
        r = ratio[c["member"]]
        slow = r < 1.0 - 1e-12  # GPUs below full clock are entries of their own; the rest one group per job
        dev_job = c["job"][slow]
        full = c["n"] - np.bincount(dev_job, minlength=n_jobs)
        job = np.concatenate([np.arange(n_jobs), dev_job])
        log_mu = np.concatenate([c["log_m"], c["log_m"][dev_job] - np.log(np.maximum(r[slow], 1e-3))])
        count = np.concatenate([full, np.ones(len(dev_job))])
        compute, _ = coll.job_expected_max(log_mu, job, COMPUTE_SPREAD, n_jobs, count)
        self.jitter_wait_gpu_s = coll.jitter_wait_gpu_s(compute, log_mu, job, count) / 1e3
        bw = np.full(n_jobs, np.inf)
        np.minimum.at(bw, c["link_job"], (c["nominal"] * np.maximum(self.link_frac, 1e-3))[c["link_idx"]])
        ring_ms = 1e3 * coll.ring_allreduce_s(c["size"], c["n"], np.where(c["ring"], bw, 1.0), c["alpha"])
        total = np.where(c["ring"], ring_ms, c["total_ms"])
        return compute + coll.exposed_comm(total, COMM_OVERLAP, BACKWARD_SHARE * compute)

    # --- views ----------------------------------------------------------------------------------------
    def throttle_reasons(self, i: int) -> tuple[str, ...]:
        """NVML-style throttle reasons of GPU ``i`` right now."""
        reasons = []
        if self.power_capped[i] and self.clock_mhz[i] < self.f_max[i] - 1.0:
            reasons.append("sw_power_cap")
        if self.thermal_capped[i]:
            reasons.append("hw_thermal_slowdown")
        if self.temp_c[i] >= self.max_operating_c[i]:
            reasons.append("sw_thermal_slowdown")
        if self.power_w[i] > self.power_limit_w[i] * 1.1:
            reasons.append("hw_power_brake")
        return tuple(reasons)

    def energy(self) -> dict[str, float | dict[str, float]]:
        """Joules per node and job so far, and the share of GPU-time lost to throttling."""
        nodes = np.bincount(self.gpu_node, weights=self.energy_j, minlength=len(self.topo.nodes))
        member = self.job_of_gpu >= 0
        jobs = np.bincount(self.job_of_gpu[member], weights=self.energy_j[member], minlength=len(self.step_ms))
        busy = float(self.util.sum()) or 1.0
        return {"total_j": float(self.energy_j.sum()),
                "nodes_j": dict(zip(self.topo.nodes, nodes.round(1).tolist(), strict=True)),
                "jobs_j": dict(zip(self.topo.job_names, jobs.round(1).tolist(), strict=True)),
                "work_lost_gpu_s": float(self.work_lost.sum()), "busy_gpus": busy}

    def steady_temp_c(self) -> np.ndarray:
        """Die temperature each GPU would settle at with the present power, coolant and flow."""
        return self.supply_c[self.node_unit[self.gpu_node]] + self.power_w * self._node_r()[self.gpu_node]

    # --- persistence ------------------------------------------------------------------------------------
    _STATE = (
        "util", "power_limit_w", "clock_mhz", "thermal_cap_mhz", "power_w", "temp_c", "sensed_c", "energy_j",
        "work_lost", "setpoint_c", "supply_c", "fan_pct", "flow_frac", "link_frac", "capacity_loss_c",
        "supply_sensed_c", "return_sensed_c",
    )

    def state_dict(self) -> dict[str, list[float]]:
        """The mutable state as plain lists (JSON-able), for resuming after a restart."""
        return {k: getattr(self, k).tolist() for k in self._STATE}

    def load_state(self, state: dict[str, list[float]]) -> None:
        """Restore what ``state_dict`` returned; shapes must match this topology."""
        for k in self._STATE:
            if k not in state:  # saved by an older version: keep this field's default
                continue
            arr = np.asarray(state[k], float)
            if arr.shape != getattr(self, k).shape:
                raise ValueError(f"saved state {k} has shape {arr.shape}, this fleet needs {getattr(self, k).shape}")
            setattr(self, k, arr)
