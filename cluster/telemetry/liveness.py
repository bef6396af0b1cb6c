"""Which scrape targets still answer: a host or a GPU is *lost* after N missed scrapes in a row, never silent.

A live source (dcgm-exporter pages, Redfish BMCs, Prometheus) calls :meth:`Liveness.missed` for a target that
did not answer (a refused connection, a timeout, an HTTP error, a page that is not metrics) or that answered
without a GPU it had before, and :meth:`Liveness.seen` for one that answered. Only the transitions come back:
the miss that makes N in a row (the target is lost) and the first answer after a loss (restored). The source
turns each into a ``SourceStatus`` sample, which the twin turns into ``telemetry_lost`` / ``telemetry_restored``.
Pure: no clock, no IO.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Liveness:
    """Missed scrapes per target and the targets now lost.

    Args:
        lost_after: Missed scrapes in a row after which a target is lost (≥ 1).
    """

    lost_after: int = 3
    misses: dict[str, int] = field(default_factory=dict)
    lost: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.lost_after < 1:
            raise ValueError(f"lost_after must be at least 1, got {self.lost_after}")

    def missed(self, target: str) -> int | None:
        """Count a miss; returns the misses in a row when this one makes the target lost, else None."""
        n = self.misses.get(target, 0) + 1
        self.misses[target] = n
        if n >= self.lost_after and target not in self.lost:
            self.lost.add(target)
            return n
        return None

    def seen(self, target: str) -> bool:
        """The target answered; True when it had been lost (it is restored now)."""
        self.misses.pop(target, None)
        if target in self.lost:
            self.lost.discard(target)
            return True
        return False
