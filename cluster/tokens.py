"""The admin token of ``opsloop up``: created on first start, printed once, kept (mode 0600) in the data
directory, where the CLI on the same machine finds it."""

from __future__ import annotations

import os

from actors.gateway.auth import new_token
from cluster.settings import Settings

ADMIN = "admin"


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

