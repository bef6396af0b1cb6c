"""The twin on real-format telemetry (issue #16): dcgm-exporter pages through the parser, the validator and the
twin. Ten minutes of healthy GPUs in whole degrees raise nothing; a sticky XID 79 is one event; a stuck sensor
is still caught; an unknown model is reported once; missing readings are missing, not 0; XID state survives a
checkpoint."""

from __future__ import annotations

import numpy as np

from actors.twin.events import Event
from actors.twin.model import TwinModel
from actors.twin.profiles import UNKNOWN
from actors.twin.state import load, pack
from cluster.telemetry.dcgm import parse_metrics
from cluster.telemetry.quality import Quarantined, Validator
from cluster.telemetry.samples import GpuSample
from tests.telemetry.dcgm_pages import Gpu, page

HOST_A, HOST_B = "ip-10-0-1-23.ec2.internal", "DGX-01"


def _fleet(t: int, rng: np.random.Generator, xid_at: int = 120) -> str:
    """Two hosts of steady, healthy GPUs in whole degrees; gpu2 of host A logged XID 79 at ``xid_at`` (sticky)."""
    a = [Gpu(i, temp=int(round(60.4 + i + rng.normal(0, 0.3))), power=float(640 + rng.normal(0, 4)),
             xid=79 if i == 2 and t >= xid_at else 0) for i in range(4)]
    a[3].temp = 62  # perfectly flat, as a whole-degree sensor of a steady GPU often is
    b = [Gpu(i, temp=55, mem_temp=int(round(66 + rng.normal(0, 0.3))), power=float(900 + rng.normal(0, 6)),
             limit=1000.0) for i in range(2)]
    return page(HOST_A, "NVIDIA H100 80GB HBM3", a) + page(HOST_B, "NVIDIA B200", b, new_reason_name=False)


def _run(pages: list[str], twin: TwinModel | None = None, v: Validator | None = None, t0: int = 0,
         ) -> tuple[list[Event], TwinModel, Validator]:
    twin, v = twin or TwinModel(), v or Validator()
    events: list[Event] = []
    for t, text in enumerate(pages, start=t0):
        samples = [v.check("dcgm", t, {**r, "ts": float(t)}) for r in parse_metrics(text)]
        assert not [s for s in samples if isinstance(s, Quarantined)]
        events += twin.ingest([s for s in samples if isinstance(s, GpuSample)])
    return events, twin, v


def test_ten_minutes_of_healthy_whole_degree_gpus_raise_only_the_one_sticky_xid() -> None:
    rng = np.random.default_rng(7)
    events, twin, v = _run([_fleet(t, rng) for t in range(600)])
    assert [(e.kind, e.subject) for e in events] == [("xid_error", f"{HOST_A}/gpu2")]
    xid = events[0]
    assert xid.ts == 120.0 and xid.severity == "critical"
    assert xid.data["xid"] == 79 and xid.data["meaning"] == "GPU has fallen off the bus"
    assert xid.data["follows"] == "gpu" and xid.data["count"] == 1 and xid.data["repeat"] is False
    summary = v.summary()["dcgm"]
    assert summary["accepted"] == 600 * 6 and summary["quarantined"] == 0 and summary["fields"] == {}
    assert summary["missing"] == {"mem_temp_c": 600 * 4}  # the H100s' blank memory temperature
    snap = {g["gpu"]: g for g in twin.snapshot()["gpus"]}
    assert snap[f"{HOST_A}/gpu3"]["sensed_c"] == 62.0 and snap[f"{HOST_B}/gpu0"]["slowdown_c"] == 87.0
    assert twin.snapshot()["nodes"] == [HOST_B, HOST_A]


def test_flat_reading_while_power_moves_is_still_a_stuck_sensor() -> None:
    rng = np.random.default_rng(3)
    pages = []
    for t in range(240):
        gpus = [Gpu(0, temp=int(round(61.4 + rng.normal(0, 0.3))), power=float(640 + rng.normal(0, 4))),
                Gpu(1, temp=63, power=350.0 if (t // 40) % 2 else 700.0, clock=1410 if (t // 40) % 2 else 1980)]
        pages.append(page(HOST_B, "NVIDIA H100 80GB HBM3", gpus))
    events, _, v = _run(pages)
    faults = [e for e in events if e.kind == "sensor_fault"]
    assert [(e.subject, e.data["fault"]) for e in faults] == [(f"{HOST_B}/gpu1", "stuck")]
    assert 60 <= faults[0].ts <= 120
    assert not [e for e in events if e.kind not in ("sensor_fault", "clock_drop")]
    assert v.summary()["dcgm"]["fields"].get("temp_c:stuck_sensor", 0) > 0  # quarantined as a field, sample kept


def test_an_unknown_model_is_reported_once_and_gets_conservative_limits() -> None:
    pages = [page(HOST_A, "NVIDIA RTX PRO 6000", [Gpu(0, power=400.0, limit=600.0), Gpu(1, power=400.0,
                                                                                           limit=600.0)])
             + page(HOST_B, "NVIDIA RTX PRO 6000", [Gpu(0, power=400.0, limit=600.0)]) for _ in range(30)]
    events, twin, _ = _run(pages)
    unknown = [e for e in events if e.kind == "gpu_model_unknown"]
    assert len(unknown) == 1 and unknown[0].data["model"] == "NVIDIA RTX PRO 6000"
    assert unknown[0].data["profile"] == "unknown" and unknown[0].severity == "warning"
    assert set(twin.slowdown_c.tolist()) == {UNKNOWN.slowdown_c}  # not an H100's 89 °C
    # A restored twin remembers it reported the model; a new GPU of that model is not reported again.
    back = load(pack("twin.model", twin.to_state()), "twin.model", "k", TwinModel.from_state)
    more, _, _ = _run([page("DGX-02", "NVIDIA RTX PRO 6000", [Gpu(0, power=400.0, limit=600.0)])], back, t0=30)
    assert not [e for e in more if e.kind == "gpu_model_unknown"]


def _xid(t: float, xid: int | None, total: int | None = None, temp: float | None = 60.0) -> GpuSample:
    return GpuSample(ts=t, node=HOST_B, gpu=0, temp_c=temp, power_w=500.0, xid=xid, xid_total=total)


def test_xids_are_edges_counted_per_gpu_and_survive_a_checkpoint() -> None:
    twin = TwinModel()
    evs = twin.ingest([_xid(t, 79 if t >= 5 else 0) for t in range(20)])
    assert [(e.ts, e.data["xid"]) for e in evs if e.kind == "xid_error"] == [(5.0, 79)]
    back = load(pack("twin.model", twin.to_state()), "twin.model", "k", TwinModel.from_state)
    evs = back.ingest([_xid(t, 79) for t in range(20, 40)] + [_xid(40, 48), _xid(41, 48)])
    xids = [e for e in evs if e.kind == "xid_error"]
    assert [(e.ts, e.data["xid"], e.data["count"], e.data["repeat"]) for e in xids] == [(40.0, 48, 2, True)]
    assert xids[0].data["meaning"] == "double-bit ECC error, uncorrectable memory error"
    # Cleared (0 after a driver reload), then 79 again: a new event.
    evs = back.ingest([_xid(42, 0), _xid(43, 79)])
    assert [e.data["count"] for e in evs if e.kind == "xid_error"] == [3]


def test_a_counting_source_raises_one_event_per_xid_even_for_the_same_code() -> None:
    twin = TwinModel()
    seq = [(0, None, 0), (1, 13, 1), (2, None, 1), (3, 13, 2), (4, None, 2), (5, 13, 2)]
    evs = twin.ingest([_xid(t, x, n) for t, x, n in seq])
    assert [(e.ts, e.data["xid"], e.data["follows"]) for e in evs if e.kind == "xid_error"] == [
        (1.0, 13, "job"), (3.0, 13, "job")]


def test_a_checkpoint_from_before_the_xid_and_stuck_state_still_loads() -> None:
    twin = TwinModel()
    twin.ingest([_xid(t, 79) for t in range(5)])
    state = twin.to_state()
    for k in ("fine", "p_lo", "p_hi", "c_lo", "c_hi", "moved_t", "last_xid", "xid_seen", "xid_events"):
        del state["signals"][k]
    del state["unknown_models"]
    back = load(pack("twin.model", state), "twin.model", "k", TwinModel.from_state)
    assert int(back.signals.last_xid[0]) == -1 and back.unknown_models == []
    assert [e.kind for e in back.ingest([_xid(5, 79)])] == ["xid_error"]  # re-raised once: it was not recorded


def test_missing_readings_are_missing_not_zero() -> None:
    twin = TwinModel()
    twin.ingest([GpuSample(ts=float(t), node=HOST_A, gpu=0, temp_c=60.0, sm_clock_mhz=1980.0) for t in range(10)])
    g = twin.snapshot()["gpus"][0]
    assert g["power_w"] is None and twin.snapshot()["energy"]["total_j"] == 0.0 and g["sensed_c"] == 60.0
    # The GPU falls off the bus: every field blank but the XID. The XID is an event; the last temperature stays.
    evs = twin.ingest([GpuSample(ts=10.0, node=HOST_A, gpu=0, xid=79)])
    assert [e.kind for e in evs] == ["xid_error"] and evs[0].data["sensed_c"] == 60.0
    g = twin.snapshot()["gpus"][0]
    assert g["sensed_c"] == 60.0 and g["clock_mhz"] is None and g["power_w"] is None
    # A GPU first seen without a temperature has none (not 0 °C) until one arrives.
    twin.ingest([GpuSample(ts=11.0, node=HOST_A, gpu=1, power_w=300.0)])
    g1 = twin.snapshot()["gpus"][1]
    assert g1["sensed_c"] is None and g1["est_c"] is None and g1["power_w"] == 300.0
    assert twin.snapshot()["max_sensed_c"] == 60.0
