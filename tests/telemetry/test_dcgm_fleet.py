"""A fleet seen only through dcgm-exporter pages in the real format, as `--telemetry dcgm` sees it.

Two hosts named as real fleets name them serve their pages over HTTP (the simulator's fleet rendered by
``cluster/telemetry/exporter.py``: whole degrees, DCGM's blank memory temperature, the sticky last XID); the twin
reads them through ``DcgmSource`` every 5 simulated seconds. Ten minutes of healthy GPUs raise nothing and
quarantine nothing; an XID 79 that stays on every page is one event; the GPUs of a host whose coolant flow halves
are warned before their whole-degree readings cross the slowdown line.
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
async def test_ten_healthy_minutes_one_sticky_xid_and_a_warning_before_the_reading_crosses() -> None:
    topo = Topology(HOSTS, 8, ["cu01"], [0, 0], ["H100-SXM", "H100-SXM"])
    faults = [Fault.parse(f"xid@{HEALTHY_S + 20:g}:DGX-01/gpu3=79"),
              Fault.parse(f"cooling_degradation@{HEALTHY_S + 60:g}:ip-10-0-1-23.ec2.internal=0.5")]
    sim = Simulator(topo, faults, seed=5, tick_s=TICK_S)
    pages = FleetPages()
    exporters = {h: Exporter("") for h in HOSTS}
    src = DcgmSource([exporters[h].url for h in HOSTS], timeout_s=5.0, clock=lambda: sim.t)
    twin = TwinModel()
    events, sensed = [], {}  # sensed: (gpu, ts) -> the whole-degree reading the page carried
    try:
        while sim.t < HEALTHY_S + 400:
            pages.update(sim.step())
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
    # The twin speaks first with a forecast (predicted) or, when the die outran it, with the hardware's own throttle
    # flag (slowdown): either way before the sensor's whole-degree reading reaches the line.
    warned: dict[str, float] = {}
    for e in events:
        if e.kind in ("thermal_slowdown_predicted", "thermal_slowdown"):
            warned.setdefault(e.subject, e.ts)
    assert any(e.kind == "thermal_slowdown_predicted" and e.subject.startswith("ip-10-0-1-23") for e in events)
    crossed = {}
    for (gpu, ts), t in sorted(sensed.items(), key=lambda kv: kv[0][1]):
        if t >= slowdown and gpu.startswith("ip-10-0-1-23") and gpu not in crossed:
            crossed[gpu] = ts
    assert crossed, "the degraded host's GPUs reach the slowdown line within the run"
    for gpu, ts in crossed.items():
        assert gpu in warned and warned[gpu] < ts, f"{gpu}: warned at {warned.get(gpu)}, reading crossed at {ts}"
        assert sensed[(gpu, warned[gpu])] < slowdown
