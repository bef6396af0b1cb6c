"""Actuators: where approved actions take effect. Each implements ``actors.gateway.service.Actuator``:
``async execute(action, action_id, approval_id, traceparent) -> ActionResult``, idempotent by ``action_id``,
failures as ``ActionResult(status="failed")``.

``sim`` acts on the simulated fleet, ``nvml`` sets power limits and resets GPUs through NVML (on a Ray cluster in
the actuator on the target's node: ``node.py``), ``webhook`` POSTs the action to a URL, ``dry-run`` does nothing and
says so. A facility actuator (setting ``facility``: ``modbus`` writes a
cooling plant's registers, ``redfish`` PATCHes its CDUs' ``CoolingUnit`` controls) takes the cooling plant's actions,
and a scheduler actuator (setting ``scheduler``:
``slurm`` drains nodes and requeues jobs through ``scontrol``, ``kubernetes`` cordons nodes and evicts pods through
the API server) the workload manager's, a ticket actuator (setting
``tickets``: ``jira``, ``servicenow``) ``open_ticket`` and a paging actuator (setting ``paging``: ``pagerduty``)
``notify``, routed beside the base one (``routing.py``). ``build_actuator`` composes them from settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors.gateway.effects import Effect, new_value
from cluster.actuators.http_retry import RetryPolicy
from cluster.actuators.kubernetes import KubernetesActuator
from cluster.actuators.modbus import ModbusActuator
from cluster.actuators.node import NodeActuator, NodeActuators
from cluster.actuators.nvml import NvmlActuator
from cluster.actuators.paging import PagerDutyPaging
from cluster.actuators.redfish import RedfishFacilityActuator
from cluster.actuators.results import action_result
from cluster.actuators.routing import RoutedActuator
from cluster.actuators.slurm import SlurmActuator
from cluster.actuators.tickets import JiraTickets, ServiceNowTickets
from cluster.actuators.webhook import WebhookActuator
from cluster.telemetry.samples import ActionResult
from policies.actions import Action, describe

if TYPE_CHECKING:
    from cluster.settings import Settings


class SimActuator:
    """Executes on the simulator (a Ray actor handle or a ``SimulatorService`` wrapped as a port)."""

    #: The simulator reports results as telemetry itself; the gateway need not publish them.
    feeds_back = True

    def __init__(self, simulator: Any) -> None:
        self.simulator = simulator

    async def execute(self, action: Action, action_id: str, approval_id: str, traceparent: str | None) -> ActionResult:
        """Apply on the simulator (which is idempotent by ``action_id``)."""
        raw = await self.simulator.apply(action.model_dump(mode="json"), action_id, approval_id, traceparent)
        return ActionResult.model_validate(raw)

    async def effect(self, action: Action, approval_id: str) -> Effect:
        """``apply`` on the simulator; the value now is the twin's (the gateway fills it in)."""
        changes = action.kind in SIM_CHANGES
        return Effect(call=f"apply {describe(action)}", where="the simulator (a simulated fleet: nothing real changes)",
                      new=new_value(action) if changes else "unchanged: the simulator records it and changes nothing")


class DryRunActuator:
    """Executes nothing and says so: for trying policies against a live fleet safely."""

    async def execute(self, action: Action, action_id: str, approval_id: str, traceparent: str | None) -> ActionResult:
        """Report what would have run."""
        return action_result(action, action_id, approval_id, "executed", f"dry-run: {describe(action)}", traceparent)

    async def effect(self, action: Action, approval_id: str) -> Effect:
        """Nothing runs; the value now is the twin's (the gateway fills it in)."""
        return Effect(call=f"nothing: dry-run records {describe(action)} and sends it nowhere",
                      where="no backend (actuator dry-run)", new="unchanged (dry-run)")


#: The kinds the simulator acts on (``cluster.telemetry.sim.Simulator.apply``); it records the others only.
SIM_CHANGES = frozenset({"set_cooling_setpoint", "set_fan_speed", "set_power_limit", "cordon_gpu", "reset_gpu",
                         "drain_node"})


ACTUATORS = {"sim": SimActuator, "dry-run": DryRunActuator, "nvml": NvmlActuator, "webhook": WebhookActuator}
#: Facility actuators by the ``facility`` setting's name: the cooling plant's actions go to them.
FACILITY_ACTUATORS: dict[str, Any] = {"modbus": ModbusActuator, "redfish": RedfishFacilityActuator}
#: Scheduler actuators by the ``scheduler`` setting's name: drain_node, cordon_gpu and migrate_job go to them.
SCHEDULER_ACTUATORS: dict[str, Any] = {"slurm": SlurmActuator, "kubernetes": KubernetesActuator}
#: Ticket actuators by the ``tickets`` setting's name: open_ticket goes to them.
TICKET_ACTUATORS: dict[str, Any] = {"jira": JiraTickets, "servicenow": ServiceNowTickets}
#: Paging actuators by the ``paging`` setting's name: notify goes to them.
PAGING_ACTUATORS: dict[str, Any] = {"pagerduty": PagerDutyPaging}


def build_actuator(settings: Settings, simulator: Any = None, nodes: Any = None) -> Any:
    """The actuator ``settings.actuator`` names (``simulator`` is the port the ``sim`` one acts on), behind a
    :class:`RoutedActuator` that sends the cooling plant's actions to the facility actuator when ``facility`` names
    one, the workload manager's to the scheduler actuator when ``scheduler`` names one (``none``: the base
    actuator takes those actions), and the node-local ones to ``nodes`` when given (the :class:`NodeActuators` of
    :func:`~cluster.actuators.node.start_node_actuators`, with ``actuator=nvml`` on a Ray cluster); ``open_ticket``
    goes to the ticket actuator ``tickets`` names and ``notify`` to the paging one ``paging`` names (``none``: the
    base actuator).

    Raises:
        ValueError: ``webhook`` without ``webhook_url``, ``sim`` without a simulator, or ``scheduler=slurm``
            without ``scontrol``/``squeue`` or with a ``slurm_conf`` that is not a file, ``scheduler=kubernetes``
            without its client (``opsloop[kubernetes]``) or a configuration that loads; ``tickets`` or ``paging``
            without their URL, project or credentials, or without their package (``opsloop[tickets]``,
            ``opsloop[paging]``).
    """
    base = _base_actuator(settings, simulator)
    facility = FACILITY_ACTUATORS[settings.facility].from_settings(settings) if settings.facility != "none" else None
    scheduler = (SCHEDULER_ACTUATORS[settings.scheduler].from_settings(settings)
                 if settings.scheduler != "none" else None)
    tickets = TICKET_ACTUATORS[settings.tickets].from_settings(settings) if settings.tickets != "none" else None
    paging = PAGING_ACTUATORS[settings.paging].from_settings(settings) if settings.paging != "none" else None
    if facility is None and scheduler is None and nodes is None and tickets is None and paging is None:
        return base
    return RoutedActuator(base, facility, scheduler=scheduler, nodes=nodes, tickets=tickets, paging=paging)


def _base_actuator(settings: Settings, simulator: Any) -> Any:
    if settings.actuator == "sim":
        if simulator is None:
            raise ValueError("actuator sim needs the simulator")
        return SimActuator(simulator)
    if settings.actuator == "webhook":
        if not settings.webhook_url:
            raise ValueError("actuator webhook needs webhook_url (OPSLOOP_WEBHOOK_URL)")
        return WebhookActuator(settings.webhook_url, settings.webhook_timeout_s, token=settings.webhook_token,
                               retry=RetryPolicy.from_settings(settings))
    return ACTUATORS[settings.actuator]()


__all__ = ["ACTUATORS", "FACILITY_ACTUATORS", "PAGING_ACTUATORS", "SCHEDULER_ACTUATORS", "TICKET_ACTUATORS",
           "DryRunActuator", "JiraTickets", "ModbusActuator", "NodeActuator", "NodeActuators", "NvmlActuator",
           "PagerDutyPaging", "RedfishFacilityActuator", "RoutedActuator", "ServiceNowTickets", "SimActuator",
           "SlurmActuator", "WebhookActuator", "build_actuator"]
