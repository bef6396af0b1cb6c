"""Slack payloads under fuzz (never a 5xx, never a decision without a valid signature) and secrets in logs:
tokens and the Slack signing secret never appear in any log record of the auth and Slack flows."""

from __future__ import annotations

import logging
import time
import urllib.parse

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.api import build_app
from serving.slack import MemorySlackStore, SlackConfig, build_slack_router
from tests.serving.test_dashboard_harness import make_loop, make_users
from tests.serving.test_slack_fake import BOT_TOKEN, SECRET, FakeSlack, button_click, sign, slash

pytestmark = [pytest.mark.timeout(300)]


@pytest.fixture
def slack_app(redis_url: str):  # noqa: ANN201
    tokens = make_users(redis_url, {"alice": "approver", "admin": "admin"})
    loop = make_loop(redis_url)
    with FakeSlack() as fake:
        cfg = SlackConfig(bot_token=BOT_TOKEN, signing_secret=SECRET, channel="C0OPS", api_url=fake.url,
                          users={"UALICE": "alice"})
        app = build_app(loop.gateway, loop.twin, loop.agent, rate_per_s=1e6, burst=1_000_000)
        app.include_router(build_slack_router(loop.gateway, cfg, store=MemorySlackStore(), twin=loop.twin,
                                              agent=loop.agent, poll=False))
        yield app, tokens, loop


def _client(app) -> httpx.AsyncClient:  # noqa: ANN001
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                             base_url="http://opsloop")


payloads = st.one_of(
    st.text(max_size=300),
    st.dictionaries(st.sampled_from(["payload", "command", "user_id", "text", "type", "token"]),
                    st.text(max_size=80), max_size=5).map(urllib.parse.urlencode),
    st.builds(lambda v: button_click("UALICE", "approve", v), st.text(max_size=60)),
    st.builds(lambda t: slash("UALICE", t), st.text(max_size=40)),
)


@pytest.mark.anyio
async def test_fuzzed_slack_requests_never_fail_the_server(slack_app) -> None:  # noqa: ANN001
    app, _, loop = slack_app
    before = await loop.gateway.counts()
    results: list[tuple[bool, int]] = []

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(body=payloads, signed=st.booleans(), stale=st.booleans())
    def collect(body: str, signed: bool, stale: bool) -> None:
        cases.append((body, signed, stale))

    cases: list[tuple[str, bool, bool]] = []
    collect()
    async with _client(app) as client:
        for body, signed, stale in cases:
            headers = sign(body, ts=int(time.time()) - (600 if stale else 0)) if signed else {
                "content-type": "application/x-www-form-urlencoded", "x-slack-signature": "v0=00",
                "x-slack-request-timestamp": str(int(time.time()))}
            r = await client.post("/slack/events", content=body.encode(), headers=headers)
            results.append((signed and not stale, r.status_code))
            if r.status_code >= 500:
                print("5xx:", repr(body)[:200], r.text[:200])
    assert all(code < 500 for _, code in results), [r for r in results if r[1] >= 500]
    assert all(code == 401 for ok, code in results if not ok), "unsigned or stale: refused"
    assert await loop.gateway.counts() == before, "no fuzzed request decided anything"


@pytest.mark.anyio
@pytest.mark.parametrize("body", [b"payload=NaN", b"payload=%5B1%2C2%5D", b"payload=%7B", b"payload=%22x%22",
                                  b"\xff\xfepayload=%7B%7D"])
async def test_signed_but_malformed_payload_is_a_400(slack_app, body: bytes) -> None:  # noqa: ANN001
    """Found by the fuzz test: Bolt parses `payload=` as JSON and assumes an object (``NaN`` gave a 500)."""
    app, _, loop = slack_app
    before = await loop.gateway.counts()
    async with _client(app) as client:
        r = await client.post("/slack/events", content=body, headers=sign(body))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "bad_request"
    assert await loop.gateway.counts() == before


@pytest.mark.anyio
async def test_no_secret_in_any_log_record(slack_app, caplog: pytest.LogCaptureFixture) -> None:  # noqa: ANN001
    app, tokens, loop = slack_app
    caplog.set_level(logging.DEBUG)
    secrets = [SECRET, BOT_TOKEN, *tokens.values()]
    async with _client(app) as client:
        for token in [*tokens.values(), "olp_forged-token-value"]:
            await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
            await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        created = await client.post("/api/users", json={"name": "dora", "role": "viewer"},
                                    headers={"Authorization": f"Bearer {tokens['admin']}"})
        secrets.append(created.json()["token"])
        for body in (slash("UALICE", "status"), slash("UALICE", "pending"), button_click("UALICE", "approve", "{}")):
            await client.post("/slack/events", content=body, headers=sign(body))
            await client.post("/slack/events", content=body, headers=sign(body, secret="wrong"))
    text = "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    assert caplog.records, "the flows logged something (so the check is not vacuous)"
    for secret in secrets:
        assert secret not in text, "a secret reached the logs"
