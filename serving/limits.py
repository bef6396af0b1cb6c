"""Request limits in front of every HTTP route: body size (413) and a token bucket per caller (429).

A caller is its bearer token (kept only as a hash prefix, never the token) or, without one, its client
address. Refusals use the API's JSON error shape and never reach the routes, so nothing changes state.
A caller sending random tokens gets a bucket per token: the per-address limit of a reverse proxy (or a
WAF) is the place to stop that; this limit keeps one client, honest or buggy, from starving the others.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from actors.gateway.auth import bearer
from actors.metrics import Metrics

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MAX_BODY_BYTES = 64 * 1024
RATE_PER_S = 20.0
BURST = 60
MAX_CALLERS = 10_000  # buckets kept (least recently used forgotten first)


class TokenBucket:
    """Per-key token buckets: ``rate`` tokens a second up to ``burst``; pure (the caller passes the clock)."""

    def __init__(self, rate: float, burst: int, max_keys: int = MAX_CALLERS) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst, self.max_keys = rate, float(burst), max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float) -> float:
        """Take one token for ``key``: 0.0 when allowed, else the seconds until one is available."""
        level, last = self._buckets.pop(key, (self.burst, now))
        level = min(self.burst, level + max(now - last, 0.0) * self.rate)
        wait = 0.0
        if level >= 1.0:
            level -= 1.0
        else:
            wait = (1.0 - level) / self.rate
        self._buckets[key] = (level, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


def caller_key(scope: Scope) -> str:
    """Who is calling, for the rate limit: a hash of the bearer token, else the client address."""
    headers = {k.lower(): v for k, v in scope.get("headers") or []}
    token = bearer((headers.get(b"authorization") or b"").decode("latin-1"))
    if token:
        return "token:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    client = scope.get("client") or ("unknown", 0)
    return f"addr:{client[0]}"


@dataclass
class LimitsMiddleware:
    """ASGI middleware: refuse bodies over ``max_body_bytes`` (413) and callers over their rate (429)."""

    app: Callable[[Scope, Receive, Send], Awaitable[None]]
    max_body_bytes: int = MAX_BODY_BYTES
    rate_per_s: float = RATE_PER_S
    burst: int = BURST
    meter: Metrics | None = None
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.buckets = TokenBucket(self.rate_per_s, self.burst)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        wait = self.buckets.take(caller_key(scope), self.clock())
        if wait > 0:
            await self._refuse(send, 429, "rate_limited", f"too many requests; retry in {math.ceil(wait)} s",
                               [(b"retry-after", str(math.ceil(wait)).encode())])
            return
        headers = {k.lower(): v for k, v in scope.get("headers") or []}
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await self._too_large(send)
            return
        seen = 0
        started = refused = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes and not refused:
                    refused = True
                    if not started:
                        await self._too_large(send)
                    return {"type": "http.disconnect"}  # the app stops reading; what it answers is dropped
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited_receive, tracking_send)

    async def _too_large(self, send: Send) -> None:
        await self._refuse(send, 413, "too_large", f"the request body is over {self.max_body_bytes} bytes")

    async def _refuse(self, send: Send, status: int, code: str, message: str,
                      extra: list[tuple[bytes, bytes]] | None = None) -> None:
        if self.meter is not None:
            self.meter.inc("opsloop_http_rejected_total", reason=code)
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   *(extra or [])]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
