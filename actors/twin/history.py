"""Bounded series history (the last readings of every GPU and cooling unit) and the lead it measures.

What backs a root cause with a measurement: when a GPU heats up, do the supply temperature's changes of
the unit that cools it lead the GPU's, by how many seconds, and is that more than chance
(:func:`~actors.twin.correlation.differenced_lead`)? A lead is reported only when it is significant
(p < ``ALPHA`` after the lags tried) and its gain is one the physics allows (a die sits at supply + P·R, so
a supply change moves the GPU by about as much, never by ``MAX_GAIN`` times as much).

What this can certify: the die (τ 20 s) and the sensor (τ 15 s) low-pass the supply's changes, and one
smooth supply ramp is one observation, not many: a single 16 °C step (the ``cooling_loss`` trace as first
recorded, seed 11) gave its 24 thermal events p between 0.011 and 1 after up to 60 lags, although every
window already held the whole trace since the step (events at 92–133 s); a 240-reading history gave a best
p of 0.015, so a longer history certifies nothing more. A coincidence has the same one-swing shape: a +2 °C
drift beside GPUs heating for their own reason gives r ≈ 0.85 on the changes and, rarely, p < 0.01, which
the gain (≈ 7) rejects. A supply that moves up and down (a unit losing and regaining capacity) gives several
observations, and its lead is certified: the recorded ``cooling_loss`` unit trips and restarts every 40 s,
and 18 of its 23 thermal events carry a lead (7 of 8 GPUs, p 2e-5–0.009, lag 17–29 s, gain ≈ 0.3).

Cheap enough for the hot path and the per-tick checkpoint: GPU readings go into one 2-D ring
``[gpus, history]`` written with one scatter per round, in hundredths of a degree as int16 (2 bytes a
reading, exact for readings given to 0.01 °C as NVML, DCGM and our traces give them; 240 bytes a GPU at
120 readings, 24 MB per 100k GPUs). A GPU's times are not stored but rebuilt from its last timestamp and
its sampling period, which is why a gap or a change of rate restarts its series. Units are few, so theirs
keep exact times and values. Nothing here reads a clock: times come from the samples.
"""

from __future__ import annotations

import numpy as np

from actors.twin.correlation import differenced_lead
from actors.twin.state import StateError, arr, arrays_from_state, arrays_to_state, need, unarr

HISTORY = 120  # readings kept per series: two minutes at 1 Hz, enough to hold a fault's onset and its echo
#: Longest lag tried, in samples. Die (τ≈20 s) and sensor (τ 10–20 s) put a supply change's echo in a GPU's
#: reading some 30–40 s later; half the history leaves every lag an overlap of at least 60 readings.
MAX_LAG = 60
MIN_READINGS = 30  # fewer paired readings than this and the GPU's series says too little
#: Readings averaged over before the changes are correlated: a reading-to-reading change of a GPU sensor
#: (0.3 °C of noise in the simulator) is mostly noise, a 7-second trend is not. Measured on the simulator
#: (seeds 17051–17055): at 7, 74 % of a capacity-cycling unit's GPU windows gave a lead and none of 320
#: GPU windows of a 2 °C drift beside an unrelated flow loss reached p < 0.01; raw changes (1) certified no
#: real lead; at 3, 15 % of the drift's windows passed (its changes' noise is uncorrelated at lag 1, which
#: n_eff takes for independence).
SMOOTH = 7
ALPHA = 0.01  # the significance a lead needs, after Bonferroni over the lags tried
MAX_GAIN = 2.0  # a GPU that moved more than twice as much as the supply did moved for a reason of its own
#: The unit's supply must have moved this much within the window: a flat supply leads nothing, and
#: correlating its last-digit jitter with a GPU would be measuring noise.
MIN_SWING_C = 1.0
PERIOD_TOLERANCE = 0.5  # an interval this far off the series' period (as a share) restarts the series
CENTI = 100.0  # stored unit: 0.01 °C (int16 holds ±327 °C)


class GpuHistory:
    """The last ``size`` sensed temperatures of every GPU, in one ring per GPU (a row of ``vals``)."""

    def __init__(self, size: int = HISTORY) -> None:
        self.size = size
        self.vals = np.zeros((0, size), np.int16)  # rows beyond len(count) are spare capacity
        self.count = np.zeros(0, np.int64)  # readings in the current series (a gap restarts it)
        self.last_ts = np.zeros(0)
        self.period = np.zeros(0)  # sampling period of the current series, a slow running mean

    def __getstate__(self) -> dict:
        """Pickled without the spare rows (a contiguous prefix: no copy is made to leave them out)."""
        return {**self.__dict__, "vals": self.vals[: len(self.count)]}

    ARRAYS = {"count": "<i8", "last_ts": "<f8", "period": "<f8"}

    def to_state(self) -> dict:
        """The rings without their spare rows (a contiguous prefix), as plain data."""
        return {"size": self.size, "vals": arr(self.vals[: len(self.count)]), **arrays_to_state(self, self.ARRAYS)}

    @classmethod
    def from_state(cls, d: dict, n: int) -> GpuHistory:
        h = cls(need(d["size"], int, "history size"))
        arrays_from_state(h, d, cls.ARRAYS, n)
        h.vals = unarr(d["vals"], "<i2", 2)
        if h.vals.shape != (n, h.size):
            raise StateError(f"history rings of shape {h.vals.shape}, expected {(n, h.size)}")
        return h

    def grow(self, n: int) -> None:
        """Room for ``n`` GPUs; capacity doubles, so registering GPUs one by one stays linear."""
        have = len(self.count)
        if n <= have:
            return
        if n > len(self.vals):
            vals = np.zeros((max(n, 2 * len(self.vals), 8), self.size), np.int16)
            vals[:have] = self.vals[:have]
            self.vals = vals
        extra = n - have
        self.count = np.concatenate([self.count, np.zeros(extra, np.int64)])
        self.last_ts = np.concatenate([self.last_ts, np.zeros(extra)])
        self.period = np.concatenate([self.period, np.zeros(extra)])

    def push(self, idx: np.ndarray, ts: np.ndarray, y: np.ndarray) -> None:
        """Append one reading to each GPU in ``idx`` (distinct indices), all at once."""
        c, p = self.count[idx], self.period[idx]
        dt = ts - self.last_ts[idx]
        # The period is learnt from the first interval, then follows the intervals slowly; an interval far
        # off it (a gap, a new scrape rate) or going backwards starts a new series.
        gap = (c >= 1) & (dt <= 0)
        gap |= (c >= 2) & (np.abs(dt - p) > PERIOD_TOLERANCE * p)
        p = np.where(c == 1, dt, p + (dt - p) / 8.0)
        c = np.where(gap, 0, c)
        self.period[idx] = np.where(c >= 1, p, 0.0)
        self.vals[idx, c % self.size] = np.rint(np.clip(y, -327.0, 327.0) * CENTI)
        self.count[idx] = c + 1
        self.last_ts[idx] = ts

    def series(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """GPU ``i``'s kept readings (°C), oldest first, with their (rebuilt) times."""
        c = int(self.count[i])
        k = min(c, self.size)
        slots = np.arange(c - k, c) % self.size
        back = np.arange(k - 1, -1, -1, dtype=float)
        return self.last_ts[i] - self.period[i] * back, self.vals[i, slots] / CENTI


class UnitHistory:
    """The last ``size`` supply temperatures of every cooling unit, with their times."""

    def __init__(self, size: int = HISTORY) -> None:
        self.size = size
        self.ts: dict[str, np.ndarray] = {}
        self.vals: dict[str, np.ndarray] = {}
        self.count: dict[str, int] = {}

    def to_state(self) -> dict:
        """Every unit's ring and count as plain data."""
        return {"size": self.size, "units": {u: {"ts": arr(self.ts[u]), "vals": arr(self.vals[u]), "count": c}
                                             for u, c in self.count.items()}}

    @classmethod
    def from_state(cls, d: dict) -> UnitHistory:
        h = cls(need(d["size"], int, "history size"))
        for u, row in need(d["units"], dict, "units").items():
            need(u, str, "unit")
            h.ts[u], h.vals[u] = unarr(row["ts"], "<f8", 1), unarr(row["vals"], "<f8", 1)
            if len(h.ts[u]) != h.size or len(h.vals[u]) != h.size:
                raise StateError(f"unit {u}: ring of {len(h.ts[u])} readings, expected {h.size}")
            h.count[u] = need(row["count"], int, "count")
        return h

    def push(self, unit: str, ts: float, supply_c: float) -> None:
        """Append one reading (a repeated or older timestamp is a redelivery: ignored)."""
        c = self.count.get(unit, 0)
        if c == 0:
            self.ts[unit], self.vals[unit] = np.zeros(self.size), np.zeros(self.size)
        elif ts <= self.ts[unit][(c - 1) % self.size]:
            return
        self.ts[unit][c % self.size], self.vals[unit][c % self.size] = ts, supply_c
        self.count[unit] = c + 1

    def series(self, unit: str) -> tuple[np.ndarray, np.ndarray]:
        """The unit's kept readings, oldest first, with their times."""
        c = self.count.get(unit, 0)
        k = min(c, self.size)
        slots = np.arange(c - k, c) % self.size
        return (self.ts[unit][slots], self.vals[unit][slots]) if k else (np.zeros(0), np.zeros(0))


def supply_lead(gpus: GpuHistory, units: UnitHistory, i: int, unit: str) -> dict[str, str | float | int] | None:
    """How the supply temperature of ``unit`` leads GPU ``i``'s sensed temperature, if measurably.

    The unit's readings are interpolated at the GPU's reading times (only inside the span the unit
    covers), so a unit polled at another rate still pairs sample for sample.

    Returns:
        ``{"series": "<unit>.supply_c", "lag_s", "r", "n", "p", "n_eff"}`` (``r`` of the smoothed changes,
        ``n`` changes in the overlap) when the supply moved (``MIN_SWING_C``), the best lag is positive (the
        supply moved first), ``p < ALPHA`` and ``0 < gain <= MAX_GAIN``; else None.
    """
    t_u, v_u = units.series(unit)
    if len(t_u) < 2:
        return None
    t_g, v_g = gpus.series(i)
    period = float(gpus.period[i])
    if period <= 0:
        return None
    slack = 0.25 * period
    inside = (t_g >= t_u[0] - slack) & (t_g <= t_u[-1] + slack)
    if int(inside.sum()) < MIN_READINGS:
        return None
    lead_c = np.interp(t_g[inside], t_u, v_u)
    if float(lead_c.max() - lead_c.min()) < MIN_SWING_C:
        return None
    # At most half the readings as lag: every r then rests on at least half of them.
    found = differenced_lead(lead_c, v_g[inside], min(MAX_LAG, len(lead_c) // 2), period, MIN_READINGS, SMOOTH)
    if found is None or found.lag < 1 or found.p >= ALPHA or not 0 < found.gain <= MAX_GAIN:
        return None
    return {"series": f"{unit}.supply_c", "lag_s": round(found.lag_s, 1), "r": round(found.r, 3), "n": found.n,
            "p": found.p, "n_eff": round(found.n_eff, 1)}  # an event keeps 3 decimals of p: 0.0 is < 0.0005
