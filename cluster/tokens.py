"""The admin token of ``opsloop up``: created on first start, printed once, kept (mode 0600) in the data
directory, where the CLI on the same machine finds it."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from actors.gateway.auth import new_token
from cluster.settings import Settings

ADMIN = "admin"
REGISTER_TIMEOUT_S = 30.0


def cli_token(settings: Settings) -> str | None:
    """The token the CLI sends: ``settings.admin_token``, else the token file's, else None."""
    if settings.admin_token:
        return settings.admin_token.get_secret_value()
    try:
        return settings.token_file.read_text().strip() or None
    except OSError:
        return None


def admin_token(settings: Settings) -> tuple[str, bool]:
    """The admin token and whether it was created just now (then it is written to the token file, 0600)."""
    existing = cli_token(settings)
    if existing:
        return existing, False
    token = new_token()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(settings.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


def start_gateway(settings: Settings, gateway: Any, progress: Callable[[str], None] = print) -> None:
    """Register the admin token with the gateway actor (printing it when new) and start its sweep loop."""
    import ray

    token, created = admin_token(settings)
    ray.get(gateway.ensure_token.remote(ADMIN, "admin", token), timeout=REGISTER_TIMEOUT_S)
    gateway.run.remote()
    if created:
        progress(f"admin token {token}")
        progress(f"           shown once; kept in {settings.token_file} (mode 0600) for the CLI on this machine")
    else:
        progress(f"auth       admin token from {settings.token_file if not settings.admin_token else 'settings'}")
