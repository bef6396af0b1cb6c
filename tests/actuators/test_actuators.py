"""Actuators behind one protocol: webhook (against a local HTTP server), nvml (clear error without a GPU),
dry-run; the feedback source; the admin token file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import redis

from cluster.actuators import DryRunActuator, NvmlActuator, WebhookActuator, build_actuator
from cluster.actuators.feedback import FeedbackSource
from cluster.actuators.http_retry import RetryPolicy
from cluster.settings import Settings
from cluster.telemetry.samples import ActionResult
from cluster.tokens import admin_token, cli_token
from policies.actions import parse_action
from tests.actuators.webhook_receiver import CAP, WebhookReceiver
from tests.requirements_check import skip_on_gpu_host

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


async def test_webhook_posts_the_action_once_per_action_id(receiver: WebhookReceiver) -> None:
    act = WebhookActuator(receiver.url, token="hook-secret")
    r1 = await act.execute(CAP, "act-1", "ap-1", None)
    r2 = await act.execute(CAP, "act-1", "ap-1", None)
    assert r1.status == r2.status == "executed" and "200" in r1.detail
    assert len(receiver.effects) == 1 and len(receiver.deliveries) == 1, "same action id twice: one effect"
    req = receiver.deliveries[0]
    assert req["key"] == "act-1" and req["auth"] == "Bearer hook-secret"
    assert req["body"]["action"] == CAP.model_dump(mode="json") and req["body"]["approval_id"] == "ap-1"


async def test_webhook_failure_is_data_and_a_retry_carries_the_same_key(receiver: WebhookReceiver) -> None:
    receiver.script = [(503, {}, 0.0)]
    act = WebhookActuator(receiver.url, retry=RetryPolicy(attempts=1))  # no retry in the call (test_webhook_retry)
    failed = await act.execute(CAP, "act-2", "ap-2", None)
    assert failed.status == "failed" and "503" in failed.detail
    ok = await act.execute(CAP, "act-2", "ap-2", None)
    assert ok.status == "executed" and [r["key"] for r in receiver.deliveries] == ["act-2", "act-2"]
    assert list(receiver.effects) == ["act-2"]


async def test_webhook_unreachable_is_a_failed_result() -> None:
    quick = RetryPolicy(attempts=2, initial_s=0.01, max_s=0.01)
    r = await WebhookActuator("http://127.0.0.1:1/hook", timeout_s=2, retry=quick).execute(CAP, "act-3", "ap-3", None)
    assert r.status == "failed" and "unreachable" in r.detail


async def test_nvml_without_a_gpu_fails_clearly() -> None:
    r = await NvmlActuator().execute(CAP, "act-4", "ap-4", None)
    if r.status == "executed":
        skip_on_gpu_host("this host has a GPU and NVML permission")
    assert r.status == "failed" and ("NVML" in r.detail or "GPU" in r.detail), r.detail
    other = await NvmlActuator().execute(parse_action({"kind": "drain_node", "node": "n01"}), "act-5", "ap-5", None)
    assert other.status == "failed" and "only sets power limits" in other.detail


@pytest.mark.gpu
async def test_nvml_sets_a_power_limit_on_a_real_gpu() -> None:
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pytest.skip("no NVIDIA GPU on this host")
    r = await NvmlActuator().execute(CAP, "act-gpu", "ap-gpu", None)
    assert r.status == "executed" or "root" in r.detail


async def test_dry_run_and_registry(tmp_path: Path) -> None:
    r = await DryRunActuator().execute(CAP, "act-6", "ap-6", None)
    assert r.status == "executed" and r.detail.startswith("dry-run")
    assert isinstance(build_actuator(Settings(data_dir=tmp_path, actuator="nvml")), NvmlActuator)
    with pytest.raises(ValueError, match="webhook_url"):
        build_actuator(Settings(data_dir=tmp_path, actuator="webhook"))


async def test_feedback_source_reads_each_sample_once_across_restarts(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    sample = ActionResult(ts=5.0, action_id="a", approval_id="ap", action_kind="notify", status="failed",
                          detail="outcome missed")
    r.xadd("f:feedback", {"sample": sample.model_dump_json()})
    assert await FeedbackSource(redis_url, "f").read() == [sample]
    assert await FeedbackSource(redis_url, "f").read() == [], "a restarted twin does not repeat feedback"
    r.xadd("f:feedback", {"sample": sample.model_copy(update={"ts": 6.0}).model_dump_json()})
    assert [s.ts for s in await FeedbackSource(redis_url, "f").read()] == [6.0]


def test_admin_token_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path / "d")
    assert cli_token(s) is None
    token, created = admin_token(s)
    assert created and s.token_file.read_text().strip() == token
    assert stat.S_IMODE(s.token_file.stat().st_mode) == 0o600
    assert admin_token(s) == (token, False) and cli_token(s) == token
    assert cli_token(Settings(data_dir=tmp_path / "d", admin_token="olp_other")) == "olp_other"
