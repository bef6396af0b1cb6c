"""Peak memory of the main job: run `opsloop up` on embedded defaults and sample its whole process tree.

Usage: .venv/bin/python bench/up_memory.py [--seconds 150] [--port 8077] [-- extra `opsloop up` flags]
Prints the peak summed RSS (GiB) of `opsloop up` and every process it started (Ray, Redis, actors, Serve,
vLLM), the time to a healthy API, and the time to the first pending approval. Budget: 6 GiB.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time

import httpx
import psutil


def tree_rss(root: psutil.Process) -> int:
    total = 0
    for p in [root, *root.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=150.0, help="how long to keep `opsloop up` running")
    ap.add_argument("--port", type=int, default=8077)
    ap.add_argument("extra", nargs="*", help="extra flags for `opsloop up` (after --)")
    args = ap.parse_args()
    data = tempfile.mkdtemp(prefix="opsloop-mem-")
    cmd = [sys.executable, "-m", "cluster", "up", "--quiet", "--data-dir", data, "--port", str(args.port), *args.extra]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = psutil.Process(proc.pid)
    peak, healthy_s, pending_s = 0, None, None
    url = f"http://127.0.0.1:{args.port}"
    try:
        while time.monotonic() - t0 < args.seconds and proc.poll() is None:
            peak = max(peak, tree_rss(root))
            try:
                if healthy_s is None and httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    healthy_s = time.monotonic() - t0
                if healthy_s is not None and pending_s is None:
                    r = httpx.get(f"{url}/api/approvals", params={"status": "pending"}, timeout=2,
                                  headers=_auth(data))
                    if r.status_code == 200 and r.json():
                        pending_s = time.monotonic() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(120)
    out = {"peak_rss_gib": round(peak / 2**30, 2), "healthy_after_s": _r(healthy_s), "pending_after_s": _r(pending_s),
           "command": " ".join(cmd[1:])}
    print(json.dumps(out, indent=2))
    return 0


def _auth(data_dir: str) -> dict[str, str]:
    from pathlib import Path

    f = Path(data_dir) / "admin.token"
    return {"Authorization": f"Bearer {f.read_text().strip()}"} if f.exists() else {}


def _r(x: float | None) -> float | None:
    return round(x, 1) if x is not None else None


if __name__ == "__main__":
    raise SystemExit(main())
