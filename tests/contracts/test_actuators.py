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
Modbus TCP server (it, and the router that sends it the plant's actions, are tried with a setpoint), the Redfish
facility actuator's a local Redfish service that applies PATCH over the CDU mockup
(``tests/actuators/redfish_server.py``: no packaged one does); NVML needs
an NVIDIA GPU (and root to set a power limit): its "executes" cases are marked ``gpu``, and without a GPU NVML is
this host's unreachable backend. Jira, ServiceNow and PagerDuty are local HTTPS fakes of their APIs
(``tests/actuators/ticket_fakes.py``), tried with ``open_ticket`` and ``notify``. The Kubernetes actuator runs
against a local stub of the Kubernetes API (``tests/actuators/k8s_api.py``: no API server can be installed here),
tried with ``drain_node``.
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from actors.gateway.effects import Effect
from actors.twin.physics import Topology
from cluster.actuators import (
    ACTUATORS,
    FACILITY_ACTUATORS,
    PAGING_ACTUATORS,
    SCHEDULER_ACTUATORS,
    TICKET_ACTUATORS,
    DryRunActuator,
    JiraTickets,
    KubernetesActuator,
    ModbusActuator,
    NvmlActuator,
    PagerDutyPaging,
    RedfishFacilityActuator,
    RoutedActuator,
    ServiceNowTickets,
    SimActuator,
    WebhookActuator,
)
from cluster.actuators.http_retry import RetryPolicy
from cluster.actuators.kubernetes import configure
from cluster.modbus_map import ModbusUnit
from cluster.telemetry.nvml import NvmlUnavailable, init
from cluster.telemetry.samples import ActionResult
from cluster.telemetry.sim import Simulator, SimulatorService
from policies.actions import Action, action_targets, parse_action
from tests.actuators.k8s_api import KubeApiStub, write_kubeconfig
from tests.actuators.modbus_server import ModbusPlant, plant_map
from tests.actuators.redfish_server import PatchableRedfish
from tests.actuators.ticket_fakes import FakeJira, FakePagerDuty, FakeServiceNow, TestCA, basic
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


CDU_MOCKUP = Path(__file__).resolve().parents[1] / "fixtures" / "redfish" / "cdu"


@asynccontextmanager
async def redfish() -> AsyncIterator[Any]:
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(CDU_MOCKUP, Path(tmp) / "cdu")
        with PatchableRedfish(Path(tmp) / "cdu") as svc:
            act = RedfishFacilityActuator([f"cu01={svc.url}"], timeout_s=2.0, retry_after_s=0.01)
            yield act
            await act.aclose()


@asynccontextmanager
async def redfish_dead() -> AsyncIterator[Any]:
    act = RedfishFacilityActuator([f"cu01=http://127.0.0.1:{free_port()}"], timeout_s=2.0, retry_after_s=0.01)
    yield act
    await act.aclose()


@asynccontextmanager
async def routed() -> AsyncIterator[Any]:
    async with modbus() as facility:
        yield RoutedActuator(DryRunActuator(), facility)


@asynccontextmanager
async def routed_dead() -> AsyncIterator[Any]:
    async with modbus_dead() as facility:
        yield RoutedActuator(DryRunActuator(), facility)


#: What the ticket and paging actuators are tried with.
TICKET = parse_action({"kind": "open_ticket", "summary": "cu01 supply drifting", "severity": "medium"})
PAGE = parse_action({"kind": "notify", "message": "cu01 supply drifting"})
QUICK = RetryPolicy(attempts=2, initial_s=0.01, max_s=0.01)


@asynccontextmanager
async def jira() -> AsyncIterator[Any]:
    with TestCA() as ca, FakeJira(ca, basic("ops", "tok")) as fake:
        yield JiraTickets(fake.url, "OPS", "tok", "ops", timeout_s=5.0, ca_file=ca.file)


@asynccontextmanager
async def jira_dead() -> AsyncIterator[Any]:
    yield JiraTickets(f"https://127.0.0.1:{free_port()}", "OPS", "tok", "ops", timeout_s=2.0, retry=QUICK)


@asynccontextmanager
async def servicenow() -> AsyncIterator[Any]:
    with TestCA() as ca, FakeServiceNow(ca, "ops", "pw") as fake:
        yield ServiceNowTickets(fake.url, "ops", "pw", timeout_s=5.0, ca_file=ca.file)


@asynccontextmanager
async def servicenow_dead() -> AsyncIterator[Any]:
    yield ServiceNowTickets(f"https://127.0.0.1:{free_port()}", "ops", "pw", timeout_s=2.0, retry=QUICK)


@asynccontextmanager
async def pagerduty() -> AsyncIterator[Any]:
    with TestCA() as ca, FakePagerDuty(ca, "rk") as fake:
        yield PagerDutyPaging("rk", fake.url, timeout_s=5.0, ca_file=ca.file)


@asynccontextmanager
async def pagerduty_dead() -> AsyncIterator[Any]:
    yield PagerDutyPaging("rk", f"https://127.0.0.1:{free_port()}", timeout_s=2.0, retry=QUICK)


#: What a scheduler actuator is tried with.
DRAIN = parse_action({"kind": "drain_node", "node": "n01"})


@asynccontextmanager
async def kubernetes() -> AsyncIterator[Any]:
    """A local stub of the Kubernetes API (no API server can be installed here: tests/actuators/k8s_api.py)."""
    with KubeApiStub() as api, tempfile.TemporaryDirectory() as tmp:
        api.add_node("n01")
        api.add_pod("default", "web-1", "n01")
        yield KubernetesActuator(configure(api.kubeconfig(Path(tmp) / "kubeconfig")), timeout_s=5.0)


@asynccontextmanager
async def kubernetes_dead() -> AsyncIterator[Any]:
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = write_kubeconfig(Path(tmp) / "kubeconfig", f"http://127.0.0.1:{free_port()}")
        yield KubernetesActuator(configure(kubeconfig), timeout_s=2.0)


#: Every actuator of the ACTUATORS, FACILITY_ACTUATORS, TICKET_ACTUATORS and PAGING_ACTUATORS registries, by its
#: name there, the Kubernetes scheduler actuator, and the router. (The Slurm one runs on a real Slurm, started by
#: tests/actuators/conftest.py: tests/actuators/test_slurm.py.)
IMPLS: dict[str, Impl] = {
    "sim": Impl(SimActuator, sim),
    "dry-run": Impl(DryRunActuator, dry_run),
    "webhook": Impl(WebhookActuator, webhook, webhook_dead),
    "nvml": Impl(NvmlActuator, nvml, nvml_dead),
    "modbus": Impl(ModbusActuator, modbus, modbus_dead, action=COOL),
    "redfish": Impl(RedfishFacilityActuator, redfish, redfish_dead, action=COOL),
    "routed": Impl(RoutedActuator, routed, routed_dead, action=COOL),
    "jira": Impl(JiraTickets, jira, jira_dead, action=TICKET),
    "servicenow": Impl(ServiceNowTickets, servicenow, servicenow_dead, action=TICKET),
    "pagerduty": Impl(PagerDutyPaging, pagerduty, pagerduty_dead, action=PAGE),
    "kubernetes": Impl(KubernetesActuator, kubernetes, kubernetes_dead, action=DRAIN),
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
    assert {name: IMPLS[name].cls for name in IMPLS} == {**ACTUATORS, **FACILITY_ACTUATORS, **TICKET_ACTUATORS,
                                                         **PAGING_ACTUATORS, "routed": RoutedActuator,
                                                         "kubernetes": SCHEDULER_ACTUATORS["kubernetes"]}


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
