"""Vectorised physics of a GPU fleet: DVFS power with a voltage floor and leakage, the three thermal
controllers the hardware has, die and HBM heating, sensor lag.

One ``FleetPhysics`` holds every GPU in flat numpy arrays and advances them together: no per-GPU Python
loop in ``step``. The simulator uses it as the ground truth of a data center; the twin uses the same
equations for what-if predictions.

Model (per GPU, time step ``dt``; every rate is per second so the result does not depend on the tick):
- power ``P = P_static + leakage(T) + C·v(f)²·f·util``. The voltage ``v`` is at its floor below the knee
  (``V_KNEE_FRAC`` of the maximum clock) and rises linearly with the clock above it, so dynamic power goes
  ∝ f below the knee and ∝ f³ above (DVFS). Leakage grows exponentially with the die temperature (doubles
  every ``LEAK_DOUBLING_C``; ~3 % of TDP per 10 °C near the calibration point). Calibrated per profile so
  that at the maximum clock and full utilisation with the die just under slowdown ``P = TDP`` (leakage alone
  never pushes a GPU into its power cap before the hardware slowdown acts; under nominal cooling a fully
  busy GPU draws ~3.5 % less), and at idle under nominal cooling ``P = idle_w``;
- power-budget controller: the clock walks *linearly* (``POWER_STEP_MHZ_PER_S``) toward the clock at which
  ``P`` meets the power limit at the present leakage;
- software thermal controller (the driver's, NVML ``sw_thermal_slowdown``): while the GPU *reports* (the
  lagging sensor) its maximum operating temperature or more, or the HBM its own limit, the clock is lowered gently
  (``SW_THERMAL_MHZ_PER_S_PER_C`` per °C over the line, an integral controller) unless the hardware cut already
  holds it lower; it is raised again slowly once both are ``SW_THERMAL_HYSTERESIS_C`` below;
- hardware slowdown (``hw_thermal_slowdown``): at or above the slowdown temperature the clock is cut hard, as a
  rate: ×``THERMAL_CUT`` every ``THERMAL_CUT_PERIOD_S`` (``exp(-HW_CUT_PER_S·dt)`` per step); it recovers at
  ``THERMAL_RECOVER_MHZ_PER_S`` once the die is 3 °C below;
- shutdown: at the shutdown temperature (of the die) the GPU is lost (clock, power and utilisation 0) until
  ``reset``;
- a tick longer than ``MAX_SUBSTEP_S`` is advanced in sub-steps, so the controllers look at the die at least
  every second whatever the caller's tick;
- the priority gate takes the lowest clock;
- die temperature is a first-order response (τ_die) to ``T_supply + P·R``; the thermal resistance ``R`` rises
  when coolant flow to the node drops or the unit's fans slow, and is scaled per model so that every model
  sits at the same die temperature at full power under nominal cooling (a cold plate sized for the part);
- HBM temperature is its own first-order state (τ_hbm) toward ``T_supply + P·R_hbm`` (the same cold plate,
  a smaller resistance from the die's power);
- the temperature sensor is a first-order lag (τ_sensor) behind the die. Within a step the die's target is held
  constant and the die and the sensor advance by the exact solution of the two cascaded lags, so a step of
  the target reaches the sensor as ``1 - (τ_d·e^{-t/τ_d} - τ_s·e^{-t/τ_s}) / (τ_d - τ_s)`` at any tick.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from actors.twin import collectives as coll
from actors.twin.loop import CoolantLoop
from actors.twin.profiles import profile

R_BASE_K_PER_W = 0.045  # die to cold plate (a 700 W part; scaled by 700 W / TDP for other models)
R_FLOW_K_PER_W = 0.025  # cold plate to coolant at nominal flow and fan speed
R_HBM_K_PER_W = 0.040  # HBM stacks to cold plate, per watt of the GPU's power (replaces R_BASE for the HBM)
REFERENCE_TDP_W = 700.0  # the part the resistances above are for
NOMINAL_SUPPLY_C = 25.0  # the supply temperature of the power calibration
NOMINAL_FAN_PCT = 70.0
TAU_DIE_S = 20.0
TAU_HBM_S = 30.0
TAU_SUPPLY_S = 30.0
V_KNEE_FRAC = 0.6  # clock (fraction of max) below which the voltage sits at its floor (V_min ≈ 0.6 V_max)
LEAK_SHARE = 0.10  # leakage, as a share of TDP, at the calibration die temperature
LEAK_DOUBLING_C = 25.0  # leakage doubles every this many °C
LEAK_MAX_C = 150.0  # leakage is evaluated no hotter than this (a die set to absurd values stays finite)
POWER_STEP_MHZ_PER_S = 60.0  # the power controller's slow linear slew
SW_THERMAL_MHZ_PER_S_PER_C = 20.0  # the driver's gentle step-down, per °C over max operating (or HBM max) ...
SW_THERMAL_MIN_EXCESS_C = 0.25  # ... counted from this much under the line (5 MHz/s at the line itself)
SW_THERMAL_RECOVER_MHZ_PER_S = 30.0
SW_THERMAL_HYSTERESIS_C = 0.5
THERMAL_CUT = 0.85  # the hardware slowdown's hard cut: the clock ×0.85 ...
THERMAL_CUT_PERIOD_S = 1.0  # ... every second the die stays at or above slowdown
HW_CUT_PER_S = -math.log(THERMAL_CUT) / THERMAL_CUT_PERIOD_S  # the same cut as a decay rate (1/s)
THERMAL_RECOVER_MHZ_PER_S = 30.0
HW_RECOVER_BELOW_C = 3.0
MAX_SUBSTEP_S = 1.0  # the controllers look at the die at least this often, whatever the caller's tick

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


def cascade_gain(dt: float, tau_die: float, tau_sensor: float) -> float:
    """How much of the die's initial gap to its target is still in the sensor after ``dt``.

    Die ``T(t) = G + (T0 - G)·e^{-t/τd}`` (target ``G`` held); sensor ``τs·S' = T - S``. Exact solution:
    ``S(dt) = G + (S0 - G)·e^{-dt/τs} + (T0 - G)·cascade_gain``, with ``cascade_gain =
    τd/(τd - τs)·(e^{-dt/τd} - e^{-dt/τs})`` (and ``dt/τ·e^{-dt/τ}`` when the two lags are equal).
    """
    if math.isclose(tau_die, tau_sensor, rel_tol=1e-9):
        return dt / tau_die * math.exp(-dt / tau_die)
    return tau_die / (tau_die - tau_sensor) * (math.exp(-dt / tau_die) - math.exp(-dt / tau_sensor))


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
    leak: np.ndarray
    room: np.ndarray
    target: np.ndarray
    supply: np.ndarray
    f_power: np.ndarray
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
        self.shutdown_c = per_node("shutdown_c")
        self.hbm_max_c = np.repeat(np.array([np.inf if p.hbm_max_c is None else p.hbm_max_c for p in profs]),
                                   topo.gpus_per_node)  # no HBM (GDDR): no memory limit
        self.sensor_tau_s = sensor_tau_s
        # Calibration: P = TDP at the maximum clock and full utilisation with the die at its slowdown
        # temperature (the hottest the hardware lets it run: leakage alone never pushes a GPU into its power
        # cap, which would read as a power incident), and P = idle_w at idle under nominal cooling. The cold
        # plate is sized for the part: full power under nominal cooling puts every model's die at one temperature.
        self._node_r_scale = np.array([REFERENCE_TDP_W / p.tdp_w for p in profs])
        r_nominal = (R_BASE_K_PER_W + R_FLOW_K_PER_W) * REFERENCE_TDP_W / self.tdp_w
        self.leak_ref_c = self.slowdown_c.copy()
        self.leak_ref_w = LEAK_SHARE * self.tdp_w
        self.static_w = self.idle_w - self._leakage(NOMINAL_SUPPLY_C + self.idle_w * r_nominal)
        self.dynamic_max_w = self.tdp_w - self.static_w - self.leak_ref_w
        if (self.static_w < 0).any() or (self.dynamic_max_w <= 0).any():
            raise ValueError("a GPU profile's idle and TDP leave no room for the leakage share: check idle_w, tdp_w")
        # GPU state
        self.util = np.ones(n_gpu)
        self.power_limit_w = self.tdp_w.copy()
        self.clock_mhz = self.f_max.copy()
        self.thermal_cap_mhz = self.f_max.copy()  # the hardware slowdown's cap
        self.sw_thermal_cap_mhz = self.f_max.copy()  # the driver's (software thermal) cap
        self.lost = np.zeros(n_gpu, bool)  # shut down at its shutdown temperature; stays lost until reset
        self.lost_util = np.zeros(n_gpu)  # the utilisation a lost GPU had (its job's demand, restored by reset)
        # Start in the steady state: the die where supply + R·P(T) holds with P's leakage at that temperature.
        self.temp_c = np.full(n_gpu, supply_c) + self.tdp_w * r_nominal
        for _ in range(8):  # a contraction (R·dP/dT ≈ 0.1): eight rounds settle it to well under 0.01 °C
            self.power_w = self.static_w + self._leakage(self.temp_c) + self.dynamic_max_w * self.util
            self.temp_c = supply_c + self.power_w * r_nominal
        self.sensed_c = self.temp_c.copy()
        r_hbm_nominal = (R_HBM_K_PER_W + R_FLOW_K_PER_W) * REFERENCE_TDP_W / self.tdp_w
        self.hbm_c = np.full(n_gpu, supply_c) + self.power_w * r_hbm_nominal
        self.energy_j = np.zeros(n_gpu)
        self.work_lost = np.zeros(n_gpu)  # GPU-seconds of full-clock work lost to throttling and shutdowns
        self.power_capped = np.zeros(n_gpu, bool)
        self.thermal_capped = np.zeros(n_gpu, bool)
        self.sw_thermal_capped = np.zeros(n_gpu, bool)
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

        The controllers act on the die and HBM temperatures at the start of the step; every rate is per second
        (a cut is ``exp(-rate·dt)``), so a 5 s tick lands where fifty 0.1 s ticks do as long as the state the
        controllers see does not cross a threshold within the step. Written for memory passes: the thermal
        controllers' arithmetic runs only where a GPU is hot or still capped.
        """
        if not dt > 0:
            raise ValueError(f"dt must be a positive number of seconds, not {dt!r}")
        n_sub = math.ceil(dt / MAX_SUBSTEP_S - 1e-9)
        for _ in range(n_sub):
            self._advance(dt / n_sub)
        if len(self.step_ms):
            # A lost GPU computes nothing and holds no barrier: its job is interrupted (``lost``), not slowed.
            self.step_ms = self.job_step_ms(np.where(self.lost, 1.0, self._b.ratio))

    def _advance(self, dt: float) -> None:
        """One sub-step of at most ``MAX_SUBSTEP_S``: controllers, power, die, HBM, sensor."""
        b = self._buffers()
        self.loop.step(dt, np.bincount(self._gpu_unit, weights=self.power_w, minlength=len(self.supply_c)),
                       self.supply_c, self.setpoint_c, self.capacity_loss_c, self.fan_pct, self.flow_frac,
                       self.supply_sensed_c, self.return_sensed_c)
        # Shutdown: a die at its shutdown temperature takes the GPU off the bus until a reset.
        if np.greater_equal(self.temp_c, self.shutdown_c, out=b.mask).any():
            self._shut_down(b.mask & ~self.lost)
        leak = self._leakage(self.temp_c, out=b.leak)
        # Power-budget controller: the clock at which P meets the limit; walk toward it linearly.
        f_power = self._power_target(leak)
        step = POWER_STEP_MHZ_PER_S * dt
        np.subtract(self.clock_mhz, step, out=b.lo)
        np.add(self.clock_mhz, step, out=b.hi)
        f_pc = np.clip(f_power, b.lo, b.hi, out=b.f)
        self._software_thermal(dt, f_pc)
        self._hardware_slowdown(dt)
        # Priority gate: the lowest clock wins; a lost GPU has none.
        np.minimum(f_pc, self.thermal_cap_mhz, out=self.clock_mhz)
        np.minimum(self.clock_mhz, self.sw_thermal_cap_mhz, out=self.clock_mhz)
        np.clip(self.clock_mhz, self.f_min, self.f_max, out=self.clock_mhz)
        np.less(self.thermal_cap_mhz, self._f_max_m1, out=self.thermal_capped)
        np.less(self.sw_thermal_cap_mhz, self._f_max_m1, out=self.sw_thermal_capped)
        any_lost = self.lost.any()
        if any_lost:
            self.clock_mhz[self.lost] = 0.0
        ratio = np.divide(self.clock_mhz, self.f_max, out=b.ratio)
        # Power: static + leakage + C·v²·f·util, the voltage at its floor below the knee.
        np.maximum(ratio, V_KNEE_FRAC, out=b.t)
        b.t *= b.t
        b.t *= ratio
        b.t *= self.dynamic_max_w
        b.t *= self.util
        b.t += leak
        np.add(self.static_w, b.t, out=self.power_w)
        if any_lost:
            self.power_w[self.lost] = 0.0
        # Die and sensor: the exact two-stage cascade over dt with the die's target held (R per node, gathered).
        supply = np.take(self.supply_c, self._gpu_unit, out=b.supply)
        r_die, r_hbm = self._node_r()
        target = np.take(r_die, self.gpu_node, out=b.target)
        target *= self.power_w
        target += supply
        gap = np.subtract(self.temp_c, target, out=b.t)  # the die's gap to its target at the start
        self.sensed_c -= target
        self.sensed_c *= math.exp(-dt / self.sensor_tau_s)
        self.sensed_c += target
        np.multiply(gap, cascade_gain(dt, TAU_DIE_S, self.sensor_tau_s), out=b.room)
        self.sensed_c += b.room
        gap *= math.exp(-dt / TAU_DIE_S)
        np.add(target, gap, out=self.temp_c)
        # HBM: first order toward supply + P·R_hbm.
        hbm_target = np.take(r_hbm, self.gpu_node, out=b.target)
        hbm_target *= self.power_w
        hbm_target += supply
        hbm_target -= self.hbm_c
        hbm_target *= lag_alpha(dt, TAU_HBM_S)
        self.hbm_c += hbm_target
        if dt == 1.0:
            self.energy_j += self.power_w
        else:
            np.multiply(self.power_w, dt, out=b.t)
            self.energy_j += b.t
        # Work lost: the clock a busy GPU does not run at, and all the work a lost GPU's job expected of it.
        np.subtract(1.0, ratio, out=b.t)
        b.t *= self.util
        if any_lost:
            b.t += self.lost_util
        if dt != 1.0:
            b.t *= dt
        self.work_lost += b.t

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

    def reset(self, i: int | np.ndarray) -> None:
        """Reset GPU(s) ``i`` (``nvidia-smi -r``): a lost GPU comes back at full clock with its job's demand;
        every GPU reset has its thermal caps cleared."""
        back = np.zeros(len(self.lost), bool)
        back[i] = True
        back &= self.lost
        self.util[back] = self.lost_util[back]
        self.lost_util[back] = 0.0
        self.lost[back] = False
        self.clock_mhz[back] = self.f_max[back]  # from there the power controller walks as usual
        self.thermal_cap_mhz[i] = self.f_max[i]
        self.sw_thermal_cap_mhz[i] = self.f_max[i]

    @property
    def lost_count(self) -> int:
        """GPUs shut down by their own thermal protection and not reset since."""
        return int(self.lost.sum())

    # --- step helpers ---------------------------------------------------------------------------------
    def _buffers(self) -> _Buffers:
        b = getattr(self, "_b", None)
        if b is None or len(b.f) != len(self.clock_mhz):
            n = len(self.clock_mhz)
            b = self._b = _Buffers(*(np.empty(n) for _ in range(10)), np.empty(n, bool))
            self._f_max_m1 = self.f_max - 1.0
            self._gpu_unit = self.node_unit[self.gpu_node]
        return b

    def _leakage(self, temp_c: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Leakage power (W) at die temperature ``temp_c``: ``LEAK_SHARE`` of TDP at the calibration
        temperature, doubling every ``LEAK_DOUBLING_C``."""
        hot = np.minimum(temp_c, LEAK_MAX_C, out=out)
        hot -= self.leak_ref_c
        hot *= 1.0 / LEAK_DOUBLING_C
        np.exp2(hot, out=hot)
        hot *= self.leak_ref_w
        return hot

    def _power_target(self, leak: np.ndarray) -> np.ndarray:
        """The clock each GPU's power controller walks toward: where P meets the limit at this leakage.

        The dynamic power left in the budget, as a share ``y`` of the full-clock figure, inverts the power law:
        ``x = ∛y`` above the knee (v ∝ f) and ``x = y / knee²`` below it (v at its floor)."""
        b = self._b
        room = np.subtract(self.power_limit_w, self.static_w, out=b.room)
        room -= leak
        dynamic = np.multiply(self.dynamic_max_w, self.util, out=b.t)
        f_power = b.f_power
        np.copyto(f_power, self.f_max)
        self.power_capped[:] = False
        short = np.flatnonzero(np.less(room, dynamic, out=b.mask))  # only these cannot run at f_max
        if len(short):
            share = room[short] / np.maximum(dynamic[short], 1e-9)
            knee = V_KNEE_FRAC
            x = np.where(share >= knee**3, np.cbrt(share), share / knee**2)
            f_power[short] = np.clip(self.f_max[short] * x, self.f_min[short], self.f_max[short])
            self.power_capped[short] = f_power[short] < self._f_max_m1[short]
        return f_power

    def _software_thermal(self, dt: float, f_pc: np.ndarray) -> None:
        """The driver's cap, an integral controller: down by ``SW_THERMAL_MHZ_PER_S_PER_C`` per °C while the GPU
        reports max operating (its sensor: NVML documents ``sw_thermal_slowdown`` on the GPU's reported
        temperature) or the HBM its limit; back up slowly once both are ``SW_THERMAL_HYSTERESIS_C`` below. It
        lowers from its own cap or the power controller's clock and holds while the hardware cut is on (that cut
        already keeps the clock under the driver's, and the two piling up would undershoot far)."""
        over = np.greater_equal(self.sensed_c, self.max_operating_c, out=self._b.mask)
        over |= self.hbm_c >= self.hbm_max_c
        over &= ~self.thermal_capped
        hot = np.flatnonzero(over)
        if len(hot):
            excess = np.maximum(self.sensed_c[hot] - self.max_operating_c[hot], self.hbm_c[hot] - self.hbm_max_c[hot])
            excess += SW_THERMAL_MIN_EXCESS_C
            lowered = np.minimum(self.sw_thermal_cap_mhz[hot], f_pc[hot]) - SW_THERMAL_MHZ_PER_S_PER_C * excess * dt
            self.sw_thermal_cap_mhz[hot] = np.maximum(lowered, self.f_min[hot])
        capped = np.less(self.sw_thermal_cap_mhz, self._f_max_m1)
        if capped.any():
            cool = capped & (self.sensed_c < self.max_operating_c - SW_THERMAL_HYSTERESIS_C)
            cool &= self.hbm_c < self.hbm_max_c - SW_THERMAL_HYSTERESIS_C
            raised = np.minimum(self.sw_thermal_cap_mhz + SW_THERMAL_RECOVER_MHZ_PER_S * dt, self.f_max)
            np.copyto(self.sw_thermal_cap_mhz, raised, where=cool)

    def _hardware_slowdown(self, dt: float) -> None:
        """The hardware's cap: cut hard (a decay rate) at slowdown, recover slowly 3 °C below it."""
        hot = np.greater_equal(self.temp_c, self.slowdown_c)
        if hot.any():
            cut = np.minimum(self.thermal_cap_mhz, self.clock_mhz) * math.exp(-HW_CUT_PER_S * dt)
            np.copyto(self.thermal_cap_mhz, np.maximum(cut, self.f_min), where=hot)
        # Recovery only matters where a cap is below f_max (checked each step: callers may set caps directly).
        capped = np.less(self.thermal_cap_mhz, self._f_max_m1)
        if capped.any():
            cool = capped & (self.temp_c < self.slowdown_c - HW_RECOVER_BELOW_C)
            recovered = np.minimum(self.thermal_cap_mhz + THERMAL_RECOVER_MHZ_PER_S * dt, self.f_max)
            np.copyto(self.thermal_cap_mhz, recovered, where=cool)

    def _shut_down(self, mask: np.ndarray) -> None:
        """GPUs in ``mask`` reached their shutdown temperature: off the bus, their job's demand kept for a reset."""
        self.lost_util[mask] = self.util[mask]
        self.util[mask] = 0.0
        self.lost |= mask

    def _node_r(self) -> tuple[np.ndarray, np.ndarray]:
        """Thermal resistances per node (K/W), die → coolant and HBM → coolant: worse with less flow or slower
        fans, scaled to the node's model."""
        fan = np.take(self.fan_pct, self.node_unit)
        plate = R_FLOW_K_PER_W / np.maximum(self.flow_frac, 0.05) * np.sqrt(NOMINAL_FAN_PCT / np.maximum(fan, 1.0))
        return (R_BASE_K_PER_W + plate) * self._node_r_scale, (R_HBM_K_PER_W + plate) * self._node_r_scale

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
        """NVML-style throttle reasons of GPU ``i`` right now (none for a lost GPU: it is off the bus, see
        ``lost``)."""
        if self.lost[i]:
            return ()
        reasons = []
        if self.power_capped[i] and self.clock_mhz[i] < self.f_max[i] - 1.0:
            reasons.append("sw_power_cap")
        if self.thermal_capped[i]:
            reasons.append("hw_thermal_slowdown")
        if self.sw_thermal_capped[i]:
            reasons.append("sw_thermal_slowdown")
        if self.power_w[i] > self.power_limit_w[i] * 1.1:
            reasons.append("hw_power_brake")
        return tuple(reasons)

    def energy(self) -> dict[str, float | dict[str, float]]:
        """Joules per node and job so far, GPU-seconds of work lost to throttling and shutdowns, GPUs lost."""
        nodes = np.bincount(self.gpu_node, weights=self.energy_j, minlength=len(self.topo.nodes))
        member = self.job_of_gpu >= 0
        jobs = np.bincount(self.job_of_gpu[member], weights=self.energy_j[member], minlength=len(self.step_ms))
        busy = float(self.util.sum()) or 1.0
        return {"total_j": float(self.energy_j.sum()),
                "nodes_j": dict(zip(self.topo.nodes, nodes.round(1).tolist(), strict=True)),
                "jobs_j": dict(zip(self.topo.job_names, jobs.round(1).tolist(), strict=True)),
                "work_lost_gpu_s": float(self.work_lost.sum()), "busy_gpus": busy, "lost_gpus": float(self.lost_count)}

    def steady_temp_c(self) -> np.ndarray:
        """Die temperature each GPU would settle at with the present power, coolant and flow."""
        return self.supply_c[self.node_unit[self.gpu_node]] + self.power_w * self._node_r()[0][self.gpu_node]

    # --- persistence ------------------------------------------------------------------------------------
    _STATE = (
        "util", "power_limit_w", "clock_mhz", "thermal_cap_mhz", "power_w", "temp_c", "sensed_c", "energy_j",
        "work_lost", "setpoint_c", "supply_c", "fan_pct", "flow_frac", "link_frac", "capacity_loss_c",
        "supply_sensed_c", "return_sensed_c",
        "sw_thermal_cap_mhz", "hbm_c", "lost", "lost_util",
    )

    def state_dict(self) -> dict[str, list[float] | list[bool]]:
        """The mutable state as plain lists (JSON-able), for resuming after a restart."""
        return {k: getattr(self, k).tolist() for k in self._STATE}

    def load_state(self, state: dict[str, list[float] | list[bool]]) -> None:
        """Restore what ``state_dict`` returned; shapes must match this topology."""
        for k in self._STATE:
            if k not in state:  # saved by an older version: keep this field's default
                continue
            arr = np.asarray(state[k], getattr(self, k).dtype)
            if arr.shape != getattr(self, k).shape:
                raise ValueError(f"saved state {k} has shape {arr.shape}, this fleet needs {getattr(self, k).shape}")
            setattr(self, k, arr)
