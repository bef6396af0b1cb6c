"""Estimating the true die temperature from a lagging, noisy sensor, and where it is heading.

A state observer (a Kalman filter, vectorised over every GPU) on ``x = [s, T]``: ``s`` the sensor's own
state, ``T`` the true die temperature. The sensor is a known first-order lag, ``ds/dt = (T - s) / τ``;
the die is modelled only as a random walk of spectral density ``q`` (no assumed die time constant, heat
source or simulator). A random walk rather than a constant-velocity model on purpose: a velocity state
overshoots by many degrees when a fast rise stops, which is exactly the trace that must not alarm.

The rate ``v = dT/dt`` is the estimate's derivative smoothed over ``rate_tau_s``. The projection asks where
the die is heading: a first-order die approaching a steady state has ``v(t) = v0 · exp(-t / τ_die)``, so
``τ_die`` is read from how fast the rate decays over ``lookback_s``, and ``T_ss = T + v · τ_die``. A rate
that is not decaying (a ramp, an accelerating rise) has no visible steady state: the projection then looks
a conservative ``horizon_s`` ahead, which also caps the look-ahead.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from actors.twin.state import arrays_from_state, arrays_to_state, num


@dataclass(frozen=True)
class EstimatorConfig:
    """Tuning of the observer; defaults hold for τ 5–30 s, sensor noise σ ≈ 0.2–1 °C, 0.5–5 s sampling."""

    noise_c: float = 0.5  # sensor noise σ (°C)
    walk_psd: float = 0.05  # q: spectral density of the die's random walk, °C²/s
    rate_tau_s: float = 5.0  # smoothing of the rate estimate
    horizon_s: float = 20.0  # the longest look-ahead of the projection
    lookback_s: float = 5.0  # window over which the rate's decay is measured
    reset_gap_s: float = 120.0  # a longer gap between readings restarts the filter for that GPU
    init_var_t: float = 25.0  # prior variance of T - s at the first reading (°C²)


@lru_cache(maxsize=256)
def transition(dt: float, tau: float, q: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact discrete transition ``A`` and process noise ``Q`` of ``[s, T]`` over ``dt`` seconds.

    ``Q = ∫₀^dt A(u) G q Gᵀ A(u)ᵀ du`` with ``G = [0, 1]ᵀ``, integrated numerically (cached per dt).
    """
    a = np.exp(-dt / tau)
    A = np.array([[a, 1.0 - a], [0.0, 1.0]])
    u = np.linspace(0.0, dt, 201)
    g = np.stack([1.0 - np.exp(-u / tau), np.ones_like(u)])  # A(u) G, shape (2, k)
    outer = g[:, None, :] * g[None, :, :] * q
    Q = np.trapezoid(outer, u, axis=2) if hasattr(np, "trapezoid") else np.trapz(outer, u, axis=2)
    return A, Q


class ThermalEstimator:
    """Per-GPU observer state in flat arrays; ``update`` advances a set of GPUs with one reading each."""

    def __init__(self, sensor_tau_s: float = 15.0, config: EstimatorConfig | None = None) -> None:
        self.tau = float(sensor_tau_s)
        self.cfg = config or EstimatorConfig()
        self.x = np.zeros((0, 2))
        self.P = np.zeros((0, 2, 2))
        self.v = np.zeros(0)  # smoothed dT/dt
        self.t = np.zeros(0)  # time of the last reading
        self.started = np.zeros(0, bool)
        self.v_ref = np.zeros(0)  # the rate at the start of the lookback window, and when it was taken
        self.t_ref = np.zeros(0)
        self.proj = np.zeros(0)
        self.tau_die = np.zeros(0)

    ARRAYS = {"x": "<f8", "P": "<f8", "v": "<f8", "t": "<f8", "started": "|b1", "v_ref": "<f8", "t_ref": "<f8",
              "proj": "<f8", "tau_die": "<f8"}

    def to_state(self) -> dict:
        """The observer as plain data (see :mod:`actors.twin.state`)."""
        return {"tau": self.tau, "cfg": vars(self.cfg), **arrays_to_state(self, self.ARRAYS)}

    @classmethod
    def from_state(cls, d: dict, n: int) -> ThermalEstimator:
        """Rebuild from ``to_state`` for ``n`` GPUs; raises ``StateError`` on a wrong field, dtype or shape."""
        cfg = EstimatorConfig(**{k: num(v, f"estimator {k}") for k, v in d["cfg"].items()})
        est = cls(num(d["tau"], "sensor tau"), cfg)
        arrays_from_state(est, d, cls.ARRAYS, n, {"x": 2, "P": 3})
        return est

    def grow(self, n: int) -> None:
        """Make room for ``n`` GPUs in total (new ones start empty)."""
        k = n - len(self.t)
        if k <= 0:
            return
        self.x = np.vstack([self.x, np.zeros((k, 2))])
        self.P = np.concatenate([self.P, np.zeros((k, 2, 2))])
        for attr in ("v", "t", "v_ref", "t_ref", "proj"):
            setattr(self, attr, np.append(getattr(self, attr), np.zeros(k)))
        self.tau_die = np.append(self.tau_die, np.full(k, np.inf))
        self.started = np.append(self.started, np.zeros(k, bool))

    def update(self, idx: np.ndarray, ts: np.ndarray, y: np.ndarray) -> None:
        """Fold one reading per GPU (``idx`` unique) taken at ``ts`` with value ``y``."""
        cfg = self.cfg
        dt = ts - self.t[idx]
        fresh = ~self.started[idx] | (dt > cfg.reset_gap_s) | (dt <= 0)
        if fresh.any():
            f = idx[fresh]
            self.x[f] = np.stack([y[fresh], y[fresh]], axis=1)
            self.P[f] = np.diag([cfg.noise_c**2, cfg.init_var_t])
            self.started[f] = True
            self.t[f], self.t_ref[f] = ts[fresh], ts[fresh]
            self.v[f] = self.v_ref[f] = 0.0
        go = ~fresh
        if go.any():
            self._step(idx[go], dt[go], ts[go], y[go])
        self._project(idx)

    def _step(self, idx: np.ndarray, dt: np.ndarray, ts: np.ndarray, y: np.ndarray) -> None:
        keys = np.round(dt, 3)
        uniq, inv = np.unique(keys, return_inverse=True)
        mats = [transition(float(k), self.tau, self.cfg.walk_psd) for k in uniq]
        A = np.stack([m[0] for m in mats])[inv]
        Q = np.stack([m[1] for m in mats])[inv]
        x = np.einsum("nij,nj->ni", A, self.x[idx])
        P = np.einsum("nij,njk,nlk->nil", A, self.P[idx], A) + Q
        k = P[:, :, 0] / (P[:, 0, 0] + self.cfg.noise_c**2)[:, None]
        x = x + k * (y - x[:, 0])[:, None]
        P = P - k[:, :, None] * P[:, 0, :][:, None, :]
        rate = (x[:, 1] - self.x[idx, 1]) / dt
        self.v[idx] += (rate - self.v[idx]) * (1.0 - np.exp(-dt / self.cfg.rate_tau_s))
        self.x[idx], self.P[idx] = x, 0.5 * (P + P.transpose(0, 2, 1))
        self.t[idx] = ts

    def _project(self, idx: np.ndarray) -> None:
        cfg = self.cfg
        T, v, now = self.x[idx, 1], self.v[idx], self.t[idx]
        age = now - self.t_ref[idx]
        v_ref = self.v_ref[idx]
        # Decay of a positive rate over the window: v / v_ref = exp(-age / τ_die).
        decaying = (v > 0) & (v_ref > v) & (age > 0)
        ratio = np.where(decaying, v / np.where(v_ref > 0, v_ref, 1.0), 0.5)
        tau_die = np.where(decaying, age / -np.log(np.clip(ratio, 1e-9, 1 - 1e-9)), np.inf)
        # Falling or flat: the die is heading no higher than where it is now.
        self.proj[idx] = T + np.maximum(v, 0.0) * np.minimum(tau_die, cfg.horizon_s)
        self.tau_die[idx] = tau_die
        roll = age >= cfg.lookback_s
        self.v_ref[idx] = np.where(roll, v, v_ref)
        self.t_ref[idx] = np.where(roll, now, self.t_ref[idx])

    # --- views -------------------------------------------------------------------------------------------
    def sensor(self, idx: np.ndarray) -> np.ndarray:
        """Filtered sensor state (the reading without its noise)."""
        return self.x[idx, 0]

    def true_c(self, idx: np.ndarray) -> np.ndarray:
        """Estimated true die temperature."""
        return self.x[idx, 1]

    def rate(self, idx: np.ndarray) -> np.ndarray:
        """Estimated rate of change of the die temperature (°C/s)."""
        return self.v[idx]

    def eta_s(self, idx: np.ndarray, limit_c: np.ndarray) -> np.ndarray:
        """Seconds until the die reaches ``limit_c`` on the projected path (0 at or above it, inf never)."""
        T, v, proj = self.x[idx, 1], self.v[idx], self.proj[idx]
        gap = limit_c - T
        ramp = np.where(v > 0, gap / np.where(v > 0, v, 1.0), np.inf)
        span = proj - T
        frac = np.clip(gap / np.where(span > 0, span, 1.0), 0.0, 1.0 - 1e-9)
        expo = np.where((span > 0) & (proj >= limit_c), -np.minimum(self.tau_die[idx], 1e9) * np.log1p(-frac), np.inf)
        eta = np.where(np.isfinite(self.tau_die[idx]), expo, ramp)
        return np.where(gap <= 0, 0.0, eta)
