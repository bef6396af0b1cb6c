"""The telemetry registry of `opsloop up`: the source a setting names, paced, and the nodes it serves.

``telemetry`` picks one of ``sim`` (the simulator actor, built by ``cluster/deploy.py``), ``dcgm``,
``prometheus``, ``nvml`` or ``replay``; Redfish BMCs (``redfish_urls``) and a Modbus cooling plant
(``facility=modbus``) are read beside any of them. Live sources are polled every ``scrape_interval_s``
(:class:`Paced`) while the twin steps four times a second. The twin's shard layout needs the fleet's node names
before the first tick: :func:`discover_nodes` asks the source once at start (a node that appears later is still
folded, in the first shard).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from actors.remote import RemotePort
from actors.twin.physics import Topology
from cluster.fleet_settings import FleetSettings
from cluster.nvml_readers import FanIn, start_readers
from cluster.telemetry.dcgm import DcgmSource, parse_metrics
from cluster.telemetry.replay import ReplaySource
from cluster.telemetry.samples import Sample, TelemetrySource, source_position
from cluster.telemetry.sim import Fault, Simulator, SimulatorService

#: Lines of a trace read to learn its node names (a trace names its whole fleet within its first ticks).
REPLAY_DISCOVER_LINES = 100_000


class Paced:
    """Reads ``source`` at most once every ``every_s`` seconds; between scrapes a read returns nothing at once.

    The twin polls its source several times a second; a live exporter is scraped at its own interval.
    """

    def __init__(self, source: TelemetrySource, every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.every_s = every_s
        self.clock = clock
        self._next = 0.0

    def __getattr__(self, name: str) -> Any:  # errors, quarantined, validator ... of the source, for the metrics
        if name == "source":
            raise AttributeError(name)
        return getattr(self.source, name)

    async def read(self) -> list[Sample]:
        now = self.clock()
        if now < self._next:
            return []
        self._next = now + self.every_s
        return await self.source.read()

    def position(self) -> Any:
        return source_position(self.source)


@dataclass
class Telemetry:
    """What `up` reads the fleet from: the sources, the node names known at start and a line for the terminal."""

    sources: list[TelemetrySource] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    describe: str = ""


class SimSource:
    """``TelemetrySource`` over the simulator actor."""

    def __init__(self, simulator: Any) -> None:
        self.simulator = simulator

    async def read(self) -> list:
        return await self.simulator.read()


def build_simulator(settings: FleetSettings) -> Simulator:
    """The simulated fleet of ``opsloop up``, with the demo fault when enabled."""
    topo = Topology.build(settings.sim_nodes, settings.sim_gpus_per_node, n_units=settings.sim_units)
    faults = [Fault.parse(spec) for spec in settings.sim_faults]
    if settings.demo_fault:
        faults.append(Fault(kind="cooling_degradation", at_s=settings.demo_fault_at_s, target=topo.nodes[0], value=0.5))
    return Simulator(topo, faults, seed=settings.sim_seed, sensor_tau_s=settings.sensor_tau_s, tick_s=settings.tick_s)


def start_fleet(settings: Any, redis_url: str, opts: dict[str, Any], progress: Callable[[str], None]
                ) -> tuple[Telemetry, Any]:
    """What ``up`` reads the fleet from, started: the simulator actor (``telemetry=sim``; ``opts`` are its Ray
    options), a reader on every GPU node (``nvml``) or a live or replayed source, and the Redfish services beside
    any of them. Returns the sources with the node names known at start, and the simulator's handle (or None).
    """
    import ray

    sim = None
    if settings.telemetry == "sim":
        sim = ray.remote(SimulatorService).options(name="simulator", **opts).remote(
            build_simulator(settings), settings.sim_speed, redis_url, settings.key("sim", "state")
        )
        demo = (f", demo fault at {settings.demo_fault_at_s:g} s (cooling degradation on n01)"
                if settings.demo_fault else "")
        progress(f"simulator  {settings.sim_nodes} nodes x {settings.sim_gpus_per_node} GPUs, "
                 f"{settings.sim_units} cooling unit(s), {settings.sim_speed:g}x real time{demo}")
        fleet = Telemetry([SimSource(RemotePort(sim))])
    elif settings.telemetry == "nvml":
        readers = start_readers(settings.namespace)
        fan = FanIn(readers, timeout_s=settings.scrape_timeout_s, lost_after=settings.telemetry_lost_after)
        fleet = Telemetry([Paced(fan, settings.scrape_interval_s)], list(readers))
        progress(f"telemetry  nvml: a reader on each of {len(readers)} GPU node(s): {_some(list(readers))}")
    else:
        fleet = build_telemetry(settings)
        progress(f"telemetry  {fleet.describe}; nodes {_some(fleet.nodes) or '(from the first scrape)'}")
    facility = facility_sources(settings)
    if facility.sources:
        fleet.sources += facility.sources
        progress(f"facility   {facility.describe}")
    return fleet, sim


def _some(names: list[str], shown: int = 8) -> str:
    """Names for a terminal line: all of a few, the first ``shown`` of many and how many there are."""
    if len(names) <= shown:
        return ", ".join(names)
    return f"{', '.join(names[:shown])} … ({len(names)} in all)"


def build_telemetry(settings: FleetSettings) -> Telemetry:
    """The live or replayed source the settings name (not ``sim``: its actor is made by ``deploy.start_loop``).

    Raises:
        ValueError: a source that cannot start (its message says what to change).
    """
    s = settings
    every, timeout, lost = s.scrape_interval_s, s.scrape_timeout_s, s.telemetry_lost_after
    if s.telemetry == "dcgm":
        nodes = discover_dcgm(s.dcgm_urls, timeout)
        src = DcgmSource(s.dcgm_urls, timeout_s=timeout, lost_after=lost)
        out = Telemetry([Paced(src, every)], nodes, f"dcgm: {len(s.dcgm_urls)} exporter(s), every {every:g} s")
    elif s.telemetry == "prometheus":
        from cluster.telemetry.prometheus import PrometheusSource

        assert s.prometheus_url is not None  # FleetSettings checked it
        src = PrometheusSource(s.prometheus_url, timeout_s=timeout, lost_after=lost)
        out = Telemetry([Paced(src, every)], [], f"prometheus: {s.prometheus_url}, every {every:g} s")
    elif s.telemetry == "replay":
        assert s.replay_file is not None
        replay = ReplaySource(s.replay_file, realtime=True, speed=s.sim_speed)
        out = Telemetry([replay], discover_replay(s.replay_file), f"replay: {s.replay_file} at {s.sim_speed:g}x")
    elif s.telemetry == "nvml":
        raise ValueError("telemetry=nvml is started by cluster/deploy.py (a reader actor per GPU node)")
    else:
        raise ValueError(f"telemetry={s.telemetry} is not built here")
    return out


def facility_sources(settings: FleetSettings) -> Telemetry:
    """The Redfish BMCs and CDUs (``redfish_urls``) and the Modbus cooling plant (``facility=modbus``), read beside
    the GPU telemetry (none when neither is set)."""
    s = settings
    out = Telemetry()
    if s.redfish_urls:
        from cluster.telemetry.redfish import RedfishSource

        src = RedfishSource(s.redfish_urls, username=s.redfish_username,
                            password=s.redfish_password.get_secret_value() if s.redfish_password else None,
                            timeout_s=s.scrape_timeout_s, lost_after=s.telemetry_lost_after,
                            verify_tls=s.redfish_verify_tls)
        out.sources.append(Paced(src, s.scrape_interval_s))
        out.describe = f"redfish: {', '.join(t.name for t in src.targets)}"
    if s.facility == "modbus" and any(u.supply_c is not None for u in s.modbus_map.values()):
        from cluster.telemetry.modbus import ModbusSource

        mb = ModbusSource(s.modbus_map, s.modbus_endpoint, timeout_s=s.modbus_timeout_s,
                          lost_after=s.telemetry_lost_after)
        out.sources.append(Paced(mb, s.scrape_interval_s))
        servers = ", ".join(f"{ep} ({', '.join(names)})" for ep, names in mb.servers.items())
        out.describe = "; ".join(filter(None, [out.describe, f"modbus: {servers}"]))
    if out.sources:
        out.describe += f", every {s.scrape_interval_s:g} s"
    return out


def discover_dcgm(urls: list[str], timeout_s: float) -> list[str]:
    """The host names the exporters' pages print, in URL order; an exporter that does not answer is named by its
    URL's host (the twin learns its real name from its first page)."""
    nodes: list[str] = []
    with httpx.Client(timeout=timeout_s) as client:
        for url in urls:
            try:
                resp = client.get(url)
                resp.raise_for_status()
                found = sorted({rec["node"] for rec in parse_metrics(resp.text)})
            except httpx.HTTPError:
                found = []
            for node in found or [httpx.URL(url).host]:
                if node not in nodes:
                    nodes.append(node)
    return nodes


def discover_replay(path: Path) -> list[str]:
    """The node names of a trace's GPU and cooling lines, in order of first appearance (bad lines skipped)."""
    nodes: list[str] = []
    with Path(path).open(encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh):
            if n >= REPLAY_DISCOVER_LINES:
                break
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            node = rec.get("node") if isinstance(rec, dict) else None
            if isinstance(node, str) and node not in nodes:
                nodes.append(node)
    return nodes
