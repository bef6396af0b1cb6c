"""What-if: run the twin's physics forward with a candidate action applied, before anyone approves it.

The prediction is made for the hottest GPU of the incident from what the twin reported about it (estimated
true temperature, sensed temperature, power, its cooling unit's supply and setpoint, the node's coolant
flow). It rides along with the proposal ("sensed temperature back under 84 °C in ~120 s") and the
gateway later compares the observed effect with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actors.agent.proposals import Prediction
from actors.twin.physics import FleetPhysics, Topology
from policies.actions import Action

HORIZON_S = 900
MARGIN_C = 3.0  # "back under" means this far below the maximum operating temperature
SHORT_OF_SLOWDOWN_C = 0.5  # the weaker claim of an action that cannot get back under: this far below slowdown
THERMAL_KINDS = {"set_cooling_setpoint", "set_fan_speed", "set_power_limit", "cordon_gpu", "drain_node"}


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
    if after is None or base is None:
        return None
    within, settles = after
    _, settles_without = base
    if within is not None:
        text = f"sensed temperature on {node} back under {line:.0f} °C in ~{within:.0f} s (settles at {settles:.1f} °C)"
        return _prediction(node, line, within, text, settles, settles_without)
    # Not enough to get back under the line: does it at least keep the die short of its slowdown temperature,
    # where without it the die reaches slowdown (and the clocks are cut)? That claim is on the die (``est_c``).
    short = float(facts.get("slowdown_c", float(facts["max_operating_c"]) + 2.0)) - SHORT_OF_SLOWDOWN_C
    die_after, die_without = _die_peak(action, facts, sensor_tau_s), _die_peak(None, facts, sensor_tau_s)
    if die_after < short <= die_without:
        text = (f"keeps the dies of {node} under {short:.1f} °C, short of slowdown (without it they reach "
                f"{die_without:.1f} °C), but not under {line:.0f} °C sensed (settles at {settles:.1f} °C)")
        return Prediction(metric="max_est_c", subject=node, below=round(short, 1), within_s=float(HORIZON_S),
                          text=text, settles_at=round(settles, 1), without_action=round(settles_without, 1))
    text = f"does not bring {node} under {line:.0f} °C within {HORIZON_S} s (settles at {settles:.1f} °C)"
    return Prediction(metric="max_sensed_c", subject=node, within_s=float(HORIZON_S), text=text,
                      settles_at=round(settles, 1), without_action=round(settles_without, 1))


def _die_peak(action: Action | None, facts: Mapping[str, Any], tau: float) -> float:
    """The die's highest temperature over the last half of the horizon (after the transient)."""
    p = _physics(action, facts, tau)
    peak = float("-inf")
    for t in range(1, HORIZON_S + 1):
        p.step(1.0)
        if t > HORIZON_S // 2:
            peak = max(peak, float(p.temp_c[0]))
    return peak


def _prediction(node: str, below: float, within: float, text: str, settles: float, without: float) -> Prediction:
    # The gateway holds the executed action to this, in twin time, with room for what the model leaves out.
    return Prediction(metric="max_sensed_c", subject=node, below=round(below, 1), within_s=max(60.0, 2.0 * within),
                      text=text, settles_at=round(settles, 1), without_action=round(without, 1))


def _run(action: Action | None, facts: Mapping[str, Any], tau: float, line: float) -> tuple[float | None, float] | None:
    p = _physics(action, facts, tau)
    within = None
    for t in range(1, HORIZON_S + 1):
        p.step(1.0)
        if within is None and p.sensed_c[0] < line and t > 5:
            within = float(t)
    return within, float(p.sensed_c[0])


def _physics(action: Action | None, facts: Mapping[str, Any], tau: float) -> FleetPhysics:
    """One GPU as the incident's hottest, with ``action`` applied (None: as it is)."""
    p = FleetPhysics(Topology.build(1, 1, model=str(facts.get("model", "H100-SXM"))), sensor_tau_s=tau)
    p.setpoint_c[:] = float(facts["setpoint_c"])
    p.supply_c[:] = float(facts["supply_c"])
    # A unit running above its setpoint has lost capacity; assume it keeps losing that much.
    p.capacity_loss_c[:] = max(0.0, float(facts["supply_c"]) - float(facts["setpoint_c"]))
    if isinstance(facts.get("flow_frac"), int | float):
        p.flow_frac[:] = float(facts["flow_frac"])
    est = facts.get("est_c", facts.get("sensed_c"))
    sensed = facts.get("sensed_c", est)
    if isinstance(est, int | float):
        p.temp_c[:] = float(est)
    if isinstance(sensed, int | float):
        p.sensed_c[:] = float(sensed)
    if action is not None:
        kind = action.kind
        if kind == "set_cooling_setpoint":
            p.setpoint_c[:] = action.supply_c  # type: ignore[union-attr]
        elif kind == "set_fan_speed":
            p.fan_pct[:] = action.percent  # type: ignore[union-attr]
        elif kind == "set_power_limit":
            p.power_limit_w[:] = min(action.watts, float(p.tdp_w[0]))  # type: ignore[union-attr]
        elif kind in ("cordon_gpu", "drain_node"):
            p.util[:] = 0.0
    return p
