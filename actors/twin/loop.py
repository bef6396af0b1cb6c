"""The facility side of the plant: each cooling unit's coolant loop, its heat balance and what it costs in kW.

Pure numpy, vectorised over cooling units (no per-unit Python loop). :class:`CoolantLoop` holds the loops'
parameters; :meth:`CoolantLoop.step` advances the true supply temperature and the facility's own sensors, and
leaves the loop's readings (return temperature, flow, heat removed, chiller/pump/fan power) in
:attr:`CoolantLoop.reading`. :class:`actors.twin.physics.FleetPhysics` calls it once per tick with each unit's IT
heat (the power of the GPUs it cools); the what-if (:mod:`actors.agent.whatif`) reads the facility kW and PUE.

Model, per unit (time step ``dt``):

- heat balance of the loop's coolant: ``M·c_p·dT_sup/dt = Q_IT − Q_removed``;
- the unit's controller removes what holds its setpoint, ``Q_ctrl = Q_IT + M·c_p·(T_sup − T_set)/τ`` (it measures
  the load it carries and closes the remaining gap with time constant ``τ``), never less than nothing, and never
  more than its capacity ``Q_cap = G·(T_sup − T_set + APPROACH_K − loss)``: at its setpoint a healthy unit can
  remove its rating (the full TDP of the GPUs it cools), more when the coolant runs warmer (a larger approach to
  the plant behind it, ``APPROACH_K`` from the exchanger's effectiveness), ``G·loss`` less when it has lost
  ``loss`` kelvin of capacity (a fault: a fouled exchanger, a tripped compressor). ``M·c_p = G·τ``, so both
  regimes settle with the same time constant, and
  ``T_sup → max(T_set, T_set − APPROACH_K + loss + Q_IT/G)``: a unit with enough capacity holds its setpoint,
  one fully loaded with ``loss`` kelvin lost settles ``loss`` above it (what the simulator's ``supply_drift``
  fault has always meant), one less loaded settles lower. A loss larger than ``APPROACH_K`` leaves the unit
  removing nothing at its setpoint: its loop then warms no faster than ``Q_IT/(M·c_p)`` (a loop of
  ``τ·1000/(APPROACH_K·c_p)`` ≈ 1.1 litres of water per kW of rating), slower than the bare lag toward
  ``setpoint + loss`` the plant had before it had a heat balance;
- return temperature ``T_ret = T_sup + Q_IT/(ṁ·c_p)``; flow ``ṁ = ṁ_nom · n · (mean flow share of its nodes)``
  with ``ṁ_nom`` sized for ``DESIGN_DELTA_K`` across the IT at rating;
- pump and fan affinity laws: flow ∝ speed ``n``, power ∝ ``n³`` (``n`` = the unit's fan/pump speed over its
  nominal, the one speed the catalogue's ``set_fan_speed`` sets);
- chiller: ``P_chiller = Q_removed / COP(T_sup)``, ``COP = COP_REF·(1 + COP_PER_K·(T_sup − COP_REF_C))``; a warmer
  supply makes a better COP. The slope is the published shape of chiller efficiency against chilled-water
  temperature: about 1–2 % per °F, i.e. 2–3.5 % per °C (ASHRAE TC 9.9, *Thermal Guidelines for Data Processing
  Environments*; chiller makers' application guides quote the same rule of thumb). We take 2.5 %/°C, linear over
  the catalogue's 12–40 °C setpoints and clipped to ``[COP_MIN, COP_MAX]``;
- the facility's supply and return sensors are first-order lags (``TAU_FACILITY_SENSOR_S``, an RTD in a
  thermowell), separate from the GPUs' sensors.

Facility power = chiller + pumps + fans; ``PUE = (IT + facility) / IT`` with IT the GPUs' power (the only IT load
the plant models). Every first-order update is the exact discretisation ``x += (target − x)·(1 − exp(−dt/τ))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

C_P_WATER = 4186.0  # J/(kg·K)
DESIGN_DELTA_K = 10.0  # return − supply at rated IT heat and nominal speed (a typical liquid loop's design ΔT)
#: The exchanger between the unit's loop and the plant behind it (a CDU's plate exchanger): counterflow with the
#: loop's ṁ·c_p the smaller stream, whose hot inlet is the return, removes Q = ε/(1−ε)·ṁ·c_p·(T_sup − T_sink). At
#: rated heat and flow that puts the supply APPROACH_K = DESIGN_DELTA_K·(1−ε)/ε above the sink (6.7 K at ε = 0.6,
#: NTU 1.5; ε 0.5–0.7 gives 4–10 K), and capacity rises G = rating/APPROACH_K watts per kelvin of warmer supply.
HX_EFFECTIVENESS = 0.6
APPROACH_K = DESIGN_DELTA_K * (1.0 - HX_EFFECTIVENESS) / HX_EFFECTIVENESS
COP_REF, COP_REF_C, COP_PER_K = 5.0, 18.0, 0.025  # chiller COP 5 at 18 °C supply, +2.5 % of that per °C
COP_MIN, COP_MAX = 1.5, 12.0
PUMP_SHARE, FAN_SHARE = 0.02, 0.04  # pump and fan power at nominal speed, as shares of the unit's rating
TAU_FACILITY_SENSOR_S = 5.0


def _alpha(dt: float, tau: float) -> float:
    """``actors.twin.physics.lag_alpha``, which this module cannot import (physics imports it)."""
    return float(1.0 - np.exp(-dt / tau))


def cop(supply_c: np.ndarray | float) -> np.ndarray:
    """The chiller's coefficient of performance at this supply temperature (see the module docstring)."""
    return np.clip(COP_REF * (1.0 + COP_PER_K * (np.asarray(supply_c, float) - COP_REF_C)), COP_MIN, COP_MAX)


def loss_explaining(supply_c: float, setpoint_c: float, load_frac: float) -> float:
    """The capacity loss (K) that explains a unit settled at ``supply_c`` over its setpoint while carrying
    ``load_frac`` of its rating: the steady supply ``T_set − APPROACH_K + loss + Q_IT/G`` solved for ``loss``.
    A unit at or under its setpoint shows no loss (whatever it lost, it still has the headroom)."""
    if supply_c <= setpoint_c:
        return 0.0
    return supply_c - setpoint_c + APPROACH_K * (1.0 - min(max(load_frac, 0.0), 1.0))


@dataclass
class LoopReading:
    """Every unit's loop as of the last step (W, kg/s, °C); arrays over units."""

    it_w: np.ndarray
    removed_w: np.ndarray
    return_c: np.ndarray
    flow_kg_s: np.ndarray
    cop: np.ndarray
    chiller_w: np.ndarray
    pumps_w: np.ndarray
    fans_w: np.ndarray

    @property
    def facility_w(self) -> np.ndarray:
        """Each unit's facility power: chiller, pumps and fans."""
        return self.chiller_w + self.pumps_w + self.fans_w

    @property
    def facility_kw(self) -> float:
        return float(self.facility_w.sum()) / 1000.0

    @property
    def pue(self) -> float:
        """(IT + facility) / IT over every unit; 1.0 when there is no IT load."""
        it = float(self.it_w.sum())
        return (it + float(self.facility_w.sum())) / it if it > 0 else 1.0


class CoolantLoop:
    """The coolant loops of ``len(rated_w)`` cooling units; ``node_unit`` maps each node to its unit."""

    def __init__(self, node_unit: np.ndarray, rated_w: np.ndarray, tau_s: float, nominal_speed_pct: float) -> None:
        self.node_unit = np.asarray(node_unit, int)
        n_unit = len(rated_w)
        if len(self.node_unit) and not 0 <= self.node_unit.min() <= self.node_unit.max() < n_unit:
            raise ValueError(f"nodes are mapped to units outside the {n_unit} cooling units")
        # A unit that serves nothing still has a loop: size it at 1 W so its parameters stay finite.
        self.rated_w = np.maximum(np.asarray(rated_w, float), 1.0)
        self.tau_s = tau_s
        self.nominal_speed_pct = nominal_speed_pct
        self.g_w_per_k = self.rated_w / APPROACH_K
        self.heat_capacity_j_per_k = self.g_w_per_k * tau_s  # M·c_p, so the loop settles with time constant τ
        self.flow_nom_kg_s = self.rated_w / (C_P_WATER * DESIGN_DELTA_K)
        self._nodes_per_unit = np.maximum(np.bincount(self.node_unit, minlength=n_unit), 1)
        self.reading: LoopReading | None = None

    def flow_kg_s(self, speed_pct: np.ndarray, flow_frac: np.ndarray) -> np.ndarray:
        """Coolant flow per unit: affinity law (∝ speed) times the mean flow share of its nodes (a blocked node
        passes less), floored at 5 % of nominal like the GPUs' thermal resistance."""
        share = np.bincount(self.node_unit, weights=flow_frac, minlength=len(self.rated_w)) / self._nodes_per_unit
        speed = np.asarray(speed_pct, float) / self.nominal_speed_pct
        return self.flow_nom_kg_s * np.maximum(speed * share, 0.05)

    def return_c(self, supply_c: np.ndarray, it_w: np.ndarray, flow_kg_s: np.ndarray) -> np.ndarray:
        """Return temperature: the supply plus the IT heat the flow carries back."""
        return supply_c + it_w / (flow_kg_s * C_P_WATER)

    def step(self, dt: float, it_w: np.ndarray, supply_c: np.ndarray, setpoint_c: np.ndarray,
             capacity_loss_c: np.ndarray, speed_pct: np.ndarray, flow_frac: np.ndarray,
             supply_sensed_c: np.ndarray, return_sensed_c: np.ndarray) -> LoopReading:
        """Advance every loop by ``dt`` s with ``it_w`` of IT heat per unit: updates ``supply_c`` and the two sensor
        arrays in place, and returns (and keeps) the loops' readings."""
        if dt <= 0:
            raise ValueError(f"dt must be positive, got {dt}")
        it_w = np.asarray(it_w, float)
        capped_c = setpoint_c - APPROACH_K + capacity_loss_c + it_w / self.g_w_per_k
        target = np.maximum(setpoint_c, capped_c)
        new = supply_c + (target - supply_c) * _alpha(dt, self.tau_s)
        np.minimum(new, supply_c + it_w * dt / self.heat_capacity_j_per_k, out=new)  # it removes no less than nothing
        removed = it_w - self.heat_capacity_j_per_k * (new - supply_c) / dt  # the heat balance over the step
        supply_c[:] = new
        flow = self.flow_kg_s(speed_pct, flow_frac)
        ret = self.return_c(supply_c, it_w, flow)
        a = _alpha(dt, TAU_FACILITY_SENSOR_S)
        supply_sensed_c += (supply_c - supply_sensed_c) * a
        return_sensed_c += (ret - return_sensed_c) * a
        self.reading = self.read(it_w, removed, supply_c, ret, flow, speed_pct)
        return self.reading

    def read(self, it_w: np.ndarray, removed_w: np.ndarray, supply_c: np.ndarray, return_c: np.ndarray,
             flow_kg_s: np.ndarray, speed_pct: np.ndarray) -> LoopReading:
        """The loops' power at this operating point: chiller by its COP, pumps and fans by the affinity law."""
        c = cop(supply_c)
        cube = (np.asarray(speed_pct, float) / self.nominal_speed_pct) ** 3
        return LoopReading(it_w=it_w, removed_w=removed_w, return_c=return_c, flow_kg_s=flow_kg_s, cop=c,
                           chiller_w=np.maximum(removed_w, 0.0) / c, pumps_w=PUMP_SHARE * self.rated_w * cube,
                           fans_w=FAN_SHARE * self.rated_w * cube)

    def steady(self, it_w: np.ndarray, supply_c: np.ndarray, speed_pct: np.ndarray,
               flow_frac: np.ndarray) -> LoopReading:
        """The readings of loops at rest at ``supply_c`` (heat removed = IT heat): the starting point."""
        it_w = np.asarray(it_w, float)
        flow = self.flow_kg_s(speed_pct, flow_frac)
        self.reading = self.read(it_w, it_w.copy(), supply_c, self.return_c(supply_c, it_w, flow), flow, speed_pct)
        return self.reading
