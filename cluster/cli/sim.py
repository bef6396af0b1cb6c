"""``opsloop sim``: the simulated fleet served over real protocols.

``exporter`` runs the simulator in real time and serves each host's GPUs as a dcgm-exporter ``/metrics``
page (:mod:`cluster.telemetry.exporter`), one HTTP port per host, so Prometheus scrapes each host as its own
target and ``opsloop up --telemetry dcgm`` or ``--telemetry prometheus`` reads them as a real fleet.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
import time
from typing import Any

from cluster.cli import CliError

EXPORTER_HELP = """Serve the simulated fleet as dcgm-exporter pages, one HTTP port per host (PORT, PORT+1, ...).

Each host's page is at http://BIND:PORT+i/metrics in dcgm-exporter's format: the DCGM_FI_DEV_* gauges of its
default counters (GPU and memory temperature, SM clock, power, utilisation, last XID) plus the power limit
and the clock-event reasons, labelled gpu, UUID, pci_bus_id, device, modelName, Hostname and
DCGM_FI_DRIVER_VERSION; whole degrees, DCGM's blank value for the memory temperature (not simulated), the
XID sticky as DCGM keeps it. The simulation runs in real time, one tick every --tick seconds, until Ctrl-C
or SIGTERM.

Faults: KIND@SECONDS:TARGET[=VALUE] as in `opsloop twin simulate`, targets named after --hosts, e.g.
--hosts DGX-01,DGX-02 --fault cooling_degradation@20:DGX-01=0.3 --fault xid@30:DGX-02/gpu3=79

Prometheus: one target per host, e.g. static_configs: [{targets: ["127.0.0.1:9400", "127.0.0.1:9401"]}]."""

_HOSTS = re.compile(r"^\d+$")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sim", help="serve the simulated fleet over real protocols (dcgm-exporter pages)")
    ssub = p.add_subparsers(dest="sim_command", metavar="SUBCOMMAND", required=True)
    e = ssub.add_parser("exporter", help="serve the simulated fleet as dcgm-exporter pages, a port per host",
                        description=EXPORTER_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("--port", type=int, default=9400, help="port of the first host (default 9400, dcgm-exporter's)")
    e.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    e.add_argument("--hosts", default="2", metavar="N|NAME,NAME,...",
                   help="a number of hosts (named n01, n02, ...) or their names, comma-separated (default 2)")
    e.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per host (default 8)")
    e.add_argument("--units", type=int, default=1, help="cooling units, serving hosts round-robin (default 1)")
    e.add_argument("--model", default="H100-SXM",
                   help="GPU model of every host: H100-SXM, H200, B200, GB200, GB300, A100-SXM, L40S "
                   "(default H100-SXM)")
    e.add_argument("--fault", action="append", default=[], metavar="KIND@T:TARGET[=V]", help="a fault; repeatable")
    e.add_argument("--tick", type=float, default=1.0, help="seconds per simulated tick, in real time (default 1)")
    e.add_argument("--noise", type=float, default=0.3, help="sensor noise σ in °C (default 0.3)")
    e.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    e.add_argument("--driver", default="550.90.07", help="the DCGM_FI_DRIVER_VERSION label (default 550.90.07)")
    e.set_defaults(func=_exporter)


def host_names(spec: str) -> list[str]:
    """``--hosts``: a count (n01, n02, ...) or comma-separated names (kept as the fleet names them)."""
    from pydantic import TypeAdapter, ValidationError

    from policies.actions import NodeName

    spec = spec.strip()
    if _HOSTS.match(spec):
        n = int(spec)
        if not 1 <= n <= 1000:
            raise CliError("--hosts: between 1 and 1000 hosts", code=2)
        return [f"n{i + 1:02d}" for i in range(n)]
    names = [h.strip() for h in spec.split(",") if h.strip()]
    check = TypeAdapter(NodeName)
    for name in names:
        try:
            check.validate_python(name)
        except ValidationError:
            raise CliError(f"--hosts: {name!r} is not a host name (letters, digits, '-', '.')", code=2) from None
    if not names or len(set(names)) != len(names):
        raise CliError("--hosts: give a count or distinct host names, comma-separated", code=2)
    return names


def _exporter(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    from actors.twin.physics import Topology
    from actors.twin.profiles import PROFILES, canonical_model
    from cluster.telemetry.exporter import FleetPages, registry_of
    from cluster.telemetry.sim import Fault, Simulator

    hosts = host_names(args.hosts)
    if args.gpus_per_node < 1 or args.units < 1 or args.tick <= 0 or args.noise < 0:
        raise CliError("--gpus-per-node, --units and --tick must be positive, --noise not negative", code=2)
    if not 1 <= args.port <= 65535 - len(hosts) + 1:
        raise CliError(f"--port: {len(hosts)} ports from {args.port} do not fit below 65536", code=2)
    model = canonical_model(args.model)
    if model not in PROFILES:
        raise CliError(f"--model: unknown model {args.model!r} (known: {', '.join(PROFILES)})", code=2)
    units = [f"cu{i + 1:02d}" for i in range(args.units)]
    topo = Topology(hosts, args.gpus_per_node, units, [i % len(units) for i in range(len(hosts))], [model] * len(hosts))
    try:
        sim = Simulator(topo, [Fault.parse(f) for f in args.fault], seed=args.seed, noise_c=args.noise,
                        tick_s=args.tick)
    except ValueError as exc:
        raise CliError(str(exc), code=2) from exc
    pages = FleetPages({h: model for h in hosts}, driver=args.driver)
    pages.update(sim.step())

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    servers: list[Any] = []
    try:
        for i, host in enumerate(hosts):
            try:
                server, _ = start_http_server(args.port + i, addr=args.bind,
                                              registry=registry_of(lambda h=host: pages.families(h)))
            except OSError as exc:
                raise CliError(f"cannot listen on {args.bind}:{args.port + i} for {host}: {exc}") from exc
            servers.append(server)
            print(f"{host}: http://{args.bind}:{args.port + i}/metrics ({args.gpus_per_node} GPUs)", flush=True)
        print(f"simulating {len(hosts)} hosts in real time, a tick every {args.tick:g} s; Ctrl-C stops",
              file=sys.stderr, flush=True)
        due = time.monotonic() + args.tick
        while not stop.wait(max(0.0, due - time.monotonic())):
            pages.update(sim.step())
            due += args.tick
            if due < time.monotonic() - 10 * args.tick:  # fell far behind (a suspended process): skip, no burst
                due = time.monotonic() + args.tick
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        for sig, handler in old.items():
            signal.signal(sig, handler)
    print(f"stopped after {sim.t:g} simulated seconds", file=sys.stderr, flush=True)
    return 0
