"""Early warning on randomised traces made independently of the twin (tests/twin/traces.py).

Crossing traces: thermal_slowdown_predicted must come before the lagging sensor crosses the slowdown
line, by at least 0.5 τ on average. Settling traces (4 °C or more below the line, fast rises included):
it never fires.
"""

from __future__ import annotations

import numpy as np
import pytest

from actors.twin.model import TwinModel
from cluster.telemetry.samples import parse_sample
from tests.twin.traces import make_trace

N = 25


def first_warning(records: list[dict], tau: float) -> tuple[float | None, int]:
    model = TwinModel(sensor_tau_s=tau)
    fired = [e.ts for r in records for e in model.ingest([parse_sample(r)]) if e.kind == "thermal_slowdown_predicted"]
    return (fired[0] if fired else None), len(fired)


@pytest.mark.parametrize("sample_dt", [1.0, 2.0])
def test_warning_leads_the_sensor_by_half_tau_on_average(sample_dt: float) -> None:
    leads = []
    for seed in range(N):
        tr = make_trace(seed, "cross", sample_dt=sample_dt)
        crossed = tr.sensed_cross_ts()
        if crossed is None:  # a slow ramp whose sensor has not crossed by the end: no lead to measure
            continue
        fired, count = first_warning(tr.records(), tr.tau)
        assert fired is not None and fired < crossed, f"seed {seed} ({tr.shape}): no warning before the sensor"
        assert count == 1, "hysteresis: one warning per episode"
        leads.append((crossed - fired) / tr.tau)
    assert len(leads) >= N * 0.7
    assert np.mean(leads) >= 0.5, leads


@pytest.mark.parametrize("sample_dt", [1.0, 2.0])
def test_no_warning_when_the_die_settles_4c_below(sample_dt: float) -> None:
    for seed in range(1000, 1000 + N):
        tr = make_trace(seed, "settle", sample_dt=sample_dt)
        assert tr.true_c.max() <= 85.0
        fired, _ = first_warning(tr.records(), tr.tau)
        assert fired is None, f"seed {seed} ({tr.shape}, peak {tr.true_c.max():.1f} °C): false warning at {fired}"


def test_eta_is_reported_and_plausible() -> None:
    tr = make_trace(3, "cross")
    model = TwinModel(sensor_tau_s=tr.tau)
    events = (e for r in tr.records() for e in model.ingest([parse_sample(r)]))
    ev = next(e for e in events if e.kind == "thermal_slowdown_predicted")
    assert ev.data["eta_s"] is not None and 0 <= ev.data["eta_s"] < 600
    assert ev.data["sensed_c"] < ev.data["slowdown_c"] <= ev.data["projected_c"]
