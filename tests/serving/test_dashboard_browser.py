"""The dashboard in real headless Chromium (Playwright over the system ``/usr/bin/chromium``).

The whole loop runs in the server's event loop on a private Redis; an approver signs in, sees the pending
approval appear with what approving it will run, opens its cited runbook step, approves it and sees it executed
without reloading, and streams a chat answer; a viewer sees the approval but no ✓ / ✗. A screenshot is kept in
``tests/artifacts/dashboard.png``. The app has the ingress's security headers (``serving.headers``): every page
is checked for their presence and for no Content-Security-Policy violation (console and
``securitypolicyviolation`` events). The OpenAPI page ``/docs`` of the real ingress app loads nothing from
another host.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from serving.api import build_app
from serving.chat import ChatService, build_chat_router
from serving.dashboard import build_dashboard_router
from serving.headers import CSP, SECURITY_HEADERS
from serving.ingress import Ingress
from serving.llm import NoModel
from tests.requirements_check import require
from tests.serving.test_dashboard_harness import LiveServer, driver, make_loop, make_users

CHROMIUM = require("chromium")  # /usr/bin/chromium (OPSLOOP_TEST_CHROMIUM overrides, to hide it)
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic", "--no-first-run",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
WAIT_MS = 180_000  # how long a page may take to show what the loop produces (sim time runs at 60x)

require("playwright")
playwright_api = importlib.import_module("playwright.sync_api")
pytestmark = [pytest.mark.timeout(420)]


class TwinWithLlm:
    """The loop's twin, its snapshot carrying an ``llm`` view for the LLM serving panel (the real twin has one
    when its source reads vLLM replicas' metrics; this fleet's simulator has none)."""

    def __init__(self, twin: Any) -> None:
        self.twin = twin
        self.n = 0

    async def snapshot(self) -> dict:
        self.n += 1
        llm = {"ts": float(self.n), "kv_cache_usage": 0.2 + 0.05 * (self.n % 8), "running": 2,
               "waiting": self.n % 3, "preemptions": 0, "tokens_per_s": 36.0, "ttft_s": 0.21}
        return {**await self.twin.snapshot(), "llm": llm}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.twin, name)


@pytest.fixture
def server(redis_url: str) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    tokens = make_users(redis_url, {"alice": "approver", "victor": "viewer"})
    loop = make_loop(redis_url)
    app = build_app(loop.gateway, loop.twin, loop.agent)
    app.include_router(build_dashboard_router(loop.gateway, TwinWithLlm(loop.twin), loop.agent, knowledge=loop.kb,
                                              every_s=0.3))
    app.include_router(build_chat_router(ChatService(NoModel(), loop.twin, loop.agent, loop.kb)))
    app.include_router(driver(loop))
    with LiveServer(app) as srv:
        yield srv, tokens


@pytest.fixture
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@dataclass
class Watch:
    """What a page met: the Content-Security-Policy violations its console reported, and every answer it got."""

    console: list[str] = field(default_factory=list)
    answers: list[Any] = field(default_factory=list)

    def violations(self, page: Any) -> list[str]:
        """Console reports and ``securitypolicyviolation`` events of the page's current document."""
        return [*self.console, *page.evaluate("window.__csp")]


def watched_page(browser: Any) -> tuple[Any, Watch]:
    """A new page, watched from its first request on."""
    page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
    watch = Watch()
    violations = watch.console
    page.add_init_script("""window.__csp = [];
        document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(
          `${e.effectiveDirective} blocked ${e.blockedURI || 'inline'} at ${e.sourceFile}:${e.lineNumber}`));""")
    page.on("console", lambda m: violations.append(m.text)
            if m.type == "error" and "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda e: violations.append(f"page error: {e}"))
    page.on("response", lambda r: watch.answers.append(r))
    return page, watch


LIST_APPROVALS = """async () => (await fetch('/api/approvals',
    {headers: {Authorization: 'Bearer ' + sessionStorage.getItem('opsloop.token')}})).json()"""


def assert_secured(resp: Any) -> None:
    headers = resp.headers
    assert headers["content-security-policy"] == CSP
    for name, value in SECURITY_HEADERS.items():
        if name != "Content-Security-Policy":
            assert headers[name.lower()] == value, name


def sign_in(browser: Any, url: str, token: str) -> tuple[Any, Watch]:
    """A page signed in with ``token`` (the page's headers checked) and what it met."""
    page, watch = watched_page(browser)
    assert_secured(page.goto(url))
    page.fill("#login-token", token)
    page.click("#login-button")
    return page, watch


def test_approver_approves_from_the_dashboard_and_sees_it_executed(server: tuple, browser: object) -> None:
    srv, tokens = server
    expect = playwright_api.expect
    page, watch = sign_in(browser, srv.url, "not-a-token")
    decisions: list[dict] = []  # the bodies the page sends with ✓ / ✗
    page.on("request", lambda r: decisions.append(r.post_data_json)
            if r.method == "POST" and r.url.endswith("/decision") else None)
    expect(page.locator("#login-error")).to_contain_text("not valid")

    page.fill("#login-token", tokens["alice"])
    page.click("#login-button")
    expect(page.locator("#whoami")).to_have_text("alice (approver)")
    expect(page.locator("#live")).to_have_text("● live", timeout=WAIT_MS)
    card = page.locator("#pending .approval.pending").first
    expect(card).to_be_visible(timeout=WAIT_MS)
    approval_id = card.get_attribute("data-id")
    expect(card).to_contain_text("set_cooling_setpoint")
    expect(card.locator(".bound")).to_contain_text("2–4 °C below the current 25 °C; never below 18 °C")
    expect(card).to_contain_text("the runbook mapping (no model)")  # who proposed it: no model in this loop
    # what approving it will run, before it runs: the simulator's call, the twin's value now, the new one
    expect(card.locator(".effect")).to_have_text(re.compile(
        r"^apply set_cooling_setpoint\(unit=cu01, supply_c=21\.0\) on the simulator .* — current: cu01 supply setpoint "
        r"\d+\.\d °C \(the twin's latest reading\); new: cu01 supply setpoint 21\.0 °C$"))
    expect(card.locator("button.approve")).to_be_enabled()
    page.evaluate("window.__samePage = true")  # gone if anything reloads the page

    # a viewer, at the same time, sees the approval but no ✓ / ✗, and the API refuses a viewer's decision
    viewer, viewer_watch = sign_in(browser, srv.url, tokens["victor"])
    expect(viewer.locator("#whoami")).to_have_text("victor (viewer)")
    vcard = viewer.locator(f'.approval[data-id="{approval_id}"]')
    expect(vcard).to_be_visible(timeout=WAIT_MS)
    expect(vcard.locator("button.approve, button.reject, input.reason")).to_have_count(0)
    expect(viewer.locator("button.approve, button.reject")).to_have_count(0)
    status = viewer.evaluate("""async (id) => (await fetch(`/api/approvals/${id}/decision`, {method: 'POST',
        headers: {'Content-Type': 'application/json',
                  Authorization: 'Bearer ' + sessionStorage.getItem('opsloop.token')},
        body: JSON.stringify({decision: 'approve'})})).status""", approval_id)
    assert status == 403

    # the citation opens the runbook at the cited step
    cite = card.locator("button.cite").first
    step = cite.get_attribute("data-step")
    cite.click()
    expect(page.locator("#runbook")).to_be_visible()
    expect(page.locator("#runbook-title")).not_to_have_text("")
    if step:
        expect(page.locator(f'#runbook .step.target[data-step="{step}"]')).to_be_visible()
    page.click("#runbook .close")

    card.locator("input.reason").fill("cool n01 back down")
    card.locator("button.approve").click()
    done = page.locator(f'#decided .approval[data-id="{approval_id}"]')
    expect(done.locator(".status")).to_have_text("executed", timeout=WAIT_MS)
    expect(done).to_contain_text("alice")
    # the decision is bound to the action the card showed; the server, not the page, names the channel
    shown = next(a for a in page.evaluate(LIST_APPROVALS) if a["approval_id"] == approval_id)
    assert decisions == [{"decision": "approve", "reason": "cool n01 back down", "action_hash": shown["action_hash"]}]
    channel = shown["decisions"][0]["channel"]
    expect(done).to_contain_text(f"alice via {channel}")
    expect(page.locator(f'#pending .approval[data-id="{approval_id}"]')).to_have_count(0)
    assert page.evaluate("window.__samePage") is True
    # the viewer's page follows live too
    expect(viewer.locator(f'#decided .approval[data-id="{approval_id}"] .status')).to_have_text(
        "executed", timeout=WAIT_MS)

    # undo: the executed card offers it (the viewer's does not); it opens the setpoint before as a new approval,
    # proposed by alice, so she cannot approve it herself
    expect(done.locator(".inverse")).to_have_text(re.compile(r"^set_cooling_setpoint\(unit=cu01, supply_c=25\)"))
    expect(viewer.locator(f'#decided .approval[data-id="{approval_id}"] .inverse')).to_be_visible()
    expect(viewer.locator("button.undo")).to_have_count(0)
    done.locator("button.undo").click()
    undo = page.locator("#pending .approval.pending", has_text=f"alice, undoing {approval_id}")
    expect(undo).to_be_visible(timeout=WAIT_MS)
    expect(undo.locator(".summary")).to_have_text("set_cooling_setpoint(unit=cu01, supply_c=25.0)")
    expect(done.locator(".inverse")).to_contain_text(f"(proposed as {undo.get_attribute('data-id')})",
                                                     timeout=WAIT_MS)

    # chat: the answer streams in (several updates of the same bubble) and ends with its sources
    page.evaluate("""() => { window.__chatUpdates = 0;
        new MutationObserver((m) => { window.__chatUpdates += m.length; })
          .observe(document.querySelector('#chat-log'), {subtree: true, childList: true, characterData: true}); }""")
    page.fill("#chat-input", "The coolant flow to n01 dropped. What should I do?")
    page.click("#chat-send")
    answer = page.locator("#chat-log .answer.done").last
    expect(answer).to_be_visible(timeout=WAIT_MS)
    # cited sources, whichever rank first: the cooling EOP, or the experience the approval above has just written
    # (it is written once the action's outcome is judged, which on a loaded machine comes before this question)
    expect(answer).to_contain_text(re.compile(r"\[(eop|sop|mop|manual|exp|experience)-[a-z0-9-]+\]"))
    assert page.evaluate("window.__chatUpdates") > 3

    # the live panels are drawn
    expect(page.locator("#heatmap .cell")).to_have_count(8)
    expect(page.locator("#barrier-facts")).to_contain_text("slowest shard")
    expect(page.locator("#llm-facts")).to_contain_text("KV cache")
    expect(page.locator("#events tr").first).to_be_visible()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(1500)  # let a few more points reach the charts before the picture
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000

    # the whole session under the CSP: nothing refused, and every answer (page, static, API, stream) secured
    assert watch.violations(page) == []
    assert viewer_watch.violations(viewer) == []
    assert all(r.url.startswith(srv.url) for r in watch.answers)
    kinds = {r.url.removeprefix(srv.url).split("/")[1] for r in watch.answers}
    assert {"", "static", "api", "v1"} <= kinds, kinds
    for r in watch.answers + viewer_watch.answers:
        assert_secured(r)


def test_docs_page_is_local_and_works_under_the_policy(browser: object) -> None:
    """The real ingress app's /docs: Swagger UI from this origin only, no violation of the strict policy."""
    unused = object()  # no layer is reached by /docs, its files and /openapi.json
    with LiveServer(Ingress(unused, unused, unused).__serve_build_asgi_app__()) as srv:
        page, watch = watched_page(browser)
        elsewhere: list[str] = []
        page.on("request", lambda r: None if r.url.startswith((srv.url, "data:")) else elsewhere.append(r.url))
        assert_secured(page.goto(f"{srv.url}/docs"))
        ops = page.locator(".swagger-ui .opblock")
        playwright_api.expect(ops.first).to_be_visible(timeout=60_000)
        playwright_api.expect(page.locator(".swagger-ui")).to_contain_text("/api/approvals/{approval_id}/decision")
        assert ops.count() > 10
        page.locator(".swagger-ui .opblock-summary").first.click()  # an operation opens (styles via the CSSOM)
        playwright_api.expect(page.locator(".swagger-ui .opblock.is-open")).to_have_count(1)
        assert elsewhere == []
        assert watch.violations(page) == []
        assert all(r.url.startswith(srv.url) for r in watch.answers)
        for r in watch.answers:
            assert_secured(r)
        assert_secured(page.goto(f"{srv.url}/"))  # and the dashboard page of the same app
