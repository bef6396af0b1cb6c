"""Replay a JSON Lines trace as a ``TelemetrySource``: in real time or as fast as possible.

Lines are validated by :class:`~cluster.telemetry.quality.Validator`; bad lines are quarantined and kept
in ``quarantined`` (with their line numbers and reasons), good lines are grouped into batches of one
timestamp, in file order, so two replays of a trace give the twin identical input.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

from cluster.telemetry.quality import Quarantined, Validator
from cluster.telemetry.samples import Sample


def read_batches(path: Path, validator: Validator, source: str = "replay") -> Iterator[tuple[list[Sample],
                                                                                             list[Quarantined]]]:
    """Yield ``(samples, quarantined)`` per run of consecutive good lines with one timestamp."""
    batch: list[Sample] = []
    bad: list[Quarantined] = []
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            got = validator.check_line(source, n, line)
            if isinstance(got, Quarantined):
                bad.append(got)
                continue
            if batch and got.ts != batch[-1].ts:
                yield batch, bad
                batch, bad = [], []
            batch.append(got)
    if batch or bad:
        yield batch, bad


class ReplaySource:
    """``TelemetrySource`` over a trace file.

    Args:
        path: The JSON Lines trace.
        realtime: Pace batches by their timestamps (divided by ``speed``); else return one batch per read.
        speed: Trace seconds per wall-clock second when ``realtime``.
        validator: Shared validator (its counters are the source's data-quality report).
    """

    def __init__(self, path: Path, realtime: bool = False, speed: float = 1.0, validator: Validator | None = None):
        self.path = Path(path)
        self.realtime = realtime
        self.speed = speed
        self.validator = validator or Validator()
        self.quarantined: list[Quarantined] = []
        self._it: Iterator | None = read_batches(self.path, self.validator)
        self._last_ts: float | None = None
        self._read = 0
        self.done = False

    def __getstate__(self) -> dict:
        """Picklable into an actor: the open file is not shipped; the first read there re-opens it here."""
        return {**self.__dict__, "_it": None}

    def position(self) -> int:
        """Batches read so far: what a restarted twin hands back to :meth:`seek` to resume exactly here."""
        return self._read

    def seek(self, position: int) -> None:
        """Resume after the first ``position`` batches.

        The validator starts afresh (it remembers each sensor's last timestamp, and would take the trace read
        again for stale samples); its counters then cover the trace up to here once, as in a fresh process.
        """
        self.validator = Validator()
        self._it = read_batches(self.path, self.validator)
        self._read, self._last_ts, self.done = 0, None, False
        for _ in range(position):
            if next(self._it, None) is None:
                self.done = True
                break
            self._read += 1
        if self.done:
            self._it = iter(())

    async def read(self) -> list[Sample]:
        """The next batch (empty when the trace is exhausted)."""
        if self._it is None:
            self.seek(self._read)
        assert self._it is not None
        try:
            samples, bad = next(self._it)
        except StopIteration:
            self.done = True
            return []
        self._read += 1
        self.quarantined += bad  # after a seek, lines quarantined before it are not counted again
        if self.realtime and samples and self._last_ts is not None:
            await asyncio.sleep(max(samples[0].ts - self._last_ts, 0.0) / self.speed)
        if samples:
            self._last_ts = samples[0].ts
        return samples
