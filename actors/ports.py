"""Ports the loop's actors read each other through, declared once for every consumer.

``Fleet`` is the twin as the agent and the gateway read it: the topology (the agent verifies a proposal's targets
against it, the gateway an edit's and the fleet's size) and the snapshot (the gateway observes an executed
action's outcome in it). Under Ray it is the twin's actor behind :class:`actors.remote.RemotePort`; in tests, the
twin service object itself.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Protocol


class Fleet(Protocol):
    """What the agent and the gateway read of the twin."""

    async def snapshot(self) -> dict: ...

    async def topology(self) -> Mapping[str, Collection[str]]: ...
