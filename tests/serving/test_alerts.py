"""The Alertmanager receiver: the v4 payload model, and ``POST /api/alerts/alertmanager`` on a real Redis.

Valid payloads are taken from Alertmanager's documented v4 shape (prometheus.io, webhook_config); the route is
driven through the app (ASGI) and through a real uvicorn server on loopback. Every refusal (no or wrong token,
bad body, too big, receiver off, Redis down) leaves the inbox as it was.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from pydantic import ValidationError

from serving.alerts import PATH, AlertmanagerWebhook, AlertReceiver, InboxAlert, inbox_key
from serving.api import build_app
from tests.helpers import free_port

pytestmark = [pytest.mark.timeout(120)]
NS = "am"
TOKEN = "alertmanager-test-token-0123456789"
RECEIVED_AT = 1_700_000_100.0

#: A group notification as Alertmanager 0.25 sends it (version 4), dcgm-exporter labels on the first alert.
PAYLOAD: dict[str, Any] = {
    "version": "4",
    "groupKey": '{}/{severity="critical"}:{alertname="GpuTooHot"}',
    "truncatedAlerts": 0,
    "status": "firing",
    "receiver": "opsloop",
    "groupLabels": {"alertname": "GpuTooHot"},
    "commonLabels": {"alertname": "GpuTooHot", "severity": "critical", "job": "dcgm"},
    "commonAnnotations": {},
    "externalURL": "http://alertmanager.example:9093",
    "alerts": [
        {"status": "firing",
         "labels": {"alertname": "GpuTooHot", "severity": "critical", "job": "dcgm", "Hostname": "DGX-01",
                    "gpu": "3", "instance": "10.0.1.23:9400", "modelName": "NVIDIA H100 80GB HBM3"},
         "annotations": {"summary": "GPU 3 on DGX-01 is at 88 C"},
         "startsAt": "2023-11-14T22:13:20.123456789Z", "endsAt": "0001-01-01T00:00:00Z",
         "generatorURL": "http://prometheus.example:9090/graph?g0.expr=DCGM_FI_DEV_GPU_TEMP+%3E+85",
         "fingerprint": "1a30ba71cca2921f"},
        {"status": "resolved",
         "labels": {"alertname": "GpuTooHot", "severity": "critical", "job": "dcgm",
                    "instance": "ip-10-0-1-24.ec2.internal:9400", "gpu": "0"},
         "annotations": {"description": "was hot"},
         "startsAt": "2023-11-14T21:00:00+01:00", "endsAt": "2023-11-14T21:30:00+01:00",
         "generatorURL": "", "fingerprint": "bc97ff14869b13e3"},
    ],
}


def payload(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(PAYLOAD)
    out.update(changes)
    return out


# --- the payload model --------------------------------------------------------------------------------------------
def test_a_documented_v4_payload_validates() -> None:
    hook = AlertmanagerWebhook.model_validate(PAYLOAD)
    first, second = hook.alerts
    assert hook.version == "4" and hook.receiver == "opsloop" and hook.truncated_alerts == 0
    assert first.ends_at is None, "Go's zero time means: still firing"
    assert first.starts_at.timestamp() == pytest.approx(1_700_000_000.123456)  # nanoseconds cut to microseconds
    assert second.ends_at is not None and second.ends_at.timestamp() - second.starts_at.timestamp() == 1800
    entry = InboxAlert.of(hook, first, RECEIVED_AT)
    assert entry.fingerprint == "1a30ba71cca2921f" and entry.received_at == RECEIVED_AT and entry.ends_at is None


def test_unknown_fields_are_ignored_and_a_missing_fingerprint_is_derived() -> None:
    body = payload()
    body["alerts"][0] = {**body["alerts"][0], "silenceURL": "http://x", "values": {"B": 1.5}}
    body["orgId"] = 1  # Grafana's webhook adds fields of its own
    del body["alerts"][1]["fingerprint"]  # Alertmanager before 0.19 sent none
    hook = AlertmanagerWebhook.model_validate(body)
    derived = hook.alerts[1].key()
    assert len(derived) == 16 and derived == AlertmanagerWebhook.model_validate(body).alerts[1].key()


@pytest.mark.parametrize(("change", "field"), [
    ({"version": "3"}, "version"),
    ({"status": "pending"}, "status"),
    ({"alerts": []}, "alerts"),
    ({"groupKey": None}, "groupKey"),
    ({"receiver": 7}, "receiver"),
])
def test_a_bad_payload_names_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        AlertmanagerWebhook.model_validate(payload(**change))
    assert field in {str(e["loc"][0]) for e in err.value.errors()}


@pytest.mark.parametrize(("key", "value"), [
    ("startsAt", "2023-11-14T22:13:20"),  # no time zone: when was that?
    ("startsAt", "yesterday"),
    ("status", "silenced"),
    ("labels", {"alertname": 5}),
    ("labels", {"": "x"}),
    ("fingerprint", "not a fingerprint!"),
])
def test_a_bad_alert_is_refused(key: str, value: Any) -> None:
    body = payload()
    body["alerts"][0][key] = value
    with pytest.raises(ValidationError):
        AlertmanagerWebhook.model_validate(body)


def test_a_missing_alert_field_is_refused() -> None:
    body = payload()
    del body["alerts"][0]["startsAt"]
    with pytest.raises(ValidationError):
        AlertmanagerWebhook.model_validate(body)


# --- the route ------------------------------------------------------------------------------------------------------
class Ports:
    """The loop's ports: the receiver needs none of them (it writes only its inbox)."""

    async def status(self) -> dict:
        return {"samples_seen": 0, "ts": 0.0}


def make_app(redis_url: str | None, **kw: Any) -> Any:
    receiver = AlertReceiver(redis_url, NS, TOKEN, clock=lambda: RECEIVED_AT) if redis_url else None
    p = Ports()
    return build_app(p, p, p, alerts=receiver, **kw)  # type: ignore[arg-type]


def inbox(redis_url: str) -> list[dict]:
    rows = redis.Redis.from_url(redis_url).xrange(inbox_key(NS))
    return [json.loads(fields[b"alert"]) for _, fields in rows]


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.anyio
async def test_the_route_stores_every_alert_then_answers(redis_url: str) -> None:
    app = make_app(redis_url)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://opsloop") as c:
        ok = await c.post(PATH, json=PAYLOAD, headers=auth())
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"accepted": 2, "firing": 1, "resolved": 1, "truncated_alerts": 0}
    stored = inbox(redis_url)
    assert [a["fingerprint"] for a in stored] == ["1a30ba71cca2921f", "bc97ff14869b13e3"]
    assert stored[0]["received_at"] == RECEIVED_AT and stored[0]["labels"]["Hostname"] == "DGX-01"
    assert stored[1]["status"] == "resolved" and stored[1]["receiver"] == "opsloop"
    assert all(InboxAlert.model_validate(a) for a in stored)


@pytest.mark.anyio
@pytest.mark.parametrize("headers", [{}, auth("wrong-token-0123456789abcdef"), {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": "Bearer"}])
async def test_no_or_a_wrong_token_is_401_and_stores_nothing(redis_url: str, headers: dict[str, str]) -> None:
    app = make_app(redis_url)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://opsloop") as c:
        refused = await c.post(PATH, json=PAYLOAD, headers=headers)
        bad_body = await c.post(PATH, json={"version": "3"}, headers=headers)
    for r in (refused, bad_body):
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "unauthorized" and "alertmanager_token" in r.json()["error"]["message"]
        assert r.headers["www-authenticate"] == "Bearer"
    assert bad_body.status_code == 401, "the token is checked before the body: no schema for strangers"
    assert inbox(redis_url) == []


@pytest.mark.anyio
async def test_a_bad_body_is_400_naming_the_field_and_stores_nothing(redis_url: str) -> None:
    app = make_app(redis_url)
    body = payload()
    body["alerts"][1]["status"] = "pending"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://opsloop") as c:
        bad = await c.post(PATH, json=body, headers=auth())
        not_json = await c.post(PATH, content=b"{nope", headers={**auth(), "content-type": "application/json"})
    assert bad.status_code == 400
    err = bad.json()["error"]
    assert err["code"] == "bad_request" and "alerts.1.status" in err["message"]
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "bad_request"
    assert inbox(redis_url) == [], "one bad alert refuses the whole body: Alertmanager's retry sends it whole"


@pytest.mark.anyio
async def test_a_body_over_the_limit_is_413(redis_url: str) -> None:
    app = make_app(redis_url, max_body_bytes=2048)
    body = payload()
    body["alerts"] = [{**body["alerts"][0], "fingerprint": f"{i:016x}"} for i in range(20)]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://opsloop") as c:
        big = await c.post(PATH, json=body, headers=auth())
    assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"
    assert inbox(redis_url) == []


@pytest.mark.anyio
async def test_the_receiver_off_is_404_with_the_setting_to_set() -> None:
    app = make_app(None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://opsloop") as c:
        off = await c.post(PATH, json=PAYLOAD, headers=auth())
    assert off.status_code == 404 and "OPSLOOP_ALERTMANAGER_TOKEN" in off.json()["error"]["message"]


@pytest.mark.anyio
async def test_redis_down_is_503_so_alertmanager_sends_again(tmp_path: Any) -> None:
    app = build_app(Ports(), Ports(), Ports(),  # type: ignore[arg-type]
                    alerts=AlertReceiver(f"unix://{tmp_path}/no-redis.sock", NS, TOKEN))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://opsloop") as c:
        down = await c.post(PATH, json=PAYLOAD, headers=auth())
    assert down.status_code == 503 and down.json()["error"]["code"] == "unavailable"


def test_the_route_is_documented_with_its_answers() -> None:
    doc = make_app(None).openapi()
    op = doc["paths"][PATH]["post"]
    assert {"200", "400", "401", "404", "413", "429", "503"} <= set(op["responses"])
    assert "requestBody" in op


@pytest.fixture
def server(redis_url: str) -> Iterator[str]:
    """The app on a real uvicorn server on loopback (the receiver's Redis client lives on the server's loop)."""
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(make_app(redis_url), host="127.0.0.1", port=port, log_level="warning",
                                        lifespan="off"))
    thread = threading.Thread(target=asyncio.run, args=(srv.serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


def test_over_http_a_resent_notification_is_stored_again_and_answered_alike(server: str, redis_url: str) -> None:
    """Alertmanager re-sends whole groups; the receiver stores what it is sent (the twin makes one event of it)."""
    with httpx.Client(base_url=server, headers=auth(), timeout=10) as c:
        answers = [c.post(PATH, json=PAYLOAD) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200]
    assert len(inbox(redis_url)) == 4
