"""Each actuator states what approving an action will run before it runs (issue #18 item 7): the exact call, where,
the value now (read from the backend itself where it can be read cheaply) and the new one. Against the real parts:
pymodbus's server (``modbus_server.py``), a real single-node Slurm (``slurm_cluster.py``), a webhook receiver on
127.0.0.1; NVML through the stub of the calls the NVML actuator makes (no GPU here). The stated call is checked
against what the execution then really sent."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from actors.gateway.service import GatewayService
from cluster.actuators import DryRunActuator, RoutedActuator, SimActuator
from cluster.actuators.nvml import NvmlActuator
from cluster.actuators.slurm import EFFECT_S, JobInfo, SlurmActuator
from cluster.actuators.webhook import WebhookActuator
from cluster.masking import MASK
from policies.actions import parse_action
from policies.policy import load_policy
from tests.actuators.modbus_server import SETPOINT, ModbusPlant, plant_map
from tests.actuators.nvml_stub import StubGpu, StubNvml
from tests.actuators.slurm_cluster import NODE, SlurmCluster
from tests.actuators.test_modbus import COOL, actuator
from tests.actuators.test_slurm import DRAIN, MAP, calls, logging_bin
from tests.actuators.webhook_receiver import CAP, WebhookReceiver
from tests.gateway.test_service import FakeFleet, opened, proposal, said
from tests.helpers import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]
NOTIFY = parse_action({"kind": "notify", "message": "heads up"})


# --- the simulator, dry-run and the webhook: the value now is the twin's (the gateway fills it in) --------------
async def test_sim_and_dry_run_say_what_they_do_and_leave_the_value_now_to_the_twin() -> None:
    sim = await SimActuator(simulator=None).effect(parse_action(COOL), "ap-1")
    assert (sim.call, sim.current) == ("apply set_cooling_setpoint(unit=cu01, supply_c=21.0)", None)
    assert sim.where.startswith("the simulator") and sim.new == "cu01 supply setpoint 21.0 °C"
    assert (await SimActuator(None).effect(NOTIFY, "ap-1")).new.startswith("unchanged: the simulator records it")
    dry = await DryRunActuator().effect(CAP, "ap-1")
    assert dry.call == "nothing: dry-run records set_power_limit(gpu=n01/gpu0, watts=400.0) and sends it nowhere"
    assert (dry.new, dry.current) == ("unchanged (dry-run)", None)


async def test_the_webhook_states_the_post_it_sends_with_no_secret_in_it(receiver: WebhookReceiver) -> None:
    hidden = WebhookActuator("http://ops:s3cret@127.0.0.1:9/hook?token=abc123")
    said_ = await hidden.effect(CAP, "ap-w")
    assert said_.call.startswith(f"POST http://ops:{MASK}@127.0.0.1:9/hook?token={MASK} ")
    assert "s3cret" not in said_.text and "abc123" not in said_.text
    assert said_.where == "the webhook receiver at 127.0.0.1:9" and said_.current is None

    act = WebhookActuator(receiver.url)
    stated = await act.effect(CAP, "ap-w")
    body = json.loads(stated.call.removeprefix(f"POST {receiver.url} ").rsplit(" (Idempotency-Key", 1)[0])
    assert (await act.execute(CAP, "act-w", "ap-w", None)).status == "executed"
    [sent] = receiver.deliveries
    assert body == {k: sent["body"][k] for k in body} and sent["key"] == "act-w"  # what was said is what was sent


# --- Modbus: the register read now, the raw value written -------------------------------------------------------
async def test_modbus_reads_the_register_and_states_the_write_it_then_makes() -> None:
    async with ModbusPlant() as plant:
        act = actuator(plant_map(), plant.endpoint)
        stated = await act.effect(parse_action(COOL), "ap-m")
        assert await plant.get(SETPOINT) == 250, "stating writes nothing"
        assert stated.text == (f"write holding register 40001 = 210 (21.0 °C), read it back on Modbus TCP "
                               f"{plant.endpoint} device 1 (cu01 supply setpoint) — current: 25.0 °C (register 40001 "
                               "read now); new: 21.0 °C")
        assert (await act.execute(parse_action(COOL), "act-m", "ap-m", None)).status == "executed"
        assert await plant.get(SETPOINT) == 210  # the raw value it stated
        assert (await act.effect(parse_action(COOL), "ap-m2")).current == "21.0 °C (register 40001 read now)"
    missing = await act.effect(parse_action({**COOL, "unit": "cu09"}), "ap-m")
    assert missing.call == "nothing: the Modbus actuator refuses it (the Modbus register map gives cu09 no " \
                           "setpoint_c register)" and missing.new == "unchanged"


async def test_an_unreachable_plant_makes_the_value_now_unknown_and_the_approval_opens(redis_url: str) -> None:
    dead = f"127.0.0.1:{free_port()}"
    routed = RoutedActuator(DryRunActuator(), actuator(plant_map(), dead))
    gw = GatewayService(redis_url, "fx-mb", load_policy(), routed, fleet=FakeFleet())
    [ap] = await opened(gw, proposal({**COOL, "supply_c": 18.0}))
    assert ap.status == "pending" and ap.effect is not None
    assert ap.effect.call == "write holding register 40001 = 180 (18.0 °C), read it back"
    assert ap.effect.current == f"unknown ({dead}: no connection (refused, unreachable or no answer within 1 s))"
    # the other route (dry-run) leaves the value now to the twin
    [cap] = await opened(gw, proposal(CAP.model_dump(), pid="pr-2"))
    assert cap.effect is not None and cap.effect.call.startswith("nothing: dry-run records")
    assert cap.effect.current == "n01/gpu0 88.0 °C (the twin's latest reading; its power limit is not reported)"


# --- NVML (the stub of pynvml's calls: no GPU here) ---------------------------------------------------------------
async def test_nvml_states_the_limit_now_and_the_call_it_then_makes() -> None:
    nv = StubNvml([StubGpu(limit_mw=700_000)])
    act = NvmlActuator(nv=nv)
    cap = parse_action({"kind": "set_power_limit", "gpu": "n01/gpu0", "watts": 450})
    stated = await act.effect(cap, "ap-n")
    assert stated.call == "nvmlDeviceSetPowerManagementLimit(gpu0, 450000 mW)" and nv.set_calls == []
    assert (stated.current, stated.new) == ("power limit 700 W (NVML)", "power limit 450 W")
    assert stated.where.startswith("NVML on ") and stated.where.endswith(", GPU index 0")
    assert (await act.execute(cap, "act-n", "ap-n", None)).status == "executed" and nv.set_calls == [(0, 450_000)]
    low = await act.effect(parse_action({**cap.model_dump(), "watts": 150}), "ap-n2")
    assert low.call == "nothing: 150 W is outside gpu0's 200-700 W, refused" and low.new == "unchanged"
    nv.gpus[0].pids = [4242]
    reset = await act.effect(parse_action({"kind": "reset_gpu", "gpu": "n01/gpu0"}), "ap-n3")
    assert reset.call == "nothing: nvidia-smi --gpu-reset -i 0 is refused while a process uses the GPU"
    assert reset.current == "in use by 1 process(es) (pid 4242)"
    assert nv.sessions == 0  # every NVML session it opened was closed


async def test_nvml_without_a_gpu_says_why_the_value_now_is_unknown() -> None:
    stated = await NvmlActuator().effect(CAP, "ap-n")  # the real pynvml: no driver on this machine
    assert stated.call == "nvmlDeviceSetPowerManagementLimit(gpu0, 400000 mW)"
    assert (stated.current or "").startswith("unknown (NVML is not available on this host")


# --- Slurm, the real one ------------------------------------------------------------------------------------------
async def test_slurm_states_the_drain_it_then_runs(slurm: SlurmCluster, tmp_path: Path) -> None:
    bin_dir, log = logging_bin(slurm, tmp_path)
    act = SlurmActuator(MAP, bin_dir, slurm.conf, timeout_s=20.0)
    stated = await act.effect(DRAIN, "ap-s1")
    assert stated.call == shlex.join([str(bin_dir / "scontrol"), "update", f"NodeName={NODE}", "State=DRAIN",
                                      "Reason=opsloop:ap-s1 drain_node(node=n01)"])
    assert stated.where == f"slurmctld of {slurm.conf} (SLURM_CONF)"
    assert stated.current == f"{NODE} (opsloop's n01) IDLE" and calls(log, "update") == []
    assert (await act.execute(DRAIN, "act-s1", "ap-s1", None)).status == "executed"
    [ran] = calls(log, "update")
    assert ran == " ".join(["scontrol", *shlex.split(stated.call)[1:]])  # what was said is what ran
    again = await act.effect(DRAIN, "ap-s1")
    assert again.call == f"nothing: {NODE} (opsloop's n01) is drained already, by this approval"
    assert again.current.startswith(f"{NODE} (opsloop's n01) IDLE+DRAIN, reason 'opsloop:ap-s1")  # type: ignore[union-attr]
    other = await act.effect(DRAIN, "ap-s2")
    assert other.call.endswith("by someone else: their reason is kept") and other.new == "unchanged"


async def test_slurm_states_the_requeue_it_then_runs(slurm: SlurmCluster, tmp_path: Path) -> None:
    job_id = slurm.submit("train-e")
    slurm.wait(lambda: JobInfo.parse(slurm.job(job_id)).state == "RUNNING", "job running")
    bin_dir, log = logging_bin(slurm, tmp_path)
    act = SlurmActuator(MAP, bin_dir, slurm.conf, timeout_s=20.0)
    move = parse_action({"kind": "migrate_job", "job": "train-e", "avoid": ["n01/gpu0"]})
    stated = await act.effect(move, "ap-s3")
    assert stated.current == f"job {job_id} (train-e) RUNNING on {NODE}, ExcNodeList=(none)"
    said_ = [" ".join(["scontrol", *shlex.split(c)[1:]]) for c in stated.call.split("; ")]
    assert [c.split()[1] for c in said_] == ["update", "requeuehold", "update", "release"]
    assert (await act.execute(move, "act-s3", "ap-s3", None)).status == "executed"
    ran = [c for c in calls(log, "scontrol") if c.split()[1] in ("update", "requeuehold", "release")]
    assert ran == said_


async def test_a_slurm_that_does_not_answer_leaves_the_call_and_says_why(tmp_path: Path, redis_url: str) -> None:
    (tmp_path / "bin").mkdir()
    for name in ("scontrol", "squeue"):
        (tmp_path / "bin" / name).write_text("#!/bin/sh\nexec sleep 30\n")
        (tmp_path / "bin" / name).chmod(0o755)
    act = SlurmActuator(MAP, tmp_path / "bin", timeout_s=0.2)
    routed = RoutedActuator(DryRunActuator(), scheduler=act)
    gw = GatewayService(redis_url, "fx-sl", load_policy(), routed, fleet=FakeFleet())
    [ap] = await opened(gw, proposal({"kind": "drain_node", "node": "n01"}))
    assert ap.status == "pending" and ap.effect is not None and EFFECT_S > 0.2
    assert ap.effect.call.endswith(f"/scontrol update NodeName={NODE} State=DRAIN "
                                   f"'Reason=opsloop:{ap.approval_id} drain_node(node=n01)'")
    assert ap.effect.current == (f"unknown (node {NODE} (opsloop's n01): scontrol show gave no answer within 0.2 s "
                                 "(is slurmctld up?))")
    assert (await gw.decide(ap.approval_id, said(ap))).approval is not None  # decidable as ever
