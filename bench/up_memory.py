"""Peak memory of the main job: run `opsloop up` on embedded defaults and sample its whole process tree.

Usage: .venv/bin/python bench/up_memory.py [--seconds 150] [--port 8077] [--chats 8] [--data-dir DIR]
       [--breakdown] [-- extra `opsloop up` flags]

Prints the peak summed RSS (GiB) of `opsloop up` and every process it started (Ray, Redis, actors, Serve,
vLLM), the time to a healthy API, and the time to the first pending approval. Budget: 4.5 GiB.

The headline is the summed RSS, sampled every 0.5 s. It counts a page shared by several processes once per
process (Ray's workers share the interpreter, libraries and the object store), so it overstates what the tree
holds. ``--breakdown`` adds, at the RSS peak and at the end of the run (steady state), each process (its role
from the command line or Ray's process title) with RSS, PSS (each shared page split among its sharers: the PSS
sum is what the tree really holds) and USS (pages only it holds, what ending it would free), and the one-shot
processes that were gone by the end (the model conversion, the task that deploys the LLM) with their largest RSS.

``--chats N``: from the moment the API is healthy (the LLM is deployed before the ingress), stream chats with
``model=opsloop`` (grounded: twin, events, runbooks; 128 tokens each) the whole time left: one alone, then N at
once, again and again; the output counts them and gives the busiest the twin saw the engine (KV-cache use,
running and waiting sequences) and the LLM events it raised. ``--data-dir DIR`` reuses a data directory (a warm
start: the model is already converted; a new or empty DIR gives a cold start and is kept for the next run); by
default a fresh temporary one is made, so the first start converts the model, and removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil

GIB = 2**30
QUESTION = "Why is n01 hot and what does the runbook say?"
SERIES_EVERY_S = 15.0


def role(p: psutil.Process) -> str:
    """A short name for a process of the tree: Ray's process title, else the program and its first arguments."""
    try:
        cmd = p.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"
    if not cmd:
        return p.name()
    first = cmd[0]
    if first.startswith("ray::"):  # a Ray worker renames itself after what it runs (actor class or task)
        return " ".join(cmd)[:70]
    prog = Path(first).name
    rest = [a for a in cmd[1:] if not a.startswith("--")][:2]
    if prog.startswith("python"):
        if "-m" in cmd:  # python -m cluster up …
            i = cmd.index("-m")
            return " ".join(["python -m", *cmd[i + 1:i + 3]])
        for a in cmd[1:]:
            if a.endswith(".py"):
                return f"python {Path(a).parent.name}/{Path(a).name}"
        return " ".join([prog, *rest])[:70]
    return " ".join([prog, *rest])[:70]


def tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_rss(root: psutil.Process) -> int:
    """Summed RSS of the tree (the headline)."""
    return sum(rss for _p, rss in _rss(tree(root)))


def _rss(procs: list[psutil.Process]) -> list[tuple[psutil.Process, int]]:
    out = []
    for p in procs:
        try:
            out.append((p, p.memory_info().rss))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def breakdown(procs: list[psutil.Process]) -> list[dict[str, Any]]:
    """Each process with RSS, PSS and USS (MiB), largest RSS first."""
    rows = []
    for p in procs:
        try:
            m = p.memory_full_info()
            rows.append({"pid": p.pid, "role": role(p), "rss_mib": m.rss // 2**20, "pss_mib": m.pss // 2**20,
                         "uss_mib": m.uss // 2**20})
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return sorted(rows, key=lambda r: -r["rss_mib"])


def _sums(rows: list[dict[str, Any]]) -> dict[str, float]:
    return {f"{k}_gib": round(sum(r[f"{k}_mib"] for r in rows) / 1024, 2) for k in ("rss", "pss", "uss")}


class Chats:
    """Streams grounded chats in a thread until stopped: one alone, then ``n`` at once, again and again."""

    def __init__(self, url: str, headers: dict[str, str], n: int) -> None:
        self.url, self.headers, self.n = url, headers, n
        self.done = self.failed = 0
        self.first_s: float | None = None
        self.kv_max, self.running_max, self.waiting_max = 0.0, 0, 0
        self.why: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(120)

    def engine(self) -> dict[str, Any]:
        """The busiest the twin saw the vLLM engine (``/api/snapshot`` ``llm``) and the LLM events it raised."""
        out: dict[str, Any] = {"kv_cache_usage_max": self.kv_max, "running_max": self.running_max,
                               "waiting_max": self.waiting_max}
        try:
            kinds = httpx.get(f"{self.url}/api/status", headers=self.headers, timeout=10).json()["twin"]
            out["events"] = {k: n for k, n in kinds.get("events_by_kind", {}).items() if k.startswith(("kv_", "llm"))}
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        return out

    def watch(self) -> None:
        """Note the engine's KV-cache use and queue as the twin sees them now."""
        try:
            llm = httpx.get(f"{self.url}/api/snapshot", headers=self.headers, timeout=5).json().get("llm") or {}
        except (httpx.HTTPError, ValueError):
            return
        self.kv_max = max(self.kv_max, float(llm.get("kv_cache_usage") or 0.0))
        self.running_max = max(self.running_max, int(llm.get("running") or 0))
        self.waiting_max = max(self.waiting_max, int(llm.get("waiting") or 0))

    def _one(self) -> str:
        """One streamed chat: ``ok``, or why not (HTTP status or exception)."""
        body = {"model": "opsloop", "stream": True, "max_tokens": 128,
                "messages": [{"role": "user", "content": QUESTION}]}
        try:
            with httpx.stream("POST", f"{self.url}/v1/chat/completions", json=body, headers=self.headers,
                              timeout=300) as r:
                if r.status_code != 200:
                    return f"HTTP {r.status_code}"
                for _ in r.iter_lines():
                    pass
            return "ok"
        except httpx.HTTPError as exc:
            return type(exc).__name__

    def _count(self, outcome: str) -> None:
        if self._stop.is_set():
            return  # cut short by the end of the run, not a failure
        if outcome == "ok":
            self.done += 1
        else:
            self.failed += 1
            self.why[outcome] = self.why.get(outcome, 0) + 1

    def _run(self) -> None:
        with ThreadPoolExecutor(self.n) as pool:
            while not self._stop.is_set():
                self._count(self._one())
                for outcome in pool.map(lambda _i: self._one(), range(self.n)):
                    self._count(outcome)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=150.0, help="how long to keep `opsloop up` running")
    ap.add_argument("--port", type=int, default=8077)
    ap.add_argument("--chats", type=int, default=0, help="stream chats once healthy: 1, then this many at once")
    ap.add_argument("--data-dir", help="use this data directory and keep it (run twice: cold, then warm); "
                    "default: a fresh temporary one")
    ap.add_argument("--breakdown", action="store_true", help="per-process RSS/PSS/USS at the peak and at the end")
    ap.add_argument("extra", nargs="*", help="extra flags for `opsloop up` (after --)")
    args = ap.parse_args()
    if args.chats < 0:
        ap.error("--chats must be 0 or more")
    data = args.data_dir or tempfile.mkdtemp(prefix="opsloop-mem-")
    cmd = [sys.executable, "-m", "cluster", "up", "--quiet", "--data-dir", data, "--port", str(args.port), *args.extra]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = psutil.Process(proc.pid)
    peak, peak_at, healthy_s, pending_s = 0, 0.0, None, None
    peak_rows: list[dict[str, Any]] = []
    chats: Chats | None = None
    url = f"http://127.0.0.1:{args.port}"
    end_rows: list[dict[str, Any]] = []
    engine: dict[str, Any] | None = None
    series: list[float] = []  # the summed RSS every SERIES_EVERY_S: does it settle or creep?
    largest: dict[int, tuple[str, int]] = {}  # pid -> (role, its largest RSS): one-shot children show here
    try:
        while time.monotonic() - t0 < args.seconds and proc.poll() is None:
            procs = tree(root)
            sizes = _rss(procs)
            total = sum(rss for _p, rss in sizes)
            for p, rss in sizes:
                if rss > largest.get(p.pid, ("", 0))[1]:
                    largest[p.pid] = (role(p), rss)
            if time.monotonic() - t0 >= SERIES_EVERY_S * len(series):
                series.append(round(total / GIB, 2))
            if total > peak:
                peak, peak_at = total, time.monotonic() - t0
                if args.breakdown:
                    peak_rows = breakdown(procs)
            try:
                if healthy_s is None and httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    healthy_s = time.monotonic() - t0
                if healthy_s is not None and pending_s is None:
                    r = httpx.get(f"{url}/api/approvals", params={"status": "pending"}, timeout=2,
                                  headers=_auth(data))
                    if r.status_code == 200 and r.json():
                        pending_s = time.monotonic() - t0
                if args.chats and healthy_s is not None and chats is None:
                    chats = Chats(url, _auth(data), args.chats)
                    chats.first_s = time.monotonic() - t0
                    chats.start()
                if chats is not None and int(time.monotonic() - t0) % 2 == 0:
                    chats.watch()
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        if args.breakdown and proc.poll() is None:
            end_rows = breakdown(tree(root))
        engine = chats.engine() if chats is not None and proc.poll() is None else None
    finally:
        if chats is not None:
            chats._stop.set()
        proc.send_signal(signal.SIGINT)
        proc.wait(120)
        if chats is not None:
            chats.stop()
        if args.data_dir is None:
            shutil.rmtree(data, ignore_errors=True)  # ~0.3 GiB (the converted model); --data-dir keeps its own
    out: dict[str, Any] = {
        "peak_rss_gib": round(peak / GIB, 2), "peak_at_s": round(peak_at, 1), "healthy_after_s": _r(healthy_s),
        "pending_after_s": _r(pending_s), "command": " ".join(cmd[1:]),
        f"rss_gib_every_{SERIES_EVERY_S:.0f}s": series,
    }
    if chats is not None:
        out["chats"] = {"from_s": _r(chats.first_s), "answered": chats.done, "failed": chats.failed,
                        "failures": chats.why,
                        "engine": engine}
    if args.breakdown:
        out["at_peak"] = {**_sums(peak_rows), "processes": peak_rows}
        out["at_end"] = {**_sums(end_rows), "processes": end_rows}
        alive = {r["pid"] for r in end_rows}
        out["gone_before_end"] = [{"pid": pid, "role": name, "max_rss_mib": rss // 2**20}
                                  for pid, (name, rss) in sorted(largest.items(), key=lambda kv: -kv[1][1])
                                  if pid not in alive and rss >= 50 * 2**20]
    print(json.dumps(out, indent=2))
    return 0


def _auth(data_dir: str) -> dict[str, str]:
    f = Path(data_dir) / "admin.token"
    return {"Authorization": f"Bearer {f.read_text().strip()}"} if f.exists() else {}


def _r(x: float | None) -> float | None:
    return round(x, 1) if x is not None else None


if __name__ == "__main__":
    raise SystemExit(main())
