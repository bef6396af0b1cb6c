"""``POST /api/approvals/{id}/undo`` over the real loop (``test_api_loop``'s fixture): an executed setpoint's undo
opens a new approval of the previous setpoint, citing the original, audited as the operator's proposal; another
approver's ✓ runs it and the plant goes back."""

from __future__ import annotations

import pytest

from tests.serving.test_api_loop import Loop, loop, pending  # noqa: F401 - the fixture

pytestmark = [pytest.mark.timeout(180), pytest.mark.anyio]


async def test_an_executed_action_is_undone_through_a_new_approval_under_the_policy(loop: Loop) -> None:  # noqa: F811
    [ap] = await loop.until(lambda: pending(loop))
    aid = ap["approval_id"]
    early = await loop.client.post(f"/api/approvals/{aid}/undo", headers=loop.auth("oscar"), json={})
    assert early.status_code == 409 and early.json()["error"]["code"] == "conflict", early.text
    before = (await loop.sim.truth())["setpoint_c"][0]
    resp = await loop.client.post(f"/api/approvals/{aid}/decision", headers=loop.auth("alice"),
                                  json={"decision": "approve", "action_hash": ap["action_hash"]})
    done = resp.json()
    assert done["status"] == "executed" and done["inverse"] == {**ap["action"], "supply_c": before}, done

    viewer = await loop.client.post(f"/api/approvals/{aid}/undo", headers=loop.auth("vera"), json={})
    assert viewer.status_code == 403, "a viewer proposed an undo"
    assert (await loop.client.post("/api/approvals/ap-000000000000/undo", headers=loop.auth("oscar"))
            ).status_code == 404
    forged = await loop.client.post(f"/api/approvals/{aid}/undo", headers=loop.auth("oscar"),
                                    json={"reason": "r", "channel": "slack"})
    assert forged.status_code == 400, "the body claimed its channel"

    resp = await loop.client.post(f"/api/approvals/{aid}/undo", headers=loop.auth("oscar"),
                                  json={"reason": "the flow sensor was wrong"})
    assert resp.status_code == 200, resp.text
    undo = resp.json()
    assert (undo["status"], undo["undo_of"], undo["proposer"], undo["action"]) == (
        "pending", aid, "oscar", done["inverse"])
    assert undo["policy"].startswith("set_cooling_setpoint: needs 1 approver")
    assert (await loop.client.get(f"/api/approvals/{aid}")).json()["undone_by"] == undo["approval_id"]
    [entry] = [e for e in (await loop.client.get("/api/audit", params={"approval": undo["approval_id"]})).json()
               if e["type"] == "proposal"]
    assert (entry["actor"], entry["channel"], entry["payload"]["undo_of"]) == ("oscar", "http", aid)
    again = await loop.client.post(f"/api/approvals/{aid}/undo", headers=loop.auth("oscar"))
    assert again.status_code == 200 and again.json()["approval_id"] == undo["approval_id"]

    resp = await loop.client.post(f"/api/approvals/{undo['approval_id']}/decision", headers=loop.auth("bob"),
                                  json={"decision": "approve", "action_hash": undo["action_hash"]})
    assert resp.status_code == 200 and resp.json()["status"] == "executed", resp.text
    assert (await loop.sim.truth())["setpoint_c"] == [before]
