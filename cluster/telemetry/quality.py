"""Data quality (seed: raw → verified → easy to AI): every sample is validated before the twin sees it.

A record that fails is quarantined with a reason and counted per source: never a crash, never a silent
drop. Reasons: ``bad_json``, ``not_an_object``, ``missing_field``, ``wrong_type``, ``nan``,
``out_of_range``, ``unknown_field``, ``unknown_kind``, ``invalid``, ``duplicate_ts``, ``backwards_ts`` and
``stuck_sensor``. Sampling gaps are counted (``gaps``) but the sample after a gap is good data and passes.

Fields, not samples: a GPU reading that is blank (DCGM's blank sentinels, see :func:`is_blank`) or NaN is
*missing* (counted in ``missing``, not quarantined: the GPU does not report it), and a reading that is out of
range or stuck is quarantined *as a field* (counted in ``fields``); the rest of the sample passes. Only a
sample left with no reading at all is refused, with the reason of its temperature.

A stuck sensor is a flat temperature that should have moved (:class:`FlatRun`): readings finer than a degree
never repeat ``stuck_after`` times on a live sensor, but whole-degree readings (NVML, dcgm-exporter) of a
steady GPU do, so for those the reading must stay flat while power or clocks moved by more than noise.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from cluster.telemetry.samples import (
    GPU_READINGS,
    STUCK_CLOCK_MOVE_MHZ,
    STUCK_POWER_MOVE_W,
    STUCK_SETTLE_S,
    GpuSample,
    Sample,
    parse_sample,
)

#: DCGM's blank values (dcgm_fields.h / dcgmvalue.h): a field with no data. ``DCGM_INT32_BLANK`` and
#: ``DCGM_INT64_BLANK`` (``+1`` NOT_FOUND, ``+2`` NOT_SUPPORTED, e.g. 9223372036854775794, ``+3``
#: NOT_PERMISSIONED, up to ``+15``) and ``DCGM_FP64_BLANK`` (2**47, same offsets); DCGM's own test is
#: ``value >= BLANK``. ``DCGM_STR_BLANK`` is the string ``<<<NULL>>>``.
DCGM_INT32_BLANK = 0x7FFFFFF0
DCGM_INT64_BLANK = 0x7FFFFFFFFFFFFFF0
DCGM_FP64_BLANK = 140737488355328.0
DCGM_STR_BLANK = "<<<NULL>>>"
READINGS = GPU_READINGS


def is_blank(value: Any) -> bool:
    """A DCGM blank sentinel, NaN or an infinity: the field has no data (missing, never 0)."""
    if isinstance(value, str):
        return value.strip() == DCGM_STR_BLANK
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return True
    return DCGM_INT32_BLANK <= value < DCGM_INT32_BLANK + 16 or value >= DCGM_FP64_BLANK


@dataclass
class FlatRun:
    """One GPU's run of identical temperature readings, and how far power and clocks moved during it."""

    value: float = math.nan
    run: int = 0  # readings equal to the first of the run, after it
    fine: bool = False  # a reading with a fraction of a degree was seen: the sensor's resolution is fine
    p_lo: float = math.nan
    p_hi: float = math.nan
    c_lo: float = math.nan
    c_hi: float = math.nan
    moved_at: float = math.inf  # when power or clocks first moved past the thresholds within the run
    held: int = 0  # readings in a row for which the rule (fine, or moved and settled) held

    def push(self, ts: float, temp: float, power: float | None, clock: float | None) -> bool:
        """Fold one reading; True when the reading may be stuck (``run`` counts the repeats, ``held`` the
        readings the rule held for)."""
        self.fine = self.fine or temp != round(temp)
        flat = temp == self.value
        p = math.nan if power is None else power
        c = math.nan if clock is None else clock
        if flat:
            self.run += 1
            self.p_lo, self.p_hi = _fmin(self.p_lo, p), _fmax(self.p_hi, p)
            self.c_lo, self.c_hi = _fmin(self.c_lo, c), _fmax(self.c_hi, c)
            if self.p_hi - self.p_lo > STUCK_POWER_MOVE_W or self.c_hi - self.c_lo > STUCK_CLOCK_MOVE_MHZ:
                self.moved_at = min(self.moved_at, ts)
        else:
            self.value, self.run, self.moved_at = temp, 0, math.inf
            self.p_lo = self.p_hi = p
            self.c_lo = self.c_hi = c
        rule = self.run > 0 and (self.fine or ts - self.moved_at >= STUCK_SETTLE_S)
        self.held = self.held + 1 if rule else 0
        return rule


def _fmin(a: float, b: float) -> float:
    return b if math.isnan(a) else a if math.isnan(b) else min(a, b)


def _fmax(a: float, b: float) -> float:
    return b if math.isnan(a) else a if math.isnan(b) else max(a, b)

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
    stuck_after: int = 60  # repeats of one temperature, with the FlatRun rule, before the field is quarantined
    stuck_grace: int = 5
    gap_factor: float = 5.0  # a gap is an interval over gap_factor × the series' usual interval
    accepted: Counter[str] = field(default_factory=Counter)
    rejected: dict[str, Counter[str]] = field(default_factory=dict)
    gaps: Counter[str] = field(default_factory=Counter)
    missing: dict[str, Counter[str]] = field(default_factory=dict)  # source → blank/NaN readings by field
    fields: dict[str, Counter[str]] = field(default_factory=dict)  # source → quarantined "field:reason"
    _last_ts: dict[tuple[str, str], float] = field(default_factory=dict)
    _interval: dict[tuple[str, str], float] = field(default_factory=dict)
    _flat: dict[tuple[str, str], FlatRun] = field(default_factory=dict)

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
        dropped: dict[str, tuple[str, str]] = {}  # reading → (reason, detail), quarantined as a field
        if record.get("kind", "gpu") == "gpu":
            record = self._drop_blanks(source, record, dropped)
        try:
            sample = self._parse(record, dropped)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err.get("loc", ()))
            return self._refuse(source, line_no, _reason(err), f"{loc}: {err.get('msg', '')}"[:160])
        except (ValueError, TypeError) as exc:
            return self._refuse(source, line_no, "invalid", str(exc)[:160])
        except _NoReadings:
            reason, detail = dropped.get("temp_c") or next(iter(dropped.values()), ("missing_field", "no reading"))
            return self._refuse(source, line_no, reason, detail)
        key = _series(sample)
        sk = (source, key)
        last = self._last_ts.get(sk)
        if last is not None and sample.ts == last:
            return self._refuse(source, line_no, "duplicate_ts", f"{key} at {sample.ts:g} again", key, sample.ts)
        if last is not None and sample.ts < last:
            return self._refuse(source, line_no, "backwards_ts", f"{key} at {sample.ts:g} after {last:g}", key,
                                sample.ts)
        if isinstance(sample, GpuSample) and sample.temp_c is not None:
            flat = self._flat.setdefault(sk, FlatRun())
            stuck = flat.push(sample.ts, sample.temp_c, sample.power_w, sample.sm_clock_mhz)
            # The first readings of an episode pass (``stuck_grace``): the twin decides on the same rule over a
            # shorter run and must see them to raise its sensor_fault.
            if stuck and flat.run + 1 >= self.stuck_after and flat.held > self.stuck_grace:
                detail = f"{key} read {sample.temp_c:g} {flat.run + 1} times in a row"
                if not any(getattr(sample, r) not in (None, ()) for r in READINGS if r != "temp_c"):
                    self._last_ts[sk] = sample.ts
                    return self._refuse(source, line_no, "stuck_sensor", detail, key, sample.ts)
                dropped["temp_c"] = ("stuck_sensor", detail)
                sample = sample.model_copy(update={"temp_c": None})
        for name, (reason, _) in dropped.items():
            self.fields.setdefault(source, Counter())[f"{name}:{reason}"] += 1
        if last is not None:
            step = sample.ts - last
            usual = self._interval.get(sk)
            if usual is not None and step > self.gap_factor * usual:
                self.gaps[source] += 1
            self._interval[sk] = step if usual is None else min(usual, step) if step > 0 else usual
        self._last_ts[sk] = sample.ts
        self.accepted[source] += 1
        return sample

    def _drop_blanks(self, source: str, record: dict[str, Any], dropped: dict[str, tuple[str, str]]) -> dict:
        """The record without its blank or NaN readings (counted as missing, or as ``nan`` when it was NaN)."""
        out = dict(record)
        for name in READINGS:
            if name in out and is_blank(out[name]):
                value = out.pop(name)
                self.missing.setdefault(source, Counter())[name] += 1
                if isinstance(value, float) and not math.isfinite(value):
                    dropped.setdefault(name, ("nan", f"gpu.{name}: {value}"))
        # NaN readings count as missing, not as quarantined fields; they only name the reason of a refusal.
        return out

    def _parse(self, record: dict[str, Any], dropped: dict[str, tuple[str, str]]) -> Sample:
        """``parse_sample``; a GPU reading that fails is dropped (quarantined as a field) and the rest parsed."""
        nan_only = set(dropped)
        for _ in range(len(READINGS) + 1):
            try:
                sample = parse_sample(record)
            except ValidationError as exc:
                if all(e.get("type") == "missing" and tuple(e.get("loc", ())) == ("gpu",) for e in exc.errors()):
                    raise _NoReadings from None
                errors = exc.errors()
                on_reading = [len(e.get("loc", ())) > 1 and e["loc"][0] == "gpu" and e["loc"][1] in READINGS
                              for e in errors]
                if not all(on_reading):
                    raise
                bad = {str(e["loc"][1]): e for e in reversed(errors)}  # the first error of each field wins
                for name, err in bad.items():
                    dropped[name] = (_reason(err), f"gpu.{name}: {err.get('msg', '')}"[:160])
                record = {k: v for k, v in record.items() if k not in bad}
                continue
            for name in nan_only:
                dropped.pop(name, None)  # NaN is missing, not a quarantined field, when the sample stays
            return sample
        raise _NoReadings  # pragma: no cover - each pass drops at least one reading

    def _refuse(self, source: str, line_no: int, reason: str, detail: str, key: str | None = None,
                ts: float | None = None) -> Quarantined:
        self.rejected.setdefault(source, Counter())[reason] += 1
        return Quarantined(source, line_no, reason, detail, key, ts)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per source: accepted, quarantined (total and by reason), gaps, quarantined fields and missing fields."""
        sources = sorted(set(self.accepted) | set(self.rejected) | set(self.gaps) | set(self.fields)
                         | set(self.missing))
        return {
            s: {"accepted": self.accepted[s], "quarantined": sum(self.rejected.get(s, Counter()).values()),
                "by_reason": dict(sorted(self.rejected.get(s, Counter()).items())), "gaps": self.gaps[s],
                "fields": dict(sorted(self.fields.get(s, Counter()).items())),
                "missing": dict(sorted(self.missing.get(s, Counter()).items()))}
            for s in sources
        }


class _NoReadings(Exception):
    """A GPU sample whose every reading is missing or quarantined."""


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
    if kind == "llm_engine":
        return f"llm:{s.deployment}/{s.replica}"  # type: ignore[union-attr]
    return f"action:{s.action_id}"  # type: ignore[union-attr]
