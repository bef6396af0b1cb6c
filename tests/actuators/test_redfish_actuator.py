"""The cooling plant over Redfish: an approved ``set_cooling_setpoint`` PATCHes the CDU's ``CoolingUnit`` and the
next Redfish telemetry shows the new setpoint; every way it can go wrong is a ``failed`` result saying why.

The service is ``redfish_server.py`` over a copy of the CDU mockup of ``tests/fixtures/redfish/cdu``: sushy-static,
the telemetry tests' server, answers a PATCH and changes nothing (see that module).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from actors.gateway.service import GatewayService
from cluster.actuators import DryRunActuator, build_actuator
from cluster.actuators.redfish import RedfishFacilityActuator
from cluster.actuators.routing import RoutedActuator
from cluster.settings import Settings, SettingsError, load_settings
from cluster.telemetry.redfish import RedfishSource
from cluster.telemetry.samples import CoolingSample
from policies.actions import parse_action
from policies.policy import load_policy
from tests.actuators.redfish_server import PatchableRedfish
from tests.actuators.ticket_fakes import TestCA, basic
from tests.actuators.webhook_receiver import CAP
from tests.gateway.test_service import FakeFleet, opened, proposal, said
from tests.helpers import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]
MOCKUP = Path(__file__).resolve().parents[1] / "fixtures" / "redfish" / "cdu"
LOOP = "/redfish/v1/ThermalEquipment/CDUs/1/SecondaryCoolantConnectors/1"
PUMP = "/redfish/v1/ThermalEquipment/CDUs/1/Pumps/1"
COOL = {"kind": "set_cooling_setpoint", "unit": "cu01", "supply_c": 21.0}
FANS = {"kind": "set_fan_speed", "unit": "cu01", "percent": 85}


@pytest.fixture
def cdu(tmp_path: Path) -> Iterator[PatchableRedfish]:
    shutil.copytree(MOCKUP, tmp_path / "cdu")
    with PatchableRedfish(tmp_path / "cdu") as svc:
        yield svc


def actuator(url: str, **kw: Any) -> RedfishFacilityActuator:
    return RedfishFacilityActuator([f"cu01={url}"], timeout_s=2.0, retry_after_s=0.01, **kw)


def settings(url: str, tmp: Path) -> Settings:
    return load_settings(data_dir=str(tmp), actuator="dry-run", facility="redfish", redfish_urls=[f"cu01={url}"],
                         scrape_timeout_s=2.0)


def setpoint(svc: PatchableRedfish, path: str = LOOP, prop: str = "SupplyTemperatureControlCelsius") -> float:
    return svc.read(path)[prop]["SetPoint"]


async def cooling(url: str) -> CoolingSample:
    source = RedfishSource([f"cu01={url}"], timeout_s=2.0, serves={"cu01": ["n01"]})
    try:
        [c] = [s for s in await source.read() if isinstance(s, CoolingSample)]
    finally:
        await source.aclose()
    return c


async def test_an_approved_setpoint_patches_the_cooling_unit_and_the_next_telemetry_shows_it(
        redis_url: str, cdu: PatchableRedfish, tmp_path: Path) -> None:
    act = build_actuator(settings(cdu.url, tmp_path))
    assert isinstance(act, RoutedActuator) and isinstance(act.base, DryRunActuator)
    assert isinstance(act.facility, RedfishFacilityActuator)
    assert (await cooling(cdu.url)).setpoint_c == 30.0
    gw = GatewayService(redis_url, "rf", load_policy(), act, fleet=FakeFleet())
    [ap] = await opened(gw, proposal(COOL))
    assert ap.status == "pending" and cdu.calls("PATCH") == [], "nothing is sent before approval"
    assert ap.effect is not None and ap.effect.text == (
        f'PATCH {LOOP} {{"SupplyTemperatureControlCelsius": {{"SetPoint": 21}}}} (If-Match: the ETag read just '
        f"before, when the service gives one), read it back on Redfish {cdu.url} (cu01 supply setpoint) — current: "
        f"30.0 °C ({LOOP} SetPoint read now); new: cu01 supply setpoint 21.0 °C")
    reply = await gw.decide(ap.approval_id, said(ap))
    assert reply.approval is not None and reply.approval.status == "executed", reply
    [patch] = cdu.calls("PATCH")
    assert patch["path"] == LOOP and patch["body"] == {"SupplyTemperatureControlCelsius": {"SetPoint": 21.0}}
    assert patch["if_match"] and patch["if_match"].startswith('W/"'), "the ETag read just before"
    assert setpoint(cdu) == 21.0
    after = await cooling(cdu.url)
    await act.facility.aclose()
    assert after.setpoint_c == 21.0 and after.supply_c == 30.1
    [(_, fields)] = redis.Redis.from_url(redis_url).xrange("rf:feedback")  # the gateway fed the result back
    result = json.loads(fields[b"sample"])
    assert result["status"] == "executed"
    assert result["detail"] == f"cu01 supply setpoint 30.0 → 21.0 °C, PATCH {LOOP} on {cdu.url}"
    assert result["previous"] == {"supply_c": 30.0}, "the value before, as data: what an undo sets back"
    assert (await gw.get(ap.approval_id))["inverse"] == {**COOL, "supply_c": 30.0}  # type: ignore[index]


async def test_the_pump_speed_is_the_units_fan(cdu: PatchableRedfish) -> None:
    act = actuator(cdu.url)
    r = await act.execute(parse_action(FANS), "a1", "p1", None)
    await act.aclose()
    assert r.status == "executed", r.detail
    assert r.detail == f"cu01 pump speed 60 → 85 %, PATCH {PUMP} on {cdu.url}" and r.targets == ("cu01",)
    assert r.previous == {"percent": 60.0}
    assert setpoint(cdu, PUMP, "SpeedControlPercent") == 85


async def test_a_retry_of_the_same_action_id_sends_nothing_again(cdu: PatchableRedfish) -> None:
    act = actuator(cdu.url)
    first = await act.execute(parse_action(COOL), "a2", "p2", "00-tp")
    again = await act.execute(parse_action(COOL), "a2", "p2", "00-tp")
    await act.aclose()
    assert first.status == "executed" and again == first and len(cdu.calls("PATCH")) == 1


async def test_a_server_error_is_a_failed_result_with_the_services_reason(cdu: PatchableRedfish) -> None:
    cdu.script = [500, 500]
    act = actuator(cdu.url)
    r = await act.execute(parse_action(COOL), "a3", "p3", None)
    assert r.status == "failed" and "HTTP 500" in r.detail and "the controller did not take the request" in r.detail
    assert "after one retry" in r.detail and setpoint(cdu) == 30.0 and len(cdu.calls("PATCH")) == 2
    ok = await act.execute(parse_action(COOL), "a3", "p3", None)  # a failed action id may be tried again
    await act.aclose()
    assert ok.status == "executed" and setpoint(cdu) == 21.0


@pytest.mark.parametrize("status", [503, 412])  # 412: the resource changed since its ETag was read
async def test_one_transient_error_is_retried(cdu: PatchableRedfish, status: int) -> None:
    cdu.script = [status]
    act = actuator(cdu.url)
    r = await act.execute(parse_action(COOL), "a4", "p4", None)
    await act.aclose()
    assert r.status == "executed" and setpoint(cdu) == 21.0 and len(cdu.calls("PATCH")) == 2


async def test_a_value_outside_the_allowable_range_and_other_kinds_send_nothing(cdu: PatchableRedfish) -> None:
    act = actuator(cdu.url)
    low = await act.execute(parse_action({**COOL, "supply_c": 15.0}), "a5", "p5", None)
    cap = await act.execute(CAP, "a6", "p6", None)
    stated = await act.effect(parse_action({**COOL, "supply_c": 15.0}), "p5")
    await act.aclose()
    assert low.status == "failed" and "outside the allowable range 20.0–45.0 °C" in low.detail
    assert cap.status == "failed" and "not a facility action" in cap.detail
    assert stated.call.startswith("nothing: the Redfish actuator refuses it") and stated.new == "unchanged"
    assert cdu.calls("PATCH") == []


async def test_a_unit_no_service_has_fails_naming_the_services(cdu: PatchableRedfish) -> None:
    act = actuator(cdu.url)
    other = await act.execute(parse_action({**COOL, "unit": "cu09"}), "a7", "p7", None)
    unknown = await act.execute(parse_action({**COOL, "unit": "cu01-7"}), "a8", "p8", None)
    await act.aclose()
    assert other.status == "failed" and "no Redfish service is named for unit cu09" in other.detail
    assert unknown.status == "failed" and "unit cu01-7 is not a cooling unit" in unknown.detail
    assert cdu.calls("PATCH") == []


async def test_a_unit_without_the_control_fails_saying_so(cdu: PatchableRedfish) -> None:
    doc = cdu.read(LOOP)
    del doc["SupplyTemperatureControlCelsius"]
    cdu.file(LOOP).write_text(json.dumps(doc))
    act = actuator(cdu.url)
    r = await act.execute(parse_action(COOL), "a9", "p9", None)
    await act.aclose()
    assert r.status == "failed" and "has a writable SupplyTemperatureControlCelsius.SetPoint" in r.detail


async def test_a_service_that_is_down_fails_and_makes_the_value_now_unknown() -> None:
    act = actuator(f"http://127.0.0.1:{free_port()}")
    r = await act.execute(parse_action(COOL), "a10", "p10", None)
    e = await act.effect(parse_action(COOL), "p10")
    await act.aclose()
    assert r.status == "failed" and "Redfish request failed (ClientConnectorError" in r.detail
    assert r.detail.endswith("(after one retry)")
    assert e.current is not None and e.current.startswith("unknown (") and "SetPoint" in e.call


async def test_credentials_go_to_the_service_and_never_into_a_detail_or_an_effect(tmp_path: Path) -> None:
    shutil.copytree(MOCKUP, tmp_path / "cdu")
    with TestCA() as ca, PatchableRedfish(tmp_path / "cdu", ca, basic("ops", "s3cret-pw")) as svc:
        act = actuator(svc.url, username="ops", password="s3cret-pw", auth="basic", ca_file=str(ca.file))
        e = await act.effect(parse_action(COOL), "p11")
        r = await act.execute(parse_action(COOL), "a11", "p11", None)
        await act.aclose()
        wrong = actuator(svc.url, username="ops", password="wr0ng-pw", auth="basic", ca_file=str(ca.file))
        refused = await wrong.execute(parse_action(COOL), "a12", "p12", None)
        e_refused = await wrong.effect(parse_action(COOL), "p12")
        await wrong.aclose()
        assert [c["auth"] for c in svc.calls("PATCH")] == [basic("ops", "s3cret-pw")]
    assert r.status == "executed" and "30.0 °C" in e.text
    assert refused.status == "failed" and "HTTP 401" in refused.detail
    for text in (e.text, r.detail, refused.detail, e_refused.text):
        assert "s3cret" not in text and "wr0ng" not in text and basic("ops", "s3cret-pw") not in text


def test_facility_redfish_needs_the_cdus_services(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="facility=redfish needs redfish_urls"):
        load_settings(data_dir=str(tmp_path), facility="redfish")
    with pytest.raises(ValueError, match="not in the URL"):
        RedfishFacilityActuator(["cu01=http://ops:pw@127.0.0.1:1"])
