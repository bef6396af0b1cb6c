"""The true die temperature behind a lagging, noisy, often whole-degree sensor, and whether it will reach slowdown.

**Model.** Per GPU, a physical model driven by what moves first: the GPU's own power ``P`` (its samples), the
inlet temperature ``T_in`` (its cooling unit's supply where the twin knows the unit, else a prior) and the unit's
coolant flow to the node and fan speed (:func:`resistance_factor` scales the power by how much they raise R)::

    die      τ_d · dT/dt = T_in + b + r·P − T      (r: thermal resistance K/W, b: an inlet offset)
    sensor   dead time L, then a first-order lag τ_s   (the dead time as a lag of L: dm/dt = (T − m)/L)
             ds/dt = (m − s) / τ_s,   reading y = s + noise

**Filter.** A Kalman filter on ``x = [s, m, T, b, r]`` (vectorised over GPUs and hypotheses). ``b`` and ``r`` are
states with slow random walks, so the filter *is* the recursive least squares that identifies them: a GPU at one
power level pins ``b + r·P`` (where its die settles at that power), and every load change it sees separates the
two (the covariance says how well). Priors until then: ``r`` from the twin's physics
(:data:`actors.twin.physics.R_BASE_K_PER_W` + ``R_FLOW_K_PER_W``), the die's steady state at the first reading's
power within ``offset_sd`` of that reading. A GPU that reports no power has ``r`` unobservable; its ``b`` then walks
fast (``walk_psd``), which is the old random-walk die.

**Time constants.** τ_s, L and τ_d enter the transition matrix, so they are identified the simple, explainable way:
a small bank of hypotheses (every combination of ``tau_s_bank``, ``dead_bank`` and ``tau_die_bank``), one filter
each, weighted per GPU by the likelihood of its innovations (with forgetting over ``forget_s``, and a floor so no
hypothesis dies and a changed GPU can move). The default bank, τ_s 7/12/20 s × L 0.5/3 s × τ_d 5/11/20 s, covers the
prior (τ_s ~15 s over 5–30 s, τ_d up to the physics' 20 s) at 18 filters per GPU: ~4.5 kB of state per GPU, which a
fleet that must be lighter trades for a smaller bank in ``EstimatorConfig``. Note that the sensor alone cannot tell
τ_d from τ_s (a cascade of two lags looks the same either way round): the bank keeps both orderings and the alarm is
the mixture's, so it weighs the faster die too.

**Measurement noise** is ``noise_c² + 1/12`` for a sensor that has only ever reported whole degrees (the variance
of rounding to a degree) and ``noise_c²`` once a finer reading is seen.

**Alarm.** For each hypothesis the die's mean path, holding the power (its mean over ``power_smooth_s``: a job's
per-step jitter averages out in the die, a change of load does not) and the supply, is
``T(t) = T∞ + (T − T∞)·exp(−t/τ_d)``, ``T∞ = T_in + b + r·P``; it is linear in the state, so its variance comes
from the filter's covariance (plus the process noise and the power's jitter over ``t``). A first-order path is
monotone, so ``P(T(t) ≥ limit for some t ≤ horizon) = P(max(T(0), T(horizon)) ≥ limit)``, taken as the larger of
the two Gaussian tails; :meth:`ThermalEstimator.crossing` returns the mixture of that over hypotheses (0 for the
first ``settle_s`` after the filter starts, when it knows its priors only). Inputs are held, not extrapolated: a
ramp is warned once its present level heads over the line (about τ_d before the die crosses), never for where a
ramp might go.

**Choosing p*** (``Thresholds.warn_p`` in :mod:`actors.twin.model`: 0.7). Take a GPU whose die sits steady ``m``
under the slowdown line ``θ``. The filter's estimate of where the die is heading has an error ``e`` of spread ``σ_e``,
and reports a spread ``σ`` of its own; the alarm (probability ≥ p*) fires when the estimate is at or above
``θ − z*·σ``, ``z* = Φ⁻¹(1 − p*)``, i.e. when ``e ≥ m − z*·σ``. The error decorrelates over the filter's memory,
~30 s (τ_s + τ_d), so a GPU-day is ~2,900 independent looks and 1,000 GPU-days ~2.9 million: at most one false
alarm in them needs ``P(e ≥ m − z*·σ) ≤ 3.5·10⁻⁷``, i.e. ``m ≥ 4.96·σ_e + z*·σ``. Measured on
``bench/early_warning.py``'s traces (seeds 9000–9079, the projection at the end of each trace against the true die's
last 30 s): ``σ ≈ 0.6 °C`` (the filter is conservative), ``σ_e ≈ 0.35 °C`` on healthy GPUs and 0.48 °C (fine
readings) to 0.55 °C (whole degrees) on GPUs that rose fast to near the line. With ``p* = 0.7`` (``z* = −0.52``) the
bound is 1.4 °C for healthy GPUs and 2.1–2.4 °C near the line after a fast rise; ``p* = 0.5`` would need 1.7 and
2.4–2.7 °C, ``p* = 0.9`` 1.0 and 1.6–2.0 °C. 0.7 is where the bench's trade-off turns (docs/benchmarks.md, "Early
warning": a smaller p* adds false alarms on GPUs settling 2–3.5 °C under, a larger one gives up lead and warnings
before the crossing). GPUs that run closer to the line than the bound (air-cooled fleets at 1–2 °C) will see more
than one false alarm per 1,000 GPU-days.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import product

import numpy as np

from actors.twin.physics import NOMINAL_FAN_PCT, R_BASE_K_PER_W, R_FLOW_K_PER_W, TAU_DIE_S
from actors.twin.state import StateError, arrays_from_state, arrays_to_state, num

S, M, T, B, R = range(5)  # state layout
QUANT_VAR = 1.0 / 12.0  # variance of rounding to a whole degree


@dataclass(frozen=True)
class EstimatorConfig:
    """Priors and tuning; defaults hold for sensor lags 5–30 s, noise σ ≤ 0.5 °C (+ whole degrees), 0.5–5 s sampling."""

    noise_c: float = 0.5  # sensor noise σ (°C), before quantisation
    tau_s_bank: tuple[float, ...] = (7.0, 12.0, 20.0)  # sensor lag hypotheses (s): prior ~15 s over 5–30 s
    dead_bank: tuple[float, ...] = (0.5, 3.0)  # sensor dead-time hypotheses (s)
    tau_die_bank: tuple[float, ...] = (5.0, 11.0, TAU_DIE_S)  # die time-constant hypotheses (s)
    r_prior: float = R_BASE_K_PER_W + R_FLOW_K_PER_W  # K/W
    r_sd: float = 0.03
    inlet_prior_c: float = 25.0  # T_in when the GPU's cooling unit is unknown
    offset_sd: float = 3.0  # prior σ of the die's steady state about the first reading (is it mid-transient?)
    die_psd: float = 0.02  # unmodelled heat on the die, °C²/s
    offset_psd: float = 0.002  # b's drift (flow, fouling), °C²/s
    r_psd: float = 1e-9  # r's drift, (K/W)²/s
    walk_psd: float = 0.05  # b's walk for a GPU that reports no power (the die then follows a random walk)
    forget_s: float = 600.0  # memory of the hypothesis weights
    floor_log: float = -9.0  # no hypothesis falls below exp(floor) of the best
    horizon_s: float = 60.0  # look-ahead of the projection
    power_smooth_s: float = 2.0  # the projection holds the power's mean over this (jitter out, steps in)
    settle_s: float = 10.0  # a filter that just (re)started knows its priors only: no crossing probability before
    reset_gap_s: float = 120.0  # a longer gap between readings restarts the filter for that GPU

    @property
    def bank(self) -> np.ndarray:
        """Hypotheses as rows ``(τ_s, L, τ_d)``."""
        return np.array(list(product(self.tau_s_bank, self.dead_bank, self.tau_die_bank)), float)


def _expm(a: np.ndarray) -> np.ndarray:
    """Matrix exponential of a stack of small matrices (scaling and squaring of a Taylor series)."""
    norm = float(np.abs(a).sum(axis=-1).max()) if a.size else 0.0
    k = max(0, int(np.ceil(np.log2(norm / 0.25))) if norm > 0.25 else 0)
    a = a / 2.0**k
    out = term = np.broadcast_to(np.eye(a.shape[-1]), a.shape).copy()
    for i in range(1, 14):
        term = term @ a / i
        out = out + term
    for _ in range(k):
        out = out @ out
    return out


@lru_cache(maxsize=512)
def _unit_transition(dt: float, bank: tuple[tuple[float, float, float], ...]) -> np.ndarray:
    """``A`` over ``dt`` for every hypothesis at ``P = 1`` (shape (H, 5, 5)); the r column scales with ``P``."""
    h = np.array(bank)
    F = np.zeros((len(h), 5, 5))
    F[:, S, S], F[:, S, M] = -1 / h[:, 0], 1 / h[:, 0]
    F[:, M, M], F[:, M, T] = -1 / h[:, 1], 1 / h[:, 1]
    F[:, T, T], F[:, T, B], F[:, T, R] = -1 / h[:, 2], 1 / h[:, 2], 1 / h[:, 2]
    return _expm(F * dt)


def resistance_factor(flow: np.ndarray | None, fan: np.ndarray | None) -> np.ndarray | float:
    """How much a GPU's thermal resistance grows with less coolant flow or slower fans (1 at nominal or unknown).

    The twin's physics splits R into die → cold plate (fixed) and cold plate → coolant (∝ 1/flow, and
    ∝ √(nominal fan / fan) for air); the filter learns ``r`` at nominal and multiplies the power by this, so a
    flow drop raises the die's steady state the moment the unit reports it.
    """
    if flow is None and fan is None:
        return 1.0
    flow = np.nan_to_num(np.asarray(flow, float), nan=1.0)
    fan = np.nan_to_num(np.asarray(fan, float), nan=NOMINAL_FAN_PCT)
    plate = R_FLOW_K_PER_W / (R_BASE_K_PER_W + R_FLOW_K_PER_W)
    return 1.0 - plate + plate / np.maximum(flow, 0.05) * np.sqrt(NOMINAL_FAN_PCT / np.maximum(fan, 1.0))


def norm_sf(z: np.ndarray) -> np.ndarray:
    """P(Z ≥ z) of a standard normal (Abramowitz & Stegun 7.1.26, error < 1.5e-7), vectorised."""
    x = np.abs(z) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    half = 0.5 * poly * np.exp(-x * x)  # P(Z ≥ |z|)
    return np.where(z >= 0, half, 1.0 - half)


class ThermalEstimator:
    """Per-GPU, per-hypothesis filter state in flat arrays; ``update`` advances a set of GPUs with one reading each.

    Views the rest of the twin reads (kept as plain arrays): ``x[:, 0]`` the filtered sensor and ``x[:, 1]`` the
    die (mixture means), ``proj`` the die's mean ``horizon_s`` ahead, ``started``.
    """

    def __init__(self, sensor_tau_s: float = 15.0, config: EstimatorConfig | None = None) -> None:
        self.tau = float(sensor_tau_s)  # the twin's nominal sensor lag (what-ifs); the filter fits its own
        self.cfg = config or EstimatorConfig()
        self.hyp = self.cfg.bank
        self._bank_key = tuple(map(tuple, self.hyp.tolist()))
        h = len(self.hyp)
        self.xs = np.zeros((0, h, 5))  # per hypothesis
        self.Ps = np.zeros((0, h, 5, 5))
        self.lw = np.zeros((0, h))  # log weights (max 0)
        self.t = np.zeros(0)  # time of the last reading
        self.t_start = np.zeros(0)  # when the filter (re)started
        self.started = np.zeros(0, bool)
        self.whole = np.zeros(0, bool)  # only whole degrees seen so far
        self.known = np.zeros(0, bool)  # the inlet is the cooling unit's supply (not the prior)
        self.power = np.zeros(0)  # latest power (NaN unknown) and inlet temperature used
        self.inlet = np.zeros(0)
        self.p_bar = np.zeros(0)  # power smoothed over power_smooth_s (NaN none yet), and its jitter's variance
        self.p_var = np.zeros(0)
        self.x = np.zeros((0, 2))  # mixture means [sensor, die]
        self.proj = np.zeros(0)
        self._last: tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]] | None = None

    ARRAYS = {"xs": "<f8", "Ps": "<f8", "lw": "<f8", "t": "<f8", "t_start": "<f8", "started": "|b1", "whole": "|b1",
              "known": "|b1", "power": "<f8", "p_bar": "<f8", "p_var": "<f8", "inlet": "<f8", "x": "<f8", "proj": "<f8"}

    def to_state(self) -> dict:
        """The filter as plain data (see :mod:`actors.twin.state`)."""
        cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self.cfg).items()}
        return {"tau": self.tau, "cfg": cfg, **arrays_to_state(self, self.ARRAYS)}

    @classmethod
    def from_state(cls, d: dict, n: int) -> ThermalEstimator:
        """Rebuild from ``to_state`` for ``n`` GPUs; raises ``StateError`` on a wrong field, dtype or shape."""
        cfg = EstimatorConfig(**{k: tuple(num(x, f"estimator {k}") for x in v) if isinstance(v, list)
                                 else num(v, f"estimator {k}") for k, v in d["cfg"].items()})
        est = cls(num(d["tau"], "sensor tau"), cfg)
        h = len(est.hyp)
        arrays_from_state(est, d, cls.ARRAYS, n, {"xs": 3, "Ps": 4, "lw": 2, "x": 2})
        for name, shape in (("xs", (h, 5)), ("Ps", (h, 5, 5)), ("lw", (h,)), ("x", (2,))):
            if getattr(est, name).shape[1:] != shape:
                raise StateError(f"estimator {name} has shape {getattr(est, name).shape[1:]} where {shape} is expected")
        return est

    def grow(self, n: int) -> None:
        """Make room for ``n`` GPUs in total (new ones start empty)."""
        k = n - len(self.t)
        if k <= 0:
            return
        h = len(self.hyp)
        self.xs = np.concatenate([self.xs, np.zeros((k, h, 5))])
        self.Ps = np.concatenate([self.Ps, np.zeros((k, h, 5, 5))])
        self.lw = np.concatenate([self.lw, np.zeros((k, h))])
        self.x = np.concatenate([self.x, np.zeros((k, 2))])
        for attr, v in (("t", 0.0), ("t_start", 0.0), ("started", False), ("whole", True), ("known", False),
                        ("power", np.nan), ("p_bar", np.nan), ("p_var", 0.0), ("inlet", np.nan), ("proj", 0.0)):
            a = getattr(self, attr)
            setattr(self, attr, np.append(a, np.full(k, v, a.dtype)))

    def update(self, idx: np.ndarray, ts: np.ndarray, y: np.ndarray, power: np.ndarray | None = None,
               supply: np.ndarray | None = None, flow: np.ndarray | None = None, fan: np.ndarray | None = None
               ) -> None:
        """Fold one reading per GPU (``idx`` unique) taken at ``ts`` with value ``y``; ``power`` (W), the cooling
        unit's ``supply`` (°C), coolant ``flow`` to the GPU's node (fraction of nominal) and ``fan`` speed (%) at
        that time where known (NaN where not)."""
        cfg, n = self.cfg, len(idx)
        nan = np.full(n, np.nan)
        power = nan if power is None else np.asarray(power, float) * resistance_factor(flow, fan)
        supply = nan if supply is None else np.asarray(supply, float)
        self.power[idx] = power
        self._smooth_power(idx, ts, power)
        known = np.isfinite(supply)
        inlet = np.where(known, supply, cfg.inlet_prior_c)
        # b is the die's offset from the inlet in use: when the inlet changes source (the unit's first supply
        # reading, or the unit gone), b moves the other way so the die's steady state does not jump.
        switched = self.started[idx] & (np.isfinite(self.inlet[idx]) & (self.known[idx] != known))
        self.xs[idx[switched], :, B] -= (inlet - self.inlet[idx])[switched, None]
        self.known[idx] = known
        self.inlet[idx] = inlet
        self.whole[idx] &= y == np.round(y)
        dt = ts - self.t[idx]
        fresh = ~self.started[idx] | (dt > cfg.reset_gap_s) | (dt <= 0)
        if fresh.any():
            self._start(idx[fresh], ts[fresh], y[fresh])
        go = ~fresh
        if go.any():
            self._step(idx[go], dt[go], y[go])
            self.t[idx[go]] = ts[go]
        self._summarise(idx)

    def _smooth_power(self, idx: np.ndarray, ts: np.ndarray, power: np.ndarray) -> None:
        """The power the projection holds: a mean over ``power_smooth_s`` (a job's step-to-step jitter averages out
        in the die), and the jitter's variance, which the projection adds as the uncertainty of that mean."""
        dt = np.clip(ts - self.t[idx], 0.0, None)
        a = np.where(np.isfinite(self.p_bar[idx]), 1.0 - np.exp(-dt / self.cfg.power_smooth_s), 1.0)
        dev = np.nan_to_num(power - self.p_bar[idx], nan=0.0)
        self.p_var[idx] = np.where(np.isfinite(power), self.p_var[idx] + (dev**2 * (a < 1) - self.p_var[idx]) * a,
                                   self.p_var[idx])
        self.p_bar[idx] = np.where(np.isfinite(power), np.nan_to_num(self.p_bar[idx], nan=0.0) * (1 - a) + power * a,
                                   self.p_bar[idx])

    def _start(self, idx: np.ndarray, ts: np.ndarray, y: np.ndarray) -> None:
        cfg = self.cfg
        p = np.nan_to_num(self.power[idx], nan=0.0)
        # The first reading: the die near it (±5 °C), b such that the die's steady state is the reading at this power.
        x = np.zeros((len(idx), 5))
        x[:, S] = x[:, M] = x[:, T] = y
        x[:, R] = cfg.r_prior
        x[:, B] = y - self.inlet[idx] - cfg.r_prior * p
        P = np.zeros((len(idx), 5, 5))
        P[:, S, S], P[:, M, M], P[:, T, T] = self._meas_var(idx), 4.0, 25.0
        P[:, B, B], P[:, R, R] = cfg.offset_sd**2 + (cfg.r_sd * p) ** 2, cfg.r_sd**2
        P[:, B, R] = P[:, R, B] = -(cfg.r_sd**2) * p  # b and r·P start anticorrelated: the sum is the reading
        self.xs[idx] = x[:, None, :]
        self.Ps[idx] = P[:, None, :, :]
        self.lw[idx] = 0.0
        self.started[idx] = True
        self.t[idx] = self.t_start[idx] = ts

    def _meas_var(self, idx: np.ndarray) -> np.ndarray:
        return self.cfg.noise_c**2 + np.where(self.whole[idx], QUANT_VAR, 0.0)

    def _transition(self, dt: np.ndarray, p: np.ndarray) -> np.ndarray:
        """``A`` per GPU and hypothesis (n, H, 5, 5): the cached unit transition with its r column scaled by power."""
        keys = np.round(dt, 3)
        uniq, inv = np.unique(keys, return_inverse=True)
        A = np.stack([_unit_transition(float(k), self._bank_key) for k in uniq])[inv]  # copy per GPU
        A[:, :, :T + 1, R] *= p[:, None, None]
        return A

    def _step(self, idx: np.ndarray, dt: np.ndarray, y: np.ndarray) -> None:
        cfg = self.cfg
        has_p = np.isfinite(self.power[idx])
        p = np.where(has_p, self.power[idx], 0.0)
        A = self._transition(dt, p)
        x = (A @ self.xs[idx][..., None])[..., 0]
        x[:, :, :T + 1] += A[:, :, :T + 1, B] * self.inlet[idx, None, None]  # T_in enters like b
        # Process noise over dt, white on T, b and r: Q ≈ ∫ A(u) Qc A(u)ᵀ du by the trapezoid rule, where
        # A Qc Aᵀ = Σ_k q_k a_k a_kᵀ over those three columns a_k of A.
        q_b = np.where(has_p, cfg.offset_psd, cfg.walk_psd)[:, None, None, None]
        Q = 0.0
        for k, qk in ((T, cfg.die_psd), (B, q_b), (R, cfg.r_psd)):
            a = A[:, :, :, k]
            Q = Q + qk * a[..., :, None] * a[..., None, :]
        Q[:, :, [T, B, R], [T, B, R]] += np.stack(np.broadcast_arrays(cfg.die_psd, q_b[:, :, 0, 0], cfg.r_psd), -1)
        Q *= 0.5 * dt[:, None, None, None]
        P = A @ self.Ps[idx] @ A.transpose(0, 1, 3, 2) + Q
        rv = self._meas_var(idx)[:, None]
        Sv = P[:, :, S, S] + rv
        e = y[:, None] - x[:, :, S]
        K = P[:, :, :, S] / Sv[:, :, None]
        x = x + K * e[:, :, None]
        P = P - K[:, :, :, None] * P[:, :, S, None, :]
        self.xs[idx], self.Ps[idx] = x, 0.5 * (P + P.transpose(0, 1, 3, 2))
        ll = -0.5 * (np.log(Sv) + e**2 / Sv)
        lw = self.lw[idx] * np.exp(-dt / cfg.forget_s)[:, None] + ll
        self.lw[idx] = np.maximum(lw - lw.max(axis=1, keepdims=True), cfg.floor_log)

    def weights(self, idx: np.ndarray) -> np.ndarray:
        """Hypothesis weights per GPU (n, H), summing to 1."""
        w = np.exp(self.lw[idx])
        return w / w.sum(axis=1, keepdims=True)

    def _path(self, idx: np.ndarray, horizon: float) -> tuple[np.ndarray, ...]:
        """Per GPU and hypothesis: die now, its steady state and the die at ``horizon`` (means), their σs."""
        cfg = self.cfg
        x, P = self.xs[idx], self.Ps[idx]
        p = np.nan_to_num(self.p_bar[idx], nan=0.0)[:, None]
        tau_d = self.hyp[None, :, 2]
        a = np.exp(-horizon / tau_d)
        # T(horizon) = gᵀx + (1 − a)·T_in with g non-zero on T, b and r only: gᵀPg over those three.
        g = {T: a, B: 1 - a, R: (1 - a) * p}
        mean_h = sum(gi * x[:, :, i] for i, gi in g.items()) + (1 - a) * self.inlet[idx, None]
        var_h = sum(gi * gj * P[:, :, i, j] for i, gi in g.items() for j, gj in g.items())
        var_h = var_h + cfg.die_psd * tau_d / 2 * (1 - a * a)
        var_h += (1 - a) ** 2 * (cfg.offset_psd * horizon + x[:, :, R] ** 2 * self.p_var[idx, None] * cfg.power_smooth_s
                                 / np.maximum(horizon, cfg.power_smooth_s))
        t_inf = x[:, :, B] + x[:, :, R] * p + self.inlet[idx, None]
        return x[:, :, T], np.sqrt(P[:, :, T, T]), t_inf, mean_h, np.sqrt(var_h)

    def _summarise(self, idx: np.ndarray) -> None:
        w = self.weights(idx)
        self.x[idx, 0] = (w * self.xs[idx, :, S]).sum(1)
        self.x[idx, 1] = (w * self.xs[idx, :, T]).sum(1)
        path = self._path(idx, self.cfg.horizon_s)
        self.proj[idx] = (w * path[3]).sum(1)
        self._last = (idx.copy(), w, path)  # the round's paths, for the crossing the model asks for next

    # --- views -------------------------------------------------------------------------------------------
    def sensor(self, idx: np.ndarray) -> np.ndarray:
        """Filtered sensor state (the reading without its noise)."""
        return self.x[idx, 0]

    def true_c(self, idx: np.ndarray) -> np.ndarray:
        """Estimated true die temperature."""
        return self.x[idx, 1]

    def params(self, i: int) -> dict:
        """What the filter has identified for GPU ``i`` (weighted over hypotheses): for events and explanations."""
        w = self.weights(np.array([i]))[0]
        xs = self.xs[i]
        return {"tau_s": round(float(w @ self.hyp[:, 0]), 1), "dead_s": round(float(w @ self.hyp[:, 1]), 1),
                "tau_die_s": round(float(w @ self.hyp[:, 2]), 1), "r_k_per_w": round(float(w @ xs[:, R]), 4)}

    def crossing(self, idx: np.ndarray, limit_c: np.ndarray, horizon_s: float | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """``(probability, eta_s)`` per GPU that the die reaches ``limit_c`` within ``horizon_s``.

        The probability is the hypothesis mixture of ``max(P(T_now ≥ limit), P(T_horizon ≥ limit))``; ``eta_s`` is the
        mean path's crossing time (0 at or above the line), averaged over hypotheses weighted by weight × probability
        (``inf`` when no hypothesis' mean path crosses).
        """
        horizon = self.cfg.horizon_s if horizon_s is None else horizon_s
        lim = np.asarray(limit_c, float)[:, None]
        last = self._last
        if last is not None and horizon == self.cfg.horizon_s and np.array_equal(last[0], idx):
            w, (t_now, sd_now, t_inf, mean_h, sd_h) = last[1], last[2]
        else:
            w, (t_now, sd_now, t_inf, mean_h, sd_h) = self.weights(idx), self._path(idx, horizon)
        p_h = np.maximum(norm_sf((lim - t_now) / sd_now), norm_sf((lim - mean_h) / sd_h))
        prob = np.where(self.t[idx] - self.t_start[idx] >= self.cfg.settle_s, (w * p_h).sum(1), 0.0)
        tau_d = self.hyp[None, :, 2]
        rising = (t_inf > lim) & (t_now < lim)
        ratio = np.where(rising, (lim - t_inf) / np.where(rising, t_now - t_inf, -1.0), 1.0)
        t_cross = np.where(t_now >= lim, 0.0, np.where(rising, -tau_d * np.log(np.clip(ratio, 1e-12, 1.0)), np.inf))
        fin = np.isfinite(t_cross)
        wp = w * p_h * fin
        eta = np.where(wp.sum(1) > 0, (wp * np.where(fin, t_cross, 0.0)).sum(1) / np.maximum(wp.sum(1), 1e-300),
                       np.inf)
        return prob, eta
