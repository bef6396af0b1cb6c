"""The ``Actuator`` contract (``actors/gateway/execution.py``), one suite run against every actuator of
``cluster/actuators/`` (the ``ACTUATORS`` registry).

What the gateway relies on, whichever actuator carries the action out:
- ``execute`` is a coroutine that returns an ``ActionResult`` naming the action (``action_id``, ``approval_id``,
  its kind and targets), carrying the caller's ``traceparent`` and a status;
- it is idempotent by ``action_id``: the gateway resends after a crash, and the second call returns the first
  result;
- a backend that cannot be reached is a ``failed`` result with the reason, never an exception. Exempt
  (``dead=None``): dry-run has no backend, and the simulator is our own actor: dead, it raises, and the gateway
  records the execution as failed itself;
- ``effect`` states what approving the action will run (``actors.gateway.effects.Effect``: the call, where, the
  new value), and a backend that cannot be reached makes the value now unknown, with why, never an exception.

The webhook's receiver is a real HTTP server on 127.0.0.1, the Modbus actuator's cooling plant pymodbus's own
Modbus TCP server (it, and the router that sends it the plant's actions, are tried with a setpoint); NVML needs
an NVIDIA GPU (and root to set a power limit): its "executes" cases are marked ``gpu``, and without a GPU NVML is
this host's unreachable backend.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from actors.gateway.effects import Effect
from actors.twin.physics import Topology
from cluster.actuators import (
    ACTUATORS,
    FACILITY_ACTUATORS,
    DryRunActuator,
    ModbusActuator,
    NvmlActuator,
    RoutedActuator,
    SimActuator,
    WebhookActuator,
)
from cluster.actuators.http_retry import RetryPolicy
from cluster.modbus_map import ModbusUnit
from cluster.telemetry.nvml import NvmlUnavailable, init
from cluster.telemetry.samples import ActionResult
from cluster.telemetry.sim import Simulator, SimulatorService
from policies.actions import Action, action_targets, parse_action
from tests.actuators.modbus_server import ModbusPlant, plant_map
from tests.actuators.webhook_receiver import CAP, WebhookReceiver
from tests.helpers import free_port
from tests.requirements_check import skip_on_gpu_host

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

Build = Callable[[], AbstractAsyncContextManager[Any]]
#: The action a facility actuator is tried with.
COOL = parse_action({"kind": "set_cooling_setpoint", "unit": "cu01", "supply_c": 21.0})


@dataclass(frozen=True)
class Impl:
    """One actuator: its class, a build with a working backend, one whose backend is unreachable (or None), and
    the action it is tried with."""

    cls: type
    build: Build
    dead: Build | None = None
    action: Action = CAP


def nvml_loads() -> bool:
    try:
        init().nvmlShutdown()
    except NvmlUnavailable:
        return False
    return True


@asynccontextmanager
async def sim() -> AsyncIterator[Any]:
    yield SimActuator(SimulatorService(Simulator(Topology.build(1, 2), seed=1), speed=1.0))


@asynccontextmanager
async def dry_run() -> AsyncIterator[Any]:
    yield DryRunActuator()


@asynccontextmanager
async def webhook() -> AsyncIterator[Any]:
    with WebhookReceiver() as receiver:
        yield WebhookActuator(receiver.url, timeout_s=5.0)


@asynccontextmanager
async def webhook_dead() -> AsyncIterator[Any]:
    quick = RetryPolicy(attempts=2, initial_s=0.01, max_s=0.01)
    yield WebhookActuator(f"http://127.0.0.1:{free_port()}/hook", timeout_s=2.0, retry=quick)


@asynccontextmanager
async def nvml() -> AsyncIterator[Any]:
    if not nvml_loads():
        pytest.skip("no NVIDIA GPU or driver here")
    if os.geteuid() != 0:
        pytest.skip("setting a power limit needs root")
    yield NvmlActuator()


@asynccontextmanager
async def nvml_dead() -> AsyncIterator[Any]:
    if nvml_loads():
        skip_on_gpu_host("NVML loads on this host: it has no unreachable NVML to show")
    yield NvmlActuator()


def plant_actuator(endpoint: str) -> ModbusActuator:
    units = {name: ModbusUnit.model_validate(u) for name, u in plant_map().items()}
    return ModbusActuator(units, endpoint, timeout_s=2.0, retry_after_s=0.01)


@asynccontextmanager
async def modbus() -> AsyncIterator[Any]:
    async with ModbusPlant() as plant:
        yield plant_actuator(plant.endpoint)


@asynccontextmanager
async def modbus_dead() -> AsyncIterator[Any]:
    yield plant_actuator(f"127.0.0.1:{free_port()}")


@asynccontextmanager
async def routed() -> AsyncIterator[Any]:
    async with modbus() as facility:
        yield RoutedActuator(DryRunActuator(), facility)


@asynccontextmanager
async def routed_dead() -> AsyncIterator[Any]:
    async with modbus_dead() as facility:
        yield RoutedActuator(DryRunActuator(), facility)


#: Every actuator of the ACTUATORS and FACILITY_ACTUATORS registries, by its name there, and the router.
IMPLS: dict[str, Impl] = {
    "sim": Impl(SimActuator, sim),
    "dry-run": Impl(DryRunActuator, dry_run),
    "webhook": Impl(WebhookActuator, webhook, webhook_dead),
    "nvml": Impl(NvmlActuator, nvml, nvml_dead),
    "modbus": Impl(ModbusActuator, modbus, modbus_dead, action=COOL),
    "routed": Impl(RoutedActuator, routed, routed_dead, action=COOL),
}
WORKING = [pytest.param(n, marks=pytest.mark.gpu) if n == "nvml" else n for n in IMPLS]
DEAD = [n for n, i in IMPLS.items() if i.dead is not None]


def assert_names_the_action(r: ActionResult, action: Action, action_id: str, approval_id: str) -> None:
    assert isinstance(r, ActionResult)
    assert (r.action_id, r.approval_id, r.action_kind) == (action_id, approval_id, action.kind)
    assert r.targets == tuple(action_targets(action)) and r.traceparent == TRACEPARENT


@pytest.mark.parametrize("name", WORKING)
async def test_executes_an_approved_action_and_says_so(name: str) -> None:
    assert inspect.iscoroutinefunction(IMPLS[name].cls.execute)
    async with IMPLS[name].build() as act:
        r = await act.execute(IMPLS[name].action, "act-c1", "ap-c1", TRACEPARENT)
    assert_names_the_action(r, IMPLS[name].action, "act-c1", "ap-c1")
    assert r.status == "executed", r.detail
    assert r.detail


@pytest.mark.parametrize("name", WORKING)
async def test_the_same_action_id_twice_is_one_execution(name: str) -> None:
    async with IMPLS[name].build() as act:
        first = await act.execute(IMPLS[name].action, "act-c2", "ap-c2", TRACEPARENT)
        again = await act.execute(IMPLS[name].action, "act-c2", "ap-c2", TRACEPARENT)
    assert again == first


@pytest.mark.parametrize("name", DEAD)
async def test_an_unreachable_backend_is_a_failed_result_with_its_reason(name: str) -> None:
    dead = IMPLS[name].dead
    assert dead is not None
    async with dead() as act:
        r = await act.execute(IMPLS[name].action, "act-c3", "ap-c3", TRACEPARENT)
    assert_names_the_action(r, IMPLS[name].action, "act-c3", "ap-c3")
    assert r.status == "failed" and r.detail, r


def test_every_registered_actuator_is_in_the_suite() -> None:
    assert {name: IMPLS[name].cls for name in IMPLS} == {**ACTUATORS, **FACILITY_ACTUATORS, "routed": RoutedActuator}


@pytest.mark.parametrize("name", WORKING)
async def test_states_what_approving_will_run(name: str) -> None:
    assert inspect.iscoroutinefunction(IMPLS[name].cls.effect)
    async with IMPLS[name].build() as act:
        e = await act.effect(IMPLS[name].action, "ap-c4")
    assert isinstance(e, Effect) and e.call and e.where and e.new and e.text
    assert e.current is None or not e.current.startswith("unknown"), e.current  # read, or left to the twin


@pytest.mark.parametrize("name", DEAD)
async def test_an_unreachable_backend_makes_the_value_now_unknown(name: str) -> None:
    dead = IMPLS[name].dead
    assert dead is not None
    async with dead() as act:
        e = await act.effect(IMPLS[name].action, "ap-c5")
    assert isinstance(e, Effect) and e.call and e.where
    assert e.current is None or e.current.startswith("unknown ("), e.current  # None: left to the twin
