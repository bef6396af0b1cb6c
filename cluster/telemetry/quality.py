"""Data quality (seed: raw → verified → easy to AI): every sample is validated before the twin sees it.

A record that fails is quarantined with a reason and counted per source: never a crash, never a silent
drop. Reasons: ``bad_json``, ``not_an_object``, ``missing_field``, ``wrong_type``, ``nan``,
``out_of_range``, ``unknown_field``, ``unknown_kind``, ``invalid``, ``duplicate_ts``, ``backwards_ts`` and
``stuck_sensor`` (the same GPU reading ``stuck_after`` times in a row: a live sensor with any noise
never does that). Sampling gaps are counted (``gaps``) but the sample after a gap is good data and passes.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from cluster.telemetry.samples import GpuSample, Sample, parse_sample

_PYDANTIC_REASONS = {
    "missing": "missing_field",
    "finite_number": "nan",
    "extra_forbidden": "unknown_field",
    "union_tag_invalid": "unknown_kind",
    "union_tag_not_found": "unknown_kind",
}
_RANGE = ("greater_than", "less_than", "too_short", "too_long", "literal_error")


@dataclass(frozen=True)
class Quarantined:
    """One record refused, with where it came from and why."""

    source: str
    line: int
    reason: str
    detail: str
    key: str | None = None
    ts: float | None = None


@dataclass
class Validator:
    """Validates records of any number of sources, keeping per-source counters and per-series state."""

    # Above the twin's own stuck-sensor detector (30 readings), so the twin raises sensor_fault first.
    stuck_after: int = 60
    gap_factor: float = 5.0  # a gap is an interval over gap_factor × the series' usual interval
    accepted: Counter[str] = field(default_factory=Counter)
    rejected: dict[str, Counter[str]] = field(default_factory=dict)
    gaps: Counter[str] = field(default_factory=Counter)
    _last_ts: dict[tuple[str, str], float] = field(default_factory=dict)
    _interval: dict[tuple[str, str], float] = field(default_factory=dict)
    _same: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)

    def check_line(self, source: str, line_no: int, line: str) -> Sample | Quarantined:
        """Parse and validate one JSON Lines record."""
        try:
            record = json.loads(line, parse_constant=lambda c: float(c))  # NaN/Infinity → float, refused below
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            return self._refuse(source, line_no, "bad_json", str(exc)[:120])
        return self.check(source, line_no, record)

    def check(self, source: str, line_no: int, record: Any) -> Sample | Quarantined:
        """Validate one decoded record (a dict); returns the sample or its quarantine entry."""
        if not isinstance(record, dict):
            return self._refuse(source, line_no, "not_an_object", type(record).__name__)
        try:
            sample = parse_sample(record)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err.get("loc", ()))
            return self._refuse(source, line_no, _reason(err), f"{loc}: {err.get('msg', '')}"[:160])
        except (ValueError, TypeError) as exc:
            return self._refuse(source, line_no, "invalid", str(exc)[:160])
        key = _series(sample)
        sk = (source, key)
        last = self._last_ts.get(sk)
        if last is not None and sample.ts == last:
            return self._refuse(source, line_no, "duplicate_ts", f"{key} at {sample.ts:g} again", key, sample.ts)
        if last is not None and sample.ts < last:
            return self._refuse(source, line_no, "backwards_ts", f"{key} at {sample.ts:g} after {last:g}", key,
                                sample.ts)
        if isinstance(sample, GpuSample):
            value, run = self._same.get(sk, (math.nan, 0))
            run = run + 1 if sample.temp_c == value else 1
            self._same[sk] = (sample.temp_c, run)
            if run >= self.stuck_after:
                self._last_ts[sk] = sample.ts
                return self._refuse(source, line_no, "stuck_sensor", f"{key} read {value:g} {run} times in a row",
                                    key, sample.ts)
        if last is not None:
            step = sample.ts - last
            usual = self._interval.get(sk)
            if usual is not None and step > self.gap_factor * usual:
                self.gaps[source] += 1
            self._interval[sk] = step if usual is None else min(usual, step) if step > 0 else usual
        self._last_ts[sk] = sample.ts
        self.accepted[source] += 1
        return sample

    def _refuse(self, source: str, line_no: int, reason: str, detail: str, key: str | None = None,
                ts: float | None = None) -> Quarantined:
        self.rejected.setdefault(source, Counter())[reason] += 1
        return Quarantined(source, line_no, reason, detail, key, ts)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per source: accepted, quarantined (total and by reason) and gaps."""
        sources = sorted(set(self.accepted) | set(self.rejected) | set(self.gaps))
        return {
            s: {"accepted": self.accepted[s], "quarantined": sum(self.rejected.get(s, Counter()).values()),
                "by_reason": dict(sorted(self.rejected.get(s, Counter()).items())), "gaps": self.gaps[s]}
            for s in sources
        }


def _reason(err: Any) -> str:
    kind = str(err.get("type", ""))
    if kind in _PYDANTIC_REASONS:
        return _PYDANTIC_REASONS[kind]
    if any(kind.startswith(r) for r in _RANGE):
        return "out_of_range"
    if kind.endswith(("_type", "_parsing")) or kind in ("model_type", "dict_type"):
        return "wrong_type"
    return "invalid"


def _series(s: Sample) -> str:
    """The time series a sample belongs to (its timestamps must strictly increase)."""
    kind = s.kind
    if kind == "gpu":
        return s.name  # type: ignore[union-attr]
    if kind == "cooling":
        return f"cooling:{s.unit}"  # type: ignore[union-attr]
    if kind == "link":
        return f"link:{s.link}"  # type: ignore[union-attr]
    if kind == "job":
        return f"job:{s.job}"  # type: ignore[union-attr]
    return f"action:{s.action_id}"  # type: ignore[union-attr]
