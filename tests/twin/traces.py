"""Randomised thermal traces for the early-warning tests, generated independently of the twin's physics.

The true die temperature is a generic first-order response (its own τ_die, drawn at random) to an input
made of steps and ramps; the sensor is a first-order lag (τ drawn from 10–20 s) plus Gaussian noise. Two
classes: ``cross`` (the true temperature crosses the slowdown threshold) and ``settle`` (it settles 4 °C
or more below it, some of them by a fast rise). Nothing here is taken from ``actors.twin``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SLOWDOWN_C = 89.0  # H100-SXM, the trace's default model
FINE_DT = 0.05


@dataclass
class Trace:
    """One GPU's readings plus the ground truth the test needs."""

    kind: str  # "cross" or "settle"
    tau: float
    ts: np.ndarray
    sensed: np.ndarray  # noisy readings
    true_c: np.ndarray  # true die temperature at the reading times
    shape: str

    def sensed_cross_ts(self) -> float | None:
        """First reading at or above the slowdown threshold (the lagging sensor's alarm)."""
        hit = np.nonzero(self.sensed >= SLOWDOWN_C)[0]
        return float(self.ts[hit[0]]) if len(hit) else None

    def records(self, node: str = "n01", gpu: int = 0) -> list[dict]:
        """The trace as JSONL records (kind gpu)."""
        return [{"ts": round(float(t), 3), "node": node, "gpu": gpu, "temp_c": round(float(y), 2)}
                for t, y in zip(self.ts, self.sensed, strict=True)]


def _input(rng: np.random.Generator, t: np.ndarray, base: float, peak: float, t0: float) -> tuple[np.ndarray, str]:
    shape = str(rng.choice(["step", "ramp", "step_ramp", "stairs"]))
    u = np.full_like(t, base)
    if shape == "step":
        u[t >= t0] = peak
    elif shape == "ramp":
        rate = rng.uniform(0.05, 1.5)
        u = np.where(t >= t0, np.minimum(base + (t - t0) * rate, peak), base)
    elif shape == "step_ramp":
        mid = base + rng.uniform(0.3, 0.8) * (peak - base)
        rate = rng.uniform(0.03, 0.5)
        u = np.where(t >= t0, np.minimum(mid + (t - t0) * rate, peak), base)
    else:  # stairs: three equal steps some tens of seconds apart
        gap = rng.uniform(15, 60)
        for k in range(3):
            u = np.where(t >= t0 + k * gap, base + (k + 1) / 3 * (peak - base), u)
    return u, shape


def make_trace(seed: int, kind: str, sample_dt: float = 1.0, noise_c: float = 0.5) -> Trace:
    """One random trace of class ``kind`` ("cross" or "settle")."""
    rng = np.random.default_rng(seed)
    tau = float(rng.uniform(10.0, 20.0))
    tau_die = float(rng.choice([rng.uniform(2.0, 8.0), rng.uniform(8.0, 40.0)]))
    base = float(rng.uniform(35.0, 70.0))
    if kind == "cross":
        peak = float(rng.uniform(91.0, 110.0))
    else:
        peak = float(rng.uniform(max(base + 8.0, 70.0), SLOWDOWN_C - 4.0))
    t0 = float(rng.uniform(30.0, 120.0))
    duration = t0 + 600.0
    t = np.arange(0.0, duration, FINE_DT)
    u, shape = _input(rng, t, base, peak, t0)
    true_c = np.empty_like(t)
    sensor = np.empty_like(t)
    a_die, a_s = 1 - np.exp(-FINE_DT / tau_die), 1 - np.exp(-FINE_DT / tau)
    T = s = base
    for k in range(len(t)):  # the generator may loop: it is test scaffolding, not the twin
        T += (u[k] - T) * a_die
        s += (T - s) * a_s
        true_c[k], sensor[k] = T, s
    stride = int(round(sample_dt / FINE_DT))
    pick = np.arange(stride, len(t), stride)
    noisy = sensor[pick] + rng.normal(0.0, noise_c, len(pick))
    return Trace(kind, tau, t[pick], noisy, true_c[pick], shape)
