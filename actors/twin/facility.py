"""Coolant leaks: a leak detector that is not OK becomes one critical ``coolant_leak`` event on its node or unit.

:class:`LeakWatch` folds the :class:`~cluster.telemetry.samples.FacilitySample` s that
:mod:`cluster.telemetry.redfish` reads from BMCs and CDUs. A detector whose state is ``Warning`` or ``Critical``
(the worse of its Redfish ``DetectorState`` and ``Status.Health``) raises ``coolant_leak`` on the sample's node
(a server's chassis) or unit (a CDU), once: the next one for that detector comes only after it has read ``OK``
again. Edge-triggered, so a leak that stays wet is one event, not one per poll, and an escalation from Warning
to Critical within one episode is not a second leak. A detector missing from a poll keeps its state (a BMC that
stops answering is ``telemetry_lost``, not a dry floor). Deterministic: time comes from the samples, and the
state is plain data for the twin's checkpoint.
"""

from __future__ import annotations

from actors.twin.events import Event
from actors.twin.state import need, strs
from cluster.telemetry.samples import FacilitySample


class LeakWatch:
    """Which leak detectors are in a leak episode, and the last facility reading of each chassis or unit."""

    def __init__(self) -> None:
        self.leaking: dict[str, str] = {}  # "subject|chassis|detector" → the state that opened the episode
        self.latest: dict[str, FacilitySample] = {}  # "subject|chassis" → its last sample (for views)

    def ingest(self, s: FacilitySample) -> list[Event]:
        """Fold one facility sample; a ``coolant_leak`` event for each detector that has just left ``OK``."""
        events: list[Event] = []
        for detector, state in sorted(s.leaks.items()):
            key = f"{s.subject}|{s.chassis}|{detector}"
            if state == "OK":
                self.leaking.pop(key, None)
                continue
            if key in self.leaking:
                continue
            self.leaking[key] = state
            data = {"node": s.node, "unit": s.unit, "chassis": s.chassis, "detector": detector, "state": state,
                    "source": s.source}
            events.append(Event.make("coolant_leak", s.subject, s.ts, "critical", data, key=f"{s.chassis}/{detector}"))
        self.latest[f"{s.subject}|{s.chassis}"] = s
        return events

    def snapshot(self) -> dict:
        """Leaking detectors and the last reading of every chassis or unit, as the dashboard shows them."""
        return {
            "leaking": [{"subject": k.split("|")[0], "chassis": k.split("|")[1], "detector": k.split("|", 2)[2],
                         "state": v} for k, v in sorted(self.leaking.items())],
            "chassis": [s.model_dump(mode="json") for _, s in sorted(self.latest.items())],
        }

    def to_state(self) -> dict:
        """Everything it keeps, as plain data (``from_state`` gives a watch that goes on identically)."""
        return {"leaking": dict(self.leaking), "latest": {k: s.model_dump(mode="json") for k, s in self.latest.items()}}

    @classmethod
    def from_state(cls, d: dict) -> LeakWatch:
        """Rebuild from ``to_state`` (an empty dict: a checkpoint from before leaks were watched)."""
        w = cls()
        leaking = need(d.get("leaking", {}), dict, "leaking detectors")
        w.leaking = dict(zip(strs(list(leaking), "detectors"), strs(list(leaking.values()), "leak states"),
                             strict=True))
        w.latest = {need(k, str, "chassis"): FacilitySample.model_validate(v)
                    for k, v in need(d.get("latest", {}), dict, "facility readings").items()}
        return w
