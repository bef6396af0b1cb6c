"""Request limits: body size (413) and a token bucket per caller (429 with Retry-After), before any route."""

from __future__ import annotations

import httpx
import pytest

from serving.api import build_app
from serving.limits import TokenBucket

pytestmark = [pytest.mark.anyio]


class Fakes:
    """Ports enough for auth and status (no Redis needed to test the limits)."""

    async def authenticate(self, token: str) -> dict | None:
        return {"name": token, "role": "admin"} if token.startswith("olp_") else None

    async def status(self) -> dict:
        return {"samples_seen": 1, "ts": 1.0}

    async def counts(self) -> dict[str, int]:
        return {}

    async def create_user(self, name: str, role: str, by: str, channel: str = "http") -> dict:
        return {"name": name, "role": role, "token": "olp_x"}


def test_token_bucket_refills_at_its_rate() -> None:
    b = TokenBucket(rate=2.0, burst=2)
    assert [b.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.5]
    assert b.take("b", 0.0) == 0.0, "callers have their own buckets"
    assert b.take("a", 0.5) == 0.0 and b.take("a", 0.5) > 0


async def test_too_large_and_too_many_get_json_errors() -> None:
    f = Fakes()
    app = build_app(f, f, f, max_body_bytes=2048, rate_per_s=0.001, burst=3)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://opsloop") as c:
        big = await c.post("/api/users", content=b"x" * 4096, headers={"Authorization": "Bearer olp_a",
                                                                        "content-type": "application/json"})
        assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"
        ok = await c.post("/api/users", json={"name": "bob", "role": "viewer"},
                          headers={"Authorization": "Bearer olp_a"})
        assert ok.status_code == 200
        third = await c.get("/api/me", headers={"Authorization": "Bearer olp_a"})
        assert third.status_code == 200
        limited = await c.get("/api/me", headers={"Authorization": "Bearer olp_a"})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"]["code"] == "rate_limited"
        other = await c.get("/api/me", headers={"Authorization": "Bearer olp_b"})
        assert other.status_code == 200, "another token has its own bucket"

        async def chunks():  # noqa: ANN202 - a body without Content-Length is counted as it arrives
            for _ in range(4):
                yield b"y" * 1024

        streamed = await c.post("/api/users", content=chunks(), headers={"Authorization": "Bearer olp_c",
                                                                         "content-type": "application/json"})
        assert streamed.status_code == 413
        metrics = await c.get("/metrics", headers={"Authorization": "Bearer olp_d"})
        assert 'opsloop_http_rejected_total{reason="rate_limited"} 1.0' in metrics.text
