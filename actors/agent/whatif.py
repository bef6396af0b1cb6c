"""What-if: run the twin's physics forward with a candidate action applied, before anyone approves it.

The prediction is made for the hottest GPU of the incident from what the twin reported about it (estimated
true temperature, sensed temperature, the power it reported, its cooling unit's supply and setpoint, the node's
coolant flow). It rides along with the proposal ("sensed temperature back under 84 °C in ~120 s") and the
gateway later compares the observed effect with it.

The physics runs the hottest GPU's node: ``NODE_GPUS`` GPUs like the hottest one (its power, its temperature),
cooled by one unit whose coolant loop (:mod:`actors.twin.loop`) carries their heat. An action on the GPU (a power
limit, a cordon) acts on it alone, so it barely moves the unit's supply; an action on the node or the unit acts on
all of them. Each GPU draws the power the hottest one reported (its load as its power shows it, not its TDP), and a
unit running over its setpoint has lost the capacity that explains that supply at that load
(:func:`actors.twin.loop.loss_explaining`), and keeps losing it. Every prediction also says what the action does
to the die (settled, with it against without it) and to the facility: the chiller, pump and fan kW of the node's
cooling and the PUE, with the action and their change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from actors.agent.proposals import Prediction
from actors.twin.loop import loss_explaining
from actors.twin.physics import V_KNEE_FRAC, FleetPhysics, Topology
from policies.actions import Action

HORIZON_S = 900
MARGIN_C = 3.0  # "back under" means this far below the maximum operating temperature
SHORT_OF_SLOWDOWN_C = 0.5  # the weaker claim of an action that cannot get back under: this far below slowdown
THERMAL_KINDS = {"set_cooling_setpoint", "set_fan_speed", "set_power_limit", "cordon_gpu", "drain_node"}
#: GPUs of the node the what-if runs (an HGX/DGX baseboard's eight): the load the hottest GPU's unit carries
#: besides it, so an action on one GPU moves the unit's heat by one GPU's share, not all of it.
NODE_GPUS = 8
CLOCK_NOTE_MHZ = 15.0  # a change of the hottest GPU's clock the text mentions (a couple of DVFS bins)


@dataclass(frozen=True)
class _Outcome:
    """One run over the horizon: when the hottest GPU's sensed temperature got under the line for good (None: it
    ends the horizon over it), where its sensor, die and clock ended, the die's peak over the horizon's second
    half, and the facility at the end."""

    within: float | None
    sensed: float
    die: float
    clock_mhz: float
    die_peak: float
    facility_kw: float
    pue: float


def predict(action: Action, facts: Mapping[str, Any], sensor_tau_s: float = 15.0) -> Prediction | None:
    """Simulate ``action`` on the incident's hottest GPU; None when the action has no thermal effect or the
    facts needed for the model are missing."""
    if action.kind not in THERMAL_KINDS:
        return None
    need = ("setpoint_c", "supply_c", "power_w", "max_operating_c")
    if any(not isinstance(facts.get(k), int | float) for k in need) or not facts.get("node"):
        return None
    node = str(facts["node"])
    line = float(facts["max_operating_c"]) - MARGIN_C
    base = _run(None, facts, sensor_tau_s, line)
    after = _run(action, facts, sensor_tau_s, line)
    effects = {"die_change_c": round(after.die - base.die, 1), "facility_kw": round(after.facility_kw, 3),
               "facility_kw_change": round(after.facility_kw - base.facility_kw, 3), "pue": round(after.pue, 3),
               "pue_change": round(after.pue - base.pue, 3)}
    # A die that ends warmer may be one whose clocks the action gave back (it no longer hits slowdown): say so.
    clocks = (f" (clock {base.clock_mhz:.0f} → {after.clock_mhz:.0f} MHz)"
              if abs(after.clock_mhz - base.clock_mhz) >= CLOCK_NOTE_MHZ else "")
    also = (f"; die {effects['die_change_c']:+.1f} °C{clocks}, cooling {base.facility_kw:.2f} → "
            f"{after.facility_kw:.2f} kW, PUE {base.pue:.3f} → {after.pue:.3f}")
    settles, settles_without = round(after.sensed, 1), round(base.sensed, 1)
    if after.within is not None:
        text = (f"sensed temperature on {node} back under {line:.0f} °C in ~{after.within:.0f} s (settles at "
                f"{after.sensed:.1f} °C)")
        # The gateway holds the executed action to this, in twin time, with room for what the model leaves out.
        return Prediction(metric="max_sensed_c", subject=node, below=round(line, 1),
                          within_s=max(60.0, 2.0 * after.within), text=text + also, settles_at=settles,
                          without_action=settles_without, **effects)
    # Not enough to get back under the line: does it at least keep the die short of its slowdown temperature,
    # where without it the die reaches slowdown (and the clocks are cut)? That claim is on the die (``est_c``).
    short = float(facts.get("slowdown_c", float(facts["max_operating_c"]) + 2.0)) - SHORT_OF_SLOWDOWN_C
    if after.die_peak < short <= base.die_peak:
        text = (f"keeps the dies of {node} under {short:.1f} °C, short of slowdown (without it they reach "
                f"{base.die_peak:.1f} °C), but not under {line:.0f} °C sensed (settles at {after.sensed:.1f} °C)")
        return Prediction(metric="max_est_c", subject=node, below=round(short, 1), within_s=float(HORIZON_S),
                          text=text + also, settles_at=settles, without_action=settles_without, **effects)
    text = f"does not bring {node} under {line:.0f} °C within {HORIZON_S} s (settles at {after.sensed:.1f} °C)"
    return Prediction(metric="max_sensed_c", subject=node, within_s=float(HORIZON_S), text=text + also,
                      settles_at=settles, without_action=settles_without, **effects)


def _run(action: Action | None, facts: Mapping[str, Any], tau: float, line: float) -> _Outcome:
    p = _physics(action, facts, tau)
    within, peak = None, float("-inf")
    for t in range(1, HORIZON_S + 1):
        p.step(1.0)
        # "Back under" is where the sensor gets under the line and stays there to the horizon: a sensor still on
        # its way up (an early warning comes while it reads under the line) has not been brought under by anything.
        if p.sensed_c[0] >= line:
            within = None
        elif within is None and t > 5:
            within = float(t)
        if t > HORIZON_S // 2:
            peak = max(peak, float(p.temp_c[0]))
    r = p.loop.reading
    assert r is not None  # the loop has stepped
    return _Outcome(within, float(p.sensed_c[0]), float(p.temp_c[0]), float(p.clock_mhz[0]), peak, r.facility_kw,
                    r.pue)


def _physics(action: Action | None, facts: Mapping[str, Any], tau: float) -> FleetPhysics:
    """The hottest GPU's node (GPU 0 the hottest, the others like it), with ``action`` applied (None: as it is)."""
    p = FleetPhysics(Topology.build(1, NODE_GPUS, model=str(facts.get("model", "H100-SXM"))), sensor_tau_s=tau)
    est = facts.get("est_c", facts.get("sensed_c"))
    sensed = facts.get("sensed_c", est)
    if isinstance(est, int | float):
        p.temp_c[:] = float(est)
    if isinstance(sensed, int | float):
        p.sensed_c[:] = float(sensed)
    # The load the reported power shows, by the plant's own power law at the clock it reported and the die's
    # temperature now: P = static + leakage(T) + dynamic·util·share(f). (Not idle + (TDP − idle)·util: leakage
    # grows with the die, so that line would run a cool GPU tens of watts under what it reported. And not at full
    # clock: a GPU its slowdown has cut draws far less than its job asks, and an action that gives the clock back
    # gives that power back too.)
    leak = p._leakage(p.temp_c.copy())
    clock = facts.get("clock_mhz")
    x = float(np.clip(float(clock) / p.f_max[0], 0.0, 1.0)) if isinstance(clock, int | float) and clock > 0 else 1.0
    share = x**3 if x >= V_KNEE_FRAC else x * V_KNEE_FRAC**2  # the plant's dynamic power at that clock
    p.util[:] = np.clip((float(facts["power_w"]) - p.static_w - leak) / (p.dynamic_max_w * max(share, 1e-3)),
                        0.0, 1.0)
    p.power_w[:] = p.static_w + leak + p.dynamic_max_w * p.util
    p.setpoint_c[:] = float(facts["setpoint_c"])
    p.supply_c[:] = p.supply_sensed_c[:] = float(facts["supply_c"])
    p.capacity_loss_c[:] = loss_explaining(float(facts["supply_c"]), float(facts["setpoint_c"]),
                                           float(p.power_w.sum() / p.loop.rated_w[0]))
    if isinstance(facts.get("flow_frac"), int | float):
        p.flow_frac[:] = float(facts["flow_frac"])
    if action is not None:
        kind = action.kind
        if kind == "set_cooling_setpoint":
            p.setpoint_c[:] = action.supply_c  # type: ignore[union-attr]
        elif kind == "set_fan_speed":
            p.fan_pct[:] = action.percent  # type: ignore[union-attr]
        elif kind == "set_power_limit":
            p.power_limit_w[0] = min(action.watts, float(p.tdp_w[0]))  # type: ignore[union-attr]
        elif kind == "cordon_gpu":
            p.util[0] = 0.0
        elif kind == "drain_node":
            p.util[:] = 0.0
    return p
