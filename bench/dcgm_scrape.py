"""One `--telemetry dcgm` tick over many local exporter pages: scrape, parse, validate, fold into the twin.

A child process serves ``--hosts`` dcgm-exporter pages (``--gpus`` GPUs each, rendered by
``cluster/telemetry/exporter.py`` in the real format) from one aiohttp server on 127.0.0.1, one path per host.
This process runs what ``opsloop up --telemetry dcgm`` runs each tick, in-process: ``DcgmSource.read()`` (every
page fetched concurrently, at most ``--concurrency`` at once, parsed by ``prometheus_client``, validated) and the
sharded twin's fold of the samples (``ShardedTwin.ingest``, 8 shards). The baseline, measured in the same run,
is the same source scraping one page at a time (``max_concurrent=1``, what the source did before). Reported:
median seconds per tick for each part, and the ratio sequential / concurrent for the scrape. ``--latency-ms``
makes every exporter answer that much later, as a remote host does (the farm waits without using the CPU).

``--up SECONDS`` measures the same through ``opsloop up --telemetry dcgm`` (its own processes, Ray and Redis): the
seconds between the twin's committed ticks over that long, read from ``GET /api/status``.

Usage: ``python bench/dcgm_scrape.py [--hosts 1000] [--gpus 8] [--ticks 5] [--concurrency 64] [--latency-ms 0]
[--up SECONDS]``
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import time

from actors.twin.shards import ShardedTwin, partition
from cluster.telemetry.dcgm import DcgmSource
from cluster.telemetry.exporter import render_page
from cluster.telemetry.samples import GpuSample


def host(i: int) -> str:
    return f"dgx-{i:04d}.cluster.example.com"


def serve(hosts: int, gpus: int, port: int, ready: mp.Event, latency_ms: float = 0.0) -> None:  # type: ignore[valid-type]
    """The exporter farm: pages change every request (temperatures drift by a degree, power by watts); each answer
    waits ``latency_ms`` first (a remote host's round trip and dcgm-exporter's own time), without using the CPU."""
    from aiohttp import web

    calls = {"n": 0}

    async def metrics(request: web.Request) -> web.Response:
        i = int(request.match_info["i"])
        calls["n"] += 1
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)
        k = calls["n"] // hosts
        samples = [GpuSample(ts=0, node=host(i), gpu=g, temp_c=60 + (g + k) % 3, power_w=600.0 + 7 * ((g + k) % 5),
                             power_limit_w=700.0, sm_clock_mhz=1980.0, util=0.97, xid=0) for g in range(gpus)]
        return web.Response(text=render_page(samples), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/h/{i}/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)

    async def main() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def measure(urls: list[str], concurrency: int, ticks: int, twin: ShardedTwin | None) -> dict[str, float]:
    clock = iter(range(1_790_000_000, 1_790_000_000 + 10 * (ticks + 2), 5))
    src = DcgmSource(urls, timeout_s=30.0, clock=lambda: float(next(clock)), max_concurrent=concurrency)
    scrape, fold, n = [], [], 0
    for _ in range(ticks + 1):  # the first tick warms connections and registers the GPUs: not counted
        t0 = time.perf_counter()
        samples = await src.read()
        t1 = time.perf_counter()
        if twin is not None:
            twin.ingest(samples)
        t2 = time.perf_counter()
        scrape.append(t1 - t0)
        fold.append(t2 - t1)
        n = len(samples)
    await src.aclose()
    if src.errors:
        raise SystemExit(f"{len(src.errors)} exporters failed, e.g. {next(iter(src.errors.values()))}")
    return {"scrape_s": statistics.median(scrape[1:]), "fold_s": statistics.median(fold[1:]), "samples": n}


def watch_up(urls: list[str], gpus: int, seconds: float) -> None:
    """`opsloop up --telemetry dcgm` over ``urls`` (a settings file lists them, scrape_interval_s 1, no LLM): the
    seconds between the twin's committed ticks (one scrape of every page each), read from ``GET /api/status``."""
    import json
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    import httpx

    tmp = Path(tempfile.mkdtemp(prefix="opsloop-bench-up-"))
    cfg = tmp / "settings.yaml"
    cfg.write_text(json.dumps({"telemetry": "dcgm", "dcgm_urls": urls, "scrape_interval_s": 1.0, "llm": "none"}))
    port = free_port()
    log = (tmp / "up.log").open("w")
    up = subprocess.Popen([sys.executable, "-m", "cluster", "up", "--data-dir", str(tmp / "d"), "--port", str(port),
                           "--quiet"], stdout=log, stderr=subprocess.STDOUT,
                          env={**os.environ, "OPSLOOP_CONFIG": str(cfg)})  # the settings file: 1,000 URLs
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if up.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"opsloop up did not become healthy; its log: {log.name}")
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        auth = {"Authorization": f"Bearer {(tmp / 'd' / 'admin.token').read_text().strip()}"}

        def status() -> tuple[float, int, int]:
            twin = httpx.get(f"{url}/api/status", headers=auth, timeout=30).json()["twin"]
            return time.monotonic(), int(twin["barrier"]["ticks"]), int(twin["samples_seen"])

        t0, k0, n0 = status()
        while time.monotonic() - t0 < seconds:
            time.sleep(2)
        t1, k1, n1 = status()
    finally:
        up.send_signal(2)
        up.wait(120)
    ticks = k1 - k0
    print(f"opsloop up --telemetry dcgm over {len(urls)} exporter pages x {gpus} GPUs, {t1 - t0:.0f} s watched: "
          f"{ticks} ticks, {(t1 - t0) / max(ticks, 1):.2f} s per tick, {(n1 - n0) / (t1 - t0):.0f} samples/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=1000, help="exporter pages (hosts), default 1000")
    ap.add_argument("--gpus", type=int, default=8, help="GPUs per page, default 8")
    ap.add_argument("--ticks", type=int, default=5, help="ticks measured per mode, default 5")
    ap.add_argument("--concurrency", type=int, default=64, help="requests in flight at once, default 64")
    ap.add_argument("--latency-ms", type=float, default=0.0,
                    help="each exporter answers after this long (a remote host), default 0 (loopback only)")
    ap.add_argument("--up", type=float, metavar="SECONDS", default=0.0,
                    help="instead: run `opsloop up --telemetry dcgm` over the pages and watch its ticks this long")
    args = ap.parse_args()
    port, ready = free_port(), mp.Event()
    farm = mp.Process(target=serve, args=(args.hosts, args.gpus, port, ready, args.latency_ms), daemon=True)
    farm.start()
    try:
        if not ready.wait(60):
            raise SystemExit("the exporter farm did not start")
        urls = [f"http://127.0.0.1:{port}/h/{i}/metrics" for i in range(args.hosts)]
        if args.up:
            return watch_up(urls, args.gpus, args.up)
        nodes = [host(i) for i in range(args.hosts)]
        twin = ShardedTwin(partition(nodes, min(8, len(nodes))))
        conc = asyncio.run(measure(urls, args.concurrency, args.ticks, twin))
        seq = asyncio.run(measure(urls, 1, args.ticks, None))
    finally:
        farm.terminate()
    gpus = args.hosts * args.gpus
    print(f"{args.hosts} exporter pages x {args.gpus} GPUs = {gpus} GPUs, {conc['samples']} samples per tick, "
          f"exporter latency {args.latency_ms:g} ms")
    print(f"concurrent ({args.concurrency} in flight): scrape {conc['scrape_s']:.2f} s/tick, "
          f"twin fold {conc['fold_s']:.2f} s/tick, tick {conc['scrape_s'] + conc['fold_s']:.2f} s")
    print(f"one at a time (baseline):  scrape {seq['scrape_s']:.2f} s/tick")
    print(f"scrape ratio one-at-a-time / concurrent: {seq['scrape_s'] / conc['scrape_s']:.2f}x")


if __name__ == "__main__":
    main()
