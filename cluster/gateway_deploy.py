"""The gateway actor's start under ``opsloop up``: the admin token registered with it, then its sweep loop.

The twin's counterpart is ``cluster.twin_deploy``; the token itself (created, kept, read by the CLI) is
``cluster.tokens``'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cluster.settings import Settings
from cluster.tokens import ADMIN, admin_token

REGISTER_TIMEOUT_S = 30.0


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
