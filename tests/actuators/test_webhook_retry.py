"""The webhook actuator retries transient failures against a real HTTP receiver on 127.0.0.1: the same
Idempotency-Key on every try, bounded tries and time (small through settings), permanent 4xx not retried,
and the gateway records a failed delivery as a failed action with the reason, secrets masked."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
import redis

from actors.agent.incidents import RootCause
from actors.agent.proposals import Proposal, ProposedAction
from actors.gateway.service import GatewayService
from cluster.actuators import WebhookActuator, build_actuator
from cluster.actuators.http_retry import RetryPolicy, retry_after_s
from cluster.settings import Settings
from policies.actions import parse_action
from policies.policy import load_policy
from serving.api import build_app
from tests.actuators.webhook_receiver import CAP, WebhookReceiver
from tests.gateway.test_service import FakeFleet

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]
TOKEN = "hook-bearer-Zq81"
FAST = {"webhook_timeout_s": 5.0, "actuator_retry_attempts": 4, "actuator_retry_initial_s": 0.01,
        "actuator_retry_max_s": 0.05, "actuator_retry_total_s": 20.0}


def actuator(tmp_path: Path, url: str, **over: object) -> WebhookActuator:
    """The webhook actuator as `opsloop up` builds it, with small backoff through settings."""
    s = Settings(data_dir=tmp_path, actuator="webhook", webhook_url=url, webhook_token=TOKEN,
                 **{**FAST, **over})
    act = build_actuator(s)
    assert isinstance(act, WebhookActuator)
    return act


async def test_two_503_then_success_is_one_action_three_deliveries_one_key(tmp_path: Path,
                                                                          receiver: WebhookReceiver) -> None:
    receiver.script = [(503, {}, 0.0), (503, {}, 0.0)]
    act = actuator(tmp_path, receiver.url)
    r = await act.execute(CAP, "act-1", "ap-1", None)
    assert r.status == "executed", r.detail
    assert [d["key"] for d in receiver.deliveries] == ["act-1"] * 3, "three tries, one Idempotency-Key"
    assert {d["auth"] for d in receiver.deliveries} == {f"Bearer {TOKEN}"}
    assert len({json.dumps(d["body"], sort_keys=True) for d in receiver.deliveries}) == 1, "the same body each try"
    assert list(receiver.effects) == ["act-1"] and "after 3 tries" in r.detail
    again = await act.execute(CAP, "act-1", "ap-1", None)
    assert again == r and len(receiver.deliveries) == 3, "a succeeded action id is not sent again"


async def test_always_500_fails_with_the_reason_after_the_configured_tries(tmp_path: Path,
                                                                           receiver: WebhookReceiver) -> None:
    receiver.always = 500
    r = await actuator(tmp_path, receiver.url, actuator_retry_attempts=3).execute(CAP, "act-2", "ap-2", None)
    assert r.status == "failed"
    assert len(receiver.deliveries) == 3 and {d["key"] for d in receiver.deliveries} == {"act-2"}
    assert "answered 500" in r.detail and "no success in 3 tries" in r.detail, r.detail
    assert receiver.effects == {}


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_a_permanent_4xx_is_not_retried(tmp_path: Path, receiver: WebhookReceiver, status: int) -> None:
    receiver.always = status
    r = await actuator(tmp_path, receiver.url).execute(CAP, "act-3", "ap-3", None)
    assert r.status == "failed" and len(receiver.deliveries) == 1
    assert f"answered {status}" in r.detail and "not retried" in r.detail, r.detail


async def test_408_and_429_are_retried_and_retry_after_is_honoured(tmp_path: Path, receiver: WebhookReceiver) -> None:
    receiver.script = [(429, {"Retry-After": "0"}, 0.0), (408, {}, 0.0)]
    r = await actuator(tmp_path, receiver.url).execute(CAP, "act-4", "ap-4", None)
    assert r.status == "executed" and len(receiver.deliveries) == 3, r.detail


async def test_a_retry_after_beyond_the_cap_ends_the_retries_with_why(tmp_path: Path,
                                                                      receiver: WebhookReceiver) -> None:
    receiver.always = 429
    receiver.script = [(429, {"Retry-After": "3600"}, 0.0)]
    r = await actuator(tmp_path, receiver.url).execute(CAP, "act-5", "ap-5", None)
    assert r.status == "failed" and len(receiver.deliveries) == 1
    assert "retry after 3600 s" in r.detail and "cap" in r.detail, r.detail


async def test_a_timed_out_try_is_retried_with_the_same_key(tmp_path: Path, receiver: WebhookReceiver) -> None:
    receiver.script = [(200, {}, 2.0)]  # answers, but only after the client's timeout
    r = await actuator(tmp_path, receiver.url, webhook_timeout_s=0.3).execute(CAP, "act-6", "ap-6", None)
    assert r.status == "executed" and [d["key"] for d in receiver.deliveries] == ["act-6", "act-6"], r.detail
    assert list(receiver.effects) == ["act-6"], "the receiver applied the key once although it got it twice"


async def test_unreachable_is_retried_then_failed(tmp_path: Path) -> None:
    r = await actuator(tmp_path, "http://127.0.0.1:1/hook", actuator_retry_attempts=3).execute(CAP, "a7", "p7", None)
    assert r.status == "failed" and "unreachable" in r.detail and "no success in 3 tries" in r.detail, r.detail


async def test_the_time_budget_bounds_the_tries(receiver: WebhookReceiver) -> None:
    receiver.always = 503
    policy = RetryPolicy(attempts=20, initial_s=0.2, max_s=0.2, total_s=0.5)
    r = await WebhookActuator(receiver.url, retry=policy).execute(CAP, "act-8", "ap-8", None)
    assert r.status == "failed" and 1 < len(receiver.deliveries) < 20
    assert "budget" in r.detail, r.detail


def test_retry_after_forms() -> None:
    assert retry_after_s("7") == 7.0 and retry_after_s(None) is None and retry_after_s("soon") is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0, "a date in the past: no wait"


def test_retry_bounds_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="actuator_retry_total_s"):
        Settings(data_dir=tmp_path, actuator_retry_total_s=60)  # the gateway bounds one execution at 30 s
    with pytest.raises(ValueError, match="actuator_retry_attempts"):
        Settings(data_dir=tmp_path, actuator_retry_attempts=0)


def _proposal(action: dict) -> Proposal:
    pa = ProposedAction(action_id="act-pr-9", action=parse_action(action), citations=(), rationale="t")
    return Proposal(proposal_id="pr-9", incident_id="inc-9", ts=1.0, root_cause=RootCause(kind="k", subject="s",
                    why="w"), diagnosis="d", actions=(pa,), source="fallback", verified=True, confidence=0.5,
                    emergency=True)


async def test_gateway_records_a_failed_delivery_as_failed_with_the_reason_and_no_secret(
    tmp_path: Path, receiver: WebhookReceiver, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An emergency power cap runs at once; the hook always answers 503: the approval ends ``failed``, the
    feedback sample (the twin's ``action_failed``) carries the reason, and /api shows it with secrets masked."""
    caplog.set_level(logging.DEBUG)
    receiver.always = 503
    url = receiver.url.replace("http://", "http://ops:url-pass-77@") + "?token=query-secret-42&site=a"
    act = actuator(tmp_path, url, actuator_retry_attempts=2)
    gw = GatewayService(redis_url, "w", load_policy(), act, fleet=FakeFleet())
    [reply] = await gw.submit(_proposal({"kind": "set_power_limit", "gpu": "n01/gpu0", "watts": 300.0}))
    ap = reply.as_json()["approval"]
    assert ap["status"] == "failed" and len(receiver.deliveries) == 2
    [(_, fields)] = redis.Redis.from_url(redis_url).xrange("w:feedback")
    sample = json.loads(fields[b"sample"])
    assert sample["status"] == "failed" and "answered 503" in sample["detail"] and "2 tries" in sample["detail"]
    await gw.ensure_token("admin", "admin", "olp_admin-test-token")
    app = build_app(gw, None, None)  # type: ignore[arg-type] - /api/approvals needs only the gateway
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://opsloop") as client:
        shown = await client.get(f"/api/approvals/{ap['approval_id']}",
                                 headers={"Authorization": "Bearer olp_admin-test-token"})
    assert shown.status_code == 200 and shown.json()["status"] == "failed"
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "try 1 of 2" in logged, "the retry was logged (so the check below is not vacuous)"
    text = shown.text + json.dumps(sample) + logged
    assert "answered 503" in text and "site=a" in text
    for secret in (TOKEN, "url-pass-77", "query-secret-42"):
        assert secret not in text, f"{secret} shown"
