"""Tickets and paging (issue #18 item 6) against local fakes of Jira, ServiceNow and PagerDuty that speak the HTTP the
real client libraries send (``ticket_fakes.py``): one ticket or alert per approved action however often it is retried,
transient answers retried, refusals failed with the service's reason, the effect naming the exact call, and no
secret in any effect, result or log line."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.agent.incidents import RootCause
from actors.agent.proposals import Proposal, ProposedAction
from actors.gateway.service import GatewayService
from cluster.actuators import DryRunActuator, JiraTickets, PagerDutyPaging, RoutedActuator, ServiceNowTickets
from cluster.actuators import build_actuator as build
from cluster.settings import Settings, describe_settings
from policies.actions import Notify, OpenTicket, parse_action
from policies.policy import load_policy
from tests.actuators.ticket_fakes import FakeJira, FakePagerDuty, FakeServiceNow, TestCA, basic
from tests.gateway.test_service import FakeFleet

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

TICKET = OpenTicket(summary="n01 coolant supply degraded", severity="high")
PAGE = Notify(message="n01 at 88 °C, power capped")
CAP = parse_action({"kind": "set_power_limit", "gpu": "n01/gpu0", "watts": 400})
JIRA_TOKEN, SNOW_PASSWORD, ROUTING_KEY = "jira-tok-Q7w2", "snow-pw-K4z9", "pd-rk-M3x8"
SECRETS = (JIRA_TOKEN, SNOW_PASSWORD, ROUTING_KEY)
FAST = {"actuator_retry_attempts": 3, "actuator_retry_initial_s": 0.01, "actuator_retry_max_s": 0.05,
        "service_timeout_s": 5.0}


@pytest.fixture(scope="module")
def ca() -> Iterator[TestCA]:
    with TestCA() as test_ca:
        yield test_ca


@pytest.fixture
def jira(ca: TestCA) -> Iterator[FakeJira]:
    with FakeJira(ca, basic("ops@example.com", JIRA_TOKEN)) as fake:
        yield fake


@pytest.fixture
def snow(ca: TestCA) -> Iterator[FakeServiceNow]:
    with FakeServiceNow(ca, "opsloop", SNOW_PASSWORD) as fake:
        yield fake


@pytest.fixture
def pd(ca: TestCA) -> Iterator[FakePagerDuty]:
    with FakePagerDuty(ca, ROUTING_KEY) as fake:
        yield fake


def settings(tmp_path: Path, ca: TestCA, **over: Any) -> Settings:
    return Settings(data_dir=tmp_path, actuator="dry-run", service_ca_file=ca.file, **{**FAST, **over})


def jira_settings(jira: FakeJira, **over: Any) -> dict[str, Any]:
    return {"tickets": "jira", "jira_url": jira.url, "jira_project": "OPS", "jira_user": "ops@example.com",
            "jira_token": JIRA_TOKEN, **over}


def snow_settings(snow: FakeServiceNow, **over: Any) -> dict[str, Any]:
    return {"tickets": "servicenow", "servicenow_url": snow.url, "servicenow_user": "opsloop",
            "servicenow_password": SNOW_PASSWORD, **over}


def pd_settings(pd: FakePagerDuty, **over: Any) -> dict[str, Any]:
    return {"paging": "pagerduty", "pagerduty_events_url": pd.url, "pagerduty_routing_key": ROUTING_KEY, **over}


def no_secret(*texts: str) -> None:
    for secret in SECRETS:
        for text in texts:
            assert secret not in text, f"{secret} shown in {text[:200]}"


# --- Jira ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cloud", [False, True], ids=["data-center", "cloud"])
async def test_an_open_ticket_opens_one_jira_issue_and_a_retry_opens_none(tmp_path: Path, ca: TestCA,
                                                                          cloud: bool) -> None:
    with FakeJira(ca, basic("ops@example.com", JIRA_TOKEN), cloud=cloud) as jira:
        act = build(settings(tmp_path, ca, **jira_settings(jira)))
        assert isinstance(act, RoutedActuator) and isinstance(act.route(TICKET), JiraTickets)
        r = await act.execute(TICKET, "act-t1", "ap-t1", None)
        assert r.status == "executed" and "opened OPS-1" in r.detail, r.detail
        [issue] = jira.issues
        fields = issue["fields"]
        assert fields["summary"] == TICKET.summary and fields["issuetype"] == {"name": "Task"}
        assert fields["labels"] == ["opsloop", "opsloop:ap-t1", "opsloop-severity-high"]
        assert "ap-t1" in fields["description"] and "high" in fields["description"]
        again = await act.execute(TICKET, "act-t1", "ap-t1", None)
        assert again == r, "the same action id in one process: the first result"
        restarted = build(settings(tmp_path, ca, **jira_settings(jira)))  # a new process, the gateway's resend
        retry = await restarted.execute(TICKET, "act-t1", "ap-t1", None)
        assert retry.status == "executed" and "OPS-1 was opened by this approval already" in retry.detail
        assert len(jira.issues) == 1 and len(jira.calls("POST", "/rest/api/2/issue")) == 1
        search = "/rest/api/2/search/jql" if cloud else "/rest/api/2/search"
        assert [c["query"]["jql"] for c in jira.calls("GET", search)] == [
            ['project = "OPS" AND labels = "opsloop:ap-t1"']] * 2
        no_secret(r.detail, retry.detail)


async def test_jira_with_a_personal_access_token_sends_it_as_bearer(tmp_path: Path, ca: TestCA) -> None:
    with FakeJira(ca, f"Bearer {JIRA_TOKEN}") as jira:
        act = build(settings(tmp_path, ca, **jira_settings(jira, jira_user=None)))
        r = await act.execute(TICKET, "act-t2", "ap-t2", None)
    assert r.status == "executed" and len(jira.issues) == 1, r.detail


async def test_a_jira_5xx_then_success_is_retried_into_one_issue(tmp_path: Path, ca: TestCA, jira: FakeJira,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    jira.script = {"POST /rest/api/2/issue": [503], "GET /rest/api/2/search": [502]}
    r = await build(settings(tmp_path, ca, **jira_settings(jira))).execute(TICKET, "act-t3", "ap-t3", None)
    assert r.status == "executed" and "after 3 tries" in r.detail, r.detail
    assert len(jira.issues) == 1 and len(jira.calls("POST", "/rest/api/2/issue")) == 2
    logged = caplog.text
    assert "answered 502" in logged and "answered 503" in logged
    no_secret(r.detail, logged)


async def test_a_jira_4xx_is_a_failed_result_with_its_reason_not_retried(tmp_path: Path, ca: TestCA,
                                                                          jira: FakeJira) -> None:
    act = build(settings(tmp_path, ca, **jira_settings(jira, jira_project="NOPE")))
    r = await act.execute(TICKET, "act-t4", "ap-t4", None)
    assert r.status == "failed" and "answered 400: project is required" in r.detail, r.detail
    assert "not retried" in r.detail and len(jira.calls("POST", "/rest/api/2/issue")) == 1 and not jira.issues
    wrong = build(settings(tmp_path, ca, **jira_settings(jira, jira_token="not-the-token")))
    denied = await wrong.execute(TICKET, "act-t5", "ap-t5", None)
    assert denied.status == "failed" and "answered 401" in denied.detail, denied.detail
    no_secret(r.detail, denied.detail)


# --- ServiceNow ----------------------------------------------------------------------------------------------------
async def test_an_open_ticket_opens_one_servicenow_incident_and_a_retry_opens_none(tmp_path: Path, ca: TestCA,
                                                                                   snow: FakeServiceNow) -> None:
    act = build(settings(tmp_path, ca, **snow_settings(snow)))
    assert isinstance(act, RoutedActuator) and isinstance(act.route(TICKET), ServiceNowTickets)
    r = await act.execute(TICKET, "act-s1", "ap-s1", None)
    assert r.status == "executed" and "opened INC0000001" in r.detail, r.detail
    [rec] = snow.records
    assert rec["short_description"] == TICKET.summary and rec["correlation_id"] == "opsloop:ap-s1"
    assert (rec["impact"], rec["urgency"]) == ("2", "1")
    restarted = build(settings(tmp_path, ca, **snow_settings(snow)))
    retry = await restarted.execute(TICKET, "act-s1", "ap-s1", None)
    assert retry.status == "executed" and "INC0000001 was opened by this approval already" in retry.detail
    assert len(snow.records) == 1 and len(snow.calls("POST", "/api/now/table/incident")) == 1
    queries = [c["query"]["sysparm_query"][0] for c in snow.calls("GET", "/api/now/table/incident")]
    assert len(queries) == 2 and all(q.split("^")[0] == "correlation_id=opsloop:ap-s1" for q in queries), queries
    no_secret(r.detail, retry.detail)


async def test_a_servicenow_5xx_then_success_is_retried_and_a_4xx_fails(tmp_path: Path, ca: TestCA,
                                                                        snow: FakeServiceNow) -> None:
    snow.script = {"POST /api/now/table/incident": [500]}
    r = await build(settings(tmp_path, ca, **snow_settings(snow))).execute(TICKET, "act-s2", "ap-s2", None)
    assert r.status == "executed" and "after 2 tries" in r.detail and len(snow.records) == 1, r.detail
    wrong = build(settings(tmp_path, ca, **snow_settings(snow, servicenow_password="wrong")))
    denied = await wrong.execute(TICKET, "act-s3", "ap-s3", None)
    assert denied.status == "failed" and "answered 401" in denied.detail and "User Not Authenticated" in denied.detail
    assert "not retried" in denied.detail and len(snow.records) == 1
    no_secret(r.detail, denied.detail)


# --- PagerDuty -----------------------------------------------------------------------------------------------------
async def test_notify_triggers_one_pagerduty_alert_deduplicated_by_the_action_id(tmp_path: Path, ca: TestCA,
                                                                                 pd: FakePagerDuty) -> None:
    act = build(settings(tmp_path, ca, **pd_settings(pd)))
    assert isinstance(act, RoutedActuator) and isinstance(act.route(PAGE), PagerDutyPaging)
    r = await act.execute(PAGE, "act-p1", "ap-p1", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    assert r.status == "executed" and "dedup_key act-p1" in r.detail, r.detail
    [event] = [c["body"] for c in pd.calls("POST", "/v2/enqueue")]
    assert event["event_action"] == "trigger" and event["dedup_key"] == "act-p1"
    assert event["routing_key"] == ROUTING_KEY
    assert event["payload"]["summary"] == PAGE.message and event["payload"]["source"] == "opsloop"
    assert event["payload"]["custom_details"]["approval_id"] == "ap-p1"
    assert await act.execute(PAGE, "act-p1", "ap-p1", None) == r and len(pd.requests) == 1
    restarted = build(settings(tmp_path, ca, **pd_settings(pd)))
    assert (await restarted.execute(PAGE, "act-p1", "ap-p1", None)).status == "executed"
    assert list(pd.alerts) == ["act-p1"], "PagerDuty's dedup: the resend joined the one alert"
    no_secret(r.detail)


async def test_pagerduty_5xx_and_429_are_retried_with_the_same_dedup_key(tmp_path: Path, ca: TestCA,
                                                                         pd: FakePagerDuty) -> None:
    pd.script = {"POST /v2/enqueue": [500, 429]}
    r = await build(settings(tmp_path, ca, **pd_settings(pd))).execute(PAGE, "act-p2", "ap-p2", None)
    assert r.status == "executed" and "after 3 tries" in r.detail, r.detail
    assert [c["body"]["dedup_key"] for c in pd.requests] == ["act-p2"] * 3 and list(pd.alerts) == ["act-p2"]


async def test_pagerduty_refusing_the_event_is_a_failed_result_with_the_reason(tmp_path: Path, ca: TestCA,
                                                                               pd: FakePagerDuty) -> None:
    act = build(settings(tmp_path, ca, **pd_settings(pd, pagerduty_routing_key="not-the-key")))
    r = await act.execute(PAGE, "act-p3", "ap-p3", None)
    assert r.status == "failed" and "answered 400" in r.detail and "Invalid routing key" in r.detail, r.detail
    assert "not retried" in r.detail and len(pd.requests) == 1 and not pd.alerts
    always = build(settings(tmp_path, ca, **pd_settings(pd)))
    pd.script = {"POST /v2/enqueue": [503] * 3}
    gave_up = await always.execute(PAGE, "act-p4", "ap-p4", None)
    assert gave_up.status == "failed" and "answered 503" in gave_up.detail and "no success in 3 tries" in gave_up.detail
    no_secret(r.detail, gave_up.detail)


# --- effects, routing, settings ------------------------------------------------------------------------------------
async def test_the_effect_names_the_exact_call_and_endpoint_with_secrets_masked(tmp_path: Path, ca: TestCA,
                                                                               jira: FakeJira, snow: FakeServiceNow,
                                                                               pd: FakePagerDuty) -> None:
    j = await build(settings(tmp_path, ca, **jira_settings(jira))).effect(TICKET, "ap-e1")
    assert f"POST {jira.url}/rest/api/2/issue " in j.call and f"GET {jira.url}/rest/api/2/search?jql=" in j.call
    assert '"labels": ["opsloop", "opsloop:ap-e1"' in j.call and "Jira project OPS at 127.0.0.1:" in j.where
    s = await build(settings(tmp_path, ca, **snow_settings(snow))).effect(TICKET, "ap-e1")
    assert f"POST {snow.url}/api/now/table/incident " in s.call and "correlation_id%3Dopsloop%3Aap-e1" in s.call
    p = await build(settings(tmp_path, ca, **pd_settings(pd))).effect(PAGE, "ap-e1")
    assert p.call.startswith(f"POST {pd.url}/v2/enqueue ") and '"routing_key": "**********"' in p.call
    assert '"dedup_key": "<its action id>"' in p.call and "PagerDuty Events API v2" in p.where
    no_secret(j.text, s.text, p.text)
    assert not jira.requests and not snow.requests and not pd.requests, "stating the effect sends nothing"


async def test_only_open_ticket_and_notify_take_the_new_routes(tmp_path: Path, ca: TestCA, jira: FakeJira,
                                                              pd: FakePagerDuty) -> None:
    act = build(settings(tmp_path, ca, **jira_settings(jira), **pd_settings(pd)))
    assert isinstance(act.route(CAP), DryRunActuator)
    assert (await act.execute(CAP, "act-r1", "ap-r1", None)).detail.startswith("dry-run")
    plain = build(settings(tmp_path, ca))  # tickets and paging none: the base actuator takes both, as before
    assert isinstance(plain, DryRunActuator)
    assert "dry-run: open_ticket" in (await plain.execute(TICKET, "act-r2", "ap-r2", None)).detail
    assert not jira.requests and not pd.requests
    refused = await JiraTickets(jira.url, "OPS", JIRA_TOKEN).execute(PAGE, "act-r3", "ap-r3", None)
    assert refused.status == "failed" and "not a ticket" in refused.detail


def test_settings_name_what_is_missing_and_mask_the_secrets(tmp_path: Path, ca: TestCA,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="jira_url and jira_project"):
        build(settings(tmp_path, ca, tickets="jira"))
    with pytest.raises(ValueError, match="pagerduty_routing_key"):
        build(settings(tmp_path, ca, paging="pagerduty"))
    with pytest.raises(ValueError, match="https"):
        build(settings(tmp_path, ca, paging="pagerduty", pagerduty_routing_key="k",
                       pagerduty_events_url="http://127.0.0.1:1"))
    monkeypatch.setitem(sys.modules, "jira", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "pagerduty", None)
    with pytest.raises(ValueError, match=r"pip install 'opsloop\[tickets\]'"):
        build(settings(tmp_path, ca, tickets="jira", jira_url="https://jira.example", jira_project="OPS"))
    with pytest.raises(ValueError, match=r"pip install 'opsloop\[paging\]'"):
        build(settings(tmp_path, ca, paging="pagerduty", pagerduty_routing_key="k"))
    s = settings(tmp_path, ca, jira_token=JIRA_TOKEN, servicenow_password=SNOW_PASSWORD,
                 pagerduty_routing_key=ROUTING_KEY)
    no_secret(json.dumps(describe_settings(s), default=str), repr(s))


# --- through the gateway -------------------------------------------------------------------------------------------
def _proposal(n: int) -> Proposal:
    actions = (ProposedAction(action_id=f"act-g{n}t", action=TICKET, citations=(), rationale="t"),
               ProposedAction(action_id=f"act-g{n}p", action=PAGE, citations=(), rationale="t"))
    return Proposal(proposal_id=f"pr-g{n}", incident_id=f"inc-g{n}", ts=1.0, root_cause=RootCause(kind="k",
                    subject="s", why="w"), diagnosis="d", actions=actions, source="fallback", verified=True,
                    confidence=0.5)


async def test_the_gateway_runs_an_approved_ticket_and_page_once_with_their_effects(
    tmp_path: Path, ca: TestCA, jira: FakeJira, pd: FakePagerDuty, redis_url: str
) -> None:
    """The default policy runs open_ticket and notify at once: one Jira issue and one PagerDuty alert, each approval
    carrying the effect its actuator stated; the same proposal again (a redelivery) opens and pages nothing new."""
    act = build(settings(tmp_path, ca, **jira_settings(jira), **pd_settings(pd)))
    gw = GatewayService(redis_url, "w", load_policy(), act, fleet=FakeFleet())
    replies = await gw.submit(_proposal(1))
    approvals = {a["action"]["kind"]: a for a in (r.as_json()["approval"] for r in replies)}
    assert {k: a["status"] for k, a in approvals.items()} == {"open_ticket": "executed", "notify": "executed"}
    assert len(jira.issues) == 1 and list(pd.alerts) == ["act-g1p"]
    assert jira.issues[0]["fields"]["labels"][1] == f"opsloop:{approvals['open_ticket']['approval_id']}"
    shown = json.dumps(approvals)
    assert "/rest/api/2/issue" in shown and "/v2/enqueue" in shown, "the approvals carry the stated effects"
    await gw.submit(_proposal(1))
    assert len(jira.issues) == 1 and len(jira.calls("POST", "/rest/api/2/issue")) == 1 and len(pd.alerts) == 1
    no_secret(shown)
