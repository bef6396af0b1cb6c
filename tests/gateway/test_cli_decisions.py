"""``opsloop approvals show|approve|reject`` as a user runs them (the real CLI in a subprocess) against the REST API
(uvicorn on loopback, the real gateway on a real Redis): the CLI shows the action and its hash, and a decision
carries the hash it showed, so an action edited since is refused and stays pending."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from actors.gateway.service import GatewayService
from policies.policy import load_policy
from serving.api import build_app
from tests.gateway.test_bound_decisions import COOL, proposal
from tests.gateway.test_service import CountingActuator, FakeFleet
from tests.helpers import free_port

pytestmark = [pytest.mark.timeout(180)]
TOKEN = "olp_cli-decisions-test-token"


@dataclass
class Server:
    port: int
    gw: GatewayService
    act: CountingActuator
    loop: asyncio.AbstractEventLoop

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run a gateway call on the server's loop (the gateway's Redis client lives there)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def cli(self, *args: str, cwd: Path) -> subprocess.CompletedProcess:
        env = {**os.environ, "OPSLOOP_ADMIN_TOKEN": TOKEN}
        return subprocess.run([sys.executable, "-m", "cluster", "approvals", *args, "--port", str(self.port)],
                              capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


@pytest.fixture
def server(redis_url: str) -> Iterator[Server]:
    import uvicorn

    act = CountingActuator()
    gw = GatewayService(redis_url, "cli", load_policy(), act, fleet=FakeFleet())
    app = build_app(gw, None, None)  # type: ignore[arg-type] - the approvals routes need only the gateway
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    loop = asyncio.new_event_loop()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(uv.serve())

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API did not start"
        time.sleep(0.05)
    srv = Server(port, gw, act, loop)
    srv.run(gw.ensure_token("admin", "admin", TOKEN))
    yield srv
    uv.should_exit = True
    thread.join(10)


def test_cli_shows_the_action_and_sends_the_hash_it_showed(server: Server, tmp_path: Path) -> None:
    [ap] = [r.as_json()["approval"] for r in server.run(server.gw.submit(proposal(COOL)))]
    shown = server.cli("show", ap["approval_id"], cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert f"action_hash  {ap['action_hash']}" in shown.stdout and '"supply_c": 18.0' in shown.stdout

    done = server.cli("approve", ap["approval_id"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"approving {ap['approval_id']}: {ap['summary']}" in done.stdout and ap["action_hash"] in done.stdout
    assert "executed" in done.stdout and server.act.calls == [ap["action_id"]]
    [decision] = [e for e in server.run(server.gw.audit_entries(approval_id=ap["approval_id"]))
                  if e["type"] == "decision"]
    assert decision["payload"]["action_hash"] == ap["action_hash"]
    assert (decision["actor"], decision["channel"]) == ("admin", "http"), "the CLI is an HTTP client: channel http"


def test_cli_refuses_to_decide_an_action_that_changed_since_it_was_shown(server: Server, tmp_path: Path) -> None:
    [ap] = [r.as_json()["approval"] for r in server.run(server.gw.submit(proposal(COOL, pid="pr-9")))]
    seen = ap["action_hash"][:12]  # what `approvals show` printed
    reply = server.run(server.gw.edit(ap["approval_id"], {"supply_c": 16}, "oscar", "http", "colder"))
    edited = reply.as_json()["approval"]
    stale = server.cli("approve", ap["approval_id"], "--hash", seen, cwd=tmp_path)
    assert stale.returncode == 2 and "the action changed since you saw it; reload" in stale.stderr, stale.stderr
    short = server.cli("reject", ap["approval_id"], "--reason", "no", "--hash", "abc", cwd=tmp_path)
    assert short.returncode == 2 and "at least 8" in short.stderr
    after = server.run(server.gw.get(ap["approval_id"]))
    assert after["status"] == "pending" and after["decisions"] == [] and server.act.calls == []

    ok = server.cli("reject", ap["approval_id"], "--reason", "maintenance", "--hash", edited["action_hash"][:8],
                    "--json", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert '"status": "rejected"' in ok.stdout and edited["action_hash"] in ok.stderr, "JSON on stdout, the rest not"
