"""How the CLI reaches a running ``opsloop up``: its HTTP API on the configured port."""

from __future__ import annotations

from typing import Any

import httpx

from cluster.cli import CliError
from cluster.settings import Settings, load_settings

TIMEOUT_S = 60.0


def auth_headers(settings: Settings) -> dict[str, str]:
    """``Authorization: Bearer`` with ``settings.admin_token`` or the token file of ``opsloop up`` (if any)."""
    from cluster.tokens import cli_token

    token = cli_token(settings)
    return {"Authorization": f"Bearer {token}"} if token else {}


def api(settings: Settings, method: str, path: str, **kwargs: Any) -> Any:
    """Call the API with the CLI's token; a refused connection or an error answer becomes a one-line
    ``CliError`` (a 401 says where the token comes from)."""
    url = f"http://{settings.host}:{settings.port}{path}"
    try:
        resp = httpx.request(method, url, timeout=TIMEOUT_S, headers=auth_headers(settings), **kwargs)
    except httpx.ConnectError as exc:
        raise CliError(
            f"cannot reach opsloop at {settings.host}:{settings.port} ({exc.__class__.__name__}); "
            "is `opsloop up` running (and on this --port)?"
        ) from exc
    except httpx.HTTPError as exc:
        raise CliError(f"{method} {url} failed: {exc}") from exc
    try:
        body = resp.json()
    except ValueError:
        body = {"error": {"message": resp.text[:200]}}
    if resp.status_code >= 400:
        err = body.get("error", {}) if isinstance(body, dict) else {}
        if resp.status_code == 401:
            raise CliError(
                f"{err.get('message') or 'unauthorized'} (HTTP 401): the CLI sends OPSLOOP_ADMIN_TOKEN or the token "
                f"in {settings.token_file}; run it where `opsloop up` keeps its data (or set --data-dir)", code=2,
            )
        raise CliError(f"{err.get('message') or resp.reason_phrase} (HTTP {resp.status_code})", code=2)
    return body


def add_connection_flags(p: Any) -> None:
    p.add_argument("--port", type=int, help="port of the running `opsloop up` (default: setting `port`, 8000)")
    p.add_argument("--host", help="host of the running `opsloop up` (default: 127.0.0.1)")
    p.add_argument("--data-dir", help="data directory of `opsloop up`, where its admin token is (default ./.opsloop)")


def connection_settings(args: Any) -> Settings:
    """Settings from the connection flags (``--port``, ``--host``, ``--data-dir``) of a client command."""
    return load_settings(port=getattr(args, "port", None), host=getattr(args, "host", None),
                         data_dir=getattr(args, "data_dir", None))
