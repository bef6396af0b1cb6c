"""State machine rules beyond the basics: proposer, roles, edit (pure)."""

from __future__ import annotations

from actors.gateway.approvals import Decision, Refusal, decide, edit
from policies.actions import action_hash, parse_action
from policies.policy import Verdict
from tests.gateway.test_approvals import approval

NEW = parse_action({"kind": "drain_node", "node": "n02"})
VERDICT = Verdict(mode="approve", approvers=1, reason="drain_node: needs 1 approver")


def d(decision: str, by: str, role: str = "approver", **kw) -> Decision:
    """A decision on the action ``approval()`` shows, unless ``kw`` names another hash."""
    return Decision(**{"decision": decision, "by": by, "role": role, "reason": "r", "ts": 110.0, "channel": "http",
                       "action_hash": approval().action_hash, **kw})


def test_proposer_cannot_approve_and_roles_are_checked() -> None:
    ap = approval()
    r = decide(ap, d("approve", "agent"))
    assert isinstance(r, Refusal) and r.code == "forbidden"
    r = decide(ap, d("approve", "vic", role="viewer"))
    assert isinstance(r, Refusal) and r.code == "forbidden" and "viewer" in r.message
    assert decide(ap, d("approve", "ann", role="admin")).status == "approved"


def test_edit_is_judged_again_voids_approvals_and_binds_the_editor() -> None:
    ap = decide(approval(approvers=2), d("approve", "alice"))
    assert ap.status == "pending" and len(ap.decisions) == 1
    ed = edit(ap, NEW, VERDICT, by="oscar", channel="cli", reason="n02 instead", now=120.0, expiry_s=60)
    assert ed.status == "pending" and ed.decisions == [] and ed.required == 1
    assert ed.action == NEW and ed.action_hash == action_hash(NEW) and ed.action_id != ap.action_id
    assert ed.proposer == "oscar" and ed.edits[0].before["node"] == "n01" and ed.edits[0].by == "oscar"
    assert ed.expires_ts == 180.0
    own = decide(ed, d("approve", "oscar", action_hash=ed.action_hash))
    assert isinstance(own, Refusal) and own.code == "forbidden", "the editor cannot approve their own edit"
    stale = decide(ed, d("approve", "alice", action_hash=ap.action_hash))
    assert isinstance(stale, Refusal) and stale.code == "stale", "an approval of the old action does not bind"
    assert decide(ed, d("approve", "alice", action_hash=ed.action_hash)).status == "approved"


def test_edit_to_a_denied_action_denies_and_bad_edits_are_refused() -> None:
    ap = approval()
    denied = edit(ap, NEW, Verdict(mode="deny", reason="no"), by="o", channel="http", reason="x", now=120, expiry_s=60)
    assert denied.status == "denied"
    same = edit(ap, ap.action, VERDICT, by="o", channel="http", reason="x", now=120, expiry_s=60)
    assert isinstance(same, Refusal) and same.code == "invalid"
    other = parse_action({"kind": "cordon_gpu", "gpu": "n01/gpu0"})
    kind = edit(ap, other, VERDICT, by="o", channel="http", reason="x", now=120, expiry_s=60)
    assert isinstance(kind, Refusal) and kind.code == "invalid"
    done = decide(ap, d("reject", "bob"))
    late = edit(done, NEW, VERDICT, by="o", channel="http", reason="x", now=120, expiry_s=60)
    assert isinstance(late, Refusal) and late.code == "conflict"
