"""Who may do what: API tokens, stored only as hashes, and roles (pure: no IO).

Roles are ordered, each includes the ones before it: ``viewer`` reads, ``operator`` also edits actions,
``approver`` also decides approvals, ``admin`` also manages users. Tokens are 256-bit random strings, so a
plain SHA-256 is enough to store them (a slow password hash protects low-entropy secrets, not these).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["viewer", "operator", "approver", "admin"]
ROLES: tuple[str, ...] = ("viewer", "operator", "approver", "admin")
TOKEN_PREFIX = "olp_"
UserName = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")


class User(BaseModel):
    """A user as stored: the token's hash, never the token."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = UserName
    role: Role
    token_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_ts: float
    created_by: str

    def public(self) -> dict[str, str | float]:
        """What the API shows of a user (no hash)."""
        return {"name": self.name, "role": self.role, "created_ts": self.created_ts, "created_by": self.created_by}


def new_token() -> str:
    """A fresh API token (shown once, then only its hash is kept)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def same_hash(a: str, b: str) -> bool:
    """Constant-time comparison of two token hashes."""
    return hmac.compare_digest(a, b)


def allows(role: str, needed: str) -> bool:
    """Whether ``role`` includes ``needed`` (unknown roles include nothing)."""
    if role not in ROLES or needed not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(needed)


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None
