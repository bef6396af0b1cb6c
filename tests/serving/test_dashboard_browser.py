"""The dashboard in real headless Chromium (Playwright over the system ``/usr/bin/chromium``).

The whole loop runs in the server's event loop on a private Redis; an approver signs in, sees the pending
approval appear, opens its cited runbook step, approves it and sees it executed without reloading, and
streams a chat answer; a viewer sees the approval but no ✓ / ✗. A screenshot is kept in
``tests/artifacts/dashboard.png``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.api import build_app
from serving.chat import ChatService, build_chat_router
from serving.dashboard import build_dashboard_router
from serving.llm import NoModel
from tests.serving.test_dashboard_harness import LiveServer, driver, make_loop, make_users

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic", "--no-first-run",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
WAIT_MS = 180_000  # how long a page may take to show what the loop produces (sim time runs at 60x)

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
pytestmark = [
    pytest.mark.timeout(420),
    pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                       reason=f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (make test does it as root)"),
]


class FakeLLMFacility:
    """Readings for the LLM serving panel (the real ones come from the vLLM metrics watcher)."""

    def __init__(self) -> None:
        self.n = 0

    async def latest(self) -> dict:
        self.n += 1
        return {"ts": float(self.n), "kv_cache_usage": 0.2 + 0.05 * (self.n % 8), "running": 2,
                "waiting": self.n % 3, "preemptions": 0, "tokens_per_s": 36.0, "ttft_s": 0.21}


@pytest.fixture
def server(redis_url: str) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    tokens = make_users(redis_url, {"alice": "approver", "victor": "viewer"})
    loop = make_loop(redis_url)
    app = build_app(loop.gateway, loop.twin, loop.agent)
    app.include_router(build_dashboard_router(loop.gateway, loop.twin, loop.agent, knowledge=loop.kb,
                                              llm=FakeLLMFacility(), every_s=0.3))
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


def sign_in(browser: object, url: str, token: str) -> object:
    page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()  # type: ignore[attr-defined]
    page.goto(url)
    page.fill("#login-token", token)
    page.click("#login-button")
    return page


def test_approver_approves_from_the_dashboard_and_sees_it_executed(server: tuple, browser: object) -> None:
    srv, tokens = server
    expect = playwright_api.expect
    page = sign_in(browser, srv.url, "not-a-token")
    expect(page.locator("#login-error")).to_contain_text("not valid")

    page.fill("#login-token", tokens["alice"])
    page.click("#login-button")
    expect(page.locator("#whoami")).to_have_text("alice (approver)")
    expect(page.locator("#live")).to_have_text("● live", timeout=WAIT_MS)
    card = page.locator("#pending .approval.pending").first
    expect(card).to_be_visible(timeout=WAIT_MS)
    approval_id = card.get_attribute("data-id")
    expect(card).to_contain_text("set_cooling_setpoint")
    expect(card.locator("button.approve")).to_be_enabled()
    page.evaluate("window.__samePage = true")  # gone if anything reloads the page

    # a viewer, at the same time, sees the approval but no ✓ / ✗, and the API refuses a viewer's decision
    viewer = sign_in(browser, srv.url, tokens["victor"])
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
    expect(done).to_contain_text("via dashboard")
    expect(page.locator(f'#pending .approval[data-id="{approval_id}"]')).to_have_count(0)
    assert page.evaluate("window.__samePage") is True
    # the viewer's page follows live too
    expect(viewer.locator(f'#decided .approval[data-id="{approval_id}"] .status')).to_have_text(
        "executed", timeout=WAIT_MS)

    # chat: the answer streams in (several updates of the same bubble) and ends with its sources
    page.evaluate("""() => { window.__chatUpdates = 0;
        new MutationObserver((m) => { window.__chatUpdates += m.length; })
          .observe(document.querySelector('#chat-log'), {subtree: true, childList: true, characterData: true}); }""")
    page.fill("#chat-input", "The coolant flow to n01 dropped. What should I do?")
    page.click("#chat-send")
    answer = page.locator("#chat-log .answer.done").last
    expect(answer).to_be_visible(timeout=WAIT_MS)
    expect(answer).to_contain_text("eop-")
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
