"""The Slurm actuator against a real single-node Slurm (``slurm_cluster.py``: Debian's slurm-wlm and munge, started
by the fixture): a drain shows in ``scontrol show node`` tagged with its approval, a retry updates nothing, someone
else's drain is left alone, resume undoes, a running job is requeued off the avoided node, Slurm's own errors reach
the result, ``cordon_gpu`` is refused, and ``scheduler=slurm`` routes the scheduler's actions to Slurm only.

Commands are counted through a wrapper directory (``slurm_bin_dir``) whose ``scontrol`` and ``squeue`` log their
arguments and run the real ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from actors.gateway.service import GatewayService
from cluster.actuators import DryRunActuator, RoutedActuator, build_actuator
from cluster.actuators.results import BUDGET_S
from cluster.actuators.slurm import JobInfo, NodeInfo, SlurmActuator
from cluster.settings import Settings, load_settings
from policies.actions import parse_action
from policies.policy import load_policy
from tests.actuators.slurm_cluster import NODE, SlurmCluster, require_slurm
from tests.actuators.webhook_receiver import CAP
from tests.gateway.test_service import FakeFleet, opened, proposal, said

pytestmark = pytest.mark.anyio
DRAIN = parse_action({"kind": "drain_node", "node": "n01"})
MAP = {"n01": NODE}  # opsloop's n01 is Slurm's sn01


def logging_bin(slurm: SlurmCluster, tmp: Path) -> tuple[Path, Path]:
    """A bin dir whose scontrol and squeue append their arguments to a log and run the real commands."""
    bin_dir, log = tmp / "bin", tmp / "calls.log"
    bin_dir.mkdir()
    log.touch()
    for name in ("scontrol", "squeue"):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\nprintf "%s\\n" "{name} $*" >> {log}\nexec {slurm.bin_dir / name} "$@"\n')
        script.chmod(0o755)
    return bin_dir, log


def calls(log: Path, word: str = "") -> list[str]:
    return [ln for ln in log.read_text().splitlines() if word in ln.split()]


def actuator(slurm: SlurmCluster, bin_dir: Path | None = None) -> SlurmActuator:
    return SlurmActuator(MAP, bin_dir or slurm.bin_dir, slurm.conf, timeout_s=20.0)


def node(slurm: SlurmCluster) -> NodeInfo:
    return NodeInfo.parse(slurm.node())


def slurm_settings(slurm: SlurmCluster, tmp: Path, **kw: Any) -> Settings:
    return load_settings(data_dir=str(tmp), actuator="dry-run", scheduler="slurm", slurm_conf=str(slurm.conf),
                         slurm_bin_dir=str(slurm.bin_dir), slurm_nodes=MAP, **kw)


async def test_a_drain_shows_in_scontrol_tagged_with_its_approval_and_a_retry_updates_nothing(
        slurm: SlurmCluster, tmp_path: Path) -> None:
    bin_dir, log = logging_bin(slurm, tmp_path)
    act = actuator(slurm, bin_dir)
    r = await act.execute(DRAIN, "act-1", "ap-1", None)
    assert r.status == "executed", r.detail
    assert r.detail.startswith(f"{NODE} (opsloop's n01) IDLE → IDLE+DRAIN, reason 'opsloop:ap-1 drain_node(node=n01)'")
    drained = node(slurm)
    assert drained.state == "IDLE+DRAIN" and drained.reason == "opsloop:ap-1 drain_node(node=n01)"
    assert len(calls(log, "update")) == 1 and r.targets == ("n01",)
    before = len(calls(log))
    assert await act.execute(DRAIN, "act-1", "ap-1", None) == r and len(calls(log)) == before  # same action id
    # A restarted gateway (a new actuator, nothing in memory) retries the same approval: read, not updated again.
    again = await actuator(slurm, bin_dir).execute(DRAIN, "act-1", "ap-1", None)
    assert again.status == "executed" and "already IDLE+DRAIN by this approval" in again.detail
    assert len(calls(log, "update")) == 1 and node(slurm) == drained  # same reason, same user@time


async def test_a_node_drained_by_someone_else_is_left_with_their_reason(slurm: SlurmCluster) -> None:
    slurm.run("scontrol", "update", f"NodeName={NODE}", "State=DRAIN", "Reason=disk swap, ticket 42")
    theirs = node(slurm)
    act = SlurmActuator(bin_dir=slurm.bin_dir, conf=slurm.conf)  # no map: sn01 is sn01
    r = await act.execute(parse_action({"kind": "drain_node", "node": NODE}), "act-2", "ap-2", None)
    assert r.status == "executed"
    assert r.detail.startswith(f"{NODE} was already IDLE+DRAIN, drained by someone else (reason 'disk swap, ticket "
                               f"42' ({theirs.reason_by})): left as it is, their reason not overwritten")
    assert node(slurm) == theirs and theirs.reason == "disk swap, ticket 42"
    undo = await act.undo(parse_action({"kind": "drain_node", "node": NODE}), "act-2", "ap-2", None)
    assert undo.status == "failed" and "not resumed, that drain is someone else's" in undo.detail
    assert node(slurm) == theirs


async def test_resume_undoes_the_drain_of_the_same_approval_only(slurm: SlurmCluster) -> None:
    act = actuator(slurm)
    assert (await act.execute(DRAIN, "act-3", "ap-3", None)).status == "executed"
    other = await act.undo(DRAIN, "act-9", "ap-9", None)
    assert other.status == "failed" and "not by opsloop:ap-9" in other.detail and node(slurm).drained
    undo = await act.undo(DRAIN, "act-3", "ap-3", None)
    assert undo.status == "executed", undo.detail
    # (slurmctld pings the resumed node: IDLE+NOT_RESPONDING for a moment)
    assert undo.detail.startswith(f"{NODE} (opsloop's n01) IDLE+DRAIN → IDLE")
    assert undo.detail.endswith("(resumed the drain of opsloop:ap-3)")
    assert node(slurm).state.startswith("IDLE") and not node(slurm).drained
    twice = await act.undo(DRAIN, "act-3", "ap-3", None)
    assert twice.status == "executed" and "not drained: nothing to resume" in twice.detail


async def test_migrate_job_requeues_a_running_job_off_the_avoided_node(slurm: SlurmCluster, tmp_path: Path) -> None:
    job_id = slurm.submit("train-a")
    slurm.wait(lambda: JobInfo.parse(slurm.job(job_id)).state == "RUNNING", "job running")
    bin_dir, log = logging_bin(slurm, tmp_path)
    move = parse_action({"kind": "migrate_job", "job": "train-a", "avoid": ["n01/gpu0"]})
    r = await actuator(slurm, bin_dir).execute(move, "act-4", "ap-4", None)
    assert r.status == "executed", r.detail
    assert r.detail.startswith(f"job {job_id} (train-a) requeued off {NODE}: RUNNING on {NODE} → ")
    assert r.detail.endswith(f"ExcNodeList={NODE} (restarts 0 → 1)")
    assert [c.split()[1] for c in calls(log, "scontrol") if c.split()[1] in ("requeuehold", "release")] == [
        "requeuehold", "release"]
    # A retry at once (a new actuator, the job named by its id now; the job still COMPLETING, or PENDING already):
    # nothing is requeued twice.
    again = parse_action({"kind": "migrate_job", "job": job_id, "avoid": ["n01"]})
    r2 = await actuator(slurm, bin_dir).execute(again, "act-4", "ap-4", None)
    assert r2.status == "executed" and f", already excluded from {NODE}: it will not start there" in r2.detail
    assert len(calls(log, "requeuehold")) == 1
    slurm.wait(lambda: JobInfo.parse(slurm.job(job_id)).state == "PENDING", "job pending after its requeue")
    moved = JobInfo.parse(slurm.job(job_id))
    assert (moved.restarts, moved.excluded, moved.nodes) == (1, NODE, "")  # it cannot start on sn01 again
    assert moved.admin_comment == f"opsloop:ap-4 migrate_job off {NODE}"


async def test_a_retry_finishes_a_requeue_that_stopped_while_held(slurm: SlurmCluster) -> None:
    job_id = slurm.submit("train-h")
    slurm.wait(lambda: JobInfo.parse(slurm.job(job_id)).state == "RUNNING", "job running")
    # What an earlier try of ap-h left when its gateway died between the requeue and the exclusion:
    slurm.run("scontrol", "update", f"JobId={job_id}", f"AdminComment=opsloop:ap-h migrate_job off {NODE}")
    slurm.run("scontrol", "requeuehold", job_id)
    move = parse_action({"kind": "migrate_job", "job": "train-h", "avoid": ["n01"]})
    r = await actuator(slurm).execute(move, "act-h", "ap-h", None)
    assert r.status == "executed" and r.detail == (
        f"job {job_id} (train-h) requeued by this approval, now excluded from {NODE} and released")
    released = JobInfo.parse(slurm.job(job_id))
    assert released.excluded == NODE and released.reason != "job_requeued_in_held_state"
    assert "Priority=0 " not in slurm.job(job_id)  # no longer held


async def test_a_site_admin_comment_is_kept(slurm: SlurmCluster) -> None:
    job_id = slurm.submit("train-b")
    slurm.run("scontrol", "update", f"JobId={job_id}", "AdminComment=billing project 7")
    slurm.wait(lambda: JobInfo.parse(slurm.job(job_id)).state == "RUNNING", "job running")
    move = parse_action({"kind": "migrate_job", "job": job_id, "avoid": ["n01"]})
    r = await actuator(slurm).execute(move, "act-5", "ap-5", None)
    assert r.status == "executed", r.detail
    assert r.detail.endswith("its AdminComment kept as the site set it ('billing project 7')")
    assert JobInfo.parse(slurm.job(job_id)).admin_comment == "billing project 7"


async def test_slurms_own_errors_reach_the_result(slurm: SlurmCluster) -> None:
    act = actuator(slurm)
    r = await act.execute(parse_action({"kind": "drain_node", "node": "nosuch"}), "act-6", "ap-6", None)
    assert r.status == "failed" and r.detail == ("node nosuch: scontrol show node failed: Node nosuch not found")
    for job, avoid, said_ in (("no-such-job", "n01", "no job named no-such-job in Slurm's queue"),
                              ("999999", "n01", "scontrol show job failed: slurm_load_jobs error: Invalid job id"),
                              ("train-c", "nosuch", "scontrol show node failed: Node nosuch not found"),
                              ("train-c", "n01:gpu", "avoid: 'n01:gpu' is neither a node nor a GPU")):
        move = parse_action({"kind": "migrate_job", "job": job, "avoid": [avoid]})
        r = await act.execute(move, f"act-{job}-{avoid}", "ap-7", None)
        assert r.status == "failed" and said_ in r.detail, r.detail
    assert not node(slurm).drained and slurm.jobs() == []


async def test_scheduler_slurm_routes_the_schedulers_actions_to_slurm_and_the_rest_to_the_actuator(
        slurm: SlurmCluster, tmp_path: Path, redis_url: str) -> None:
    routed = build_actuator(slurm_settings(slurm, tmp_path))
    assert isinstance(routed, RoutedActuator) and isinstance(routed.base, DryRunActuator)
    assert isinstance(routed.scheduler, SlurmActuator) and routed.facility is None
    cap = await routed.execute(CAP, "act-8", "ap-8", None)
    assert cap.status == "executed" and cap.detail.startswith("dry-run:") and not node(slurm).drained
    assert routed.refusal(CAP) is None and routed.feeds_back_for(DRAIN) is False
    # Through the gateway: nothing before approval; the two approvals drain with the gateway's approval id.
    gw = GatewayService(redis_url, "sl", load_policy(), routed, fleet=FakeFleet())
    [ap] = await opened(gw, proposal({"kind": "drain_node", "node": "n01"}))
    assert ap.status == "pending" and not node(slurm).drained
    await gw.decide(ap.approval_id, said(ap))
    done = await gw.decide(ap.approval_id, said(ap, by="bob"))
    assert done.approval is not None and done.approval.status == "executed", done
    assert node(slurm).reason == f"opsloop:{ap.approval_id} drain_node(node=n01)"
    # scheduler=none: today's behaviour, the actuator takes drain_node too.
    plain = build_actuator(load_settings(data_dir=str(tmp_path), actuator="dry-run"))
    assert isinstance(plain, DryRunActuator)


def test_one_backend_per_kind_of_target() -> None:
    base, plant, scheduler = DryRunActuator(), DryRunActuator(), DryRunActuator()
    routed = RoutedActuator(base, plant, scheduler=scheduler)
    kinds = {"set_cooling_setpoint": plant, "set_fan_speed": plant, "drain_node": scheduler,
             "cordon_gpu": scheduler, "migrate_job": scheduler, "set_power_limit": base, "reset_gpu": base,
             "disable_link": base, "notify": base, "open_ticket": base}
    examples: dict[str, dict[str, Any]] = {"set_cooling_setpoint": {"unit": "cu01", "supply_c": 20},
                "set_fan_speed": {"unit": "cu01", "percent": 50}, "drain_node": {"node": "n01"},
                "cordon_gpu": {"gpu": "n01/gpu0"},
                "migrate_job": {"job": "j", "avoid": ["n01"]}, "set_power_limit": {"gpu": "n01/gpu0", "watts": 300},
                "reset_gpu": {"gpu": "n01/gpu0"}, "disable_link": {"link": "ib0"}, "notify": {"message": "m"},
                "open_ticket": {"summary": "s", "severity": "low"}}
    for kind, route in kinds.items():
        assert routed.route(parse_action({"kind": kind, **examples[kind]})) is route, kind
    only_scheduler = RoutedActuator(base, scheduler=scheduler)
    assert only_scheduler.route(parse_action({"kind": "set_fan_speed", "unit": "cu01", "percent": 50})) is base
    with pytest.raises(ValueError, match="two actuators for drain_node"):
        RoutedActuator(base, plant, kinds={"drain_node"}, scheduler=scheduler)


async def test_cordon_gpu_is_refused_before_anything_runs(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    (tmp_path / "bin").mkdir()
    for name in ("scontrol", "squeue"):
        (tmp_path / "bin" / name).write_text(f"#!/bin/sh\necho \"$*\" >> {log}\nexit 1\n")
        (tmp_path / "bin" / name).chmod(0o755)
    act = SlurmActuator(MAP, tmp_path / "bin")
    cordon = parse_action({"kind": "cordon_gpu", "gpu": "n01/gpu3"})
    why = ("cordon_gpu is not supported by Slurm: it has no per-GPU drain, and draining the whole node would be a "
           "larger action than the one approved; propose drain_node n01 instead")
    assert act.refusal(cordon) == why and RoutedActuator(DryRunActuator(), scheduler=act).refusal(cordon) == why
    r = await RoutedActuator(DryRunActuator(), scheduler=act).execute(cordon, "act-10", "ap-10", None)
    assert (r.status, r.detail) == ("failed", why) and not log.exists()  # never the dry-run, never a command
    assert "not a scheduler action" in str(act.refusal(CAP))


async def test_the_gateway_refuses_what_no_actuator_can_carry_out_before_approval(tmp_path: Path,
                                                                                  redis_url: str) -> None:
    """A cordon_gpu with Slurm as the scheduler opens no approval (nobody is asked to approve what cannot run, and it
    never runs elsewhere); the proposal's other actions open as usual; the refusal is audited once."""
    log = tmp_path / "calls.log"
    (tmp_path / "bin").mkdir()
    for name in ("scontrol", "squeue"):
        (tmp_path / "bin" / name).write_text(f"#!/bin/sh\necho \"$*\" >> {log}\nexit 1\n")
        (tmp_path / "bin" / name).chmod(0o755)
    routed = RoutedActuator(DryRunActuator(), scheduler=SlurmActuator(MAP, tmp_path / "bin"))
    gw = GatewayService(redis_url, "slr", load_policy(), routed, fleet=FakeFleet())
    p = proposal({"kind": "cordon_gpu", "gpu": "n01/gpu3"},
                 {"kind": "open_ticket", "summary": "xid on n01/gpu3", "severity": "medium"})
    for _ in range(2):  # a resubmitted proposal is refused again, audited once
        refused, ticket = await gw.submit(p)
        assert refused.refusal is not None and refused.refusal.code == "invalid"
        assert refused.refusal.message.startswith("cordon_gpu(gpu=n01/gpu3) refused before approval: cordon_gpu is "
                                                  "not supported by Slurm")
        assert ticket.approval is not None and ticket.approval.action.kind == "open_ticket"
    assert [a["action"]["kind"] for a in await gw.list()] == ["open_ticket"] and not log.exists()
    audit = [e for e in await gw.audit_entries(incident_id="inc-pr-1")
             if e.get("payload", {}).get("status") == "refused"]
    assert len(audit) == 1 and audit[0]["payload"]["actions"][0]["kind"] == "cordon_gpu"


async def test_a_command_that_hangs_or_fails_is_a_failed_result(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    hang, fail = tmp_path / "bin" / "scontrol", tmp_path / "bin" / "squeue"
    hang.write_text("#!/bin/sh\nexec sleep 30\n")
    fail.write_text("#!/bin/sh\necho 'squeue: error: Unable to contact slurm controller' >&2\nexit 1\n")
    hang.chmod(0o755)
    fail.chmod(0o755)
    act = SlurmActuator(MAP, tmp_path / "bin", timeout_s=0.2)
    r = await act.execute(DRAIN, "act-11", "ap-11", None)
    assert r.status == "failed" and r.detail == (
        f"node {NODE} (opsloop's n01): scontrol show gave no answer within 0.2 s (is slurmctld up?)")
    move = parse_action({"kind": "migrate_job", "job": "train", "avoid": ["n01"]})
    hang.write_text("#!/bin/sh\nexit 0\n")  # the avoided node exists; the job lookup fails
    r = await act.execute(move, "act-12", "ap-12", None)
    assert r.status == "failed" and r.detail == (
        "jobs named train: squeue --noheader --name=train failed: squeue: error: Unable to contact slurm controller")
    assert BUDGET_S < 30  # under the gateway's bound on one execution


def test_build_actuator_checks_the_slurm_commands_and_conf(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"scheduler slurm needs scontrol: not found in slurm_bin_dir {tmp_path}"):
        build_actuator(load_settings(data_dir=str(tmp_path), actuator="dry-run", scheduler="slurm",
                                     slurm_bin_dir=str(tmp_path)))
    for name in ("scontrol", "squeue"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    with pytest.raises(ValueError, match="slurm_conf .*nowhere.conf is not a file"):
        build_actuator(load_settings(data_dir=str(tmp_path), actuator="dry-run", scheduler="slurm",
                                     slurm_bin_dir=str(tmp_path), slurm_conf=str(tmp_path / "nowhere.conf")))
    with pytest.raises(ValueError, match="slurm_nodes"):
        load_settings(data_dir=str(tmp_path), slurm_nodes=json.dumps({"n01": "a b"}))


def test_a_missing_slurm_skips_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPSLOOP_TEST_SLURM_PATH", str(tmp_path))  # Slurm stays installed, looked for elsewhere
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"required component missing: Slurm \(slurm-wlm.*no slurmctld, "
                       r"slurmd, scontrol, squeue, sinfo, sbatch, scancel in .*; apt-get install slurm-wlm"):
        require_slurm()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"^CI=true: required component missing: Slurm \(slurm-wlm"):
        require_slurm()


def test_scontrols_lines_are_read_field_by_field() -> None:
    line = ("NodeName=dgx01 Arch=x86_64 CPUTot=2 OS=Linux 6.1 #1 SMP State=MIXED+DRAIN ThreadsPerCore=1 "
            "Reason=opsloop:ap-1 drain_node(node=DGX-01) [root@2026-01-05T10:00:00]")
    n = NodeInfo.parse(line)
    assert (n.name, n.state, n.reason, n.reason_by) == (
        "dgx01", "MIXED+DRAIN", "opsloop:ap-1 drain_node(node=DGX-01)", "root@2026-01-05T10:00:00")
    assert n.drained and n.tagged("ap-1") and not n.tagged("ap-12")
    bare = NodeInfo.parse("NodeName=dgx02 State=DOWN+NOT_RESPONDING Reason=Not responding")
    assert (bare.reason, bare.reason_by, bare.drained) == ("Not responding", "", False)
    job = JobInfo.parse("JobId=12 JobName=train JobState=RUNNING Reason=None Requeue=1 Restarts=2 "
                        "ReqNodeList=(null) ExcNodeList=n[03-04] NodeList=n[01-02] AdminComment=opsloop:ap-3 "
                        "migrate_job off n01 StdErr=/dev/null")
    assert (job.job_id, job.state, job.nodes, job.excluded, job.restarts, job.admin_comment) == (
        "12", "RUNNING", "n[01-02]", "n[03-04]", 2, "opsloop:ap-3 migrate_job off n01")
