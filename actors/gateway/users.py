"""Users and their API tokens in Redis (hashes only): ``{ns}:users`` (name → user) and ``{ns}:tokens``
(token hash → name)."""

from __future__ import annotations

from typing import Any

from actors.gateway.auth import ROLES, User, hash_token, new_token, same_hash


class UserStore:
    """The Redis shell over users; the pure parts live in ``actors.gateway.auth``."""

    def __init__(self, redis: Any, namespace: str) -> None:
        self.redis = redis
        self.users_key = f"{namespace}:users"
        self.tokens_key = f"{namespace}:tokens"

    async def by_token(self, token: str) -> User | None:
        """The user a token belongs to, or None."""
        name = await self.redis.hget(self.tokens_key, hash_token(token))
        if name is None:
            return None
        raw = await self.redis.hget(self.users_key, name)
        user = User.model_validate_json(raw) if raw else None
        # A replaced token's old hash may linger; it is valid only while it is the user's current one.
        return user if user is not None and same_hash(user.token_hash, hash_token(token)) else None

    async def put(self, name: str, role: str, token_hash: str, by: str, now: float) -> User:
        """Create or replace a user with the given token hash (the old token stops working)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        user = User(name=name, role=role, token_hash=token_hash, created_ts=now, created_by=by)  # type: ignore[arg-type]
        old = await self.redis.hget(self.users_key, name)
        async with self.redis.pipeline(transaction=True) as pipe:
            if old:
                pipe.hdel(self.tokens_key, User.model_validate_json(old).token_hash)
            pipe.hset(self.users_key, name, user.model_dump_json())
            pipe.hset(self.tokens_key, token_hash, name)
            await pipe.execute()
        return user

    async def create(self, name: str, role: str, by: str, now: float) -> tuple[User, str]:
        """A new user (or a new token for an existing one); returns the user and the token, shown once."""
        token = new_token()
        return await self.put(name, role, hash_token(token), by, now), token

    async def ensure(self, name: str, role: str, token_hash: str, now: float) -> bool:
        """Make sure ``name`` holds this token hash and role (the bootstrap admin); True if it changed."""
        raw = await self.redis.hget(self.users_key, name)
        if raw:
            u = User.model_validate_json(raw)
            if same_hash(u.token_hash, token_hash) and u.role == role:
                return False
        await self.put(name, role, token_hash, "opsloop up", now)
        return True

    async def list(self) -> list[dict[str, Any]]:
        """Every user, without hashes, by name."""
        raw = await self.redis.hgetall(self.users_key)
        return sorted((User.model_validate_json(v).public() for v in raw.values()), key=lambda u: str(u["name"]))
