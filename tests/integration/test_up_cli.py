"""`opsloop up` as a new user runs it: embedded Redis, local Ray, Ctrl-C, nothing left behind, resume."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers import free_port

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]



def opsloop(*args: str, **kw) -> subprocess.CompletedProcess:  # noqa: ANN003
    return subprocess.run([sys.executable, "-m", "cluster", *args], capture_output=True, text=True, timeout=120, **kw)


class Up:
    """One `opsloop up` process and every process it started."""

    def __init__(self, data_dir: Path, port: int, *extra: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = (data_dir.parent / f"up-{time.monotonic_ns()}.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cluster", "up", "--data-dir", str(data_dir), "--port", str(port),
             "--speed", "8", "--llm", "none", *extra],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.tree: set[int] = set()

    def wait_for(self, fn, timeout_s: float = 240.0):  # noqa: ANN001, ANN201
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, Path(self.log.name).read_text()[-3000:]
            self.remember_tree()
            try:
                out = fn()
            except httpx.HTTPError:
                out = None
            if out:
                return out
            time.sleep(0.5)
        raise AssertionError(f"timed out: {fn.__name__}\n" + Path(self.log.name).read_text()[-3000:])

    def remember_tree(self) -> None:
        try:
            self.tree |= {p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            pass

    def stop(self, sig: int) -> str:
        self.remember_tree()
        self.proc.send_signal(sig)
        self.proc.wait(120)
        self.log.close()
        return Path(self.log.name).read_text()

    def leftovers(self) -> list[str]:
        deadline = time.monotonic() + 20
        alive: list[str] = []
        while time.monotonic() < deadline:
            alive = []
            for pid in self.tree:
                try:
                    p = psutil.Process(pid)
                    if p.status() != psutil.STATUS_ZOMBIE:
                        alive.append(f"{pid} {' '.join(p.cmdline())[:120]}")
                except psutil.NoSuchProcess:
                    pass
            if not alive:
                break
            time.sleep(0.5)
        return alive


def test_up_approve_ctrl_c_and_resume(tmp_path: Path) -> None:
    # The default data directory of a CLI run from tmp_path: `opsloop approvals …` there needs no flags.
    data = tmp_path / ".opsloop"
    port = free_port()
    up = Up(data, port)

    def healthy() -> bool:
        return httpx.get(f"{up.url}/healthz", timeout=5).status_code == 200

    def auth() -> dict[str, str]:
        return {"Authorization": f"Bearer {(data / 'admin.token').read_text().strip()}"}

    def pending() -> list[dict]:
        return httpx.get(f"{up.url}/api/approvals", params={"status": "pending"}, headers=auth(), timeout=5).json()

    up.wait_for(healthy)
    assert stat.S_IMODE((data / "admin.token").stat().st_mode) == 0o600
    token = (data / "admin.token").read_text().strip()
    assert httpx.get(f"{up.url}/api/approvals", timeout=5).status_code == 401
    [ap] = up.wait_for(pending)
    assert ap["action"]["kind"] == "set_cooling_setpoint"
    out = up.stop(signal.SIGINT)
    assert "stopped; data kept in" in out
    assert out.count(token) == 1, "the admin token is printed once, on first start"
    assert up.tree, "up started child processes (Ray, Redis)"
    assert up.leftovers() == [], "Ctrl-C leaves no process behind"

    # A second `opsloop up` on the same data finds the pending approval where it was.
    again = Up(data, port, "--quiet")
    again.wait_for(healthy)
    assert (data / "admin.token").read_text().strip() == token, "the admin token is kept"
    listed = json.loads(opsloop("approvals", "list", "--json", "--port", str(port), cwd=tmp_path).stdout)
    mine = [a for a in listed if a["id"] == ap["approval_id"]]
    assert mine and mine[0]["status"] == "pending" and mine[0]["action"] == ap["action"]
    assert {"id", "status", "action"} <= set(mine[0])

    # Without --port: the CLI finds the running up through its data directory (<data dir>/up.json), which `up`
    # writes once its own health check passes, a moment after /healthz first answers this test.
    again.wait_for(lambda: (data / "up.json").exists())
    assert json.loads((data / "up.json").read_text())["port"] == port
    bad = opsloop("approvals", "approve", "ap-nope", cwd=tmp_path)
    assert bad.returncode == 2 and "no approval ap-nope" in bad.stderr

    (tmp_path / "elsewhere").mkdir()
    anon = opsloop("approvals", "list", "--port", str(port), cwd=tmp_path / "elsewhere")
    assert anon.returncode == 2 and "401" in anon.stderr and "admin.token" in anon.stderr
    added = opsloop("users", "add", "vera", "--role", "viewer", "--json", cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    viewer = json.loads(added.stdout)["token"]
    denied = opsloop("approvals", "approve", ap["approval_id"], cwd=tmp_path,
                     env={**os.environ, "OPSLOOP_ADMIN_TOKEN": viewer})
    assert denied.returncode == 2 and "403" in denied.stderr

    done = opsloop("approvals", "approve", ap["approval_id"], cwd=tmp_path)
    assert done.returncode == 0 and "executed" in done.stdout, done.stderr
    twice = opsloop("approvals", "reject", ap["approval_id"], "--reason", "changed my mind", cwd=tmp_path)
    assert twice.returncode == 2 and "already executed" in twice.stderr

    # The action's effect as the gateway judges it against the card's what-if (the runbook step's 4 °C keeps n01's
    # dies short of slowdown; it cannot bring half a flow back under max operating, and the what-if says so).
    def judged() -> dict | None:
        now = httpx.get(f"{again.url}/api/approvals/{ap['approval_id']}", headers=auth(), timeout=5).json()
        return now["outcome"] if (now.get("outcome") or {}).get("verdict") not in (None, "waiting") else None

    assert again.wait_for(judged, timeout_s=300)["verdict"] == "met"
    st = json.loads(opsloop("status", "--json", cwd=tmp_path).stdout)
    assert st["approvals"].get("executed", 0) >= 1
    ok = opsloop("audit", "verify", cwd=tmp_path)
    assert ok.returncode == 0 and "intact" in ok.stdout, ok.stderr
    shown = opsloop("audit", "show", "--incident", ap["incident_id"], cwd=tmp_path)
    # The CLI is a client of the HTTP API: the audit records the route's channel, not what the client says it is.
    assert "decision" in shown.stdout and "by admin via http" in shown.stdout
    assert again.stop(signal.SIGTERM)
    assert again.leftovers() == []
    assert not (data / "up.json").exists() and not (data / "up.pids.json").exists(), "a clean stop leaves no record"


def test_cli_without_a_running_up_says_so(tmp_path: Path) -> None:
    r = opsloop("approvals", "list", "--port", str(free_port()))
    assert r.returncode == 1 and "is `opsloop up` running" in r.stderr
    r = opsloop("approvals", "reject", "ap-1", "--port", "1")
    assert r.returncode == 2 and "--reason" in r.stderr
