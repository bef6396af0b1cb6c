"""One incident is one OpenTelemetry trace across the twin, agent and gateway processes on a real local Ray.

Ray runs ``cluster.tracing:ray_tracing_hook`` in every process (``_tracing_startup_hook``); the trace crosses
processes in the messages' ``traceparent``. The scenario is the one of ``opsloop twin simulate --fault
cooling_degradation@20:n01=0.5``, run live by the simulator actor rather than replayed from a file: an approved
action must change the physics for its outcome to be observed.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.agent.service import AgentService
from actors.gateway.service import GatewayService
from actors.remote import RemotePort
from actors.tracing import STAGES, incident_timeline
from actors.twin.physics import Topology
from actors.twin.service import TwinService
from cluster.actuators import SimActuator
from cluster.actuators.feedback import FeedbackSource, MergedSource
from cluster.agent_llm import ChatCompleter
from cluster.settings import Settings
from cluster.sources import SimSource
from cluster.telemetry.sim import Fault, Simulator, SimulatorService
from cluster.tracing import HOOK, ray_env
from knowledge.retrieval import KnowledgeBase
from policies.policy import load_policy
from serving.llm import NoModel
from tests.helpers import wait_for

pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]
NS = "trace"



@pytest.fixture
def traced_ray(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[dict, Path]]:
    import ray

    settings = Settings(data_dir=tmp_path / "data", redis_url=redis_url, namespace=NS, tracing=True)
    monkeypatch.setenv("OPSLOOP_DATA_DIR", str(settings.data_dir))  # the driver runs the hook too
    ray_tmp = tempfile.mkdtemp(prefix="olp-tr-", dir="/tmp")
    ray.init(address="local", num_cpus=4, include_dashboard=False, _temp_dir=ray_tmp, namespace=NS,
             log_to_driver=False, _tracing_startup_hook=HOOK, runtime_env={"env_vars": ray_env(settings)})
    opts = {"num_cpus": 0, "namespace": NS}
    sim = ray.remote(SimulatorService).options(name="simulator", **opts).remote(
        Simulator(Topology.build(2, 4), faults=[Fault.parse("cooling_degradation@20:n01=0.5")]), 20.0, redis_url,
        f"{NS}:sim",
    )
    twin = ray.remote(TwinService).options(name="twin", **opts).remote(
        MergedSource(SimSource(RemotePort(sim)), FeedbackSource(redis_url, NS)), redis_url, NS)
    gateway = ray.remote(GatewayService).options(name="gateway", **opts).remote(
        redis_url, NS, load_policy(), SimActuator(RemotePort(sim)), fleet=RemotePort(twin))
    # The llm=none template model streams its prompt back: a real streamed model call (the agent then falls
    # back to the runbook mapping, as it does for any answer that fails verification).
    agent = ray.remote(AgentService).options(name="agent", **opts).remote(
        redis_url, NS, functools.partial(KnowledgeBase.bundled, dense=False), RemotePort(gateway), RemotePort(twin),
        llm=ChatCompleter(NoModel()))
    handles = {"simulator": sim, "twin": twin, "gateway": gateway, "agent": agent}
    ray.get([twin.status.remote(), gateway.counts.remote(), agent.status.remote()], timeout=120)
    for name in ("twin", "agent", "gateway"):
        handles[name].run.remote()
    try:
        yield handles, settings.data_dir / "traces"
    finally:
        for name in ("twin", "agent", "gateway"):
            try:
                ray.get(handles[name].stop.remote(), timeout=5)
            except Exception:  # noqa: BLE001 - going down anyway
                pass
        ray.shutdown()
        # Ray keeps tracing switched on in this process after shutdown: a later cluster started by another test
        # without the hook would wrap its tasks for a tracer its workers never set up ('NoneType' … 'trace').
        from ray.util.tracing import tracing_helper

        tracing_helper._global_is_tracing_enabled = False
        import shutil

        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_one_incident_one_trace_across_processes(traced_ray: tuple[dict, Path]) -> None:
    import ray

    handles, spans_dir = traced_ray
    gw = handles["gateway"]

    def pending() -> list[dict]:
        return [a for a in ray.get(gw.list.remote("pending"), timeout=30)
                if a["action"]["kind"] == "set_cooling_setpoint"]

    [ap] = wait_for(pending, 240.0)
    ray.get(gw.create_user.remote("alice", "approver", "test"), timeout=30)
    out = ray.get(gw.decide.remote(ap["approval_id"], {"decision": "approve", "by": "alice", "role": "approver",
                                                         "channel": "http", "action_hash": ap["action_hash"],
                                                         "reason": "lower the supply"}), timeout=60)
    assert out.approval is not None and out.approval.status == "executed", out

    def observed() -> list[dict] | None:
        spans = incident_timeline(spans_dir, ap["incident_id"])
        return spans if any(s["stage"] == "outcome" for s in spans) else None

    spans = wait_for(observed, 240.0)
    assert len({s["trace_id"] for s in spans}) == 1, "one incident, one trace"
    first: dict[str, dict] = {}
    for s in spans:
        first.setdefault(s["stage"], s)
    assert list(first) == [st for st in STAGES if st in first] and set(first) == set(STAGES), list(first)
    starts = [first[st]["start_ns"] for st in STAGES]
    assert starts == sorted(starts)
    pids = {s["process"]["pid"] for s in spans}
    roles = {s["process"]["name"] for s in spans}
    assert len(pids) >= 3 and {"twin", "agent", "gateway"} <= roles, (pids, roles)
    by_role = {first[st]["process"]["name"] for st in ("sample", "incident", "approval")}
    assert by_role == {"twin", "agent", "gateway"}
    print(f"\ntrace {spans[0]['trace_id']}: {len(spans)} spans in {len(pids)} processes: "
          + " → ".join(f"{st}({first[st]['process']['name']})" for st in STAGES))
