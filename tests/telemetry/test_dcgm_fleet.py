"""A fleet seen only through dcgm-exporter pages in the real format, as `--telemetry dcgm` sees it.

Two hosts named as real fleets name them serve their pages over HTTP (the simulator's fleet rendered by
``cluster/telemetry/exporter.py``: whole degrees, DCGM's blank memory temperature, the sticky last XID); the twin
reads them through ``DcgmSource`` every 5 simulated seconds. Ten minutes of healthy GPUs raise nothing and
quarantine nothing; an XID 79 that stays on every page is one event; the GPUs of a host whose coolant flow halves
are reported as their dies cross the slowdown line, while their lagging whole-degree readings are still under it.

A page carries no coolant flow, so a step loss of flow is an input the twin cannot see: the die rises at constant
power, ~2 °C past the line within ~45 s, and the model-based warning (which forecasts from power, supply and flow)
has nothing to forecast from. What the twin owes such a fleet is to report the crossing at the hardware's own flag,
not after its sensor catches up (with the unit's flow as telemetry it forecasts ~10 s ahead:
``tests/twin/test_early_warning.py``, ``bench/early_warning.py``).
"""

from __future__ import annotations

import pytest

from actors.twin.model import TwinModel
from actors.twin.physics import Topology
from actors.twin.profiles import profile
from cluster.telemetry.dcgm import DcgmSource
from cluster.telemetry.exporter import FleetPages
from cluster.telemetry.samples import GpuSample
from cluster.telemetry.sim import Fault, Simulator
from tests.telemetry.dcgm_pages import Exporter

HOSTS = ["DGX-01", "ip-10-0-1-23.ec2.internal"]
TICK_S = 5.0
HEALTHY_S = 600.0


@pytest.mark.anyio
async def test_ten_healthy_minutes_one_sticky_xid_and_the_crossing_reported_before_the_reading_shows_it() -> None:
    topo = Topology(HOSTS, 8, ["cu01"], [0, 0], ["H100-SXM", "H100-SXM"])
    faults = [Fault.parse(f"xid@{HEALTHY_S + 20:g}:DGX-01/gpu3=79"),
              Fault.parse(f"cooling_degradation@{HEALTHY_S + 60:g}:ip-10-0-1-23.ec2.internal=0.5")]
    sim = Simulator(topo, faults, seed=5, tick_s=TICK_S)
    pages = FleetPages()
    exporters = {h: Exporter("") for h in HOSTS}
    src = DcgmSource([exporters[h].url for h in HOSTS], timeout_s=5.0, clock=lambda: sim.t)
    twin = TwinModel()
    events, sensed = [], {}  # sensed: (gpu, ts) -> the whole-degree reading the page carried
    die_crossed: dict[str, float] = {}  # when the simulator's true die first reached the line
    names = topo.gpu_names
    try:
        while sim.t < HEALTHY_S + 400:
            pages.update(sim.step())
            # The die reached the line within the step: its hardware slowdown cut in (it may be back under by the
            # tick's end, the cut holding it there).
            hot = (sim.physics.temp_c >= sim.physics.slowdown_c) | sim.physics.thermal_capped
            for i in hot.nonzero()[0]:
                die_crossed.setdefault(names[i], sim.t)
            for h in HOSTS:
                exporters[h].text = pages.page(h)
            samples = await src.read()
            for s in samples:
                if isinstance(s, GpuSample) and s.temp_c is not None:
                    sensed[(s.name, s.ts)] = s.temp_c
            events += twin.ingest(samples)
            if sim.t <= HEALTHY_S:
                assert events == [], f"a healthy fleet raised {[(e.kind, e.subject) for e in events]}"
    finally:
        for e in exporters.values():
            e.stop()
    assert src.errors == {} and src.quarantined == []
    assert src.validator.summary().get("dcgm", {}).get("quarantined", 0) == 0
    assert all(t == int(t) for t in sensed.values()), "the pages carry whole degrees"

    xids = [e for e in events if e.kind == "xid_error"]
    assert [(e.subject, e.data["xid"]) for e in xids] == [("DGX-01/gpu3", 79)], "sticky on every page: one event"

    slowdown = profile("H100-SXM").slowdown_c
    degraded = {g: t for g, t in die_crossed.items() if g.startswith("ip-10-0-1-23")}
    assert degraded, "the degraded host's dies reach the slowdown line within the run"
    assert not any(g.startswith("DGX-01") for g in die_crossed), "the healthy host's dies stay under the line"
    first: dict[str, tuple[float, str]] = {}
    for e in events:
        if e.kind in ("thermal_slowdown_predicted", "thermal_slowdown"):
            first.setdefault(e.subject, (e.ts, e.kind))
    for gpu, t_die in degraded.items():
        # Reported in the page read right after the die reached the line (the hardware's flag on it) ...
        assert gpu in first and first[gpu][0] <= t_die, f"{gpu}: die crossed at {t_die}, twin {first.get(gpu)}"
        # ... while the lagging whole-degree reading is still under the line.
        assert sensed[(gpu, first[gpu][0])] < slowdown, f"{gpu}: the reading had crossed when the twin spoke"
