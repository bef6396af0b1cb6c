"""The audit trail: an append-only, hash-chained log of every proposal, decision, execution and outcome.

Pure core (entries, hashing, verification) plus :class:`AuditLog`, the thin Redis shell over one stream
``{ns}:audit`` and a head key ``{ns}:audit:head`` (last seq and hash).

Each entry's ``hash`` is SHA-256 over the canonical JSON (sorted keys, no spaces) of all its other fields,
``prev_hash`` included, so an entry commits to the whole history before it. A stream entry cannot be changed
in place; a tamperer deletes it (XDEL) and, to alter it, appends an edited copy (XADD gets a newer stream
id). :func:`verify` orders entries by ``seq`` and reports the first bad one by seq and stream id:

- an altered entry: its recomputed hash differs (or, if the hash was recomputed too, the next entry's
  ``prev_hash`` no longer matches);
- a removed entry: a gap in ``seq``; a removed tail: the head key names a later seq;
- a moved entry: its stream id is out of order with its seq.

This detects edits by anyone who cannot also rewrite every later entry and the head; anchoring the head
elsewhere (a ticket, a second store) would be the next step and is not done here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EntryType = Literal["proposal", "decision", "execution", "outcome", "edit", "expiry", "user"]
GENESIS = "0" * 64


class AuditEntry(BaseModel):
    """One audit record."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seq: int = Field(ge=1)
    ts: float
    type: EntryType
    approval_id: str | None = None
    incident_id: str | None = None
    proposal_id: str | None = None
    action_id: str | None = None
    actor: str
    channel: str
    payload: dict[str, Any] = Field(default_factory=dict)
    prev_hash: str
    hash: str


def canonical(data: dict[str, Any]) -> str:
    """Canonical JSON: sorted keys, no whitespace, UTF-8 kept."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(fields: dict[str, Any]) -> str:
    """The hash of an entry's fields (``hash`` itself excluded)."""
    return hashlib.sha256(canonical({k: v for k, v in fields.items() if k != "hash"}).encode()).hexdigest()


def chain(prev_seq: int, prev_hash: str, **fields: Any) -> AuditEntry:
    """The entry that follows ``(prev_seq, prev_hash)``."""
    body = {"seq": prev_seq + 1, "prev_hash": prev_hash, **fields}
    body = AuditEntry.model_validate({**body, "hash": GENESIS}).model_dump(mode="json")
    return AuditEntry.model_validate({**body, "hash": entry_hash(body)})


class Problem(BaseModel):
    """The first bad entry found by :func:`verify`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seq: int
    stream_id: str | None
    message: str


class Report(BaseModel):
    """The outcome of verifying the trail."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ok: bool
    entries: int
    head_seq: int
    problem: Problem | None = None


def _parse(stream_id: str, raw: str) -> tuple[AuditEntry | None, dict[str, Any] | None]:
    try:
        data = json.loads(raw)
        return AuditEntry.model_validate(data), data
    except (ValueError, TypeError):
        return None, None


def verify(stream: Sequence[tuple[str, str]], head: tuple[int, str] | None) -> Report:
    """Verify the chain; ``stream`` is (stream id, entry JSON) in stream order, ``head`` the head key."""
    parsed: list[tuple[str, AuditEntry, dict[str, Any]]] = []
    for sid, raw in stream:
        entry, data = _parse(sid, raw)
        if entry is None or data is None:
            return Report(ok=False, entries=len(stream), head_seq=head[0] if head else 0,
                          problem=Problem(seq=0, stream_id=sid, message="entry is not a valid audit record"))
        parsed.append((sid, entry, data))
    head_seq = head[0] if head else 0
    by_seq = sorted(parsed, key=lambda t: (t[1].seq, _sid_key(t[0])))

    def bad(seq: int, sid: str | None, message: str) -> Report:
        return Report(ok=False, entries=len(parsed), head_seq=head_seq,
                      problem=Problem(seq=seq, stream_id=sid, message=message))

    prev_hash, expected = GENESIS, 1
    for i, (sid, entry, data) in enumerate(by_seq):
        if entry.seq < expected:
            return bad(entry.seq, sid, f"seq {entry.seq} appears twice (a copy was added)")
        if entry.seq > expected:
            return bad(expected, None, f"entry seq {expected} is missing (removed); the next present is seq "
                       f"{entry.seq} at stream id {sid}")
        if entry_hash(data) != entry.hash:
            return bad(entry.seq, sid, f"entry seq {entry.seq} was altered (its hash does not match its content)")
        if entry.prev_hash != prev_hash:
            return bad(entry.seq, sid, f"entry seq {entry.seq} does not follow seq {entry.seq - 1} (prev_hash "
                       "mismatch: one of the two was altered)")
        if i + 1 < len(by_seq) and _sid_key(sid) > _sid_key(by_seq[i + 1][0]):
            return bad(entry.seq, sid, f"entry seq {entry.seq} is out of stream order (it was removed and re-added)")
        prev_hash, expected = entry.hash, expected + 1
    if head is not None and (head[0] != expected - 1 or (head[0] and head[1] != prev_hash)):
        if head[0] > expected - 1:
            return bad(expected, None, f"entries after seq {expected - 1} are missing (the head names seq {head[0]})")
        return bad(expected - 1, by_seq[-1][0] if by_seq else None, "the head does not match the last entry")
    return Report(ok=True, entries=len(parsed), head_seq=head_seq)


def _sid_key(sid: str) -> tuple[int, int]:
    ms, _, n = sid.partition("-")
    return int(ms), int(n or 0)


class AuditLog:
    """The Redis shell: one writer appends with compare-and-set on the head, anyone reads and verifies."""

    def __init__(self, redis: Any, namespace: str) -> None:
        self.redis = redis
        self.stream = f"{namespace}:audit"
        self.head_key = f"{namespace}:audit:head"

    async def _head(self, client: Any) -> tuple[int, str] | None:
        raw = await client.get(self.head_key)
        if not raw:
            return None
        seq, _, h = (raw.decode() if isinstance(raw, bytes) else raw).partition(":")
        return int(seq), h

    async def append(self, ts: float, type: EntryType, actor: str, channel: str, **fields: Any) -> AuditEntry:
        """Append one entry (retried while another writer moves the head)."""
        from redis.exceptions import WatchError

        while True:
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(self.head_key)
                    head = await self._head(pipe) or (0, GENESIS)
                    entry = chain(head[0], head[1], ts=ts, type=type, actor=actor, channel=channel, **fields)
                    pipe.multi()
                    pipe.xadd(self.stream, {"e": canonical(entry.model_dump(mode="json"))})
                    pipe.set(self.head_key, f"{entry.seq}:{entry.hash}")
                    await pipe.execute()
                    return entry
                except WatchError:
                    continue

    async def raw(self) -> list[tuple[str, str]]:
        """Every (stream id, entry JSON) in stream order."""
        out = []
        for sid, fields in await self.redis.xrange(self.stream):
            raw = fields.get(b"e", fields.get("e", b""))
            out.append((_s(sid), _s(raw)))
        return out

    async def entries(self, incident_id: str | None = None, approval_id: str | None = None) -> list[dict[str, Any]]:
        """Entries (with their stream id), optionally of one incident or approval, oldest first."""
        out = []
        for sid, raw in await self.raw():
            entry, data = _parse(sid, raw)
            if data is None:
                data = {"unparseable": raw}
            if incident_id and data.get("incident_id") != incident_id:
                continue
            if approval_id and data.get("approval_id") != approval_id:
                continue
            out.append({"stream_id": sid, **data})
        return out

    async def verify(self) -> Report:
        """Verify the whole trail."""
        return verify(await self.raw(), await self._head(self.redis))


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v
