"""Redfish source: BMCs and CDUs, read with DMTF's ``redfish`` library (its asyncio client), as facility samples.

**Targets.** Each entry of ``urls`` is ``URL`` or ``NAME=URL``; URL is the service's origin
(``https://10.0.0.5``; a trailing ``/redfish/v1`` is accepted), the service root is ``/redfish/v1``.

**What is read**, following the links each resource gives (never guessed paths):

- every chassis of ``/redfish/v1/Chassis``: ``ThermalSubsystem`` → ``ThermalMetrics``
  (``TemperatureSummaryCelsius``, ``TemperatureReadingsCelsius``) and ``Fans`` (``SpeedPercent.Reading``,
  ``SpeedPercent.SpeedRPM``); ``ThermalSubsystem.LeakDetection`` → ``LeakDetectors`` (or the chassis'
  ``LeakDetectors`` of newer schemas, else the ``LeakDetectorGroups`` excerpts); the chassis' power from
  ``EnvironmentMetrics.PowerWatts``, else the sum of ``PowerSubsystem`` → ``PowerSupplies`` →
  ``Metrics.InputPowerWatts``. One :class:`FacilitySample` per chassis.
- ``ThermalEquipment`` → ``CDUs`` → each ``CoolingUnit``: its ``SecondaryCoolantConnectors`` (the loop that
  feeds the racks; the ``PrimaryCoolantConnectors`` when it has none) give ``SupplyTemperatureCelsius``,
  ``ReturnTemperatureCelsius``, ``SupplyTemperatureControlCelsius.SetPoint`` (the setpoint) and
  ``FlowLitersPerMinute`` over ``RatedFlowLitersPerMinute``: a :class:`CoolingSample` (its ``flow_frac`` names
  each node the unit serves when ``serves`` lists them); the unit's own ``LeakDetection`` and flow: a
  :class:`FacilitySample` of the unit.

**Naming.** A service without cooling units is a server's BMC: its chassis belong to node NAME (without NAME,
the URL's host). Name each BMC as the GPU telemetry names its host (dcgm-exporter's ``Hostname``), so that a
leak there is on the node whose GPUs the twin knows and ``drain_node`` can target it. A service with cooling
units is a CDU controller: its unit is NAME lower-cased (``cdu-<host>`` without NAME; characters a unit name
cannot hold become ``-``), ``<that>-<Id>`` per unit when it has several; its chassis belong to that base name.

**Leaks.** A detector's state is the worse of ``DetectorState`` and ``Status.Health`` (OK < Warning <
Critical); one whose ``Status.State`` says it is not watching (Absent, Disabled, ...) or that reports neither is
left out. The twin makes a detector that is not OK a ``coolant_leak`` (:mod:`actors.twin.facility`).

**Failures.** A service whose root does not answer (refused, timeout, HTTP error, a body that is not JSON) or
whose login fails has missed a poll; ``lost_after`` misses in a row are a ``SourceStatus`` (``ok=False``, source
``redfish``, host NAME) that the twin makes ``telemetry_lost``, and the first answer after is ``telemetry_restored``
(:class:`cluster.telemetry.liveness.Liveness`). Below the root, a resource that fails (404, malformed JSON) is
skipped and recorded in ``errors`` (the rest is kept); a reading that is not a finite number in range (BMCs print
``"Out of range"``) is left out, never taken as 0. Samples carry the source's clock (Unix seconds by default).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import aiohttp
from redfish.aio import AsyncRedfishClient, RedfishError

from cluster.telemetry.liveness import Liveness
from cluster.telemetry.redfish_resources import ROOT, Target, parse_target, walk
from cluster.telemetry.samples import Sample, SourceStatus


class RedfishClients:
    """The Redfish source's and the Redfish actuator's connections: one HTTP session, one ``AsyncRedfishClient`` per
    service, each logged in on first use; picklable into an actor (the session is made again where it runs).

    Args:
        targets: The services.
        username: Account on every service (with ``password``); None acts anonymously. Login needs HTTPS.
        password: The account's password.
        auth: ``session`` (a Redfish session) or ``basic`` (HTTP Basic on each request).
        timeout_s: Bound of one request, and of a login.
        verify_tls: Check the services' certificates (``ca_file`` for a private CA); False accepts any.
        ca_file: CA bundle for the services' certificates.
        max_concurrent: Requests in flight to one service at once (0: no bound).
    """

    def __init__(self, targets: Sequence[Target], username: str | None, password: str | None,
                 auth: Literal["session", "basic"], timeout_s: float, verify_tls: bool, ca_file: str | None,
                 max_concurrent: int = 0) -> None:
        if (username is None) != (password is None):
            raise ValueError("a Redfish username needs its password (and a password its username)")
        self.targets = list(targets)
        self.username, self.password, self.auth = username, password, auth
        self.timeout_s, self.max_concurrent = timeout_s, max_concurrent
        self.verify_tls, self.ca_file = verify_tls, ca_file
        self._session: aiohttp.ClientSession | None = None
        self._clients: dict[str, AsyncRedfishClient] = {}
        self._logged_in: set[str] = set()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_session": None, "_clients": {}, "_logged_in": set()}

    def _open(self) -> None:
        if self._session is not None and not self._session.closed:
            return
        tls: ssl.SSLContext | bool = ssl.create_default_context(cafile=self.ca_file) if self.verify_tls else False
        connector = aiohttp.TCPConnector(ssl=tls, limit_per_host=self.max_concurrent)
        self._session = aiohttp.ClientSession(connector=connector)
        self._clients = {t.name: AsyncRedfishClient(t.url, self.username, self.password, session=self._session,
                                                    timeout=self.timeout_s) for t in self.targets}
        self._logged_in = set()

    async def client(self, t: Target) -> AsyncRedfishClient:
        """The client of service ``t``, logged in when there is an account.

        Raises:
            RedfishError: the login was refused or got no answer.
            ValueError: a login over plain http (the library refuses it).
            TimeoutError: no answer to the login within ``timeout_s``.
        """
        self._open()
        client = self._clients[t.name]
        if self.username is not None and t.name not in self._logged_in:
            await asyncio.wait_for(client.login(auth=self.auth), self.timeout_s)
            self._logged_in.add(t.name)
        return client

    def expired(self, t: Target) -> None:
        """Service ``t`` no longer knows our session (it answered 401): log in again on the next use."""
        self._logged_in.discard(t.name)

    async def aclose(self) -> None:
        """Log out of the services and close the HTTP session."""
        for name in sorted(self._logged_in):
            try:
                await self._clients[name].logout()
            except (RedfishError, ValueError):
                pass
        self._logged_in.clear()
        if self._session is not None:
            await self._session.close()
            self._session, self._clients = None, {}


class RedfishSource:
    """``TelemetrySource`` over Redfish BMCs and CDUs (one poll of every service per read, all at once).

    Args:
        urls: ``URL`` or ``NAME=URL`` per service (see the module's naming).
        username: Account for every service (with ``password``); None reads anonymously. Redfish login needs
            HTTPS (the library refuses it over http).
        password: The account's password.
        auth: ``session`` (a Redfish session, renewed on expiry) or ``basic`` (HTTP Basic on each request).
        timeout_s: Per-request timeout; a whole poll of one service gets ``4 × timeout_s``.
        lost_after: Missed polls in a row after which a service is ``telemetry_lost``.
        clock: Unix seconds; every sample of a read carries one reading of it.
        serves: Unit name → the nodes it cools (a CoolingSample's ``serves`` and ``flow_frac``).
        verify_tls: Check the service's certificate (``ca_file`` for a private CA); False accepts any.
        ca_file: CA bundle for the services' certificates.
        max_concurrent: Requests in flight to one service at once.
    """

    def __init__(self, urls: list[str], username: str | None = None, password: str | None = None,
                 auth: Literal["session", "basic"] = "session", timeout_s: float = 5.0, lost_after: int = 3,
                 clock: Callable[[], float] = time.time, serves: Mapping[str, Sequence[str]] | None = None,
                 verify_tls: bool = True, ca_file: str | None = None, max_concurrent: int = 4) -> None:
        if not urls:
            raise ValueError("the redfish source needs at least one service URL (--redfish-url URL)")
        self.targets = [parse_target(u) for u in urls]
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise ValueError(f"two Redfish services share a name: {sorted({n for n in names if names.count(n) > 1})}")
        self.clients = RedfishClients(self.targets, username, password, auth, timeout_s, verify_tls, ca_file,
                                      max_concurrent)
        self.timeout_s, self.clock, self.serves = timeout_s, clock, serves
        self.liveness = Liveness(lost_after)
        self.errors: dict[str, str] = {}  # per service: why its last poll missed, or what it could not read

    async def aclose(self) -> None:
        """Log out of the services and close the HTTP session."""
        await self.clients.aclose()

    async def read(self) -> list[Sample]:
        """One poll of every service; a service that does not answer is recorded (and counted), never raised."""
        ts = round(self.clock(), 3)
        polls = await asyncio.gather(*(self._poll(t, ts) for t in self.targets))
        out: list[Sample] = []
        for t, got in zip(self.targets, polls, strict=True):
            if isinstance(got, str):
                self.errors[t.name] = got
                if (n := self.liveness.missed(t.name)) is not None:
                    out.append(SourceStatus(ts=ts, source="redfish", host=t.name, ok=False, missed=n, url=t.url,
                                            error=got[:500]))
                continue
            samples, problems = got
            if problems:
                self.errors[t.name] = "; ".join(problems)[:2000]
            else:
                self.errors.pop(t.name, None)
            if self.liveness.seen(t.name):
                out.append(SourceStatus(ts=ts, source="redfish", host=t.name, ok=True, url=t.url))
            out += samples
        return out

    async def _poll(self, t: Target, ts: float) -> tuple[list[Sample], list[str]] | str:
        """One service's samples and the resources it could not read, or why it missed the poll."""
        problems: list[str] = []
        try:
            client = await self.clients.client(t)
        except (RedfishError, ValueError, TimeoutError) as exc:  # ValueError: login over plain http
            return f"{t.url}: login failed: {type(exc).__name__}: {exc}"

        async def get(path: str) -> dict | None:
            try:
                resp = await client.get(path)
                doc = resp.dict if resp.status == 200 else None
            except RedfishError as exc:  # a refused connection, a timeout, a body that is not JSON
                problems.append(f"{path}: {exc}" + (f" ({exc.__cause__})" if exc.__cause__ else ""))
                return None
            if resp.status != 200:
                problems.append(f"{path}: HTTP {resp.status}")
            elif not isinstance(doc, dict):
                problems.append(f"{path}: not a JSON object")
                doc = None
            return doc

        root = await get(ROOT)
        if root is None:
            return f"{t.url}{ROOT} did not answer: {problems[-1] if problems else 'no reply'}"
        try:
            return await asyncio.wait_for(walk(get, root, t, ts, problems, self.serves), 4 * self.timeout_s), problems
        except TimeoutError:
            return f"{t.url}: no complete answer within {4 * self.timeout_s:g} s"
