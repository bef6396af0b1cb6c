"""Cooling units (CDUs, CRAHs): their latest readings, which unit cools which node, and ``cooling_degraded``.

:class:`CoolingWatch` is the facility side of the twin's model for cooling: it folds
:class:`~cluster.telemetry.samples.CoolingSample` s, keeps each unit's supply-temperature history (the lead a GPU
event carries, :func:`actors.twin.history.supply_lead`), learns the node → unit map from the samples' ``serves``,
and raises ``cooling_degraded`` after ``confirm_ticks`` bad readings in a row (flow to a node under
``flow_degraded`` of nominal, supply above setpoint by ``supply_excess_c``, fans under ``fan_degraded_pct``) and
``cooling_recovered`` when all are back within their recovery margins. Deterministic: time comes from the samples;
the state is plain data for the twin's checkpoint (the keys the model's checkpoint has always used).
"""

from __future__ import annotations

from typing import Any

from actors.twin.events import Event
from actors.twin.history import HISTORY, UnitHistory
from actors.twin.state import need
from cluster.telemetry.samples import CoolingSample


class CoolingWatch:
    """Every cooling unit seen: latest sample, supply history, node map and the degradation detector's state."""

    def __init__(self, history: int = HISTORY) -> None:
        self.units: dict[str, CoolingSample] = {}
        self.hist = UnitHistory(history)
        self.node_unit: dict[str, str] = {}
        self.streak: dict[str, int] = {}
        self.alarm: dict[str, bool] = {}

    def ingest(self, s: CoolingSample, th: Any) -> list[Event]:
        """Fold one unit's reading (``th``: the model's thresholds); a degradation or recovery event, or none."""
        self.units[s.unit] = s
        self.hist.push(s.unit, s.ts, s.supply_c)
        for node in s.serves:
            self.node_unit[node] = s.unit
        flows = s.flow_frac or {}
        worst_node, worst = min(flows.items(), key=lambda kv: (kv[1], kv[0]), default=(None, 1.0))
        setpoint = s.setpoint_c if s.setpoint_c is not None else s.supply_c
        fan = s.fan_pct if s.fan_pct is not None else 100.0
        bad = worst < th.flow_degraded or s.supply_c > setpoint + th.supply_excess_c or fan < th.fan_degraded_pct
        good = (worst >= th.flow_recovered and s.supply_c <= setpoint + th.supply_excess_c / 2
                and fan >= th.fan_recovered_pct)
        streak = self.streak.get(s.unit, 0) + 1 if bad else 0
        self.streak[s.unit] = streak
        data = {"unit": s.unit, "node": worst_node, "flow_frac": worst, "supply_c": s.supply_c, "setpoint_c": setpoint,
                "fan_pct": s.fan_pct, "nodes": list(s.serves)}
        if streak >= th.confirm_ticks and not self.alarm.get(s.unit):
            self.alarm[s.unit] = True
            return [Event.make("cooling_degraded", s.unit, s.ts, "warning", data)]
        if good and self.alarm.get(s.unit):
            self.alarm[s.unit] = False
            return [Event.make("cooling_recovered", s.unit, s.ts, "info", data)]
        return []

    def snapshot(self) -> list[dict]:
        """Every unit as the dashboard and the chat grounding show it."""
        return [{"unit": u, "supply_c": s.supply_c, "setpoint_c": s.setpoint_c, "fan_pct": s.fan_pct,
                 "flow_frac": s.flow_frac, "serves": list(s.serves), "alarm": bool(self.alarm.get(u))}
                for u, s in sorted(self.units.items())]

    def to_state(self) -> dict:
        """As plain data, under the keys the model's checkpoint uses."""
        return {"units": {u: s.model_dump(mode="json") for u, s in self.units.items()},
                "unit_hist": self.hist.to_state(), "node_unit": dict(self.node_unit),
                "unit_streak": dict(self.streak), "unit_alarm": dict(self.alarm)}

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
        return w
