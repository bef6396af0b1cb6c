"""The twin's model of the fleet, built from samples alone, and the detectors that turn it into events.

Sensor-lag correction and early warning live in :mod:`actors.twin.estimator` (a Kalman filter on a die driven by the
GPU's power and its cooling unit's supply and flow, whose sensor lag it identifies per GPU). Here the per-GPU
estimates become events with confirmation (``warn_confirm_ticks`` consecutive readings) and hysteresis (one warning per
episode; an episode closes only after ``recover_hold_s`` of calm). GPU signals (power cap, clock drops, XIDs, sensor
faults) are in :mod:`actors.twin.signals`; links and jobs in :mod:`actors.twin.network`. The facility has modules of
its own, each folding its sample kind: cooling units (:mod:`actors.twin.cooling`), leak detectors
(:mod:`actors.twin.facility`), vLLM replicas (:mod:`actors.twin.llm_engine`), Alertmanager's alerts
(:mod:`actors.twin.alerts`) and telemetry that stopped (:mod:`actors.twin.liveness`). A bounded history of every
GPU's and cooling unit's readings (:mod:`actors.twin.history`) lets a GPU's thermal event carry the measured lead of
its unit's supply temperature (``data["lead"]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from actors.twin.alerts import AlertTracker
from actors.twin.cooling import CoolingWatch
from actors.twin.estimator import EstimatorConfig, ThermalEstimator
from actors.twin.events import Event
from actors.twin.facility import LeakWatch
from actors.twin.history import HISTORY, GpuHistory, supply_lead
from actors.twin.liveness import source_status_event
from actors.twin.llm_engine import LlmEngineDetector
from actors.twin.network import NetworkModel
from actors.twin.profiles import known, profile
from actors.twin.signals import Frame, GpuSignals, read_only
from actors.twin.state import StateError, arrays_from_state, arrays_to_state, need, num, strs
from cluster.telemetry.samples import (
    ActionResult,
    AlertSample,
    CoolingSample,
    FacilitySample,
    GpuColumns,
    GpuRoster,
    GpuSample,
    JobSample,
    LinkSample,
    LlmEngineSample,
    Sample,
    SourceStatus,
)

#: Reasons that mean the hardware slowdown itself is on (sw_thermal_slowdown is the driver's earlier cap;
#: ``signals.THERMAL_REASONS`` has both, to tell a thermal clock drop from a power one).
HW_SLOWDOWN_REASONS = ("hw_thermal_slowdown",)
#: Thresholds an older checkpoint may hold that no longer exist (the fixed warning margin became ``warn_p``, the
#: warning's confirmation ``warn_confirm_ticks``).
RETIRED_THRESHOLDS = ("warn_margin_c", "confirm_min_ticks", "confirm_s")
#: GPU events that carry the measured lead of the GPU's cooling unit, when there is one.
LEAD_KINDS = ("thermal_slowdown_predicted", "thermal_slowdown", "gpu_overheat")


@dataclass
class Thresholds:
    """How sure the detectors must be before they speak (consecutive ticks) and when they fall silent."""

    confirm_ticks: int = 3  # readings in a row (cooling units)
    recover_margin_c: float = 3.0
    recover_hold_s: float = 30.0
    flow_degraded: float = 0.8
    flow_recovered: float = 0.9
    fan_degraded_pct: float = 40.0  # a cooling unit's fans below this are a degradation
    fan_recovered_pct: float = 50.0
    supply_excess_c: float = 3.0
    # The early warning: the probability that the die reaches slowdown within the estimator's horizon at or
    # above warn_p (p*), on warn_confirm_ticks readings in a row. Why 0.7 (at most one false alarm per 1,000 GPU-days
    # for a GPU steady ~1.5–2.5 °C or more under the line): actors.twin.estimator's docstring.
    warn_p: float = 0.7
    # The probability already weighs the noise: two readings in a row only guard against one bad reading.
    warn_confirm_ticks: int = 2
    kv_pressure_at: float = 0.95  # the LLM facility (actors.twin.llm_engine)
    llm_backlog_at: int = 4


def warn_now(prob: np.ndarray, streak: np.ndarray, th: Thresholds) -> tuple[np.ndarray, np.ndarray]:
    """The early warning's decision, per GPU: ``(streak, sure)`` after one more reading whose crossing probability
    (:meth:`actors.twin.estimator.ThermalEstimator.crossing`) is ``prob``; ``streak`` counts readings in a row at or
    above ``th.warn_p``, and the warning is ``sure`` once it reaches ``th.warn_confirm_ticks``. One function so
    that :meth:`TwinModel._detect_thermal` and the fleet-outcome bench (``bench/fleet_outcome.py``, which cannot
    afford the twin's ingest path) decide alike."""
    streak = np.where(prob >= th.warn_p, streak + 1, 0)
    return streak, streak >= th.warn_confirm_ticks


class TwinModel:
    """Estimated state of every GPU and cooling unit seen so far, plus detector state for hysteresis."""

    def __init__(
        self,
        sensor_tau_s: float = 15.0,
        thresholds: Thresholds | None = None,
        estimator: EstimatorConfig | None = None,
        history: int = HISTORY,
    ) -> None:
        self.sensor_tau_s = sensor_tau_s
        self.th = thresholds or Thresholds()
        self.est = ThermalEstimator(sensor_tau_s, estimator)
        self.signals = GpuSignals()
        self.net = NetworkModel()
        self.gpu_hist = GpuHistory(history)  # sensed temperatures, for the lead a cooling unit's supply has
        self.cooling = CoolingWatch(history)  # cooling units, their supply history, node → unit (actors.twin.cooling)
        self.names: list[str] = []
        # Latest NVML-style throttle reasons per GPU, as a code into reason_sets (every distinct tuple seen)
        self.reason_sets: list[tuple[str, ...]] = [()]
        self.reason_code: dict[tuple[str, ...], int] = {(): 0}
        self.reason = np.zeros(0, np.int64)
        self._hw_slow = np.zeros(1, bool)  # per reason set: the hardware slowdown is on
        self._roster: tuple[GpuRoster, np.ndarray] | None = None  # the last roster and its GPU indices
        self.index: dict[str, int] = {}
        self.node_of: list[str] = []
        self.models: list[str] = []
        # Per node (numbered as first seen, GPUs' or a cooling unit's): the latest supply (°C), coolant flow
        # (fraction of nominal) and fan speed (%) of the unit that cools it, NaN unknown; set as CoolingSamples
        # arrive, read by the fold through gpu_node without a Python loop per GPU.
        self.node_ix: dict[str, int] = {}
        self.node_cool = np.zeros((3, 0))
        self.gpu_node = np.zeros(0, np.int64)
        self._unit_nodes: dict[str, set[str]] = {}  # CoolingWatch.node_unit the other way round
        self.latest = np.zeros(0)  # latest raw reading
        self.latest_t = np.zeros(0)
        self.power_w = np.zeros(0)
        self.clock_mhz = np.zeros(0)
        self.slowdown_c = np.zeros(0)
        self.max_op_c = np.zeros(0)
        self.streak = np.zeros(0, int)
        self.calm_since = np.zeros(0)
        self.alarm = np.zeros(0, bool)  # a thermal episode is open (events fired, not yet recovered)
        self.predicted = np.zeros(0, bool)
        self.overheat = np.zeros(0, bool)
        self.slowed = np.zeros(0, bool)
        self.throttled = np.zeros(0, bool)
        self.now = 0.0
        self.samples_seen = 0
        self.unknown_models: list[str] = []  # GPU models without a profile, each reported once
        self.leaks = LeakWatch()  # leak detectors of BMCs and CDUs (actors.twin.facility)
        self.alerts = AlertTracker()  # Alertmanager notifications already made events (actors.twin.alerts)
        self.llm = LlmEngineDetector(self.th.kv_pressure_at, self.th.llm_backlog_at)  # vLLM replicas

    # --- registry ---------------------------------------------------------------------------------------
    def _indices(self, roster: GpuRoster, cols: GpuColumns) -> tuple[np.ndarray, list[Event]]:
        """The twin's index of each roster row, registering GPUs seen for the first time (all at once: growing
        the arrays one GPU at a time would copy them once per GPU). The last roster's indices are kept."""
        if self._roster is not None and self._roster[0] is roster:
            return self._roster[1], []
        get = self.index.get
        idx = np.fromiter((get(g, -1) for g in roster.names), np.int64, len(roster))
        events: list[Event] = []
        new = np.flatnonzero(idx < 0)
        if len(new):
            idx[new] = np.arange(len(self.names), len(self.names) + len(new))
            events = self._register(roster, new, cols.ts[new], cols.temp_c[new])
        self._roster = (roster, idx)
        return idx, events

    def _register(self, roster: GpuRoster, rows: np.ndarray, ts: np.ndarray, temp_c: np.ndarray) -> list[Event]:
        """Room for the GPUs in ``rows`` of ``roster``; a model without a profile is reported once."""
        events: list[Event] = []
        profs = []
        for j, k in enumerate(rows.tolist()):
            name, node, model = roster.names[k], roster.nodes[k], roster.models[k]
            self.index[name] = len(self.names)
            self.names.append(name)
            self.node_of.append(node)
            self.models.append(model)
            self._node(node)
            profs.append(profile(model))
            events += self._unknown_model(name, node, model, float(ts[j]))
        k = len(rows)
        add = lambda a, v: np.concatenate([a, np.broadcast_to(np.asarray(v, a.dtype), k)])  # noqa: E731
        per = lambda attr: np.array([getattr(p, attr) for p in profs], float)  # noqa: E731
        self.gpu_node = np.concatenate([self.gpu_node, [self.node_ix[roster.nodes[k]] for k in rows.tolist()]]
                                       ).astype(np.int64)
        self.latest, self.latest_t = add(self.latest, temp_c), add(self.latest_t, ts)  # NaN: no temperature yet
        self.power_w, self.clock_mhz = add(self.power_w, 0.0), add(self.clock_mhz, 0.0)
        self.slowdown_c, self.max_op_c = add(self.slowdown_c, per("slowdown_c")), add(self.max_op_c,
                                                                                        per("max_operating_c"))
        self.streak, self.calm_since = add(self.streak, 0), add(self.calm_since, np.inf)
        self.reason = add(self.reason, 0)
        for attr in ("alarm", "predicted", "overheat", "slowed", "throttled"):
            setattr(self, attr, add(getattr(self, attr), False))
        n = len(self.names)
        self.est.grow(n)
        self.signals.grow(n, per("clock_max_mhz"))
        self.gpu_hist.grow(n)
        return events

    # --- state as data (checkpoints: see actors.twin.state) -------------------------------------------------
    ARRAYS = {"latest": "<f8", "latest_t": "<f8", "power_w": "<f8", "clock_mhz": "<f8", "slowdown_c": "<f8",
              "max_op_c": "<f8", "streak": "<i8", "calm_since": "<f8", "alarm": "|b1",
              "predicted": "|b1", "overheat": "|b1", "slowed": "|b1", "throttled": "|b1"}

    def to_state(self) -> dict:
        """Everything the model knows, as plain data: ``from_state`` gives a model that goes on identically."""
        return {
            "sensor_tau_s": self.sensor_tau_s, "th": vars(self.th), "est": self.est.to_state(),
            "signals": self.signals.to_state(), "net": self.net.to_state(), "gpu_hist": self.gpu_hist.to_state(),
            **self.cooling.to_state(), "names": list(self.names), "node_of": list(self.node_of),
            "cool_nodes": list(self.node_ix),
            "models": list(self.models),
            "reasons": {i: list(self.reason_sets[c]) for i, c in enumerate(self.reason.tolist())},
            **arrays_to_state(self, self.ARRAYS),
            "now": self.now, "samples_seen": self.samples_seen,
            "unknown_models": list(self.unknown_models), "leaks": self.leaks.to_state(),
            "llm": self.llm.to_state(), "alerts": self.alerts.to_state(),
        }

    @classmethod
    def from_state(cls, d: dict) -> TwinModel:
        """Rebuild from ``to_state``; raises ``StateError`` (or a ``ValueError``) when the data does not fit."""
        names = strs(d["names"], "gpu names")
        n = len(names)
        th = Thresholds(**{k: num(v, f"threshold {k}") if isinstance(Thresholds.__dataclass_fields__[k].default,
                                                                         float) else need(v, int, f"threshold {k}")
                           for k, v in need(d["th"], dict, "thresholds").items() if k not in RETIRED_THRESHOLDS})
        m = cls(sensor_tau_s=num(d["sensor_tau_s"], "sensor tau"), thresholds=th)
        if "bank" in need(d["est"], dict, "estimator"):
            m.est = ThermalEstimator.from_state(d["est"], n)
        else:  # a checkpoint of an earlier observer (no screen and bank slots): its filters start afresh
            m.est.grow(n)
        m.signals = GpuSignals.from_state(d["signals"], n)
        m.net = NetworkModel.from_state(d["net"])
        m.gpu_hist, m.cooling = GpuHistory.from_state(d["gpu_hist"], n), CoolingWatch.from_state(d)
        m.names, m.index = names, {g: i for i, g in enumerate(names)}
        m.node_of, m.models = strs(d["node_of"], "nodes"), strs(d["models"], "models")
        if len(m.index) != n or len(m.node_of) != n or len(m.models) != n:
            raise StateError("gpu names, nodes and models disagree in number (or a name repeats)")
        for node in strs(d.get("cool_nodes", []), "cooled nodes"):  # absent in older checkpoints
            m._node(node)  # the same numbers as before the checkpoint, so node_cool is the same array
        m.gpu_node = np.array([m._node(node) for node in m.node_of], np.int64)
        for node, unit in m.cooling.node_unit.items():
            m._unit_nodes.setdefault(unit, set()).add(node)
        for s in m.cooling.units.values():
            m._cool_nodes(s, {})
        m.reason = np.zeros(n, np.int64)
        for i, r in need(d["reasons"], dict, "reasons").items():
            if not 0 <= need(i, int, "gpu index") < n:
                raise StateError(f"reasons of gpu index {i}, which the {n} GPUs do not have")
            m.reason[i] = m._code(tuple(strs(r, "reasons")))
        arrays_from_state(m, d, cls.ARRAYS, n)
        m.now, m.samples_seen = num(d["now"], "now"), need(d["samples_seen"], int, "samples seen")
        m.unknown_models = strs(d.get("unknown_models", []), "unknown models")  # absent in older checkpoints
        m.alerts = AlertTracker.from_state(d.get("alerts", []))  # absent in older checkpoints
        m.leaks = LeakWatch.from_state(need(d.get("leaks", {}), dict, "leaks"))
        if "llm" in d:  # absent in older checkpoints
            m.llm = LlmEngineDetector.from_state(d["llm"], th.kv_pressure_at, th.llm_backlog_at)
        return m

    # --- ingestion ----------------------------------------------------------------------------------------
    def ingest(self, samples: Sequence[Sample | GpuColumns]) -> list[Event]:
        """Fold one batch of samples into the model and return the events it gives rise to, in order.

        GPU readings are folded in rounds holding at most one reading per GPU, so a batch may carry several
        ticks of the same GPU; each round is one vectorised update of the observer. A :class:`GpuColumns`
        is one round already; consecutive ``GpuSample`` objects are made one (``GpuColumns.from_samples``),
        so both forms go through the same fold and give the same events.
        """
        events: list[Event] = []
        round_: dict[str, GpuSample] = {}
        for s in samples:
            if isinstance(s, GpuSample):
                self.samples_seen += 1
                if s.name in round_:
                    events += self._round(GpuColumns.from_samples(list(round_.values())))
                    round_ = {}
                round_[s.name] = s
                continue
            if round_:
                events += self._round(GpuColumns.from_samples(list(round_.values())))
                round_ = {}
            if isinstance(s, GpuColumns):
                self.samples_seen += len(s)
                events += self._round(s) if len(s) else []
                continue
            self.samples_seen += 1
            if isinstance(s, AlertSample):  # on the receiver's clock (Unix time), not the fleet's: moves no twin time
                events += self.alerts.ingest(s)
                continue
            self.now = max(self.now, s.ts)
            if isinstance(s, CoolingSample):
                moved = {n: u for n in s.serves if (u := self.cooling.node_unit.get(n, s.unit)) != s.unit}
                events += self.cooling.ingest(s, self.th)
                self._cool_nodes(s, moved)
            elif isinstance(s, LinkSample | JobSample):
                events += self.net.ingest(s, self.clock_mhz, self.index)
            elif isinstance(s, ActionResult):
                events.append(self._action_event(s))
            elif isinstance(s, FacilitySample):
                events += self.leaks.ingest(s)
            elif isinstance(s, SourceStatus):
                events.append(source_status_event(s))
            elif isinstance(s, LlmEngineSample):
                events += self.llm.observe(s)
        if round_:
            events += self._round(GpuColumns.from_samples(list(round_.values())))
        return events

    def _unknown_model(self, name: str, node: str, model: str, ts: float) -> list[Event]:
        """A GPU model without a profile is reported once (then its GPUs use conservative limits)."""
        if known(model) or model in self.unknown_models:
            return []
        self.unknown_models.append(model)
        p = profile(model)
        data = {"gpu": name, "node": node, "model": model, "profile": p.name, "slowdown_c": p.slowdown_c,
                "max_operating_c": p.max_operating_c, "shutdown_c": p.shutdown_c,
                "note": "no profile for this GPU model: conservative limits apply until one is added"}
        return [Event.make("gpu_model_unknown", name, ts, "warning", data)]

    def _code(self, reasons: tuple[str, ...]) -> int:
        """The code of a tuple of throttle reasons (a new tuple gets the next code)."""
        c = self.reason_code.get(reasons)
        if c is None:
            c = self.reason_code[reasons] = len(self.reason_sets)
            self.reason_sets.append(reasons)
            self._hw_slow = np.array([any(r in rs for r in HW_SLOWDOWN_REASONS) for rs in self.reason_sets], bool)
        return c

    def _round(self, cols: GpuColumns) -> list[Event]:
        """One round: the GPUs' indices (new GPUs registered first), then the fold."""
        idx, events = self._indices(cols.roster, cols)
        return events + self._fold(idx, cols)

    def _fold(self, idx: np.ndarray, cols: GpuColumns) -> list[Event]:
        ts, y = cols.ts, cols.temp_c
        # A missing reading is NaN (unknown), never 0; a sample without a temperature updates everything else.
        has_t = ~np.isnan(y)
        self.now = max(self.now, float(ts.max()))
        dt = ts - self.latest_t[idx]
        self.latest_t[idx] = ts
        self.power_w[idx] = cols.power_w
        self.clock_mhz[idx] = cols.sm_clock_mhz
        codes = np.array([self._code(r) for r in cols.reason_sets], np.int64)[cols.reasons]
        self.reason[idx] = codes
        self.throttled[idx] = self._hw_slow[codes]
        events: list[Event] = []
        if has_t.any():
            t_idx, t_ts, t_y = (idx, ts, y) if has_t.all() else (idx[has_t], ts[has_t], y[has_t])
            self.latest[t_idx] = t_y
            cool = self.node_cool[:, self.gpu_node[t_idx]]
            self.est.update(t_idx, t_ts, t_y, self.slowdown_c[t_idx], self.power_w[t_idx], *cool)
            self.gpu_hist.push(t_idx, t_ts, t_y)
            events += self._detect_thermal(t_idx, t_ts)
        events += self.signals.detect(self.frame(), idx, cols, dt)
        return events

    def _node(self, node: str) -> int:
        """The number of ``node`` (a new node gets the next, with its cooling unknown)."""
        k = self.node_ix.get(node)
        if k is None:
            k = self.node_ix[node] = len(self.node_ix)
            self.node_cool = np.concatenate([self.node_cool, np.full((3, 1), np.nan)], axis=1)
        return k

    def _cool_nodes(self, s: CoolingSample, moved: dict[str, str]) -> None:
        """The nodes unit ``s.unit`` cools (``CoolingWatch.node_unit``, which ``s`` has just updated; ``moved``: the
        nodes it took over from another unit) take its latest supply, flow to each node and fan speed; NaN for what
        the unit does not report."""
        for node, unit in moved.items():
            self._unit_nodes[unit].discard(node)
        nodes = self._unit_nodes.setdefault(s.unit, set())
        nodes.update(s.serves)
        flows = s.flow_frac or {}
        fan = np.nan if s.fan_pct is None else s.fan_pct
        for node in sorted(nodes):  # a set's order differs between processes: number new nodes in a fixed one
            flow, k = flows.get(node), self._node(node)  # (the node's number first: a new node grows node_cool)
            self.node_cool[:, k] = (s.supply_c, np.nan if flow is None else flow, fan)

    def _detect_thermal(self, idx: np.ndarray, ts: np.ndarray) -> list[Event]:
        th, est = self.th, self.est
        sensed, filt, true_c, proj = self.latest[idx], est.sensor(idx), est.true_c(idx), est.proj[idx]
        slowdown, max_op = self.slowdown_c[idx], self.max_op_c[idx]
        prob, eta_all = est.crossing(idx, slowdown)
        self.streak[idx], sure = warn_now(prob, self.streak[idx], th)
        events: list[Event] = []
        fire = idx[sure & ~self.predicted[idx] & ~self.slowed[idx]
                   & (sensed < slowdown) & (filt < slowdown)]
        if len(fire):
            pos = {int(i): k for k, i in enumerate(idx)}
            for i in fire:
                eta, p = eta_all[pos[int(i)]], prob[pos[int(i)]]
                eta_v = round(float(eta), 1) if np.isfinite(eta) else None
                events.append(self._gpu_event("thermal_slowdown_predicted", i, "warning", eta_s=eta_v,
                                              p_cross=round(float(p), 3)))
        self.predicted[fire] = True
        self.alarm[fire] = True
        slow = idx[((filt >= slowdown) | self.throttled[idx]) & ~self.slowed[idx]]
        for i in slow:
            events.append(self._gpu_event("thermal_slowdown", i, "critical"))
        self.slowed[slow] = True
        self.alarm[slow] = True
        over = idx[(filt >= max_op) & (sensed >= max_op) & ~self.overheat[idx]]
        for i in over:
            events.append(self._gpu_event("gpu_overheat", i, "critical"))
        self.overheat[over] = True
        self.alarm[over] = True
        # Recovery needs the sensed and the estimated true temperature below the line, no thermal throttling,
        # all held for recover_hold_s: a throttling sawtooth must not open and close episodes.
        line = max_op - th.recover_margin_c
        calm = (sensed < line) & (true_c < line) & (proj < slowdown) & ~self.throttled[idx]
        # The calm clock runs only inside an episode, so an episode never recovers the moment it opens.
        self.calm_since[idx] = np.where(calm & self.alarm[idx], np.minimum(self.calm_since[idx], ts), np.inf)
        recovered = idx[self.alarm[idx] & calm & (ts - self.calm_since[idx] >= th.recover_hold_s)]
        for i in recovered:
            events.append(self._gpu_event("thermal_recovered", i, "info"))
        for attr in ("alarm", "predicted", "overheat", "slowed"):
            getattr(self, attr)[recovered] = False
        self.streak[recovered] = 0
        return events

    def frame(self) -> Frame:
        """The round's data, read-only, for the detectors (:class:`actors.twin.signals.Frame`)."""
        x = self.est.x
        return Frame(self.names, read_only(self.latest), read_only(self.latest_t), read_only(self.power_w),
                     read_only(self.clock_mhz), read_only(self.slowdown_c), read_only(x[:, 0]), read_only(x[:, 1]),
                     self.est.cfg.noise_c, self.gpu_data, read_only(self.reason), tuple(self.reason_sets))

    def gpu_data(self, i: int) -> dict:
        """The facts every GPU event carries."""
        node = self.node_of[i]
        return {
            "gpu": self.names[i],
            "node": node,
            "unit": self.cooling.node_unit.get(node),
            "model": self.models[i],
            "sensed_c": _f(self.latest[i]),
            "est_c": self._est(i, self.est.x[i, 1]),
            "projected_c": self._est(i, self.est.proj[i]),
            "slowdown_c": float(self.slowdown_c[i]),
            "max_operating_c": float(self.max_op_c[i]),
            "power_w": _f(self.power_w[i]),
            "clock_mhz": _f(self.clock_mhz[i]),
        }

    def _est(self, i: int, v: float, digits: int | None = None) -> float | None:
        """An estimate for a view; ``None`` before the GPU's first temperature (not a 0 °C estimate)."""
        return _f(v, digits) if self.est.started[i] else None

    def _gpu_event(self, kind: str, i: int, severity: str, **extra: float | str | None) -> Event:
        data = {**self.gpu_data(i), **extra}
        unit = data["unit"]
        if kind in LEAD_KINDS and isinstance(unit, str):
            # Measured, not assumed: the node→unit topology says who cools the GPU, the lead says the
            # unit's supply moved first and the GPU followed.
            lead = supply_lead(self.gpu_hist, self.cooling.hist, i, unit)
            if lead is not None:
                data["lead"] = lead
        return Event.make(kind, self.names[i], float(self.latest_t[i]), severity, data)  # type: ignore[arg-type]

    def _action_event(self, r: ActionResult) -> Event:
        kind = {"executed": "action_executed", "failed": "action_failed", "rejected": "action_rejected"}[r.status]
        subject = r.targets[0] if r.targets else r.action_kind
        data = {"action_id": r.action_id, "approval_id": r.approval_id, "action_kind": r.action_kind,
                "status": r.status, "detail": r.detail}
        # A result from outside the simulator (an actuator, the gateway) does not know the twin's clock (ts 0):
        # the twin stamps it with its own time as it folds it.
        ts = r.ts or self.now
        ev = Event.make(kind, subject, ts, "info" if r.status == "executed" else "warning", data,  # type: ignore[arg-type]
                        key=r.action_id)
        return ev.model_copy(update={"traceparent": r.traceparent})

    # --- views ------------------------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """The twin as dashboards, the chat grounding and ``opsloop status`` see it."""
        gpus = [
            {"gpu": self.names[i], "node": self.node_of[i], "sensed_c": _f(self.latest[i], 2),
             "est_c": self._est(i, self.est.x[i, 1], 2), "projected_c": self._est(i, self.est.proj[i], 2),
             "power_w": _f(self.power_w[i], 1), "clock_mhz": _f(self.clock_mhz[i], 0),
             "alarm": bool(self.alarm[i]), "max_operating_c": float(self.max_op_c[i]),
             "slowdown_c": float(self.slowdown_c[i]), "energy_j": round(float(self.signals.energy_j[i]), 1),
             "throttle_reasons": list(self.reason_sets[self.reason[i]])}
            for i in range(len(self.names))
        ]
        return {
            "ts": self.now,
            "gpus": gpus,
            "units": self.cooling.snapshot(),
            "nodes": sorted(set(self.node_of)),
            "hot_gpus": [g["gpu"] for g in gpus if g["alarm"]],
            "max_sensed_c": round(float(np.nanmax(self.latest)), 2) if np.isfinite(self.latest).any() else None,
            "samples_seen": self.samples_seen,
            "energy": self.signals.energy_summary(self.node_of, self.net.job_gpus),
            "network": self.net.snapshot(),
            **({"llm": llm} if (llm := self.llm.view()) else {}),
        }

    def topology(self) -> dict[str, list[str]]:
        """Names the fleet knows, by kind: what an action may target."""
        return {"gpu": list(self.names), "node": sorted(set(self.node_of)), "unit": sorted(self.cooling.units),
                "link": sorted(self.net.links), "job": sorted(self.net.jobs)}


def _f(v: float, digits: int | None = None) -> float | None:
    """A reading for a view: ``None`` when it is missing (NaN), never a 0 or a NaN in JSON."""
    v = float(v)
    if not np.isfinite(v):
        return None
    return v if digits is None else round(v, digits)
