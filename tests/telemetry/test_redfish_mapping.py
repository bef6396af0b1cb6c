"""Redfish resources → samples, and leak detectors → ``coolant_leak``, without a server.

The walk reads the same DMTF-shaped mockup that ``test_redfish.py`` serves over HTTP, straight from disk.
"""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import pytest
from pydantic import ValidationError

from actors.twin.facility import LeakWatch
from actors.twin.model import TwinModel
from actors.twin.shards import ShardedTwin
from cluster.telemetry.redfish import RedfishSource
from cluster.telemetry.redfish_resources import (
    Target,
    build,
    excerpt_leaks,
    leak_state,
    parse_target,
    reading,
    unit_base,
    walk,
)
from cluster.telemetry.samples import CoolingSample, FacilitySample, GpuSample, SourceStatus

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "redfish"


def disk(service: str, overrides: dict[str, object] | None = None):
    """A ``get`` over a mockup folder (DMTF mockup layout: ``<path>/index.json``), with resources replaced."""
    calls: list[str] = []

    async def get(path: str) -> dict | None:
        calls.append(path)
        if overrides and path in overrides:
            doc = overrides[path]
            return copy.deepcopy(doc) if isinstance(doc, dict) else None
        f = FIXTURES / service / path.removeprefix("/redfish/v1").strip("/") / "index.json"
        return json.loads(f.read_text()) if f.is_file() else None

    get.calls = calls  # type: ignore[attr-defined]
    return get


async def walk_disk(service: str, name: str, overrides: dict[str, object] | None = None,
                    serves: dict[str, list[str]] | None = None) -> tuple[list, list[str]]:
    get = disk(service, overrides)
    problems: list[str] = []
    root = await get("/redfish/v1")
    assert root is not None
    samples = await walk(get, root, parse_target(f"{name}=http://127.0.0.1:1"), 1000.0, problems, serves)
    return samples, problems


@pytest.mark.anyio
async def test_a_bmc_chassis_becomes_one_facility_sample_of_its_node() -> None:
    samples, problems = await walk_disk("bmc", "n01")
    assert problems == []
    (s,) = samples
    assert isinstance(s, FacilitySample) and (s.node, s.unit, s.chassis, s.source) == ("n01", None, "1", "n01")
    assert s.leaks == {"ColdPlate1": "OK", "Manifold1": "OK"}
    # "Internal" reads "Out of range" on this BMC: left out, not 0
    assert s.temps_c == {"Intake": 24.8, "Exhaust": 41.5, "CPU0": 52.0, "ColdPlateInlet": 30.5}
    assert s.fans_pct == {"FAN1": 45.0, "FAN2": 47.0} and s.fans_rpm == {"FAN1": 6120.0, "FAN2": 6390.0}
    assert s.power_w == pytest.approx(2311.5 + 2298.0), "the power supplies' input power, summed"
    assert s.ts == 1000.0


@pytest.mark.anyio
async def test_a_cdu_becomes_a_cooling_sample_and_a_facility_sample_of_its_unit() -> None:
    samples, problems = await walk_disk("cdu", "CDU-Row3", serves={"cdu-row3": ["n01", "n02"]})
    assert problems == []
    cooling = [s for s in samples if isinstance(s, CoolingSample)]
    facility = {s.chassis: s for s in samples if isinstance(s, FacilitySample)}
    (c,) = cooling
    # the secondary loop (the racks' side), not the facility water of the primary
    assert (c.unit, c.supply_c, c.return_c, c.setpoint_c) == ("cdu-row3", 30.1, 40.2, 30.0)
    assert c.serves == ("n01", "n02") and c.flow_frac == {"n01": 0.92, "n02": 0.92}
    assert facility["1"].unit == "cdu-row3" and facility["1"].leaks == {"DripTray": "OK"}
    assert facility["1"].flow_lpm == 1380.0
    assert facility["CDU1"].unit == "cdu-row3" and facility["CDU1"].power_w == 3150.0, "EnvironmentMetrics.PowerWatts"


@pytest.mark.anyio
async def test_without_serves_a_cdu_names_no_node() -> None:
    samples, _ = await walk_disk("cdu", "cdu1")
    (c,) = [s for s in samples if isinstance(s, CoolingSample)]
    assert c.serves == () and c.flow_frac is None


@pytest.mark.anyio
async def test_a_missing_or_malformed_resource_loses_only_itself() -> None:
    det = "/redfish/v1/Chassis/1/ThermalSubsystem/LeakDetection/LeakDetectors/ColdPlate1"
    fan = "/redfish/v1/Chassis/1/ThermalSubsystem/Fans/FAN2"
    samples, _ = await walk_disk("bmc", "n01", {det: None, fan: "not json"})
    (s,) = samples
    assert s.leaks == {"Manifold1": "OK"} and set(s.fans_pct) == {"FAN1"} and s.temps_c["Intake"] == 24.8


@pytest.mark.anyio
async def test_newer_schemas_chassis_level_leak_detectors_are_followed() -> None:
    base = "/redfish/v1/Chassis/1"
    chassis = json.loads((FIXTURES / "bmc/Chassis/1/index.json").read_text())
    chassis["LeakDetectors"] = {"@odata.id": f"{base}/LeakDetectors"}
    thermal = json.loads((FIXTURES / "bmc/Chassis/1/ThermalSubsystem/index.json").read_text())
    del thermal["LeakDetection"]
    overrides = {base: chassis, f"{base}/ThermalSubsystem": thermal,
                 f"{base}/LeakDetectors": {"Members": [{"@odata.id": f"{base}/LeakDetectors/Tray"}]},
                 f"{base}/LeakDetectors/Tray": {"Id": "Tray", "Name": "Tray", "DetectorState": "Critical"}}
    (s,), _ = await walk_disk("bmc", "n01", overrides)
    assert s.leaks == {"Tray": "Critical"}


@pytest.mark.parametrize(("doc", "state"), [
    ({"DetectorState": "OK", "Status": {"State": "Enabled", "Health": "OK"}}, "OK"),
    ({"DetectorState": "Critical", "Status": {"State": "Enabled", "Health": "OK"}}, "Critical"),
    ({"DetectorState": "OK", "Status": {"State": "Enabled", "Health": "Warning"}}, "Warning"),
    ({"DetectorState": "Warning", "Status": {"Health": "Critical"}}, "Critical"),
    ({"DetectorState": None, "Status": {"Health": "Warning"}}, "Warning"),
    ({"DetectorState": "Critical", "Status": {"State": "Absent"}}, None),  # not watching: says nothing
    ({"DetectorState": "Critical", "Status": {"State": "Disabled", "Health": "Critical"}}, None),
    ({"Status": {"State": "Enabled"}}, None),
    ({"DetectorState": "Leaking!"}, None),
    ("not an object", None),
])
def test_a_detectors_state_is_the_worse_of_detector_state_and_health(doc: object, state: str | None) -> None:
    assert leak_state(doc) == state


def test_leak_detector_group_excerpts_when_there_is_no_collection() -> None:
    detection = {"LeakDetectorGroups": [{"Detectors": [
        {"DeviceName": "Tray", "DetectorState": "OK"},
        {"DataSourceUri": "/redfish/v1/Chassis/1/LeakDetectors/Hose", "DetectorState": "Warning"},
        {"DeviceName": "Unknown"}]}]}
    assert excerpt_leaks(detection) == {"Tray": "OK", "Hose": "Warning"}


@pytest.mark.parametrize(("excerpt", "value"), [
    ({"Reading": 23.5}, 23.5), ({"Reading": 7}, 7.0), ({"Reading": "Out of range"}, None), ({"Reading": None}, None),
    ({"Reading": float("nan")}, None), ({"Reading": True}, None), ({}, None), (None, None), ("x", None),
])
def test_a_reading_is_a_finite_number_or_missing(excerpt: object, value: float | None) -> None:
    assert reading(excerpt) == value


def test_targets_are_url_or_name_equals_url() -> None:
    assert parse_target("https://10.0.0.5") == Target("10.0.0.5", "https://10.0.0.5", named=False)
    assert parse_target("DGX-01=https://bmc-dgx-01.example:8443/redfish/v1/") == Target(
        "DGX-01", "https://bmc-dgx-01.example:8443", named=True)
    assert unit_base(parse_target("CDU.Row3=http://10.0.9.1")) == "cdu-row3"
    assert unit_base(parse_target("http://10.0.9.1")) == "cdu-10-0-9-1"
    for bad in ("10.0.0.5", "ftp://bmc", "n01=ftp://bmc", "n 01=http://bmc", "http://bmc/redfish/v1/Chassis"):
        with pytest.raises(ValueError):
            parse_target(bad)
    with pytest.raises(ValueError, match="share a name"):
        RedfishSource(["n01=http://a", "n01=http://b"])
    with pytest.raises(ValueError, match="password"):
        RedfishSource(["http://a"], username="root")


def test_an_out_of_range_reading_is_left_out_and_the_rest_kept() -> None:
    problems: list[str] = []
    s = build(FacilitySample, {"ts": 1.0, "source": "n01", "node": "n01", "chassis": "1",
                               "temps_c": {"Intake": 24.0, "Bogus": 900.0}, "fans_pct": {"FAN1": 140.0},
                               "power_w": -5.0, "leaks": {"D1": "OK"}}, problems)
    assert s.temps_c == {"Intake": 24.0} and s.fans_pct == {} and s.power_w is None and s.leaks == {"D1": "OK"}
    assert len(problems) == 3 and all("left out" in p for p in problems)
    problems = []
    assert build(CoolingSample, {"kind": "cooling", "ts": 1.0, "unit": "cdu1", "supply_c": 150.0}, problems) is None
    assert "supply_c" in problems[0]


def test_a_facility_sample_belongs_to_a_node_or_a_unit() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        FacilitySample(ts=1, source="x", node="n01", unit="cdu1")
    with pytest.raises(ValidationError, match="exactly one"):
        FacilitySample(ts=1, source="x")


def leak(ts: float, state: str, detector: str = "ColdPlate1", node: str = "n01") -> FacilitySample:
    return FacilitySample(ts=ts, source=node, node=node, chassis="1", leaks={detector: state, "Manifold1": "OK"})


def test_a_leak_is_one_critical_event_per_episode() -> None:
    twin = TwinModel()
    kinds = [[(e.kind, e.subject, e.severity, e.data["detector"], e.data["state"]) for e in twin.ingest([s])]
             for s in (leak(1, "OK"), leak(2, "Warning"), leak(3, "Critical"), leak(4, "Critical"), leak(5, "OK"),
                       leak(6, "Critical"))]
    assert kinds == [[], [("coolant_leak", "n01", "critical", "ColdPlate1", "Warning")], [], [], [],
                     [("coolant_leak", "n01", "critical", "ColdPlate1", "Critical")]]


def test_two_detectors_leaking_at_once_are_two_events_with_distinct_ids() -> None:
    s = FacilitySample(ts=1, source="n01", node="n01", chassis="1", leaks={"A": "Critical", "B": "Warning"})
    events = TwinModel().ingest([s])
    assert [e.data["detector"] for e in events] == ["A", "B"] and events[0].event_id != events[1].event_id


def test_a_leak_episode_survives_a_checkpoint() -> None:
    twin = TwinModel()
    assert len(twin.ingest([leak(1, "Critical")])) == 1
    again = TwinModel.from_state(twin.to_state())
    assert again.ingest([leak(2, "Critical")]) == [], "restored mid-episode: no second leak"
    assert again.leaks.snapshot()["leaking"] == [{"subject": "n01", "chassis": "1", "detector": "ColdPlate1",
                                                   "state": "Critical"}]
    old = twin.to_state()
    del old["leaks"]  # a checkpoint written before leaks were watched
    assert TwinModel.from_state(old).leaks.leaking == {}
    assert LeakWatch.from_state({}).to_state() == {"leaking": {}, "latest": {}}


def test_the_sharded_twin_folds_facility_samples_at_the_coordinator() -> None:
    twin = ShardedTwin({"s01": ["n01"], "s02": ["n02"]})
    gpu = GpuSample(ts=1, node="n02", gpu=0, temp_c=50.0)
    assert twin.ingest([gpu, leak(1, "OK", node="n02")]) == []
    (ev,) = twin.ingest([leak(2, "Critical", node="n02")])
    assert (ev.kind, ev.subject, ev.data["node"]) == ("coolant_leak", "n02", "n02")


@pytest.mark.anyio
async def test_a_controller_with_several_cdus_names_each_unit_by_its_id() -> None:
    cdus = "/redfish/v1/ThermalEquipment/CDUs"
    second = json.loads((FIXTURES / "cdu/ThermalEquipment/CDUs/1/index.json").read_text())
    second.update({"@odata.id": f"{cdus}/2", "Id": "2"})
    overrides = {cdus: {"Members": [{"@odata.id": f"{cdus}/1"}, {"@odata.id": f"{cdus}/2"}]}, f"{cdus}/2": second}
    samples, _ = await walk_disk("cdu", "row3", overrides)
    assert sorted(s.unit for s in samples if isinstance(s, CoolingSample)) == ["row3-1", "row3-2"]
    assert {s.unit for s in samples if isinstance(s, FacilitySample) and s.chassis == "CDU1"} == {"row3"}


@pytest.mark.anyio
async def test_a_login_that_cannot_happen_is_a_miss_with_its_reason() -> None:
    src = RedfishSource(["n01=http://127.0.0.1:9"], username="admin", password="secret", lost_after=1,
                        clock=lambda: 5.0)
    assert pickle.loads(pickle.dumps(RedfishSource(["n01=http://127.0.0.1:9"]))).targets == src.targets  # to an actor
    try:
        (status,) = await src.read()
    finally:
        await src.aclose()
    assert isinstance(status, SourceStatus) and (status.host, status.ok, status.missed) == ("n01", False, 1)
    assert "login failed" in status.error and "HTTPS" in status.error, "the library refuses a password over http"
