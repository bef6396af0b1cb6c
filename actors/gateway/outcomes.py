"""Closing the loop: compare what an executed action did with what its what-if prediction said (pure).

The observation comes from the twin's snapshot; time is the twin's (``snapshot["ts"]`` against the
``ActionResult.ts`` of the execution), never the wall clock.
"""

from __future__ import annotations

from typing import Any, Literal

from actors.agent.proposals import Prediction

OutcomeVerdict = Literal["met", "missed", "waiting", "unobservable"]


def observe(pred: Prediction, snapshot: dict[str, Any]) -> float | None:
    """The predicted metric's current value in the snapshot, or None if the snapshot does not carry it.

    GPU fields (``sensed_c``, ``est_c``, ``projected_c``, ``power_w``, ``clock_mhz``; ``max_`` prefix allowed)
    take the maximum over the GPUs named by ``subject`` (a GPU, a node, or ``fleet``); unit fields
    (``supply_c``, ``fan_pct``, ``setpoint_c``) read the cooling unit named by ``subject``.
    """
    metric = pred.metric.removeprefix("max_")
    values: list[float] = []
    for g in snapshot.get("gpus", []):
        if pred.subject in ("fleet", g.get("gpu"), g.get("node")) and isinstance(g.get(metric), int | float):
            values.append(float(g[metric]))
    if values:
        return max(values)
    for u in snapshot.get("units", []):
        if u.get("unit") == pred.subject and isinstance(u.get(metric), int | float):
            return float(u[metric])
    return None


def judge(pred: Prediction, observed: float | None, elapsed_s: float) -> OutcomeVerdict:
    """``met`` once the observation satisfies the prediction within its time; ``missed`` when time is up."""
    if observed is not None:
        ok = (pred.below is None or observed < pred.below) and (pred.above is None or observed > pred.above)
        if ok:
            return "met"
    if elapsed_s < pred.within_s:
        return "waiting"
    return "missed" if observed is not None else "unobservable"


def expectation(pred: Prediction) -> str:
    """The prediction in an operator's words."""
    bounds = " and ".join(
        s for s in (f"below {pred.below:g}" if pred.below is not None else "",
                    f"above {pred.above:g}" if pred.above is not None else "") if s
    )
    return f"{pred.metric} of {pred.subject} {bounds or '(no bound)'} within {pred.within_s:g} s"
