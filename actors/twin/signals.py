"""GPU signals besides temperature: power capping, clock drops (with the reason), XIDs, sensor faults, energy.

Each detector keeps one flag per GPU so an episode raises one event (hysteresis); everything is computed
over the GPUs of one round at once, and only the GPUs that fire are touched in Python.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from actors.twin.events import Event
from actors.twin.state import arr, arrays_from_state, arrays_to_state
from cluster.telemetry.samples import STUCK_CLOCK_MOVE_MHZ, STUCK_POWER_MOVE_W, STUCK_SETTLE_S
from knowledge.events import XID_MEANING

if TYPE_CHECKING:
    from cluster.telemetry.samples import GpuColumns

POWER_REASONS = ("sw_power_cap", "hw_power_brake")
#: Both thermal reasons (the driver's cap and the hardware slowdown): a clock drop under either is thermal.
THERMAL_REASONS = ("hw_thermal_slowdown", "sw_thermal_slowdown")
CLOCK_DROP_FRAC = 0.85  # a clock below 85 % of the GPU's recent reference is a drop
CLOCK_BACK_FRAC = 0.95
# Identical readings in a row: a live sensor finer than a degree never does that; a whole-degree sensor (NVML,
# DCGM) does when the GPU is steady, so then the reading must also stay flat while power or clocks move
# (the FlatRun rule of cluster.telemetry.quality, vectorised here).
STUCK_READINGS = 30
#: The power a flat run is checked against is smoothed over this: a die averages its power over seconds, so a job's
#: step-to-step jitter (tens of watts each second) moves no whole-degree reading, while a change of load does.
STUCK_POWER_SMOOTH_S = 10.0
NOISY_NIS = 25.0  # mean normalised innovation² over the window (1 for a healthy sensor)
NIS_WINDOW = 20

#: NVIDIA's XID catalogue, resolution bucket per XID ("immediate action" of the XID error documentation).
XID_BUCKETS: dict[int, str] = {
    8: "RESET_GPU", 13: "RESTART_APP", 31: "RESTART_APP", 32: "RESTART_APP", 38: "RESET_GPU", 43: "RESTART_APP",
    45: "IGNORE", 48: "WORKFLOW_XID_48", 61: "RESET_GPU", 62: "RESET_GPU", 63: "RESET_GPU", 64: "RESET_GPU",
    68: "RESTART_APP", 69: "RESET_GPU", 74: "WORKFLOW_NVLINK_ERR", 79: "RESTART_BM", 92: "IGNORE",
    94: "RESTART_APP", 95: "RESET_GPU", 109: "RESTART_APP", 119: "RESET_GPU", 120: "RESET_GPU",
    121: "CONTACT_SUPPORT", 140: "RESET_GPU", 154: "RESET_GPU",
}
#: XIDs of application faults: they follow the job, not the GPU (knowledge/corpus/manual-xid-reference.md);
#: what each XID means is knowledge.events.XID_MEANING.
APPLICATION_XIDS = frozenset({13, 31, 43})


def read_only(a: np.ndarray) -> np.ndarray:
    """A view of ``a`` that cannot be written through (no copy)."""
    v = a.view()
    v.flags.writeable = False
    return v


@dataclass(frozen=True)
class Frame:
    """One round's data as the detectors read it: read-only views of the GPU model's arrays (a detector cannot
    write the model, and never sees it), the observer's filtered sensor and die temperatures, and the facts a
    GPU event carries (``describe``). ``actors.twin.model.TwinModel.frame`` builds it once per round."""

    names: Sequence[str]
    latest: np.ndarray
    latest_t: np.ndarray
    power_w: np.ndarray
    clock_mhz: np.ndarray
    slowdown_c: np.ndarray
    sensor_c: np.ndarray  # the observer's filtered sensor state
    true_c: np.ndarray  # the observer's die temperature
    noise_c: float  # the sensor noise the observer assumes
    describe: Callable[[int], dict]
    reason: np.ndarray  # latest throttle reasons per GPU, a code into reason_sets
    reason_sets: Sequence[tuple[str, ...]]


def _reading(v: float) -> float | None:
    """A column's reading as an event field: ``None`` where it is missing (NaN), as the sample said."""
    return None if np.isnan(v) else float(v)


def xid_bucket(xid: int) -> str:
    """Resolution bucket of an XID; unknown XIDs go to support (a human looks)."""
    return XID_BUCKETS.get(xid, "CONTACT_SUPPORT")


def xid_meaning(xid: int) -> tuple[str, str]:
    """(meaning, follows ``job``/``gpu``/``unknown``) of an XID."""
    meaning = XID_MEANING.get(xid)
    if meaning is None:
        return f"XID {xid}: not in the operator reference, see NVIDIA's XID catalogue", "unknown"
    return meaning, "job" if xid in APPLICATION_XIDS else "gpu"


def clock_reason(reasons: tuple[str, ...], est_c: float, slowdown_c: float) -> str:
    """Which controller took the clock: thermal beats power beats the rest (the priority gate's order)."""
    if any(r in reasons for r in THERMAL_REASONS) or est_c >= slowdown_c:
        return "thermal"
    if any(r in reasons for r in POWER_REASONS):
        return "power"
    if "hw_slowdown" in reasons:
        return "hw_slowdown"
    return "unknown"


class GpuSignals:
    """Per-GPU flags and counters for the non-thermal detectors, plus energy accounting."""

    def __init__(self) -> None:
        self.clock_ref = np.zeros(0)
        self.clock_max = np.zeros(0)
        self.capped = np.zeros(0, bool)
        self.dropped = np.zeros(0, bool)
        self.same = np.zeros(0, int)
        self.last_y = np.full(0, np.nan)
        self.nis = np.zeros(0)
        self.fault = np.zeros(0, bool)
        self.energy_j = np.zeros(0)
        self.lost_j = np.zeros(0)  # energy spent while throttled, weighted by the clock lost
        # stuck sensor: resolution finer than a degree seen; power and clock range over the flat run; when moved
        self.fine = np.zeros(0, bool)
        self.p_lo, self.p_hi, self.c_lo, self.c_hi = (np.zeros(0) for _ in range(4))
        self.moved_t = np.zeros(0)
        self.p_smooth = np.zeros(0)
        # XIDs are edge-triggered: the last XID seen (-1 none yet; DCGM repeats it every scrape), the source's
        # XID counter where it has one (-1 none), and how many XID events this GPU raised (repeat offenders)
        self.last_xid = np.zeros(0, np.int64)
        self.xid_seen = np.zeros(0, np.int64)
        self.xid_events = np.zeros(0, np.int64)

    ARRAYS = {"clock_ref": "<f8", "clock_max": "<f8", "capped": "|b1", "dropped": "|b1", "same": "<i8",
              "last_y": "<f8", "nis": "<f8", "fault": "|b1", "energy_j": "<f8", "lost_j": "<f8", "fine": "|b1",
              "p_lo": "<f8", "p_hi": "<f8", "c_lo": "<f8", "c_hi": "<f8", "moved_t": "<f8", "p_smooth": "<f8",
              "last_xid": "<i8", "xid_seen": "<i8", "xid_events": "<i8"}
    #: Arrays a checkpoint written before them lacks, with the value each GPU starts from.
    ADDED = {"fine": False, "p_lo": np.nan, "p_hi": np.nan, "c_lo": np.nan, "c_hi": np.nan, "moved_t": np.inf,
             "p_smooth": np.nan, "last_xid": -1, "xid_seen": -1, "xid_events": 0}

    def to_state(self) -> dict:
        """Flags and counters as plain data (see :mod:`actors.twin.state`)."""
        return arrays_to_state(self, self.ARRAYS)

    @classmethod
    def from_state(cls, d: dict, n: int) -> GpuSignals:
        sig = cls()
        d = {**{k: arr(np.full(n, v, dtype=cls.ARRAYS[k])) for k, v in cls.ADDED.items() if k not in d}, **d}
        arrays_from_state(sig, d, cls.ARRAYS, n)
        return sig

    def grow(self, n: int, clock_max: np.ndarray) -> None:
        """Room for ``n`` GPUs in all, the new ones' profile maximum clocks (``clock_max``) as first references."""
        k = n - len(self.clock_ref)
        add = lambda a, v: np.concatenate([a, np.broadcast_to(np.asarray(v, a.dtype), k)])  # noqa: E731
        self.clock_ref, self.clock_max = add(self.clock_ref, clock_max), add(self.clock_max, clock_max)
        for attr in ("capped", "dropped", "fault"):
            setattr(self, attr, add(getattr(self, attr), False))
        self.same, self.last_y, self.nis = add(self.same, 0), add(self.last_y, np.nan), add(self.nis, 1.0)
        self.energy_j, self.lost_j = add(self.energy_j, 0.0), add(self.lost_j, 0.0)
        for attr, start in self.ADDED.items():
            setattr(self, attr, add(getattr(self, attr), start))

    def detect(self, m: Frame, idx: np.ndarray, cols: GpuColumns, dt: np.ndarray) -> list[Event]:
        """Events of one round (row ``k`` of ``cols`` is the reading of GPU ``idx[k]``); Python runs only for the
        GPUs that fire."""
        events: list[Event] = []
        # per distinct set of throttle reasons (a handful), then gathered per GPU
        sets = m.reason_sets
        code = m.reason[idx]
        throttled = np.array([bool(r) for r in sets], bool)[code]
        cap = np.array([any(x in r for x in POWER_REASONS) for r in sets], bool)[code]
        power, clock = m.power_w[idx], m.clock_mhz[idx]
        # energy: power held over the interval since the previous reading (first reading: nothing yet)
        span = np.where((dt > 0) & (dt < 60), dt, 0.0)
        has_clock = clock > 0
        lost_frac = np.where(has_clock, np.clip(1.0 - clock / self.clock_max[idx], 0.0, 1.0), 0.0)
        known_w = np.nan_to_num(power, nan=0.0)  # a missing power reading adds no energy (not a 0 W reading)
        self.energy_j[idx] += known_w * span
        self.lost_j[idx] += np.where(throttled, known_w * span * lost_frac, 0.0)
        # power capping
        for k in np.flatnonzero(cap & ~self.capped[idx]).tolist():
            i = int(idx[k])
            events.append(self._ev(m, "power_capped", i, "warning", reasons=list(sets[code[k]]),
                                   power_limit_w=_reading(cols.power_limit_w[k])))
        self.capped[idx] = cap
        # clock drops against a slowly rising reference (the highest clock lately)
        ref = self.clock_ref[idx]
        drop = has_clock & (clock < CLOCK_DROP_FRAC * ref)
        for k in np.flatnonzero(drop & ~self.dropped[idx]).tolist():
            i = int(idx[k])
            why = clock_reason(sets[code[k]], float(m.true_c[i]), float(m.slowdown_c[i]))
            events.append(self._ev(m, "clock_drop", i, "warning", clock_mhz=float(clock[k]), ref_mhz=float(ref[k]),
                                   drop_pct=round(100 * (1 - clock[k] / ref[k]), 1), reason=why,
                                   reasons=list(sets[code[k]])))
        self.dropped[idx] = np.where(drop, True, self.dropped[idx] & ~(clock >= CLOCK_BACK_FRAC * ref))
        self.clock_ref[idx] = np.where(has_clock & ~self.dropped[idx], np.maximum(ref * 0.999, clock), ref)
        events += self._xid(m, idx, cols.xid, cols.xid_total)
        has_t = ~np.isnan(cols.temp_c)
        events += self._sensor_faults(m, idx if has_t.all() else idx[has_t], dt if has_t.all() else dt[has_t])
        return events

    def _xid(self, m: Frame, idx: np.ndarray, xid: np.ndarray, total: np.ndarray) -> list[Event]:
        """XIDs are edge-triggered: an event for a new value (DCGM keeps the last XID, so the same one repeats
        on every scrape; 0 means none since the driver loaded) or for a rise of the source's XID counter.
        ``xid`` and ``total`` are -1 where the reading is missing."""
        has_x, has_total = xid >= 0, total >= 0
        if not (has_x.any() or has_total.any()):
            return []
        prev, last = self.xid_seen[idx], self.last_xid[idx]
        base = np.where((prev >= 0) & (prev <= total), prev, 0)  # a counter that went back: the source restarted
        new = np.where(has_total, total > base, (xid > 0) & (xid != last))
        self.xid_seen[idx] = np.where(has_total, total, prev)
        last = np.where(has_x, xid, last)
        self.last_xid[idx] = last
        value = np.where(xid > 0, xid, last)
        events: list[Event] = []
        for k in np.flatnonzero(new & (value > 0)).tolist():
            i, x = int(idx[k]), int(value[k])
            self.xid_events[i] += 1
            meaning, follows = xid_meaning(x)
            count = int(self.xid_events[i])
            events.append(self._ev(m, "xid_error", i, "critical", xid=x, meaning=meaning, follows=follows,
                                   resolution=xid_bucket(x), count=count, repeat=count > 1))
        return events

    def _sensor_faults(self, m: Frame, idx: np.ndarray, dt: np.ndarray) -> list[Event]:
        if not len(idx):
            return []
        y, t = m.latest[idx], m.latest_t[idx]
        flat = y == self.last_y[idx]
        same = np.where(flat, self.same[idx] + 1, 0)
        self.same[idx], self.last_y[idx] = same, y
        # Flat for long enough is stuck when the sensor is finer than a degree, or when power or clocks moved
        # past the noise during the run and the sensor has had time to follow.
        self.fine[idx] |= y != np.round(y)
        a = 1.0 - np.exp(-np.clip(dt, 0.0, None) / STUCK_POWER_SMOOTH_S)
        prev = self.p_smooth[idx]
        p = self.p_smooth[idx] = np.where(np.isfinite(prev), prev + (m.power_w[idx] - prev) * a, m.power_w[idx])
        c = m.clock_mhz[idx]
        for lo, hi, v in (("p_lo", "p_hi", p), ("c_lo", "c_hi", c)):
            a, b = getattr(self, lo), getattr(self, hi)
            a[idx] = np.where(flat, np.fmin(a[idx], v), v)
            b[idx] = np.where(flat, np.fmax(b[idx], v), v)
        with np.errstate(invalid="ignore"):
            moved = ((self.p_hi[idx] - self.p_lo[idx]) > STUCK_POWER_MOVE_W) | (
                (self.c_hi[idx] - self.c_lo[idx]) > STUCK_CLOCK_MOVE_MHZ)
        self.moved_t[idx] = np.where(flat, np.where(moved, np.minimum(self.moved_t[idx], t), self.moved_t[idx]),
                                     np.inf)
        flat_stuck = (same >= STUCK_READINGS) & (self.fine[idx] | (t - self.moved_t[idx] >= STUCK_SETTLE_S))
        # normalised innovation against the observer's filtered sensor state
        resid = (y - m.sensor_c[idx]) / max(m.noise_c, 1e-3)
        self.nis[idx] += (resid**2 - self.nis[idx]) / NIS_WINDOW
        stuck, noisy = flat_stuck, self.nis[idx] > NOISY_NIS
        bad = stuck | noisy
        events = [
            self._ev(m, "sensor_fault", int(idx[k]), "warning", fault="stuck" if stuck[k] else "noisy",
                     readings=int(same[k]), nis=round(float(self.nis[idx[k]]), 2))
            for k in np.nonzero(bad & ~self.fault[idx])[0]
        ]
        self.fault[idx] = np.where(bad, True, self.fault[idx] & ~((same == 0) & (self.nis[idx] < NOISY_NIS / 5)))
        return events

    @staticmethod
    def _ev(m: Frame, kind: str, i: int, severity: str, **extra: object) -> Event:
        return Event.make(kind, m.names[i], float(m.latest_t[i]), severity, {**m.describe(i), **extra})  # type: ignore[arg-type]

    def energy_summary(self, node_of: list[str], job_gpus: dict[str, list[int]]) -> dict:
        """Joules per node and job, and the share lost to throttling, fleet-wide."""
        nodes: dict[str, float] = {}
        for i, n in enumerate(node_of):
            nodes[n] = nodes.get(n, 0.0) + float(self.energy_j[i])
        n = len(self.energy_j)
        jobs = {j: round(float(self.energy_j[[k for k in g if k < n]].sum()), 1) for j, g in sorted(job_gpus.items())}
        total = float(self.energy_j.sum())
        return {"total_j": round(total, 1), "nodes_j": {k: round(v, 1) for k, v in sorted(nodes.items())},
                "jobs_j": jobs, "throttle_lost_share": round(float(self.lost_j.sum()) / total, 4) if total else 0.0}
