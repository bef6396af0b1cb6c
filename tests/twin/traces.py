"""Physics-consistent thermal traces for the early-warning tests and bench, generated independently of the twin.

Nothing here is taken from ``actors.twin``: each trace draws its own plant and the twin must identify it.
- Die: ``τ_d·dT/dt = T_in + R·P − T`` with ``R`` (0.05–0.1 K/W) and ``τ_d`` (4–25 s) drawn per trace; ``T_in``
  is the cooling unit's supply (drawn 22–40 °C), reported every 5 s as a cooling sample.
- Power: piecewise levels with per-second jitter (a training job's steps), reported with each reading.
- Sensor: dead time ``L`` (0.5–3 s) then a first-order lag ``τ_s`` drawn uniformly from 8–20 s, Gaussian noise
  (σ 0.1–0.4 °C); half the traces (even ``seed``) report whole degrees, as NVML and DCGM do.
- Every trace starts with ``WARMUP_S`` of ordinary work (load changes well below the line: how a GPU that has run
  for a while looks) and then its event at ``t0``:
  ``cross`` the die settles 1–12 °C above slowdown (power step, power ramp, or the supply rising: a cooling fault);
  ``settle`` it settles 2–3.5 °C below (the same three shapes, the step being a fast rise);
  ``healthy`` steady work, 5 °C or more below.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SLOWDOWN_C = 89.0  # H100-SXM, the model the trace's samples name
TDP_W, IDLE_W = 700.0, 80.0
FINE_DT = 0.1
SAMPLE_DT = 1.0
COOLING_DT = 5.0
WARMUP_S = 600.0
AFTER_S = 400.0
KINDS = ("cross", "settle", "healthy")
SHAPES = ("power_step", "power_ramp", "cooling")


@dataclass
class Trace:
    """One GPU's readings, its cooling unit's supply readings and the ground truth."""

    kind: str
    shape: str
    seed: int
    whole: bool  # readings in whole degrees
    tau_s: float
    dead_s: float
    tau_d: float
    r: float
    t0: float  # when the event starts
    ts: np.ndarray  # reading times
    sensed: np.ndarray
    power_w: np.ndarray
    true_c: np.ndarray  # true die at the reading times
    supply_ts: np.ndarray
    supply_c: np.ndarray
    cross_ts: float | None  # first time the true die reaches slowdown (fine grid)
    peak_c: float  # the die's highest after t0

    def samples(self, node: str, gpu: int = 0, unit: str | None = None) -> list[tuple[float, dict]]:
        """``(ts, record)`` pairs, GPU readings and (with ``unit``) the unit's supply readings."""
        out = [(float(t), {"kind": "gpu", "ts": float(t), "node": node, "gpu": gpu, "temp_c": float(y),
                           "power_w": float(p), "model": "H100-SXM"})
               for t, y, p in zip(self.ts, self.sensed, self.power_w, strict=True)]
        if unit is not None:
            setpoint = float(self.supply_c[0])
            out += [(float(t), {"kind": "cooling", "ts": float(t), "unit": unit, "supply_c": float(c),
                                "setpoint_c": setpoint, "serves": [node]})
                    for t, c in zip(self.supply_ts, self.supply_c, strict=True)]
        return out


def _plant(rng: np.random.Generator, kind: str, shape: str) -> tuple[float, float, float, float, float]:
    """(R, supply, P at the event, supply at the event, target die) consistent with the class."""
    while True:  # rejection sampling: a test generator may loop
        r = rng.uniform(0.05, 0.10)
        supply = rng.uniform(22.0, 40.0)
        target = SLOWDOWN_C + (rng.uniform(1.0, 12.0) if kind == "cross" else -rng.uniform(2.0, 3.5))
        if kind == "healthy":
            target = rng.uniform(55.0, SLOWDOWN_C - 5.0)
        if shape == "cooling":  # power stays; the supply rises by what takes the die to the target
            p = rng.uniform(300.0, TDP_W)
            rise = target - supply - r * p
            if 3.0 <= rise <= 20.0:
                return r, supply, p, supply + rise, target
        else:
            p = (target - supply) / r
            if 250.0 <= p <= TDP_W:
                return r, supply, p, supply, target


def make_trace(seed: int, kind: str, sample_dt: float = SAMPLE_DT, jitter_w: float | None = None) -> Trace:
    """One random trace of class ``kind`` (one of :data:`KINDS`); even seeds report whole degrees. ``jitter_w``: the
    σ of the power's per-second jitter (drawn 3–15 W when not given)."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: one of {KINDS}")
    rng = np.random.default_rng(seed)
    shape = "steady" if kind == "healthy" else str(rng.choice(SHAPES))
    r, supply0, p_event, supply_event, _ = _plant(rng, kind, shape)
    tau_s, dead, tau_d = rng.uniform(8.0, 20.0), rng.uniform(0.5, 3.0), rng.uniform(4.0, 25.0)
    noise, jitter = rng.uniform(0.1, 0.4), rng.uniform(3.0, 15.0)
    jitter = jitter if jitter_w is None else jitter_w
    t0 = WARMUP_S + rng.uniform(0.0, 60.0)
    t = np.arange(0.0, t0 + AFTER_S, FINE_DT)
    # Power: warm-up levels whose die stays ≥ 6 °C under the line, then the event.
    p_safe = min(TDP_W, (SLOWDOWN_C - 6.0 - supply0) / r)
    power = np.empty_like(t)
    edge = 0.0
    while edge < t0:
        span = rng.uniform(30.0, 120.0)
        power[(t >= edge) & (t < min(edge + span, t0))] = rng.uniform(IDLE_W + 20.0, max(p_safe, IDLE_W + 40.0))
        edge += span
    supply = np.full_like(t, supply0)
    after = t >= t0
    base = power[np.searchsorted(t, t0) - 1]
    if shape == "power_step" or kind == "healthy":
        power[after] = p_event
    elif shape == "power_ramp":
        rate = rng.uniform(3.0, 20.0)
        power[after] = base + np.sign(p_event - base) * np.minimum(np.abs(p_event - base), (t[after] - t0) * rate)
    else:  # cooling: the load settles at its level, then the supply climbs (a chiller trips, a pump fails)
        power[after] = p_event
        rate = rng.uniform(0.05, 0.5)
        supply[after] = np.minimum(supply_event, supply0 + np.maximum(t[after] - t0 - 60.0, 0.0) * rate)
    # Per-second jitter, held for each second (what the GPU's own power reading averages over).
    sec = np.floor(t / 1.0).astype(int)
    power = np.clip(power + rng.normal(0.0, jitter, sec.max() + 1)[sec], IDLE_W, TDP_W + 50.0)
    die = np.empty_like(t)
    a_d = 1.0 - np.exp(-FINE_DT / tau_d)
    T = supply0 + r * power[0]
    for k in range(len(t)):  # the generator may loop: it is test scaffolding, not the twin
        T += (supply[k] + r * power[k] - T) * a_d
        die[k] = T
    lag = int(round(dead / FINE_DT))
    delayed = np.concatenate([np.full(lag, die[0]), die[: len(die) - lag]])
    sensor = np.empty_like(t)
    a_s = 1.0 - np.exp(-FINE_DT / tau_s)
    s = die[0]
    for k in range(len(t)):
        s += (delayed[k] - s) * a_s
        sensor[k] = s
    stride = int(round(sample_dt / FINE_DT))
    pick = np.arange(stride, len(t), stride)
    noisy = sensor[pick] + rng.normal(0.0, noise, len(pick))
    whole = seed % 2 == 0
    sensed = np.round(noisy) if whole else np.round(noisy, 2)
    # The reading's power: the mean over the second before it.
    p_read = np.array([power[max(0, k - int(1.0 / FINE_DT)) + 1: k + 1].mean() for k in pick])
    cool = np.arange(int(round(COOLING_DT / FINE_DT)), len(t), int(round(COOLING_DT / FINE_DT)))
    hit = np.nonzero(after & (die >= SLOWDOWN_C))[0]
    return Trace(kind, shape, seed, whole, float(tau_s), float(dead), float(tau_d), float(r), float(t0), t[pick],
                 sensed, np.round(p_read, 1), die[pick], t[cool], np.round(supply[cool], 2),
                 float(t[hit[0]]) if len(hit) else None, float(die[after].max()))
