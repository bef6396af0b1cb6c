"""How the CLI reaches a running ``opsloop up``: its HTTP API, at the address ``up`` records in its data directory
(``<data dir>/up.json``, written once the API answers and removed on a clean stop); ``--port`` overrides it."""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path
from typing import Any

import httpx

from cluster.cli import CliError
from cluster.cli._flags import add_settings_flags, settings_from_args
from cluster.settings import Settings

TIMEOUT_S = 60.0


class Unreachable(CliError):
    """Nothing answers at the address (connection refused): no ``opsloop up`` listens there."""


class Refused(CliError):
    """The API answered with an error: its HTTP ``status`` and the ``error_code`` of ``{"error": {"code"}}``."""

    def __init__(self, message: str, status: int, error_code: str | None, code: int = 2) -> None:
        super().__init__(message, code=code)
        self.status, self.error_code = status, error_code


def auth_headers(settings: Settings) -> dict[str, str]:
    """``Authorization: Bearer`` with ``settings.admin_token`` or the token file of ``opsloop up`` (if any)."""
    from cluster.tokens import cli_token

    token = cli_token(settings)
    return {"Authorization": f"Bearer {token}"} if token else {}


def api(settings: Settings, method: str, path: str, **kwargs: Any) -> Any:
    """Call the API with the CLI's token; a refused connection (``Unreachable``) or an error answer (``Refused``,
    exit code 2) becomes a one-line ``CliError`` (a 401 says where the token comes from)."""
    url = base_url(settings.host, settings.port) + path
    try:
        resp = httpx.request(method, url, timeout=TIMEOUT_S, headers=auth_headers(settings), **kwargs)
    except httpx.ConnectError as exc:
        raise Unreachable(
            f"cannot reach opsloop at {settings.host}:{settings.port} ({exc.__class__.__name__}); "
            f"is `opsloop up` running? (the CLI finds it through its data directory, here {settings.data_dir}; "
            "else pass --data-dir or --port)"
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
            raise Refused(
                f"{err.get('message') or 'unauthorized'} (HTTP 401): the CLI sends OPSLOOP_ADMIN_TOKEN or the token "
                f"in {settings.token_file}; run it where `opsloop up` keeps its data (or set --data-dir)",
                401, err.get("code"),
            )
        raise Refused(f"{err.get('message') or resp.reason_phrase} (HTTP {resp.status_code})", resp.status_code,
                      err.get("code"))
    return body


def add_connection_flags(p: Any) -> None:
    add_settings_flags(
        p,
        port="port of the running `opsloop up` (default: the one it recorded in its data directory; with none "
        "recorded, setting `port`, 8000)",
        host="host of the running `opsloop up` (default: the recorded one, else 127.0.0.1)",
        data_dir="data directory of `opsloop up`, where its admin token and address are (default ./.opsloop)",
    )


def connection_settings(args: Any) -> Settings:
    """Settings from the connection flags (``--port``, ``--host``, ``--data-dir``) of a client command; without
    ``--port``, the address of the ``opsloop up`` running on the data directory (see ``find_up``)."""
    port, host = getattr(args, "port", None), getattr(args, "host", None)
    settings = settings_from_args(args)
    if port is None:
        found = find_up(settings.state_file)
        if found is not None:
            settings = settings.model_copy(update={"host": host or found[0], "port": found[1]})
    return settings


def base_url(host: str, port: int) -> str:
    """``http://host:port``; a wildcard listen address becomes loopback, an IPv6 address gets its brackets."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def write_up_file(settings: Settings, pid: int) -> None:
    """Record where this ``opsloop up`` answers (``<data dir>/up.json``), once its API is healthy."""
    record = {"pid": pid, "host": settings.host, "port": settings.port, "url": base_url(settings.host, settings.port)}
    tmp = settings.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, settings.state_file)  # a client never reads half a file


def find_up(path: Path) -> tuple[str, int] | None:
    """Host and port of the ``opsloop up`` running on a data directory, from its ``up.json`` (``path``); None when
    there is none.

    Raises:
        CliError: the file names an ``up`` that is no longer running (stale), or it cannot be read.
    """
    from cluster.lifetime import is_running

    try:
        raw = json.loads(path.read_text())
        if "port" in raw:
            host, port = str(raw.get("host") or "127.0.0.1"), int(raw["port"])
        else:  # written by an earlier opsloop: {"url", "pid"}
            parts = urllib.parse.urlsplit(raw["url"])
            host, port = parts.hostname or "127.0.0.1", int(parts.port or 80)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CliError(f"cannot read {path} ({exc}); pass --port, or start `opsloop up` again") from None
    if not is_running(path.parent):
        raise CliError(
            f"{path} names an opsloop up (pid {raw.get('pid', '?')}, port {port}) that is no longer running; "
            "start `opsloop up` again (it replaces the file), or pass --port"
        )
    return host, port
