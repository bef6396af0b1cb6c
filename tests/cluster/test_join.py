"""`opsloop up --address` joins a Ray head the test started (with Ray 2.60's token auth on)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]



def test_up_joins_an_existing_ray_head(tmp_path: Path) -> None:
    ray_bin = str(Path(sys.executable).parent / "ray")
    temp = tempfile.mkdtemp(prefix="ol-head-", dir="/tmp")
    gcs = free_port()
    # Token auth: the head and every client share one token, passed to Ray itself through its own env var.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.run(
        [ray_bin, "start", "--head", f"--port={gcs}", "--num-cpus=4", "--include-dashboard=false",
         f"--temp-dir={temp}", "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert head.returncode == 0, head.stdout + head.stderr
    port = free_port()
    log = (tmp_path / "up.log").open("w")
    up = subprocess.Popen(
        [sys.executable, "-m", "cluster", "up", "--address", f"127.0.0.1:{gcs}", "--data-dir", str(tmp_path / "d"),
         "--port", str(port), "--llm", "none", "--speed", "8", "--quiet"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert up.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            raise AssertionError("not healthy: " + (tmp_path / "up.log").read_text()[-3000:])
        token = (tmp_path / "d" / "admin.token").read_text().strip()
        status = httpx.get(f"{url}/api/status", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
        assert status  # the loop answers through the joined cluster
        # It runs on the joined head, not on a Ray of its own: the head lists our named actors.
        probe = subprocess.run(
            [sys.executable, "-c", f"import ray; ray.init(address='127.0.0.1:{gcs}', namespace='opsloop', "
             "log_to_driver=False); print(sorted(a['name'] for a in ray.util.list_named_actors(True)))"],
            env=env, capture_output=True, text=True, timeout=120,
        )
        assert "twin" in probe.stdout and "gateway" in probe.stdout, probe.stdout + probe.stderr
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(90)
        except subprocess.TimeoutExpired:
            up.kill()
        _stop_head(temp)
        shutil.rmtree(temp, ignore_errors=True)
    assert "stopped" in (tmp_path / "up.log").read_text()


def _stop_head(temp: str) -> None:
    """Stop the head this test started: only processes whose command line names its private temp dir."""
    import psutil

    ours = [p for p in psutil.process_iter(["cmdline"]) if any(temp in part for part in (p.info["cmdline"] or []))]
    # and their children, whose command lines do not name it (the raylet's dashboard and runtime-env agents)
    for p in list(ours):
        try:
            ours += [c for c in p.children(recursive=True) if c not in ours]
        except psutil.NoSuchProcess:
            pass
    for p in ours:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _gone, alive = psutil.wait_procs(ours, timeout=20)
    for p in alive:
        p.kill()
