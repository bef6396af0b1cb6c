"""The ingress's security headers (CSP, frame, referrer, nosniff) on every kind of answer, without a browser.

The app is the one the Ray Serve ingress builds (``Ingress.__serve_build_asgi_app__``), over in-process ports
that no request here reaches: every route asked is public, a static file, or refused before any layer is called.
The browser test (``test_dashboard_browser``) checks that the page works under the policy.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from serving.dashboard import STATIC_DIR
from serving.headers import CSP, SECURITY_HEADERS, policy
from serving.ingress import Ingress

pytestmark = [pytest.mark.timeout(60), pytest.mark.anyio]


class Unreachable:
    """A layer port that must not be called by these requests."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"a header test reached a layer: {name}")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    ports = Unreachable()
    app = Ingress(ports, ports, ports).__serve_build_asgi_app__()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://opsloop") as c:
        yield c


def assert_secured(resp: httpx.Response) -> None:
    assert resp.headers["content-security-policy"] == CSP, resp.request.url
    for name, value in SECURITY_HEADERS.items():
        if name != "Content-Security-Policy":
            assert resp.headers[name] == value, (resp.request.url, name)
    assert len(resp.headers.get_list("content-security-policy")) == 1


async def test_page_static_file_and_api_carry_the_headers(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and "/static/js/app.js" in page.text
    assert_secured(page)
    js = await client.get("/static/js/app.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert_secured(js)
    me = await client.get("/api/me")  # refused before any layer is asked: an error answer is secured too
    assert me.status_code == 401
    assert_secured(me)
    assert_secured(await client.get("/static/nope.js"))  # 404
    assert_secured(await client.get("/openapi.json"))
    big = await client.post("/api/approvals/ap-1/decision", content=b"x" * (1 << 20),
                            headers={"Content-Type": "application/json"})
    assert big.status_code == 413  # refused by the limits middleware, still secured
    assert_secured(big)


def test_the_policy_is_strict() -> None:
    directives = dict(d.split(" ", 1) for d in CSP.split("; "))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert directives["base-uri"] == "'none'"
    assert "unsafe" not in CSP and "http" not in CSP and "*" not in CSP
    assert policy(img_src="'self'").count("img-src 'self';") == 1


async def test_docs_is_the_local_swagger_ui_under_the_same_policy(client: httpx.AsyncClient) -> None:
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "/static/vendor/swagger-ui/swagger-ui-bundle.js" in docs.text
    assert_secured(docs)
    assert (await client.get("/redoc")).status_code == 404  # FastAPI's CDN pages are off
    bundle = await client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and "SwaggerUIBundle" in bundle.text
    spec = (await client.get("/openapi.json")).json()
    assert "/api/approvals/{approval_id}/decision" in spec["paths"] and "/docs" not in spec["paths"]


@pytest.mark.parametrize("name", ["index.html", "docs.html"])
def test_pages_have_no_inline_script_style_or_foreign_url(name: str) -> None:
    html = (STATIC_DIR / name).read_text()
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in tag, f"inline script in {name}: {tag}"
    assert not re.search(r"<style\b", html), f"inline <style> in {name}"
    assert not re.search(r"\sstyle\s*=", html), f"style attribute in {name}"
    assert not re.search(r"\son[a-z]+\s*=", html), f"on* handler attribute in {name}"
    for url in re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", html):
        assert url.startswith("/") and not url.startswith("//"), f"{name} loads {url} from elsewhere"


def test_scripts_set_no_style_attribute_or_html() -> None:
    for js in (STATIC_DIR / "js").glob("*.js"):
        text = js.read_text()
        assert not re.search(r"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML", text), f"{js.name} writes HTML"
        assert 'setAttribute("style"' not in text, js.name
        assert not re.search(r"style:\s*`", text), f"{js.name} passes a style string (blocked by the CSP)"
