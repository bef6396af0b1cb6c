"""Security headers on every HTTP answer of the ingress: a strict Content-Security-Policy and friends.

The dashboard is plain HTML with ES modules and stylesheets served from ``/static``: no inline script, no
inline style, no ``on*`` attribute, nothing from another origin. So the policy allows only this origin and
forbids framing (``frame-ancestors 'none'`` and ``X-Frame-Options: DENY``, against clickjacking of the ✓ / ✗
buttons), ``<base>``, plugins and sending forms anywhere else. ``Referrer-Policy: no-referrer`` keeps the
dashboard's URLs out of other sites' logs and ``X-Content-Type-Options: nosniff`` makes the browser trust the
declared content types.

The same policy holds for the OpenAPI page ``/docs``: it is a vendored Swagger UI served from ``/static``
(see ``serving.dashboard``), started by a script file, and it renders under this policy without a violation
(FastAPI's own page, which loads Swagger UI from a CDN with an inline script, is switched off). The middleware
only *adds* a header that a route did not set itself, so a route could send a policy of its own. It is a pure
ASGI middleware (not ``BaseHTTPMiddleware``), so streamed answers (the live feed, chat) pass through untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def policy(**overrides: str) -> str:
    """The strict Content-Security-Policy, with some directives replaced (``style_src="'self' 'unsafe-inline'"``)."""
    directives = {
        "default-src": "'self'", "script-src": "'self'", "style-src": "'self'", "img-src": "'self' data:",
        "font-src": "'self'", "connect-src": "'self'", "frame-ancestors": "'none'", "base-uri": "'none'",
        "form-action": "'self'", "object-src": "'none'",
    }
    for key, value in overrides.items():
        directives[key.replace("_", "-")] = value
    return "; ".join(f"{k} {v}" for k, v in directives.items())


#: Every answer of the ingress that does not set its own (all of them today, ``/docs`` included).
CSP = policy()

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class SecurityHeadersMiddleware:
    """Adds :data:`SECURITY_HEADERS` (or ``headers``) to every HTTP answer that does not carry them already.

    Args:
        app: the ASGI app to wrap.
        headers: the headers to add (default :data:`SECURITY_HEADERS`).
    """

    def __init__(self, app: ASGIApp, headers: dict[str, str] | None = None) -> None:
        self.app = app
        self.headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                        for k, v in (headers or SECURITY_HEADERS).items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers") or []}
                extra = [(k, v) for k, v in self.headers if k not in present]
                message = {**message, "headers": [*(message.get("headers") or []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def secure(app: Any) -> Any:
    """``app`` with :class:`SecurityHeadersMiddleware` outside every other middleware; returns ``app``."""
    app.add_middleware(SecurityHeadersMiddleware)
    return app
