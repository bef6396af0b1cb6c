"""Tokens and roles; the audit chain and how it reports tampering (pure)."""

from __future__ import annotations

import json

from actors.gateway.audit import GENESIS, canonical, chain, verify
from actors.gateway.auth import allows, bearer, hash_token, new_token


def test_tokens_are_random_and_stored_hashed() -> None:
    a, b = new_token(), new_token()
    assert a != b and len(a) > 40
    assert hash_token(a) == hash_token(a) != hash_token(b) and a not in hash_token(a)


def test_roles_are_ordered() -> None:
    assert allows("admin", "approver") and allows("approver", "operator") and allows("operator", "viewer")
    assert not allows("viewer", "approver") and not allows("operator", "approver") and not allows("root", "viewer")


def test_bearer_header() -> None:
    assert bearer("Bearer abc") == "abc" and bearer("bearer  abc ") == "abc"
    assert bearer(None) is None and bearer("Basic abc") is None and bearer("Bearer ") is None


def trail(n: int = 5) -> list[tuple[str, str]]:
    out, seq, h = [], 0, GENESIS
    for i in range(n):
        e = chain(seq, h, ts=1000.0 + i, type="decision", actor=f"u{i}", channel="http", approval_id=f"ap-{i}",
                  payload={"decision": "approve"})
        out.append((f"{1000 + i}-0", canonical(e.model_dump(mode="json"))))
        seq, h = e.seq, e.hash
    return out


def head(stream: list[tuple[str, str]]) -> tuple[int, str]:
    last = json.loads(stream[-1][1])
    return last["seq"], last["hash"]


def test_intact_trail_verifies() -> None:
    s = trail()
    r = verify(s, head(s))
    assert r.ok and r.entries == 5 and r.problem is None


def test_an_altered_entry_is_named() -> None:
    s = trail()
    h = head(s)
    data = json.loads(s[2][1])
    data["actor"] = "mallory"
    s[2] = (s[2][0], canonical(data))
    r = verify(s, h)
    assert not r.ok and r.problem.seq == 3 and r.problem.stream_id == "1002-0" and "altered" in r.problem.message


def test_an_altered_entry_with_a_recomputed_hash_breaks_the_next_link() -> None:
    from actors.gateway.audit import entry_hash

    s = trail()
    h = head(s)
    data = json.loads(s[1][1])
    data["payload"] = {"decision": "reject"}
    data["hash"] = entry_hash(data)
    s[1] = (s[1][0], canonical(data))
    r = verify(s, h)
    assert not r.ok and r.problem.seq == 3 and "prev_hash" in r.problem.message


def test_removed_and_moved_entries_are_named() -> None:
    s = trail()
    h = head(s)
    gone = verify([*s[:2], *s[3:]], h)
    assert not gone.ok and gone.problem.seq == 3 and "missing" in gone.problem.message
    tail = verify(s[:-1], h)
    assert not tail.ok and tail.problem.seq == 5 and "missing" in tail.problem.message
    moved = verify([*s[:2], *s[3:], ("2000-0", s[2][1])], h)
    assert not moved.ok and moved.problem.seq == 3 and moved.problem.stream_id == "2000-0"
