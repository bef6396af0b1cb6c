"""Issue 18's Slurm acceptance on a real single-node Slurm (``slurm_cluster.py``), through the gateway: an approved
``drain_node`` shows in ``sinfo`` with a reason naming the approval, its undo resumes the node, and a gateway killed
(SIGKILL, a real process) after ``scontrol`` drained the node but before the result was recorded leaves the approval
``executing``; the next gateway's ``resume_executing`` calls the actuator again with the same action id and the node
is drained once: one ``scontrol update ... State=DRAIN`` in the wrapper's log, the drain's reason and Slurm's own
``user@time`` stamp unchanged; the approval ends executed with one execution audit entry and one feedback sample.

The killed gateway runs in a child process (:func:`gateway_process`): its actuator is the one ``scheduler=slurm``
builds, wrapped so that after the real call returned it says so on stdout and waits; the test kills it there."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from actors.gateway.service import GatewayService
from cluster.actuators import RoutedActuator, build_actuator
from cluster.actuators.slurm import SlurmActuator
from cluster.settings import load_settings
from cluster.telemetry.samples import ActionResult
from policies.actions import Action
from policies.policy import load_policy
from tests.actuators.slurm_cluster import NODE, SlurmCluster
from tests.actuators.test_slurm import DRAIN, MAP, calls, logging_bin, node
from tests.gateway.test_service import FakeFleet, opened, proposal, said

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]
ROOT = Path(__file__).resolve().parents[2]
#: A guard against a hung child, not a measure: the killed gateway reaches its actuator in a few seconds.
CHILD_BOUND_S = 120.0


def settings_for(slurm: SlurmCluster, tmp: Path, bin_dir: Path) -> dict[str, Any]:
    """``scheduler=slurm`` on the fixture's cluster, Slurm's commands from ``bin_dir``."""
    return {"data_dir": str(tmp), "actuator": "dry-run", "scheduler": "slurm", "slurm_conf": str(slurm.conf),
            "slurm_bin_dir": str(bin_dir), "slurm_nodes": MAP}


def sinfo(slurm: SlurmCluster, *args: str) -> str:
    """The real ``sinfo`` from the fixture's bin dir, on its ``slurm.conf``."""
    out = subprocess.run([str(slurm.bin_dir / "sinfo"), *args], env=slurm.env, capture_output=True, text=True,
                         timeout=60, check=True)
    return out.stdout.strip()


def reasons(slurm: SlurmCluster) -> list[str]:
    """``sinfo -R``: one ``node|state|reason`` line per node with a reason."""
    return sinfo(slurm, "-R", "--noheader", f"--nodes={NODE}", "--format=%N|%T|%E").splitlines()


def drains(log: Path) -> list[str]:
    return [c for c in calls(log, "update") if "State=DRAIN" in c.split()]


def feedback(r: redis.Redis, ns: str) -> list[ActionResult]:
    entries: Any = r.xrange(f"{ns}:feedback")
    return [ActionResult.model_validate_json(f[b"sample"]) for _, f in entries]


async def test_an_approved_drain_shows_in_sinfo_with_the_approval_and_its_undo_resumes_the_node(
        slurm: SlurmCluster, tmp_path: Path, redis_url: str) -> None:
    routed = build_actuator(load_settings(**settings_for(slurm, tmp_path, slurm.bin_dir)))
    assert isinstance(routed, RoutedActuator) and isinstance(routed.scheduler, SlurmActuator)
    gw = GatewayService(redis_url, "sg", load_policy(), routed, fleet=FakeFleet())
    [ap] = await opened(gw, proposal({"kind": "drain_node", "node": "n01"}))
    assert (await gw.decide(ap.approval_id, said(ap))).approval.status == "pending"  # type: ignore[union-attr]
    assert reasons(slurm) == [], "one approval of two drains nothing"
    done = await gw.decide(ap.approval_id, said(ap, by="bob"))
    assert done.approval is not None and done.approval.status == "executed", done
    reason = f"opsloop:{ap.approval_id} drain_node(node=n01)"
    assert reasons(slurm) == [f"{NODE}|drained|{reason}"]
    assert done.approval.result is not None and done.approval.result["ts"] == 50.0, "stamped with the twin's time"

    undo = await routed.scheduler.undo(DRAIN, ap.action_id, ap.approval_id, None)
    assert undo.status == "executed" and undo.detail.endswith(f"(resumed the drain of opsloop:{ap.approval_id})")
    assert reasons(slurm) == []
    assert sinfo(slurm, "--noheader", f"--nodes={NODE}", "--format=%T").startswith("idle")


# --- the gateway killed between the actuator's call and the record ---------------------------------------------
class StopsAfterTheCall:
    """The gateway's actuator, made to stop where a crash hurts most: it carries the action out for real, says so
    on stdout (``CALLED <result>``), then waits for the kill, so the result is never recorded."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def refusal(self, action: Action) -> str | None:
        return self.inner.refusal(action)  # type: ignore[no-any-return]

    def feeds_back_for(self, action: Action) -> bool:
        return self.inner.feeds_back_for(action)  # type: ignore[no-any-return]

    async def execute(self, action: Action, action_id: str, approval_id: str, traceparent: str | None) -> ActionResult:
        result: ActionResult = await self.inner.execute(action, action_id, approval_id, traceparent)
        print("CALLED " + result.model_dump_json(), flush=True)
        await asyncio.Event().wait()  # SIGKILL arrives here
        return result


async def gateway_process(spec: str) -> None:
    """The child: a gateway on the test's Redis whose actuator is ``scheduler=slurm``'s, taking the decision that
    makes the approval run."""
    args = json.loads(spec)
    actuator = StopsAfterTheCall(build_actuator(load_settings(**args["settings"])))
    gw = GatewayService(args["redis_url"], args["ns"], load_policy(), actuator, fleet=FakeFleet())
    await gw.decide(args["approval_id"], args["decision"])
    raise SystemExit("the gateway recorded the result: it was not killed")


def run_until_called(spec: dict[str, Any], tmp: Path) -> ActionResult:
    """Start :func:`gateway_process`, SIGKILL it as soon as its actuator call returned; the call's result."""
    err = (tmp / "gateway.err").open("wb")
    code = ("import asyncio, sys; from tests.actuators.test_slurm_gateway import gateway_process; "
            "asyncio.run(gateway_process(sys.argv[1]))")
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(spec)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=err, stdin=subprocess.DEVNULL)
    err.close()
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + CHILD_BOUND_S
        line = b""
        while not line.startswith(b"CALLED "):
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            line = proc.stdout.readline() if ready else b""
            if not ready or (not line and proc.poll() is not None):
                raise AssertionError("the gateway process never reached its actuator's return:\n"
                                     + (tmp / "gateway.err").read_text(errors="replace")[-3000:])
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
        return ActionResult.model_validate_json(line[len(b"CALLED "):])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()


async def test_a_gateway_killed_between_the_call_and_its_record_drains_the_node_once(
        slurm: SlurmCluster, tmp_path: Path, redis_url: str) -> None:
    bin_dir, log = logging_bin(slurm, tmp_path)
    settings = settings_for(slurm, tmp_path, bin_dir)
    first = GatewayService(redis_url, "sk", load_policy(), build_actuator(load_settings(**settings)),
                           fleet=FakeFleet())
    [ap] = await opened(first, proposal({"kind": "drain_node", "node": "n01"}, pid="pr-kill"))
    aid = ap.approval_id
    assert (await first.decide(aid, said(ap))).approval.status == "pending"  # type: ignore[union-attr]

    # The second approval, taken by a gateway process that is killed once scontrol drained the node.
    called = run_until_called({"redis_url": redis_url, "ns": "sk", "approval_id": aid,
                               "decision": said(ap, by="bob"), "settings": settings}, tmp_path)
    reason = f"opsloop:{aid} drain_node(node=n01)"
    assert called.status == "executed" and f"IDLE → IDLE+DRAIN, reason '{reason}'" in called.detail
    left = await first.get(aid)
    assert left is not None and left["status"] == "executing", "killed before the result was recorded"
    r = redis.Redis.from_url(redis_url)
    assert feedback(r, "sk") == []
    assert [e["type"] for e in await first.audit_entries(approval_id=aid)] == ["proposal", "decision", "decision"]
    drained = node(slurm)
    assert drained.drained and drained.reason == reason and drained.reason_by  # Slurm's user@time of the drain
    assert len(drains(log)) == 1
    assert reasons(slurm) == [f"{NODE}|drained|{reason}"]
    reads_before = len(calls(log, "show"))

    # A new gateway (a new actuator: nothing in memory) resumes what the killed one left executing.
    fleet = FakeFleet()
    fleet.snap = {**fleet.snap, "ts": 777.0}
    fresh = GatewayService(redis_url, "sk", load_policy(), build_actuator(load_settings(**settings)), fleet=fleet)
    assert await fresh.resume_executing() == [aid]
    assert len(calls(log, "show")) > reads_before, "the actuator was called again: it read the node"
    assert await fresh.resume_executing() == []

    assert len(drains(log)) == 1, "drained once: the retry found this approval's drain and updated nothing"
    assert node(slurm) == drained, "Slurm's own record of the drain (reason, user@time) is the first one"
    assert reasons(slurm) == [f"{NODE}|drained|{reason}"]
    done = await fresh.get(aid)
    assert done is not None and done["status"] == "executed"
    assert done["result"]["action_id"] == ap.action_id and done["result"]["ts"] == 777.0
    assert "already IDLE+DRAIN by this approval" in done["result"]["detail"]
    types = [e["type"] for e in await fresh.audit_entries(approval_id=aid)]
    assert types == ["proposal", "decision", "decision", "execution"]
    assert [(f.action_id, f.status, f.ts) for f in feedback(r, "sk")] == [(ap.action_id, "executed", 777.0)]
