"""Cooling units (CDUs, CRAHs): their latest readings, which unit cools which node, and ``cooling_degraded``.

:class:`CoolingWatch` is the facility side of the twin's model for cooling: it folds
:class:`~cluster.telemetry.samples.CoolingSample` s, keeps each unit's supply-temperature history (the lead a GPU
event carries, :func:`actors.twin.history.supply_lead`), learns the node → unit map from the samples' ``serves``,
and raises ``cooling_degraded`` after ``confirm_ticks`` bad readings in a row (flow to a node under
``flow_degraded`` of nominal, supply above setpoint by ``supply_excess_c``, fans under ``fan_degraded_pct``) and
``cooling_recovered`` when all are back within their recovery margins. Deterministic: time comes from the samples;
the state is plain data for the twin's checkpoint (the keys the model's checkpoint has always used).

A unit is also degraded when its supply drifts well above *its own normal*, which needs no setpoint and no flow
meter (a CRAH that reports only its supply air: 18 °C climbing to 31 °C is a unit losing capacity, and the heat of
every GPU it cools is its doing). The normal is the median of one reading every ``NORMAL_EVERY_S`` over the last
``NORMAL_READINGS`` (an hour: slow enough that a fault's minutes do not move it), judged once it holds
``NORMAL_MIN_READINGS``. The supply drifts when it stays more than ``supply_excess_c`` (the same margin a unit
gets over its setpoint, 3 °C) above the normal for ``DRIFT_HOLD_S``; it recovers at half that margin. Readings
above the margin never enter the normal (the fault would become the normal); a reported setpoint that changes
starts the normal afresh (a commanded change is a new normal, not a drift).
"""

from __future__ import annotations

import statistics
from typing import Any

from actors.twin.events import Event
from actors.twin.history import HISTORY, UnitHistory
from actors.twin.state import need, num
from cluster.telemetry.samples import CoolingSample

NORMAL_EVERY_S = 30.0  # one supply reading per this many seconds goes into a unit's normal
NORMAL_READINGS = 120  # the normal's window: an hour of them
NORMAL_MIN_READINGS = 10  # five minutes of them before a unit's drift is judged
DRIFT_HOLD_S = 60.0  # how long the supply must stay above its normal's margin (a transient is not a drift)


class CoolingWatch:
    """Every cooling unit seen: latest sample, supply history, node map and the degradation detector's state."""

    def __init__(self, history: int = HISTORY) -> None:
        self.units: dict[str, CoolingSample] = {}
        self.hist = UnitHistory(history)
        self.node_unit: dict[str, str] = {}
        self.streak: dict[str, int] = {}
        self.alarm: dict[str, bool] = {}
        self.normal: dict[str, list[float]] = {}  # per unit, the supply readings its normal is the median of
        self.normal_ts: dict[str, float] = {}  # when the last of them was taken
        self.drift_since: dict[str, float] = {}  # since when the supply has been above its normal's margin

    def ingest(self, s: CoolingSample, th: Any) -> list[Event]:
        """Fold one unit's reading (``th``: the model's thresholds); a degradation or recovery event, or none."""
        before = self.units.get(s.unit)
        if before is not None and before.setpoint_c != s.setpoint_c:
            self.normal.pop(s.unit, None)
        normal, drifting = self._drift(s, th.supply_excess_c)
        self.units[s.unit] = s
        self.hist.push(s.unit, s.ts, s.supply_c)
        for node in s.serves:
            self.node_unit[node] = s.unit
        flows = s.flow_frac or {}
        worst_node, worst = min(flows.items(), key=lambda kv: (kv[1], kv[0]), default=(None, 1.0))
        setpoint = s.setpoint_c if s.setpoint_c is not None else s.supply_c
        fan = s.fan_pct if s.fan_pct is not None else 100.0
        bad = (worst < th.flow_degraded or s.supply_c > setpoint + th.supply_excess_c or fan < th.fan_degraded_pct
               or drifting)
        good = (worst >= th.flow_recovered and s.supply_c <= setpoint + th.supply_excess_c / 2
                and fan >= th.fan_recovered_pct and (normal is None or s.supply_c <= normal + th.supply_excess_c / 2))
        streak = self.streak.get(s.unit, 0) + 1 if bad else 0
        self.streak[s.unit] = streak
        # The setpoint as reported (None when the unit reports none: the supply stands in for it above, but a step
        # "2 K below the current setpoint" must not count from a reading that is not a setpoint).
        data = {"unit": s.unit, "node": worst_node, "flow_frac": worst, "supply_c": s.supply_c,
                "setpoint_c": s.setpoint_c, "fan_pct": s.fan_pct, "nodes": list(s.serves), "normal_c": normal}
        if streak >= th.confirm_ticks and not self.alarm.get(s.unit):
            self.alarm[s.unit] = True
            return [Event.make("cooling_degraded", s.unit, s.ts, "warning", data)]
        if good and self.alarm.get(s.unit):
            self.alarm[s.unit] = False
            return [Event.make("cooling_recovered", s.unit, s.ts, "info", data)]
        return []

    def _drift(self, s: CoolingSample, margin_c: float) -> tuple[float | None, bool]:
        """The unit's normal supply (None while too few readings) and whether its supply has drifted above it;
        takes this reading into the normal when one is due and it is within the margin."""
        window = self.normal.setdefault(s.unit, [])
        normal = statistics.median(window) if len(window) >= NORMAL_MIN_READINGS else None
        above = normal is not None and s.supply_c > normal + margin_c
        if above:
            since = self.drift_since.setdefault(s.unit, s.ts)
        else:
            self.drift_since.pop(s.unit, None)
            if s.ts - self.normal_ts.get(s.unit, float("-inf")) >= NORMAL_EVERY_S:
                window.append(s.supply_c)
                del window[:-NORMAL_READINGS]
                self.normal_ts[s.unit] = s.ts
        return normal, above and s.ts - since >= DRIFT_HOLD_S

    def snapshot(self) -> list[dict]:
        """Every unit as the dashboard and the chat grounding show it."""
        return [{"unit": u, "supply_c": s.supply_c, "setpoint_c": s.setpoint_c, "fan_pct": s.fan_pct,
                 "flow_frac": s.flow_frac, "serves": list(s.serves), "alarm": bool(self.alarm.get(u))}
                for u, s in sorted(self.units.items())]

    def to_state(self) -> dict:
        """As plain data, under the keys the model's checkpoint uses."""
        return {"units": {u: s.model_dump(mode="json") for u, s in self.units.items()},
                "unit_hist": self.hist.to_state(), "node_unit": dict(self.node_unit),
                "unit_streak": dict(self.streak), "unit_alarm": dict(self.alarm),
                "unit_normal": {u: list(v) for u, v in self.normal.items()}, "unit_normal_ts": dict(self.normal_ts),
                "unit_drift_since": dict(self.drift_since)}

    @classmethod
    def from_state(cls, d: dict) -> CoolingWatch:
        """Rebuild from a model checkpoint's keys; raises ``StateError`` when they do not fit."""
        w = cls()
        w.units = {need(u, str, "unit"): CoolingSample.model_validate(s)
                   for u, s in need(d["units"], dict, "units").items()}
        w.hist = UnitHistory.from_state(d["unit_hist"])
        w.node_unit = {need(k, str, "node"): need(v, str, "unit") for k, v in need(d["node_unit"], dict, "").items()}
        w.streak = {need(k, str, "unit"): need(v, int, "streak") for k, v in need(d["unit_streak"], dict, "").items()}
        w.alarm = {need(k, str, "unit"): need(v, bool, "alarm") for k, v in need(d["unit_alarm"], dict, "").items()}
        # A checkpoint from before units had a normal has none of these: the normals are learnt afresh.
        w.normal = {need(k, str, "unit"): [num(x, "normal") for x in need(v, list, "normal")]
                    for k, v in need(d.get("unit_normal", {}), dict, "").items()}
        w.normal_ts = {need(k, str, "unit"): num(v, "normal_ts")
                       for k, v in need(d.get("unit_normal_ts", {}), dict, "").items()}
        w.drift_since = {need(k, str, "unit"): num(v, "drift_since")
                         for k, v in need(d.get("unit_drift_since", {}), dict, "").items()}
        return w
