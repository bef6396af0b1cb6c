"""The whole loop of issue 2 on a real local Ray cluster and a real Redis server: approve one, reject one."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from cluster import deploy
from cluster.settings import Settings
from tests.helpers import free_port, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]


@pytest.fixture(scope="module")
def runtime(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[deploy.Runtime]:
    import redis

    redis.Redis.from_url(redis_server).flushall()
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("data"), redis_url=redis_server, port=free_port(), namespace="itest",
        sim_nodes=2, sim_gpus_per_node=4, sim_units=2, sim_speed=8.0, demo_fault_at_s=5.0,
        sim_faults=["cooling_degradation@5:n02=0.5"], llm="none",
    )
    rt = deploy.start(settings, progress=lambda _line: None)
    assert deploy.wait_healthy(rt.url, 60)
    yield rt
    deploy.stop(rt)


def auth(rt: deploy.Runtime) -> dict[str, str]:
    """The admin token `deploy.start` created in the data directory."""
    return {"Authorization": f"Bearer {rt.settings.token_file.read_text().strip()}"}


def approvals(rt: deploy.Runtime, status: str | None = None) -> list[dict]:
    params = {"status": status} if status else {}
    return httpx.get(f"{rt.url}/api/approvals", params=params, headers=auth(rt), timeout=10).json()


def events(rt: deploy.Runtime) -> list[dict]:
    return httpx.get(f"{rt.url}/api/events", params={"limit": 1000}, headers=auth(rt), timeout=10).json()


def decide(rt: deploy.Runtime, ap: dict, decision: str, reason: str, **body: object) -> httpx.Response:
    """A decision on ``ap`` as the test saw it (its action hash), unless ``body`` says otherwise."""
    payload = {"decision": decision, "reason": reason, "action_hash": ap["action_hash"], **body}
    return httpx.post(f"{rt.url}/api/approvals/{ap['approval_id']}/decision",
                      json={k: v for k, v in payload.items() if v is not None}, headers=auth(rt), timeout=60)


def test_approve_one_reject_the_other(runtime: deploy.Runtime) -> None:
    import ray

    rt = runtime

    def two_pending() -> list[dict] | None:
        pending = [a for a in approvals(rt, "pending") if a["action"]["kind"] == "set_cooling_setpoint"]
        return pending if len(pending) == 2 else None

    pending = {a["action"]["unit"]: a for a in wait_for(two_pending)}
    assert set(pending) == {"cu01", "cu02"}
    for a in pending.values():
        assert a["citations"] and a["citations"][0]["doc_id"] == "eop-cooling-degradation"

    def n01_crossed() -> bool:
        snap = httpx.get(f"{rt.url}/api/snapshot", headers=auth(rt), timeout=10).json()
        return all(g["sensed_c"] >= g["max_operating_c"] for g in snap["gpus"] if g["node"] == "n01")

    wait_for(n01_crossed)
    unbound = decide(rt, pending["cu02"], "approve", "", action_hash=None)
    assert unbound.status_code == 409 and "reload" in unbound.json()["error"]["message"], unbound.text
    ok = decide(rt, pending["cu01"], "approve", "lower supply")
    assert ok.status_code == 200 and ok.json()["status"] == "executed", ok.text
    no = decide(rt, pending["cu02"], "reject", "maintenance is on its way")
    assert no.status_code == 200 and no.json()["status"] == "rejected", no.text

    # Both outcomes reach the event log as telemetry, after the decisions returned: the simulator reports the
    # executed action with its next tick, the gateway's feedback stream carries the rejection. Wait for those two
    # events by approval id; the fleet's state is no proxy for them (tests/gateway/test_action_feedback.py).
    def logged(kind: str, ap: dict) -> list[dict]:
        return [e for e in events(rt) if e["kind"] == kind and e["data"]["approval_id"] == ap["approval_id"]]

    assert len(wait_for(lambda: logged("action_executed", pending["cu01"]))) == 1
    wait_for(lambda: logged("action_rejected", pending["cu02"]))
    executed = [e["data"]["approval_id"] for e in events(rt) if e["kind"] == "action_executed"]
    assert pending["cu02"]["approval_id"] not in executed, "the rejected action ran"

    # The action's effect, as the gateway judges it against the what-if the card showed. The step's 2–4 °C
    # (eop-cooling-degradation#s3) cannot offset half the coolant flow; the what-if says so and claims what it
    # can: n01's dies kept short of slowdown, which they reach without it.
    def judged() -> dict | None:
        ap = httpx.get(f"{rt.url}/api/approvals/{pending['cu01']['approval_id']}", headers=auth(rt), timeout=10).json()
        return ap["outcome"] if (ap.get("outcome") or {}).get("verdict") not in (None, "waiting") else None

    prediction = pending["cu01"]["prediction"]
    assert prediction["below"] and "short of slowdown" in prediction["text"], prediction
    outcome = wait_for(judged, timeout_s=240)
    assert outcome["verdict"] == "met" and outcome["observed"] < prediction["below"], outcome
    truth = ray.get(rt.handles["simulator"].truth.remote())
    assert truth["setpoint_c"][0] < 25.0 and truth["setpoint_c"][1] == 25.0, "the rejected action never ran"
    assert httpx.get(f"{rt.url}/healthz", timeout=10).status_code == 200
    status = httpx.get(f"{rt.url}/api/status", headers=auth(rt), timeout=10).json()
    assert status["approvals"]["executed"] >= 1 and status["approvals"]["rejected"] == 1
    assert httpx.get(f"{rt.url}/api/status", timeout=10).status_code == 401
    trail = httpx.get(f"{rt.url}/api/audit", params={"approval": pending["cu01"]["approval_id"]}, headers=auth(rt),
                      timeout=10).json()
    assert [(e["type"], e["actor"], e["channel"]) for e in trail][:2] == [("proposal", "agent", "agent"),
                                                                         ("decision", "admin", "http")]
    assert trail[1]["payload"]["action_hash"] == pending["cu01"]["action_hash"]
    assert httpx.get(f"{rt.url}/api/audit/verify", headers=auth(rt), timeout=10).json()["ok"]
