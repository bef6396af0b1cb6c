"""GPU signals besides temperature: power capping, clock drops (with the reason), XIDs, sensor faults, energy.

Each detector keeps one flag per GPU so an episode raises one event (hysteresis); everything is computed
over the GPUs of one round at once, and only the GPUs that fire are touched in Python.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from actors.twin.events import Event
from actors.twin.state import arrays_from_state, arrays_to_state

if TYPE_CHECKING:
    from actors.twin.model import TwinModel
    from cluster.telemetry.samples import GpuSample

POWER_REASONS = ("sw_power_cap", "hw_power_brake")
THERMAL_REASONS = ("hw_thermal_slowdown", "sw_thermal_slowdown")
CLOCK_DROP_FRAC = 0.85  # a clock below 85 % of the GPU's recent reference is a drop
CLOCK_BACK_FRAC = 0.95
STUCK_READINGS = 30  # identical readings in a row: a live sensor with any noise never does that
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


def xid_bucket(xid: int) -> str:
    """Resolution bucket of an XID; unknown XIDs go to support (a human looks)."""
    return XID_BUCKETS.get(xid, "CONTACT_SUPPORT")


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

    ARRAYS = {"clock_ref": "<f8", "clock_max": "<f8", "capped": "|b1", "dropped": "|b1", "same": "<i8",
              "last_y": "<f8", "nis": "<f8", "fault": "|b1", "energy_j": "<f8", "lost_j": "<f8"}

    def to_state(self) -> dict:
        """Flags and counters as plain data (see :mod:`actors.twin.state`)."""
        return arrays_to_state(self, self.ARRAYS)

    @classmethod
    def from_state(cls, d: dict, n: int) -> GpuSignals:
        sig = cls()
        arrays_from_state(sig, d, cls.ARRAYS, n)
        return sig

    def grow(self, n: int, clock_max: float) -> None:
        """Room for GPU ``n - 1`` (its profile's maximum clock as the first reference)."""
        add = lambda a, v: np.append(a, np.array([v], dtype=a.dtype))  # noqa: E731
        self.clock_ref, self.clock_max = add(self.clock_ref, clock_max), add(self.clock_max, clock_max)
        for attr in ("capped", "dropped", "fault"):
            setattr(self, attr, add(getattr(self, attr), False))
        self.same, self.last_y, self.nis = add(self.same, 0), add(self.last_y, np.nan), add(self.nis, 1.0)
        self.energy_j, self.lost_j = add(self.energy_j, 0.0), add(self.lost_j, 0.0)

    def detect(self, m: TwinModel, idx: np.ndarray, batch: list[GpuSample], dt: np.ndarray) -> list[Event]:
        """Events of one round (``batch[k]`` is the reading of GPU ``idx[k]``)."""
        events: list[Event] = []
        reasons = [s.throttle_reasons for s in batch]
        power, clock = m.power_w[idx], m.clock_mhz[idx]
        # energy: power held over the interval since the previous reading (first reading: nothing yet)
        span = np.where((dt > 0) & (dt < 60), dt, 0.0)
        has_clock = clock > 0
        lost_frac = np.where(has_clock, np.clip(1.0 - clock / self.clock_max[idx], 0.0, 1.0), 0.0)
        throttled = np.array([bool(r) for r in reasons])
        self.energy_j[idx] += power * span
        self.lost_j[idx] += np.where(throttled, power * span * lost_frac, 0.0)
        # power capping
        cap = np.array([any(x in r for x in POWER_REASONS) for r in reasons])
        for k in np.nonzero(cap & ~self.capped[idx])[0]:
            i = int(idx[k])
            events.append(self._ev(m, "power_capped", i, "warning", reasons=list(reasons[k]),
                                   power_limit_w=batch[k].power_limit_w))
        self.capped[idx] = cap
        # clock drops against a slowly rising reference (the highest clock lately)
        ref = self.clock_ref[idx]
        drop = has_clock & (clock < CLOCK_DROP_FRAC * ref)
        for k in np.nonzero(drop & ~self.dropped[idx])[0]:
            i = int(idx[k])
            why = clock_reason(reasons[k], float(m.est.x[i, 1]), float(m.slowdown_c[i]))
            events.append(self._ev(m, "clock_drop", i, "warning", clock_mhz=float(clock[k]), ref_mhz=float(ref[k]),
                                   drop_pct=round(100 * (1 - clock[k] / ref[k]), 1), reason=why,
                                   reasons=list(reasons[k])))
        self.dropped[idx] = np.where(drop, True, self.dropped[idx] & ~(clock >= CLOCK_BACK_FRAC * ref))
        self.clock_ref[idx] = np.where(has_clock & ~self.dropped[idx], np.maximum(ref * 0.999, clock), ref)
        # XIDs: every one is an event (each is a distinct fault report)
        for k, s in enumerate(batch):
            if s.xid:
                i = int(idx[k])
                events.append(self._ev(m, "xid_error", i, "critical", xid=s.xid, resolution=xid_bucket(s.xid)))
        events += self._sensor_faults(m, idx)
        return events

    def _sensor_faults(self, m: TwinModel, idx: np.ndarray) -> list[Event]:
        y = m.latest[idx]
        same = np.where(y == self.last_y[idx], self.same[idx] + 1, 0)
        self.same[idx], self.last_y[idx] = same, y
        # normalised innovation against the observer's filtered sensor state
        resid = (y - m.est.x[idx, 0]) / max(m.est.cfg.noise_c, 1e-3)
        self.nis[idx] += (resid**2 - self.nis[idx]) / NIS_WINDOW
        stuck, noisy = same >= STUCK_READINGS, self.nis[idx] > NOISY_NIS
        bad = stuck | noisy
        events = [
            self._ev(m, "sensor_fault", int(idx[k]), "warning", fault="stuck" if stuck[k] else "noisy",
                     readings=int(same[k]), nis=round(float(self.nis[idx[k]]), 2))
            for k in np.nonzero(bad & ~self.fault[idx])[0]
        ]
        self.fault[idx] = np.where(bad, True, self.fault[idx] & ~((same == 0) & (self.nis[idx] < NOISY_NIS / 5)))
        return events

    @staticmethod
    def _ev(m: TwinModel, kind: str, i: int, severity: str, **extra: object) -> Event:
        return Event.make(kind, m.names[i], float(m.latest_t[i]), severity, {**m.gpu_data(i), **extra})  # type: ignore[arg-type]

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
