"""The Redfish facility actuator: ``set_cooling_setpoint`` and ``set_fan_speed`` on a CDU's ``CoolingUnit``, as
PATCHes through DMTF's ``redfish`` library (its asyncio client), on the services of ``redfish_urls``.

**Which unit.** The Redfish source's naming (:mod:`cluster.telemetry.redfish`): a service named ``cu01``
(``cu01=https://cdu-01``) with one cooling unit is unit ``cu01``; with several, ``cu01-<Id>``. The actuator finds
the unit by following the links from the service root (``ThermalEquipment`` → ``CDUs`` → members), never a guessed
path, and asks only the services whose name can give the unit's.

**What is written**, in the writable form DMTF's schemas give it (``Control.ControlSingleExcerpt``: ``SetPoint``
is writable, ``AllowableMin``/``AllowableMax`` bound it):

- ``set_cooling_setpoint``: ``PATCH {"SupplyTemperatureControlCelsius": {"SetPoint": 21.0}}`` on each
  ``CoolantConnector`` of the loop the source reads the setpoint from (the ``SecondaryCoolantConnectors``, the
  primary ones when there are none) that carries that control;
- ``set_fan_speed``: ``PATCH {"SpeedControlPercent": {"SetPoint": 85}}`` on each of the unit's ``Pumps`` that
  carries that control (a CDU's "fan" is its pump).

Each PATCH reads the resource first (the value before, its ``ETag``), sends ``If-Match`` with the ETag when the
service gave one, and reads the resource back: ``executed`` only when every ``SetPoint`` holds the new value
(``cdu1 supply setpoint 30.0 → 21.0 °C, PATCH /redfish/v1/ThermalEquipment/CDUs/1/SecondaryCoolantConnectors/1 on
http://127.0.0.1:8000``). A unit no service has, a unit without the control, a value outside the control's allowable
range, a service that refuses (its Redfish message), reads back something else, or cannot be reached (after one
more try; a 412, the resource changed since it was read, is tried once more too) are ``failed`` results with the
reason. Any other kind, and a unit no service is named for, are refused before anyone approves them
(:meth:`RedfishFacilityActuator.refusal`). Idempotent by action id. Credentials never appear in a detail or an effect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from redfish.aio import AsyncRedfishClient, RedfishError

from actors.gateway.effects import Effect
from cluster.actuators.modbus import FACILITY_KINDS, setting
from cluster.actuators.results import BoundedActuator, Outcome
from cluster.telemetry.redfish import RedfishClients
from cluster.telemetry.redfish_resources import ROOT, Target, follow, members, parse_target, unit_base, unit_name
from policies.actions import Action, SetCoolingSetpoint, SetFanSpeed

if TYPE_CHECKING:
    from cluster.settings import Settings

__all__ = ["FACILITY_KINDS", "RedfishFacilityActuator"]

#: Per kind: where the control lives, the control's property, what it is, its unit.
CONTROLS = {"set_cooling_setpoint": ("loop", "SupplyTemperatureControlCelsius", "supply setpoint", "°C"),
            "set_fan_speed": ("Pumps", "SpeedControlPercent", "pump speed", "%")}
#: Wait before the one retry of a transient failure, in seconds.
RETRY_AFTER_S = 0.5
#: Bound of the reads for an approval card (under the gateway's 5 s).
PEEK_BUDGET_S = 3.0


class Refused(Exception):
    """What stops an action before or while it runs: the reason, and whether one more try may do better."""

    def __init__(self, reason: str, transient: bool = False) -> None:
        super().__init__(reason)
        self.transient = transient


@dataclass
class Control:
    """One resource that carries the control: its path, the value now and the bounds."""

    path: str
    setpoint: float | None
    low: float | None
    high: float | None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _setpoint(doc: dict | None, prop: str) -> float | None:
    ctl = (doc or {}).get(prop)
    return _num(ctl.get("SetPoint")) if isinstance(ctl, dict) else None


def _show(v: float | None, sym: str) -> str:
    return "?" if v is None else (f"{v:.1f}" if sym == "°C" else f"{v:.0f}")


def _message(resp: Any) -> str:
    """A refusal's Redfish message (``error.message`` or its first ``@Message.ExtendedInfo``)."""
    try:
        err = resp.dict.get("error", {})
    except (RedfishError, AttributeError):
        return resp.text[:200]
    info = err.get("@Message.ExtendedInfo") if isinstance(err, dict) else None
    first = info[0] if isinstance(info, list) and info and isinstance(info[0], dict) else {}
    return str(first.get("Message") or err.get("message") or "")[:300] if isinstance(err, dict) else ""


class RedfishFacilityActuator(BoundedActuator):
    """Cooling-unit setpoints and pump speeds over Redfish.

    Args:
        urls: ``URL`` or ``NAME=URL`` per service, as for the Redfish source (``redfish_urls``).
        username: Account on every service (with ``password``); None acts anonymously. Login needs HTTPS.
        password: The account's password.
        auth: ``session`` (a Redfish session) or ``basic`` (HTTP Basic on each request).
        timeout_s: Bound of one request.
        retry_after_s: Wait before the one retry of a transient failure.
        verify_tls: Check the services' certificates (``ca_file`` for a private CA).
        ca_file: CA bundle for the services' certificates.
    """

    def __init__(self, urls: Sequence[str], username: str | None = None, password: str | None = None,
                 auth: Literal["session", "basic"] = "session", timeout_s: float = 5.0,
                 retry_after_s: float = RETRY_AFTER_S, verify_tls: bool = True, ca_file: str | None = None) -> None:
        super().__init__()
        if not urls:
            raise ValueError("facility=redfish needs the CDUs' Redfish services (redfish_urls, --redfish-url)")
        self.targets = [parse_target(u) for u in urls]
        for t in self.targets:
            if "@" in t.url:
                raise ValueError(f"Redfish service {t.name}: put the account in redfish_username and "
                                 "redfish_password, not in the URL")
        self.clients = RedfishClients(self.targets, username, password, auth, timeout_s, verify_tls, ca_file)
        self.timeout_s, self.retry_after_s = timeout_s, retry_after_s

    @classmethod
    def from_settings(cls, settings: Settings) -> RedfishFacilityActuator:
        """The ``redfish_*`` settings the Redfish source reads, and ``scrape_timeout_s``."""
        s = settings
        return cls(s.redfish_urls, s.redfish_username,
                   s.redfish_password.get_secret_value() if s.redfish_password else None,
                   timeout_s=s.scrape_timeout_s, verify_tls=s.redfish_verify_tls)

    async def aclose(self) -> None:
        """Log out of the services and close the HTTP session."""
        await self.clients.aclose()

    async def _client(self, t: Target) -> AsyncRedfishClient:
        try:
            return await self.clients.client(t)
        except (RedfishError, ValueError, TimeoutError) as exc:  # ValueError: login over plain http
            raise Refused(f"login to {t.url} failed: {type(exc).__name__}: {exc}",
                          transient=not isinstance(exc, ValueError)) from None

    async def _request(self, t: Target, method: str, path: str, body: dict | None = None,
                       headers: dict | None = None) -> Any:
        client = await self._client(t)
        try:
            if method == "GET":
                resp = await client.get(path)
            else:
                resp = await client.patch(path, body=body, headers=headers)
        except RedfishError as exc:  # refused, timed out
            cause = f" ({type(exc.__cause__).__name__}: {exc.__cause__})"[:300] if exc.__cause__ else ""
            raise Refused(f"{method} {path} on {t.url}: {exc}{cause}", transient=True) from None
        if resp.status == 401:
            self.clients.expired(t)  # an expired session: log in again on the next try
        if resp.status >= 400:
            msg = _message(resp)
            raise Refused(f"{method} {path} on {t.url}: HTTP {resp.status}" + (f": {msg}" if msg else ""),
                          transient=resp.status in (401, 412) or resp.status >= 500)
        return resp

    async def _get(self, t: Target, path: str) -> dict | None:
        resp = await self._request(t, "GET", path)
        try:
            doc = resp.dict
        except RedfishError:
            return None
        return doc if isinstance(doc, dict) else None

    def _candidates(self, name: str) -> list[Target]:
        """The services whose name can give unit ``name``'s (``cu01`` gives ``cu01`` and ``cu01-<Id>``)."""
        return [t for t in self.targets if name == unit_base(t) or name.startswith(unit_base(t) + "-")]

    def _unknown(self, name: str, asked: bool) -> str:
        """Why unit ``name`` is none of the services' (``asked``: services named for it were read)."""
        names = ", ".join(t.name for t in self.targets[:10]) or "none"
        return (f"unit {name} is not a cooling unit of the Redfish services (redfish_urls: {names})" if asked else
                f"no Redfish service is named for unit {name} (redfish_urls: {names}; NAME=URL names a CDU)")

    async def _unit(self, name: str) -> tuple[Target, dict]:
        """The service and the ``CoolingUnit`` resource of unit ``name``."""
        candidates = self._candidates(name)
        for t in candidates:
            async def get(path: str, t: Target = t) -> dict | None:
                return await self._get(t, path)

            root = await get(ROOT)
            cdus = await members(get, await follow(get, await follow(get, root, "ThermalEquipment"), "CDUs"))
            for cdu in cdus:
                if unit_name(unit_base(t), str(cdu.get("Id", ""))[:128], len(cdus)) == name:
                    return t, cdu
        raise Refused(self._unknown(name, bool(candidates)))

    async def _controls(self, t: Target, cdu: dict, kind: str) -> list[Control]:
        """The resources of ``cdu`` that carry ``kind``'s control, read now."""
        where, prop, what, _ = CONTROLS[kind]

        async def get(path: str) -> dict | None:
            return await self._get(t, path)

        if where == "loop":
            docs = await members(get, await follow(get, cdu, "SecondaryCoolantConnectors")) or await members(
                get, await follow(get, cdu, "PrimaryCoolantConnectors"))
        else:
            docs = await members(get, await follow(get, cdu, where))
        out = []
        for doc in sorted(docs, key=lambda d: str(d.get("Id"))):
            ctl, path = doc.get(prop), doc.get("@odata.id")
            if isinstance(ctl, dict) and isinstance(path, str) and "SetPoint" in ctl:
                out.append(Control(path, _num(ctl.get("SetPoint")), _num(ctl.get("AllowableMin")),
                                   _num(ctl.get("AllowableMax"))))
        if not out:
            holder = "coolant connectors" if where == "loop" else "pumps"
            raise Refused(f"cooling unit {cdu.get('@odata.id')} on {t.url}: none of its {holder} has a writable "
                          f"{prop}.SetPoint (its {what} cannot be set over Redfish)")
        return out

    async def _patch(self, t: Target, path: str, prop: str, value: float) -> tuple[float | None, float | None]:
        """One PATCH with its read before (value, ETag) and after: the values before and after."""
        resp = await self._request(t, "GET", path)
        try:
            doc = resp.dict
        except RedfishError:
            doc = None
        if not isinstance(doc, dict):
            raise Refused(f"GET {path} on {t.url}: not a JSON object", transient=True)
        etag = resp.getheader("ETag") or doc.get("@odata.etag")
        await self._request(t, "PATCH", path, {prop: {"SetPoint": value}}, {"If-Match": etag} if etag else None)
        return _setpoint(doc, prop), _setpoint(await self._get(t, path), prop)

    def refusal(self, action: Action) -> str | None:
        """Why this actuator cannot carry ``action`` out, known without asking a service (``None``: it can try):
        another kind than a facility action's, or a unit no service is named for."""
        if not isinstance(action, SetCoolingSetpoint | SetFanSpeed):
            return (f"{action.kind} is not a facility action: the Redfish actuator only carries out "
                    f"{' and '.join(sorted(CONTROLS))}")
        if not self._candidates(action.unit):
            return self._unknown(action.unit, asked=False)
        return None

    async def _apply(self, action: Action, action_id: str, approval_id: str, traceparent: str | None
                     ) -> tuple[bool, str] | Outcome:
        """Find the unit, PATCH each control, read it back; ok only when all hold the new value (and the value the
        first control read had before with it)."""
        assert isinstance(action, SetCoolingSetpoint | SetFanSpeed)  # refusal() let only these through
        _, prop, what, sym = CONTROLS[action.kind]
        key, value = setting(action)
        done: dict[str, str] = {}  # path → what its PATCH did (a retry does not send it again)
        was: list[float] = []  # the values before, in the order of done
        for attempt in (1, 2):
            try:
                t, cdu = await self._unit(action.unit)
                controls = await self._controls(t, cdu, action.kind)
                for c in controls:
                    self._within(c, value, sym)
                for c in controls:
                    if c.path in done:
                        continue
                    before, after = await self._patch(t, c.path, prop, value)
                    if after is None or abs(after - value) > 1e-6:
                        return False, (f"{action.unit} {what}: PATCH {c.path} on {t.url} set SetPoint "
                                       f"{_show(value, sym)} {sym} but it reads back {_show(after, sym)} {sym} (was "
                                       f"{_show(before, sym)}; the controller kept its own limit?)")
                    done[c.path] = f"{_show(before, sym)} → {_show(after, sym)} {sym}, PATCH {c.path}"
                    was += [before] if before is not None else []
            except Refused as exc:
                if exc.transient and attempt == 1:
                    await asyncio.sleep(self.retry_after_s)
                    continue
                tried = " (after one retry)" if attempt == 2 else ""
                return False, f"{action.unit} {what} not set to {_show(value, sym)} {sym}: {exc}{tried}"
            return Outcome(True, f"{action.unit} {what} {'; '.join(done.values())} on {t.url}",
                           {key: was[0]} if was else None)
        raise AssertionError("unreachable")

    @staticmethod
    def _within(c: Control, value: float, sym: str) -> None:
        if (c.low is not None and value < c.low) or (c.high is not None and value > c.high):
            raise Refused(f"{_show(value, sym)} {sym} is outside the allowable range {_show(c.low, sym)}–"
                          f"{_show(c.high, sym)} {sym} of {c.path}")

    async def _peek(self, action: SetCoolingSetpoint | SetFanSpeed) -> tuple[Target, list[Control]]:
        t, cdu = await self._unit(action.unit)
        return t, await self._controls(t, cdu, action.kind)

    async def effect(self, action: Action, approval_id: str) -> Effect:
        """The PATCH :meth:`execute` will send (path, body), with the ``SetPoint`` now (read within
        :data:`PEEK_BUDGET_S`; a service that does not answer makes it unknown, with why). An action it will refuse
        (another kind, a unit without the control, a value outside its range) runs nothing."""
        if not isinstance(action, SetCoolingSetpoint | SetFanSpeed):
            return Effect(call=f"nothing: {action.kind} is not a facility action, the Redfish actuator refuses it",
                          where="Redfish", current="n/a", new="unchanged")
        where_, prop, what, sym = CONTROLS[action.kind]
        _, value = setting(action)
        body = f'{{"{prop}": {{"SetPoint": {value:g}}}}}'
        new = f"{action.unit} {what} {_show(value, sym)} {sym}"
        try:
            t, controls = await asyncio.wait_for(self._peek(action), PEEK_BUDGET_S)
            for c in controls:
                self._within(c, value, sym)
        except Refused as exc:
            if not exc.transient:
                return Effect(call=f"nothing: the Redfish actuator refuses it ({exc})", where="Redfish (redfish_urls)",
                              current="n/a", new="unchanged")
            holder = "rack-loop coolant connector" if where_ == "loop" else "pump"
            return Effect(call=f"PATCH {body} (If-Match its ETag) on each {holder} of {action.unit} that has {prop}, "
                          "read it back", where=f"Redfish ({action.unit}'s service)", current=f"unknown ({exc})",
                          new=new)
        except TimeoutError:
            return Effect(call=f"PATCH {body} on {action.unit}'s {prop}, read it back",
                          where=f"Redfish ({action.unit}'s service)",
                          current=f"unknown (no answer within {PEEK_BUDGET_S:g} s)", new=new)
        paths = ", ".join(c.path for c in controls)
        current = "; ".join(f"{_show(c.setpoint, sym)} {sym} ({c.path} SetPoint read now)" for c in controls)
        return Effect(call=f"PATCH {paths} {body} (If-Match: the ETag read just before, when the service gives "
                      "one), read it back",
                      where=f"Redfish {t.url} ({action.unit} {what})", current=current, new=new)
