"""Undo of a drain on a real single-node Slurm (``slurm_cluster.py``), through the gateway: the executed drain records
``resume_node`` of itself as its inverse; the operator's undo opens it as a new approval (one approver by the default
policy), whose card states the ``State=RESUME`` command; approved, the node is resumed. A drain that someone else
took over is not lifted by the undo."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.gateway.service import GatewayService
from cluster.actuators import build_actuator
from cluster.settings import load_settings
from policies.actions import parse_action
from policies.policy import load_policy
from tests.actuators.slurm_cluster import NODE, SlurmCluster
from tests.actuators.test_slurm import node
from tests.actuators.test_slurm_gateway import reasons, settings_for, sinfo
from tests.gateway.test_service import FakeFleet, opened, proposal, said

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]


async def drained(gw: GatewayService, pid: str) -> str:
    """A drain of n01 (Slurm's sn01) approved by two and executed; its approval id."""
    [ap] = await opened(gw, proposal({"kind": "drain_node", "node": "n01"}, pid=pid))
    await gw.decide(ap.approval_id, said(ap))
    done = (await gw.decide(ap.approval_id, said(ap, by="bob"))).approval
    assert done is not None and done.status == "executed", done
    assert done.inverse == parse_action({"kind": "resume_node", "node": "n01", "drained_by": ap.approval_id})
    return ap.approval_id


async def test_a_drains_undo_is_approved_and_the_node_is_resumed(slurm: SlurmCluster, tmp_path: Path,
                                                                  redis_url: str) -> None:
    routed = build_actuator(load_settings(**settings_for(slurm, tmp_path, slurm.bin_dir)))
    gw = GatewayService(redis_url, "su", load_policy(), routed, fleet=FakeFleet())
    aid = await drained(gw, "pr-su1")
    assert reasons(slurm) == [f"{NODE}|drained|opsloop:{aid} drain_node(node=n01)"]

    undo = (await gw.undo(aid, "carol", "http", "the fan was replaced")).approval
    assert undo is not None and (undo.status, undo.required, undo.undo_of) == ("pending", 1, aid), undo
    assert undo.effect is not None and undo.effect.call.endswith(f"scontrol update NodeName={NODE} State=RESUME")
    assert undo.effect.current is not None and undo.effect.current.startswith(f"{NODE} (opsloop's n01) IDLE+DRAIN")
    assert node(slurm).drained, "proposing the undo resumed the node"
    resumed = (await gw.decide(undo.approval_id, said(undo, by="alice"))).approval
    assert resumed is not None and resumed.status == "executed", resumed
    assert resumed.result is not None and resumed.result["detail"].endswith(f"(resumed the drain of opsloop:{aid})")
    assert reasons(slurm) == [] and not node(slurm).drained
    assert sinfo(slurm, "--noheader", f"--nodes={NODE}", "--format=%T").startswith("idle")


async def test_an_undo_does_not_lift_a_drain_someone_else_took_over(slurm: SlurmCluster, tmp_path: Path,
                                                                   redis_url: str) -> None:
    routed = build_actuator(load_settings(**settings_for(slurm, tmp_path, slurm.bin_dir)))
    gw = GatewayService(redis_url, "sv", load_policy(), routed, fleet=FakeFleet())
    aid = await drained(gw, "pr-sv1")
    slurm.run("scontrol", "update", f"NodeName={NODE}", "Reason=disk swap, ticket 42")  # a site admin's now
    undo = (await gw.undo(aid, "carol")).approval
    assert undo is not None and undo.effect is not None and undo.effect.call.startswith(
        f"nothing: {NODE} (opsloop's n01) is drained by someone else, not opsloop:{aid}")
    failed = (await gw.decide(undo.approval_id, said(undo, by="alice"))).approval
    assert failed is not None and failed.status == "failed" and "that drain is someone else's" in str(failed.result)
    assert node(slurm).drained and node(slurm).reason == "disk swap, ticket 42"
