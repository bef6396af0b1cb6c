"""The cooling plant over Modbus TCP, against pymodbus's own server (``modbus_server.py``): an approved
``set_cooling_setpoint`` changes the register and the next telemetry shows the new setpoint; every way it can go
wrong is a ``failed`` result saying why; the source reports a server that stops answering, and its return."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
import redis

from actors.gateway.service import GatewayService
from cluster.actuators import DryRunActuator, SimActuator, build_actuator
from cluster.actuators.modbus import ModbusActuator
from cluster.actuators.routing import RoutedActuator
from cluster.modbus_map import ModbusUnit
from cluster.settings import Settings, load_settings
from cluster.sources import facility_sources
from cluster.telemetry.modbus import ModbusSource
from cluster.telemetry.samples import CoolingSample, FacilitySample, SourceStatus
from policies.actions import parse_action
from policies.policy import load_policy
from tests.actuators.modbus_server import FAN, FLOW, SETPOINT, SUPPLY, ModbusPlant, plant_map
from tests.actuators.webhook_receiver import CAP
from tests.gateway.test_service import FakeFleet, opened, proposal, said
from tests.helpers import free_port
from tests.telemetry.test_dcgm_liveness import Clock

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]
COOL = {"kind": "set_cooling_setpoint", "unit": "cu01", "supply_c": 21.0}
FANS = {"kind": "set_fan_speed", "unit": "cu01", "percent": 85}


def settings(endpoint: str, tmp: Any, **kw: Any) -> Settings:
    return load_settings(data_dir=str(tmp), actuator="dry-run", facility="modbus", modbus_endpoint=endpoint,
                         modbus_map=json.dumps(kw.pop("units", plant_map())), modbus_timeout_s=2.0, **kw)


def actuator(units: dict, endpoint: str) -> ModbusActuator:
    return ModbusActuator({k: ModbusUnit.model_validate(v) for k, v in units.items()}, endpoint, timeout_s=2.0,
                          retry_after_s=0.01)


def cooling(samples: list) -> CoolingSample:
    [s] = [s for s in samples if isinstance(s, CoolingSample)]
    return s


async def test_an_approved_setpoint_changes_the_register_and_the_next_telemetry_shows_it(
        redis_url: str, tmp_path: Any) -> None:
    async with ModbusPlant() as plant:
        s = settings(plant.endpoint, tmp_path, scrape_interval_s=0.01)
        act = build_actuator(s)
        assert isinstance(act, RoutedActuator) and isinstance(act.base, DryRunActuator)
        [source] = facility_sources(s).sources
        assert cooling(await source.read()).setpoint_c == 25.0
        gw = GatewayService(redis_url, "mb", load_policy(), act, fleet=FakeFleet())
        [ap] = await opened(gw, proposal(COOL))
        assert ap.status == "pending" and await plant.get(SETPOINT) == 250, "nothing is written before approval"
        reply = await gw.decide(ap.approval_id, said(ap))
        assert reply.approval is not None and reply.approval.status == "executed", reply
        assert await plant.get(SETPOINT) == 210
        await anyio.sleep(0.05)  # the next scrape is due (scrape_interval_s 0.01)
        after = cooling(await source.read())
    assert after.setpoint_c == 21.0 and after.supply_c == 24.3 and after.fan_pct == 60.0
    [(_, fields)] = redis.Redis.from_url(redis_url).xrange("mb:feedback")  # the gateway fed the result back
    result = json.loads(fields[b"sample"])
    assert result["status"] == "executed"
    assert result["detail"] == f"cu01 supply setpoint 25.0 → 21.0 °C, register 40001 on {plant.endpoint}"
    assert result["previous"] == {"supply_c": 25.0}, "the value before, as data: what an undo sets back"
    assert ap.effect is not None and ap.effect.reading == {"supply_c": 25.0}, "the register read for the card"


async def test_fan_speed_is_read_first_written_and_read_back() -> None:
    async with ModbusPlant() as plant:
        r = await actuator(plant_map(), plant.endpoint).execute(parse_action(FANS), "a1", "p1", None)
        assert await plant.get(FAN) == 85
    assert r.status == "executed" and r.detail == f"cu01 fan speed 60 → 85 %, register 40002 on {plant.endpoint}"
    assert r.previous == {"percent": 60.0}
    assert r.targets == ("cu01",)


async def test_other_actions_go_to_the_base_actuator_and_facility_none_changes_nothing(tmp_path: Any) -> None:
    async with ModbusPlant() as plant:
        routed = build_actuator(settings(plant.endpoint, tmp_path))
        r = await routed.execute(CAP, "a2", "p2", None)
        assert r.status == "executed" and r.detail.startswith("dry-run:") and await plant.get(SETPOINT) == 250
        assert routed.feeds_back_for(CAP) is False and routed.feeds_back_for(parse_action(COOL)) is False
        over_sim = RoutedActuator(SimActuator(None), routed.facility)  # the simulator reports its results itself
        assert over_sim.feeds_back_for(CAP) is True and over_sim.feeds_back_for(parse_action(COOL)) is False
        plain = build_actuator(load_settings(data_dir=str(tmp_path), actuator="dry-run"))
        assert isinstance(plain, DryRunActuator)
        assert (await plain.execute(parse_action(COOL), "a3", "p3", None)).detail.startswith("dry-run:")
        assert await plant.get(SETPOINT) == 250
        assert facility_sources(load_settings(data_dir=str(tmp_path), actuator="dry-run")).sources == []


async def test_a_power_limit_is_not_a_facility_action() -> None:
    async with ModbusPlant() as plant:
        r = await actuator(plant_map(), plant.endpoint).execute(CAP, "a4", "p4", None)
    assert r.status == "failed" and "not a facility action" in r.detail


async def test_an_unknown_unit_fails_naming_the_units_it_knows() -> None:
    async with ModbusPlant() as plant:
        action = parse_action({**COOL, "unit": "cu09"})
        r = await actuator(plant_map(), plant.endpoint).execute(action, "a5", "p5", None)
        assert await plant.get(SETPOINT) == 250
    assert r.status == "failed" and "cu09 is not in the Modbus register map" in r.detail and "cu01" in r.detail


async def test_a_register_the_device_does_not_have_fails_with_the_devices_answer() -> None:
    units = plant_map(setpoint_c={"register": 40500, "scale": 0.1})
    async with ModbusPlant() as plant:
        r = await actuator(units, plant.endpoint).execute(parse_action(COOL), "a6", "p6", None)
        assert await plant.get(SETPOINT) == 250
    assert r.status == "failed" and "illegal data address" in r.detail and "register 40500" in r.detail


async def test_a_unit_that_maps_no_fan_and_a_value_that_does_not_fit_fail_before_sending() -> None:
    units = {"cu01": {**plant_map()["cu01"], "fan_pct": None, "setpoint_c": {"register": SETPOINT, "scale": 0.0001}}}
    act = actuator(units, f"127.0.0.1:{free_port()}")  # nothing listens: any traffic would fail differently
    no_fan = await act.execute(parse_action(FANS), "a7", "p7", None)
    too_big = await act.execute(parse_action(COOL), "a8", "p8", None)
    assert no_fan.status == "failed" and "no fan_pct register" in no_fan.detail
    assert too_big.status == "failed" and "outside the register" in too_big.detail


async def test_a_server_that_is_down_fails_after_one_retry_and_a_later_try_succeeds() -> None:
    port = free_port()
    act = actuator(plant_map(), f"127.0.0.1:{port}")
    down = await act.execute(parse_action(COOL), "a9", "p9", None)
    assert down.status == "failed" and "no connection" in down.detail and "after one retry" in down.detail
    async with ModbusPlant(port=port) as plant:
        up = await act.execute(parse_action(COOL), "a9", "p9", None)  # a failed action id may be tried again
        assert up.status == "executed" and await plant.get(SETPOINT) == 210


async def test_a_device_that_keeps_its_own_limit_is_a_failed_readback() -> None:
    async with ModbusPlant() as plant:
        act = actuator(plant_map(), plant.endpoint)
        real_write = act.link.write

        async def clamped(ep: Any, device_id: int, point: Any, value: float) -> None:
            await real_write(ep, device_id, point, max(value, 23.0))  # the controller's own floor

        act.link.write = clamped  # type: ignore[method-assign]
        r = await act.execute(parse_action(COOL), "a10", "p10", None)
    assert r.status == "failed" and "reads back 23.0 °C" in r.detail and "was 25.0" in r.detail


async def test_the_source_reads_every_mapped_register_with_its_scale() -> None:
    async with ModbusPlant() as plant:
        source = ModbusSource({"cu01": ModbusUnit.model_validate(plant_map()["cu01"])}, plant.endpoint,
                              clock=Clock())
        got = await source.read()
        await source.aclose()
    c = cooling(got)
    assert (c.unit, c.supply_c, c.return_c, c.setpoint_c, c.fan_pct) == ("cu01", 24.3, 30.1, 25.0, 60.0)
    assert c.serves == ("n01", "n02") and c.flow_frac == {"n01": 0.8, "n02": 0.8}  # 120 of 150 l/min
    [f] = [s for s in got if isinstance(s, FacilitySample)]
    assert f.unit == "cu01" and f.flow_lpm == 120.0 and f.source == plant.endpoint


async def test_a_refused_optional_register_is_left_out_and_recorded() -> None:
    unit = ModbusUnit.model_validate(plant_map(fan_pct=40500)["cu01"])
    async with ModbusPlant({FLOW: 0}) as plant:
        await plant.set(SUPPLY, 0xFFF6)  # -1.0 °C: a signed register
        source = ModbusSource({"cu01": unit}, plant.endpoint, clock=Clock())
        c = cooling(await source.read())
        await source.aclose()
    assert c.fan_pct is None and c.supply_c == -1.0 and c.flow_frac == {"n01": 0.0, "n02": 0.0}
    assert "fan_pct" in source.errors["cu01"] and "illegal data address" in source.errors["cu01"]


async def test_a_server_that_stops_answering_is_lost_then_restored() -> None:
    plant = await ModbusPlant().start()
    source = ModbusSource({"cu01": ModbusUnit.model_validate(plant_map()["cu01"])}, plant.endpoint, timeout_s=1.0,
                          lost_after=2, clock=Clock())
    try:
        assert cooling(await source.read()).supply_c == 24.3
        await plant.stop()
        missed = [await source.read() for _ in range(3)]
        await plant.start()
        back = await source.read()
    finally:
        await plant.stop()
        await source.aclose()
    assert missed[0] == [] and missed[2] == []
    [lost] = missed[1]
    assert isinstance(lost, SourceStatus) and not lost.ok and lost.host == plant.endpoint and lost.missed == 2
    assert "no connection" in lost.error and source.errors.get(plant.endpoint) is None
    assert [(s.host, s.ok) for s in back if isinstance(s, SourceStatus)] == [(plant.endpoint, True)]
    assert cooling(back).supply_c == 24.3


def test_the_register_map_refuses_what_it_cannot_act_on(tmp_path: Any) -> None:
    from cluster.settings import SettingsError

    cases = {
        "an input register as setpoint": dict(units={"cu01": {"setpoint_c": 30001}}),
        "a bare offset": dict(units={"cu01": {"fan_pct": 1}}),
        "no endpoint": dict(units=plant_map()),
    }
    for why, kw in cases.items():
        with pytest.raises(SettingsError) as err:
            settings(None, tmp_path, **kw)  # type: ignore[arg-type]
        assert "modbus" in str(err.value), why
    with pytest.raises(SettingsError, match="needs modbus_map"):
        load_settings(data_dir=str(tmp_path), facility="modbus", modbus_endpoint="127.0.0.1")
    (tmp_path / "plant.yaml").write_text("cu01:\n  setpoint_c: {register: 40001, scale: 0.1}\n  endpoint: h:1502\n")
    s = load_settings(data_dir=str(tmp_path), facility="modbus", modbus_map=str(tmp_path / "plant.yaml"))
    assert s.modbus_map["cu01"].setpoint_c.scale == 0.1 and s.modbus_map["cu01"].endpoint == "h:1502"
    assert facility_sources(s).sources == [], "a unit without a supply register is acted on, not read"
