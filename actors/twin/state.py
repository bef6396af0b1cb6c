"""The twin's state as data: a versioned msgpack schema for everything it writes to Redis and reads back.

Checkpoints, answers and intents are read back from a Redis that others may write to, so they are data, never
code (no pickle): plain msgpack maps with a ``"v"`` version and a ``"kind"``, numpy arrays as dtype + shape +
bytes, samples and events as their JSON models. Every class that is checkpointed says what it keeps in an
explicit ``to_state()`` and rebuilds itself in ``from_state()``; a value that does not parse or does not
validate raises :class:`StateError`, and the caller starts from the last good state it can prove.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np

from actors.twin.barrier import Barrier, TickStats
from actors.twin.events import Event
from cluster.telemetry.samples import Sample, parse_sample

VERSION = 1
#: The dtypes an array in a checkpoint may have (anything else is refused, not interpreted).
DTYPES = {"<f8", "<i8", "<i2", "|b1"}
MAX_BYTES = 512 * 1024 * 1024  # a checkpoint larger than this is refused before parsing


class StateError(ValueError):
    """A stored state that does not parse or does not validate (the message names the key)."""


def pack(kind: str, body: dict[str, Any]) -> bytes:
    """``body`` (plain values, arrays already encoded) as versioned msgpack."""
    return msgpack.packb({"v": VERSION, "kind": kind, **body}, use_bin_type=True)


def unpack(raw: bytes, kind: str, key: str) -> dict[str, Any]:
    """Parse a stored state of ``kind``; raises :class:`StateError` naming ``key`` for anything else."""
    if not isinstance(raw, bytes | bytearray) or len(raw) > MAX_BYTES:
        raise StateError(f"{key}: not a stored state ({type(raw).__name__}, {len(raw)} bytes)")
    try:
        doc = msgpack.unpackb(raw, raw=False, strict_map_key=False, use_list=True)
    except Exception as exc:  # noqa: BLE001 - msgpack raises several types for garbage
        raise StateError(f"{key}: does not parse as a versioned state ({type(exc).__name__}: {exc})") from None
    if not isinstance(doc, dict) or doc.get("v") != VERSION or doc.get("kind") != kind:
        got = (doc.get("v"), doc.get("kind")) if isinstance(doc, dict) else type(doc).__name__
        raise StateError(f"{key}: expected a {kind!r} state of version {VERSION}, got {got}")
    return doc


def load(raw: bytes, kind: str, key: str, build: Callable[[dict[str, Any]], Any]) -> Any:
    """``build(unpack(raw))``; any error while building (a missing field, a wrong type or shape) is a
    :class:`StateError` naming ``key``."""
    doc = unpack(raw, kind, key)
    try:
        return build(doc)
    except StateError as exc:
        raise StateError(f"{key}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise StateError(f"{key}: invalid {kind} state ({type(exc).__name__}: {exc})") from None


# --- values ------------------------------------------------------------------------------------------------
def arr(a: np.ndarray) -> dict[str, Any]:
    """An array as ``{"dtype", "shape", "data"}`` (little-endian, C order)."""
    a = np.ascontiguousarray(a)
    dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
    return {"dtype": dt.str, "shape": list(a.shape), "data": a.astype(dt, copy=False).tobytes()}


def unarr(d: Any, dtype: str | None = None, ndim: int | None = None) -> np.ndarray:
    """The array ``arr`` wrote, checked: an allowed dtype (``dtype`` if given), ``ndim``, and as many bytes as
    the shape says. Returns a writable copy."""
    if not isinstance(d, dict) or set(d) != {"dtype", "shape", "data"}:
        raise StateError(f"not an array: {str(d)[:80]}")
    dt, shape, data = d["dtype"], d["shape"], d["data"]
    if dt not in DTYPES or (dtype is not None and dt != dtype):
        raise StateError(f"array dtype {dt!r} not allowed here (want {dtype or sorted(DTYPES)})")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise StateError(f"bad array shape {shape!r}")
    if ndim is not None and len(shape) != ndim:
        raise StateError(f"array of {len(shape)} dimensions where {ndim} are expected")
    want = int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize
    if not isinstance(data, bytes) or len(data) != want:
        raise StateError(f"array data of {len(data) if isinstance(data, bytes) else '?'} bytes, shape says {want}")
    return np.frombuffer(data, dtype=dt).reshape(shape).copy()


def need(value: Any, types: type | tuple[type, ...], what: str) -> Any:
    """``value`` if it is of ``types`` (bool is not an int here), else a :class:`StateError`."""
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise StateError(f"{what}: expected {types}, got bool")
    if not isinstance(value, types):
        raise StateError(f"{what}: expected {types}, got {type(value).__name__}")
    return value


def num(value: Any, what: str) -> float:
    """A number (int or float, not bool) as float."""
    return float(need(value, (int, float), what))


def strs(value: Any, what: str) -> list[str]:
    """A list of strings."""
    return [need(s, str, what) for s in need(value, list, what)]


def samples_to_state(samples: list[Sample]) -> list[dict[str, Any]]:
    """Samples as their JSON models (``parse_sample`` reads them back, validated)."""
    return [s.model_dump(mode="json") for s in samples]


def samples_from_state(rows: Any) -> list[Sample]:
    return [parse_sample(need(r, dict, "sample")) for r in need(rows, list, "samples")]


def events_to_state(events: list[Event]) -> list[str]:
    return [e.to_json() for e in events]


def events_from_state(rows: Any) -> list[Event]:
    return [Event.model_validate_json(need(r, str, "event")) for r in need(rows, list, "events")]


# --- the barrier (its bookkeeping, without the futures of a running loop) ------------------------------------
#: Completed ticks of history a checkpoint keeps (a restart's summary rolls over those).
KEEP_HISTORY = 100


def barrier_to_state(b: Barrier) -> dict[str, Any]:
    """A :class:`Barrier`'s bookkeeping: shards, open tick and arrivals, last ticks and the recent history."""
    return {"shards": list(b.shards), "window": b._history.maxlen, "open": b._open_tick,
            "arrivals": {s: list(t) for s, t in b._arrivals.items()}, "last_tick": dict(b._last_tick),
            "last_completed": b._last_completed, "completed": b._completed,
            "history": [h.model_dump(mode="json") for h in list(b._history)[-KEEP_HISTORY:]]}


def barrier_from_state(d: dict[str, Any]) -> Barrier:
    b = Barrier(strs(d["shards"], "barrier shards"), window=need(d["window"], int, "barrier window"))
    b._open_tick = None if d["open"] is None else need(d["open"], int, "open tick")
    b._arrivals = {need(s, str, "shard"): (num(t[0], "started"), num(t[1], "arrived"))
                   for s, t in need(d["arrivals"], dict, "arrivals").items()}
    b._last_tick = {need(s, str, "shard"): need(t, int, "tick") for s, t in need(d["last_tick"], dict, "ticks").items()}
    b._last_completed = None if d["last_completed"] is None else need(d["last_completed"], int, "completed tick")
    b._completed = need(d["completed"], int, "completed")
    b._history = deque((TickStats.model_validate(h) for h in need(d["history"], list, "history")),
                       maxlen=b._history.maxlen)
    unknown = (set(b._arrivals) | set(b._last_tick)) - set(b.shards)
    if unknown:
        raise StateError(f"barrier state names unknown shards {sorted(unknown)}")
    return b


# --- arrays of a class, by name --------------------------------------------------------------------------------
def arrays_to_state(obj: Any, spec: dict[str, str]) -> dict[str, Any]:
    """The arrays ``spec`` names (attribute → dtype) of ``obj``."""
    return {name: arr(getattr(obj, name)) for name in spec}


def arrays_from_state(obj: Any, d: dict[str, Any], spec: dict[str, str], n: int | None = None,
                      ndim: dict[str, int] | None = None) -> None:
    """Set ``obj``'s arrays from ``d``, each of its ``spec`` dtype; with ``n``, each must have ``n`` rows."""
    for name, dtype in spec.items():
        a = unarr(d[name], dtype, (ndim or {}).get(name, 1))
        if n is not None and len(a) != n:
            raise StateError(f"{name} has {len(a)} rows where {n} are expected")
        setattr(obj, name, a)
