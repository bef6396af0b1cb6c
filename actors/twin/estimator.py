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

**Tiers.** The bank is 18 × (5 + 25) floats and 18 batched 5×5 matrix products per GPU and reading, and most
GPUs of a fleet at work are far from their line. So every GPU is *screened* on flat arrays, element-wise: a 2-state
[sensor, die] Kalman filter with the nominal lags (the twin's ``sensor_tau_s``, the physics' τ_d), its die driven
toward ``T_ss = T_in + b̂ + r̂·P̄``, where ``(b̂, r̂)`` is a recursive least-squares fit of the readings on the inlet
and power passed through those nominal lags (an output-error fit: a first version fitted the filter's own die,
which its ``r̂`` drives, and drifted ~0.01 K/W high). Only the *watched* GPUs have a bank, in slots. A GPU enters
when its screened die (once ``settle_s`` old: a fresh die swings with the noise) is within ``enter_margin_c`` of its
slowdown line, or ``T_ss`` within ``enter_margin_ss_c``; it leaves once both have been more than ``exit_margin_c``
under the line for ``exit_hold_s``. Its bank starts from the screen (sensor and die; ``b`` so that the steady state at
the present power is the screen's; ``r`` at the prior with the prior's σ: the fit's ``r̂`` is off by its nominal
lags, and a bank trusting it false-alarmed; equal weights) and does not wait ``settle_s``.

*Why a GPU outside the watch set has crossing probability 0.* With its inputs held, the die moves monotonically from
``T`` toward ``T∞``, so it reaches the line within the horizon only if ``max(T, T∞)`` does; the bank's probability
reaches 0.5 (below p*) when its mean of that is about at the line. The screen estimates both, and a change of power or
supply shows in its ``T_ss`` at the same reading (both enter it directly), so no GPU goes from clear to warned between
two readings. Measured with every GPU watched (``bench/early_warning.py``'s traces; every tick at which the bank's
probability was ≥ 0.5): the screen's ``max(T̂, T_ss)`` was at most 3.8 °C under the line (35,834 ticks of seeds
9000–9099: max 3.76 °C, 99.9th percentile 0.97 °C; 17,066 held-out ticks of seeds 73100–73149: max 3.41 °C). A 4 °C
margin would therefore cover the alarm itself. It is 13 °C because a bank needs its history: its hypothesis weights
and its ``r`` are learnt through the GPU's ordinary load changes, and a bank started from the screen just before an
event is worse (every bank restarted from the screen 10 s before the held-out events: 3 of 50 settling GPUs falsely
warned, median lead 9.8 s instead of 11.2 s; enter margins of 12 and 13 °C: 3 and 1 false alarms in 100 settling GPUs
on seeds 9000–9099, 1 with every GPU watched). The hour's hold keeps that history through load changes. The price:
every GPU at work within 13 °C of its line is watched; the bench's fleet at 74 °C (15 under, sensor noise 0.3 °C: its
screened die peaks at 75.9 °C) is not. """

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import product

import numpy as np

from actors.twin.physics import NOMINAL_FAN_PCT, R_BASE_K_PER_W, R_FLOW_K_PER_W, TAU_DIE_S
from actors.twin.state import StateError, arr, arrays_from_state, arrays_to_state, num, unarr

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
    # The screen and the watch set (module docstring, "Tiers"): margins to each GPU's slowdown line.
    screen_die_psd: float = 0.5  # the screen's unmodelled heat, °C²/s (nominal lags and r: more than the bank's)
    fit_var_c2: float = 1.0  # the screen's die about its steady-state fit (°C²), its error lasting fit_corr_s
    fit_corr_s: float = 30.0
    enter_margin_c: float = 13.0  # watched from a screened die this close to the line
    enter_margin_ss_c: float = 13.0  # or a screened steady state at the present inputs this close
    exit_margin_c: float = 16.0  # released after both have been further than this under the line
    exit_hold_s: float = 3600.0  # for this long (a bank keeps what it has learnt through ordinary load changes)

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
    """Every GPU's screen in flat arrays, the bank in slots for the watched ones; ``update`` folds one reading each.

    Views the rest of the twin reads (plain per-GPU arrays, from the bank where a GPU is watched and from the screen
    elsewhere): ``x[:, 0]`` the filtered sensor and ``x[:, 1]`` the die, ``proj`` the die's mean ``horizon_s``
    ahead, ``started``. ``slot[i]`` is GPU ``i``'s bank slot (−1: screened only); slots ``0..k−1`` are in use
    (``slot_gpu`` says whose), a released slot takes the last one's state, so the bank stays dense.
    """

    def __init__(self, sensor_tau_s: float = 15.0, config: EstimatorConfig | None = None) -> None:
        self.tau = float(sensor_tau_s)  # the twin's nominal sensor lag: the screen's (the bank fits its own)
        self.cfg = config or EstimatorConfig()
        self.hyp = self.cfg.bank
        self._bank_key = tuple(map(tuple, self.hyp.tolist()))
        h = len(self.hyp)
        # the bank, per slot
        self.xs = np.zeros((0, h, 5))  # per hypothesis
        self.Ps = np.zeros((0, h, 5, 5))
        self.lw = np.zeros((0, h))  # log weights (max 0)
        self.slot_gpu = np.zeros(0, np.int64)  # the GPU in each slot in use
        # per GPU
        self.slot = np.zeros(0, np.int64)  # its bank slot, −1 when screened only
        self.t = np.zeros(0)  # time of the last reading
        self.t_start = np.zeros(0)  # when the filter (re)started
        self.started = np.zeros(0, bool)
        self.whole = np.zeros(0, bool)  # only whole degrees seen so far
        self.known = np.zeros(0, bool)  # the inlet is the cooling unit's supply (not the prior)
        self.power = np.zeros(0)  # latest power (NaN unknown) and inlet temperature used
        self.inlet = np.zeros(0)
        self.p_bar = np.zeros(0)  # power smoothed over power_smooth_s (NaN none yet), and its jitter's variance
        self.p_var = np.zeros(0)
        self.sc = np.zeros((0, 2))  # the screen's [sensor, die]
        self.sc_p = np.zeros((3, 0))  # its covariance: p00 (sensor), p01, p11 (die)
        self.b_hat = np.zeros(0)  # the screen's fit of where the die settles: T_in + b_hat + r_hat·P
        self.r_hat = np.zeros(0)
        self.fit_p = np.zeros((3, 0))  # its covariance: var b, cov(b, r), var r
        self.lagged = np.zeros((4, 0))  # power and inlet through the die's nominal lag, and then the sensor's
        self.clear_since = np.zeros(0)  # since when the screen has seen the GPU clear of the line (inf: not clear)
        self.x = np.zeros((0, 2))  # mixture means [sensor, die]
        self.proj = np.zeros(0)
        self._ar = np.zeros(0, np.int64)  # 0..n−1: a round over every GPU in order works on whole arrays

    @property
    def k(self) -> int:
        """Bank slots in use (the watched GPUs)."""
        return len(self.slot_gpu)

    ARRAYS = {"slot": "<i8", "t": "<f8", "t_start": "<f8", "started": "|b1", "whole": "|b1", "known": "|b1",
              "power": "<f8", "p_bar": "<f8", "p_var": "<f8", "inlet": "<f8", "sc": "<f8", "b_hat": "<f8",
              "r_hat": "<f8", "clear_since": "<f8", "x": "<f8", "proj": "<f8"}
    BANK = {"xs": "<f8", "Ps": "<f8", "lw": "<f8", "slot_gpu": "<i8"}

    def to_state(self) -> dict:
        """The filter as plain data (see :mod:`actors.twin.state`): per-GPU arrays, the slots in use."""
        cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self.cfg).items()}
        k = self.k
        bank = {"xs": self.xs[:k], "Ps": self.Ps[:k], "lw": self.lw[:k], "slot_gpu": self.slot_gpu}
        return {"tau": self.tau, "cfg": cfg, **arrays_to_state(self, self.ARRAYS), "sc_p": arr(self.sc_p),
                "fit_p": arr(self.fit_p),
                "lagged": arr(self.lagged), "bank": {name: arr(a) for name, a in bank.items()}}

    @classmethod
    def from_state(cls, d: dict, n: int) -> ThermalEstimator:
        """Rebuild from ``to_state`` for ``n`` GPUs; raises ``StateError`` on a wrong field, dtype or shape."""
        cfg = EstimatorConfig(**{k: tuple(num(x, f"estimator {k}") for x in v) if isinstance(v, list)
                                 else num(v, f"estimator {k}") for k, v in d["cfg"].items()})
        est = cls(num(d["tau"], "sensor tau"), cfg)
        h = len(est.hyp)
        arrays_from_state(est, d, cls.ARRAYS, n, {"sc": 2, "x": 2})
        arrays_from_state(est, d["bank"], cls.BANK, None, {"xs": 3, "Ps": 4, "lw": 2})
        est.sc_p, est.fit_p, est.lagged = (unarr(d[k], "<f8", 2) for k in ("sc_p", "fit_p", "lagged"))
        k = len(est.slot_gpu)
        for name, shape in (("xs", (k, h, 5)), ("Ps", (k, h, 5, 5)), ("lw", (k, h)), ("sc", (n, 2)), ("x", (n, 2)),
                            ("sc_p", (3, n)), ("fit_p", (3, n)), ("lagged", (4, n))):
            if getattr(est, name).shape != shape:
                raise StateError(f"estimator {name} has shape {getattr(est, name).shape} where {shape} is expected")
        held = np.flatnonzero(est.slot >= 0)
        if (est.slot >= k).any() or len(held) != k or not np.array_equal(est.slot_gpu[est.slot[held]], held):
            raise StateError("estimator slots and their GPUs disagree")
        est._ar = np.arange(n)
        return est

    def grow(self, n: int) -> None:
        """Make room for ``n`` GPUs in total (new ones start empty and screened only)."""
        k = n - len(self.t)
        if k <= 0:
            return
        self.x = np.concatenate([self.x, np.zeros((k, 2))])
        self.sc = np.concatenate([self.sc, np.zeros((k, 2))])
        self.sc_p = np.concatenate([self.sc_p, np.zeros((3, k))], axis=1)
        self.fit_p = np.concatenate([self.fit_p, np.zeros((3, k))], axis=1)
        self.lagged = np.concatenate([self.lagged, np.zeros((4, k))], axis=1)
        for attr, v in (("slot", -1), ("t", 0.0), ("t_start", 0.0), ("started", False), ("whole", True),
                        ("known", False), ("power", np.nan), ("p_bar", np.nan), ("p_var", 0.0), ("inlet", np.nan),
                        ("b_hat", 0.0), ("r_hat", 0.0), ("clear_since", np.inf), ("proj", 0.0)):
            a = getattr(self, attr)
            setattr(self, attr, np.append(a, np.full(k, v, a.dtype)))
        self._ar = np.arange(n)

    def update(self, idx: np.ndarray, ts: np.ndarray, y: np.ndarray, limit_c: np.ndarray,
               power: np.ndarray | None = None, supply: np.ndarray | None = None, flow: np.ndarray | None = None,
               fan: np.ndarray | None = None) -> None:
        """Fold one reading per GPU (``idx`` unique) taken at ``ts`` with value ``y``; ``limit_c`` is each GPU's
        slowdown line (what the screen watches for); ``power`` (W), the cooling unit's ``supply`` (°C), coolant
        ``flow`` to the GPU's node (fraction of nominal) and ``fan`` speed (%) at that time where known (NaN where
        not). The screen folds every reading; the bank those of the watched GPUs; then GPUs enter and leave the
        watch set."""
        cfg, n = self.cfg, len(idx)
        # A round of every GPU in order works on the arrays themselves (slices), not through the index.
        ix: slice | np.ndarray = slice(None) if n == len(self.t) and np.array_equal(idx, self._ar) else idx
        nan = np.full(n, np.nan)
        power = nan if power is None else np.asarray(power, float) * resistance_factor(flow, fan)
        supply = nan if supply is None else np.asarray(supply, float)
        self.power[ix] = power
        self._smooth_power(ix, ts, power)
        known = np.isfinite(supply)
        inlet = np.where(known, supply, cfg.inlet_prior_c)
        # b is the die's offset from the inlet in use: when the inlet changes source (the unit's first supply
        # reading, or the unit gone), b moves the other way so the die's steady state does not jump.
        switched = self.started[ix] & (np.isfinite(self.inlet[ix]) & (self.known[ix] != known))
        if switched.any():
            g, shift = idx[switched], (inlet - self.inlet[ix])[switched]
            self.b_hat[g] -= shift
            held = self.slot[g] >= 0
            self.xs[self.slot[g[held]], :, B] -= shift[held, None]
        self.known[ix] = known
        self.inlet[ix] = inlet
        self.whole[ix] &= y == np.round(y)
        dt = ts - self.t[ix]
        fresh = ~self.started[ix] | (dt > cfg.reset_gap_s) | (dt <= 0)
        self._screen(ix, dt, y, fresh)
        self.t[ix] = ts
        if fresh.any():
            self.started[idx[fresh]] = True
            self.t_start[idx[fresh]] = ts[fresh]
        pos, g, sl = self._watched(idx, ix)
        if len(g):
            new = fresh[pos]
            if new.any():  # a watched GPU back after a gap: its bank starts afresh too
                sl = np.arange(self.k)[sl] if isinstance(sl, slice) else sl
                self._start(g[new], sl[new], ts[pos][new], y[pos][new])
                pos, g, sl = pos[~new], g[~new], sl[~new]
            if len(g):
                self._step(g, sl, dt[pos], y[pos])
        self._watch(idx, ix, ts, y, limit_c, fresh)
        _, g, sl = self._watched(idx, ix)
        if len(g):
            self._summarise(g, sl)

    def _watched(self, idx: np.ndarray, ix: slice | np.ndarray) -> tuple[np.ndarray, np.ndarray, slice | np.ndarray]:
        """The watched GPUs of a round: their positions in ``idx``, their indices and their slots (a slice of every
        slot when the round covers every GPU)."""
        if isinstance(ix, slice):
            return self.slot_gpu, self.slot_gpu, slice(0, self.k)
        pos = np.flatnonzero(self.slot[idx] >= 0)
        g = idx[pos]
        return pos, g, self.slot[g]

    def _screen(self, ix: slice | np.ndarray, dt: np.ndarray, y: np.ndarray, fresh: np.ndarray) -> None:
        """The screen, element-wise on flat arrays. A 2-state [sensor, die] Kalman filter with the nominal sensor lag
        and die time constant, the die driven toward ``T_in + b̂ + r̂·P̄`` (the cascade discretised exactly over
        ``dt``); and ``(b̂, r̂)`` fitted by recursive least squares to the readings, ``y = T_in' + b + r·P'`` with
        ``T_in'`` and ``P'`` the inlet and power through the nominal die and sensor lags (an output-error fit: it
        does not read the filter's die, which its own ``r̂`` drives; the same priors and walks as the bank's ``b`` and
        ``r``; each reading counts as ``dt / fit_corr_s`` of an independent look, the misfit of nominal lags
        decorrelates that slowly). A fresh GPU starts at its reading, with the bank's priors."""
        cfg, ts_, td = self.cfg, self.tau, TAU_DIE_S
        d = np.clip(dt, 0.0, cfg.reset_gap_s)
        s, die = self.sc[ix, 0], self.sc[ix, 1]
        p00, p01, p11 = self.sc_p[0, ix], self.sc_p[1, ix], self.sc_p[2, ix]
        cbb, cbr, crr = self.fit_p[0, ix], self.fit_p[1, ix], self.fit_p[2, ix]
        inlet, has_p = self.inlet[ix], np.isfinite(self.p_bar[ix])
        p = np.where(has_p, self.p_bar[ix], 0.0)
        b, r = self.b_hat[ix], self.r_hat[ix]
        a_s, a_d = np.exp(-d / ts_), np.exp(-d / td)
        kap = td / (td - ts_) * (a_d - a_s) if abs(td - ts_) > 1e-6 else d / ts_ * a_s  # the die's share in s
        t_ss = inlet + b + r * p
        s_p = a_s * s + kap * die + (1.0 - a_s - kap) * t_ss
        die_p = a_d * die + (1.0 - a_d) * t_ss
        q = cfg.screen_die_psd * d
        P00 = a_s * a_s * p00 + 2.0 * a_s * kap * p01 + kap * kap * (p11 + q / 3.0)
        P01 = a_s * a_d * p01 + kap * (a_d * p11 + q / 2.0)
        P11 = a_d * a_d * p11 + q
        rv = self._meas_var(ix)
        k0, k1 = P00 / (P00 + rv), P01 / (P00 + rv)
        e = y - s_p
        die = die_p + k1 * e
        self.sc[ix, 0] = np.where(fresh, y, s_p + k0 * e)
        self.sc[ix, 1] = np.where(fresh, y, die)
        self.sc_p[0, ix] = np.where(fresh, rv, P00 - k0 * P00)
        self.sc_p[1, ix] = np.where(fresh, 0.0, P01 - k0 * P01)
        self.sc_p[2, ix] = np.where(fresh, 25.0, P11 - k1 * P01)
        # the fit: b and r walk, then one look at the reading through h = [1, P']
        lag = self.lagged[:, ix]
        pd, td_in = lag[0] + (1.0 - a_d) * (p - lag[0]), lag[1] + (1.0 - a_d) * (inlet - lag[1])
        ps = a_s * lag[2] + kap * lag[0] + (1.0 - a_s - kap) * p
        ts_in = a_s * lag[3] + kap * lag[1] + (1.0 - a_s - kap) * inlet
        cbb = cbb + np.where(has_p, cfg.offset_psd, cfg.walk_psd) * d
        crr = crr + cfg.r_psd * d
        hb, hr = cbb + ps * cbr, cbr + ps * crr  # C·h
        S = hb + ps * hr + (cfg.fit_var_c2 + rv) * cfg.fit_corr_s / np.maximum(d, 1e-3)
        kb, kr = hb / S, hr / S
        e = y - ts_in - b - r * ps
        p0 = np.nan_to_num(self.power[ix], nan=0.0)
        self.b_hat[ix] = np.where(fresh, y - inlet - cfg.r_prior * p0, b + kb * e)
        self.r_hat[ix] = np.where(fresh, cfg.r_prior, r + kr * e)
        self.fit_p[0, ix] = np.where(fresh, cfg.offset_sd**2 + (cfg.r_sd * p0) ** 2, cbb - kb * hb)
        self.fit_p[1, ix] = np.where(fresh, -(cfg.r_sd**2) * p0, cbr - kb * hr)
        self.fit_p[2, ix] = np.where(fresh, cfg.r_sd**2, crr - kr * hr)
        self.lagged[:, ix] = np.where(fresh, np.stack([p0, inlet, p0, inlet]), np.stack([pd, td_in, ps, ts_in]))

    def steady_c(self, ix: slice | np.ndarray) -> np.ndarray:
        """The screen's estimate of where the die settles at the present power and supply, ``T_in + b̂ + r̂·P̄``."""
        return self.inlet[ix] + self.b_hat[ix] + self.r_hat[ix] * np.nan_to_num(self.p_bar[ix], nan=0.0)

    def _watch(self, idx: np.ndarray, ix: slice | np.ndarray, ts: np.ndarray, y: np.ndarray, limit_c: np.ndarray,
               fresh: np.ndarray) -> None:
        """GPUs enter the watch set when the screen says they may come near the line, leave after ``exit_hold_s``
        clear of it; screen views for the GPUs screened only."""
        cfg = self.cfg
        t_ss, lim = self.steady_c(ix), np.asarray(limit_c, float)
        die = self.sc[ix, 1]
        held = self.slot[ix] >= 0
        settled = self.t[ix] - self.t_start[ix] >= cfg.settle_s  # (a fresh screen's die swings with the noise)
        near = ((die >= lim - cfg.enter_margin_c) & settled) | (t_ss >= lim - cfg.enter_margin_ss_c)
        clear = (die < lim - cfg.exit_margin_c) & (t_ss < lim - cfg.exit_margin_c)
        since = np.where(clear, np.minimum(self.clear_since[ix], ts), np.inf)
        self.clear_since[ix] = since
        leave = held & (ts - since >= cfg.exit_hold_s)
        if leave.any():
            self._release(idx[leave])
        enter = near & ~held
        if enter.any():
            g = idx[enter]
            sl = self._take(g)
            new = fresh[enter]
            if new.any():
                self._start(g[new], sl[new], ts[enter][new], y[enter][new])
            if not new.all():
                self._enter(g[~new], sl[~new])
        self.x[ix, 0], self.x[ix, 1] = self.sc[ix, 0], die
        a = np.exp(-cfg.horizon_s / TAU_DIE_S)
        self.proj[ix] = t_ss + (die - t_ss) * a

    def _take(self, g: np.ndarray) -> np.ndarray:
        """Bank slots for GPUs ``g`` (at the end of those in use; the arrays double when full)."""
        k, m = self.k, len(g)
        if k + m > len(self.xs):
            cap = max(2 * len(self.xs), k + m, 16)
            for name in ("xs", "Ps", "lw"):
                a = getattr(self, name)
                setattr(self, name, np.concatenate([a, np.zeros((cap - len(a), *a.shape[1:]))]))
        sl = np.arange(k, k + m)
        self.slot[g] = sl
        self.slot_gpu = np.concatenate([self.slot_gpu, g])
        return sl

    def _release(self, g: np.ndarray) -> None:
        """Free the slots of GPUs ``g``: the slots in use after the last kept one move into the holes."""
        freed = np.sort(self.slot[g])
        k2 = self.k - len(freed)
        holes = freed[freed < k2]
        movers = np.setdiff1d(np.arange(k2, self.k), freed)  # as many as there are holes
        for name in ("xs", "Ps", "lw"):
            a = getattr(self, name)
            a[holes] = a[movers]
        self.slot[g] = -1
        moved = self.slot_gpu[movers]
        self.slot_gpu[holes] = moved
        self.slot[moved] = holes
        self.slot_gpu = self.slot_gpu[:k2].copy()

    def _enter(self, idx: np.ndarray, slot: np.ndarray) -> None:
        """A screened GPU's bank starts from the screen: sensor and die from it (the delayed die with the die, their
        variances the screen's plus ``_start``'s priors), ``b`` such that the steady state at the present power is the
        screen's ``T_ss``, ``r`` and the offset's spread at ``_start``'s priors; equal weights. No ``settle_s`` wait."""
        s, die = self.sc[idx, 0], self.sc[idx, 1]
        p00, p01, p11 = self.sc_p[0, idx], self.sc_p[1, idx], self.sc_p[2, idx]
        x = np.zeros((len(idx), 5))
        cfg, p = self.cfg, np.nan_to_num(self.p_bar[idx], nan=0.0)
        x[:, S], x[:, M], x[:, T], x[:, R] = s, die, die, cfg.r_prior
        x[:, B] = self.steady_c(idx) - self.inlet[idx] - cfg.r_prior * p
        P = np.zeros((len(idx), 5, 5))
        P[:, S, S], P[:, M, M], P[:, T, T] = p00, p11 + 4.0, p11 + 25.0
        P[:, S, M] = P[:, M, S] = P[:, S, T] = P[:, T, S] = p01
        P[:, M, T] = P[:, T, M] = p11
        P[:, B, B], P[:, R, R] = cfg.offset_sd**2 + (cfg.r_sd * p) ** 2, cfg.r_sd**2
        P[:, B, R] = P[:, R, B] = -(cfg.r_sd**2) * p
        self.xs[slot] = x[:, None, :]
        self.Ps[slot] = P[:, None, :, :]
        self.lw[slot] = 0.0

    def _smooth_power(self, idx: np.ndarray | slice, ts: np.ndarray, power: np.ndarray) -> None:
        """The power the projection holds: a mean over ``power_smooth_s`` (a job's step-to-step jitter averages out
        in the die), and the jitter's variance, which the projection adds as the uncertainty of that mean."""
        dt = np.clip(ts - self.t[idx], 0.0, None)
        a = np.where(np.isfinite(self.p_bar[idx]), 1.0 - np.exp(-dt / self.cfg.power_smooth_s), 1.0)
        dev = np.nan_to_num(power - self.p_bar[idx], nan=0.0)
        self.p_var[idx] = np.where(np.isfinite(power), self.p_var[idx] + (dev**2 * (a < 1) - self.p_var[idx]) * a,
                                   self.p_var[idx])
        self.p_bar[idx] = np.where(np.isfinite(power), np.nan_to_num(self.p_bar[idx], nan=0.0) * (1 - a) + power * a,
                                   self.p_bar[idx])

    def _start(self, idx: np.ndarray, slot: np.ndarray, ts: np.ndarray, y: np.ndarray) -> None:
        """The bank of GPUs ``idx`` (in ``slot``) from their first reading (or the first after a gap)."""
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
        self.xs[slot] = x[:, None, :]
        self.Ps[slot] = P[:, None, :, :]
        self.lw[slot] = 0.0
        self.started[idx] = True
        self.t[idx] = self.t_start[idx] = ts

    def _meas_var(self, idx: np.ndarray | slice) -> np.ndarray:
        return self.cfg.noise_c**2 + np.where(self.whole[idx], QUANT_VAR, 0.0)

    def _transition(self, dt: np.ndarray, p: np.ndarray) -> np.ndarray:
        """``A`` per GPU and hypothesis (n, H, 5, 5): the cached unit transition with its r column scaled by power."""
        keys = np.round(dt, 3)
        uniq, inv = np.unique(keys, return_inverse=True)
        A = np.stack([_unit_transition(float(k), self._bank_key) for k in uniq])[inv]  # copy per GPU
        A[:, :, :T + 1, R] *= p[:, None, None]
        return A

    def _step(self, idx: np.ndarray, slot: np.ndarray | slice, dt: np.ndarray, y: np.ndarray) -> None:
        cfg = self.cfg
        has_p = np.isfinite(self.power[idx])
        p = np.where(has_p, self.power[idx], 0.0)
        A = self._transition(dt, p)
        x = (A @ self.xs[slot][..., None])[..., 0]
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
        P = A @ self.Ps[slot] @ A.transpose(0, 1, 3, 2) + Q
        rv = self._meas_var(idx)[:, None]
        Sv = P[:, :, S, S] + rv
        e = y[:, None] - x[:, :, S]
        K = P[:, :, :, S] / Sv[:, :, None]
        x = x + K * e[:, :, None]
        P = P - K[:, :, :, None] * P[:, :, S, None, :]
        self.xs[slot], self.Ps[slot] = x, 0.5 * (P + P.transpose(0, 1, 3, 2))
        ll = -0.5 * (np.log(Sv) + e**2 / Sv)
        lw = self.lw[slot] * np.exp(-dt / cfg.forget_s)[:, None] + ll
        self.lw[slot] = np.maximum(lw - lw.max(axis=1, keepdims=True), cfg.floor_log)

    def weights(self, slot: np.ndarray | slice) -> np.ndarray:
        """Hypothesis weights per bank slot (n, H), summing to 1."""
        w = np.exp(self.lw[slot])
        return w / w.sum(axis=1, keepdims=True)

    def _path(self, idx: np.ndarray, slot: np.ndarray | slice, horizon: float) -> tuple[np.ndarray, ...]:
        """Per GPU and hypothesis: die now, its steady state and the die at ``horizon`` (means), their σs."""
        cfg = self.cfg
        x, P = self.xs[slot], self.Ps[slot]
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

    def _summarise(self, idx: np.ndarray, slot: np.ndarray | slice) -> None:
        w = self.weights(slot)
        self.x[idx, 0] = (w * self.xs[slot, :, S]).sum(1)
        self.x[idx, 1] = (w * self.xs[slot, :, T]).sum(1)
        self.proj[idx] = (w * self._path(idx, slot, self.cfg.horizon_s)[3]).sum(1)

    # --- views -------------------------------------------------------------------------------------------
    def sensor(self, idx: np.ndarray) -> np.ndarray:
        """Filtered sensor state (the reading without its noise), of the bank where watched, else the screen's."""
        return self.x[idx, 0]

    def true_c(self, idx: np.ndarray) -> np.ndarray:
        """Estimated true die temperature."""
        return self.x[idx, 1]

    def params(self, i: int) -> dict:
        """What the filter has identified for GPU ``i`` (weighted over hypotheses): for events and explanations.
        A GPU screened only has the screen's nominal lags and the prior resistance."""
        if self.slot[i] < 0:
            return {"tau_s": round(self.tau, 1), "dead_s": 0.0, "tau_die_s": round(TAU_DIE_S, 1),
                    "r_k_per_w": round(self.cfg.r_prior, 4)}
        w = self.weights(self.slot[i : i + 1])[0]
        xs = self.xs[self.slot[i]]
        return {"tau_s": round(float(w @ self.hyp[:, 0]), 1), "dead_s": round(float(w @ self.hyp[:, 1]), 1),
                "tau_die_s": round(float(w @ self.hyp[:, 2]), 1), "r_k_per_w": round(float(w @ xs[:, R]), 4)}

    def crossing(self, idx: np.ndarray, limit_c: np.ndarray, horizon_s: float | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """``(probability, eta_s)`` per GPU that the die reaches ``limit_c`` within ``horizon_s``.

        The probability is the hypothesis mixture of ``max(P(T_now ≥ limit), P(T_horizon ≥ limit))``; ``eta_s`` is the
        mean path's crossing time (0 at or above the line), averaged over hypotheses weighted by weight × probability
        (``inf`` when no hypothesis' mean path crosses). Computed for the watched GPUs; the others are 0 and ``inf``
        (a GPU the screen does not watch cannot reach the line within the horizon: the module docstring says why).
        """
        horizon = self.cfg.horizon_s if horizon_s is None else horizon_s
        ix: slice | np.ndarray = slice(None) if len(idx) == len(self.t) and np.array_equal(idx, self._ar) else idx
        pos, g, sl = self._watched(idx, ix)
        prob, eta = np.zeros(len(idx)), np.full(len(idx), np.inf)
        if len(g):
            prob[pos], eta[pos] = self._crossing(g, sl, np.asarray(limit_c, float)[pos], horizon)
        return prob, eta

    def _crossing(self, idx: np.ndarray, slot: np.ndarray | slice, limit_c: np.ndarray, horizon: float
                  ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`crossing` for GPUs ``idx`` in bank ``slot``."""
        lim = np.asarray(limit_c, float)[:, None]
        t_now, sd_now, t_inf, mean_h, sd_h = self._path(idx, slot, horizon)
        p_h = np.maximum(norm_sf((lim - t_now) / sd_now), norm_sf((lim - mean_h) / sd_h))
        w = self.weights(slot)
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
