"""Runbook step limits (knowledge/limits.py): the interval a step allows, and the lint that finds steps without."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from cluster.cli import main
from knowledge.documents import load_document
from knowledge.limits import Bound, ParamLimit, allowed
from knowledge.retrieval import BUNDLED_CORPUS

S3 = ParamLimit.model_validate({"from": "setpoint_c", "change": [-4, -2], "min": 18, "above": {"dew_point_c": 2},
                                "unit": "°C"})


def test_a_relative_step_counts_from_the_live_value() -> None:
    b = allowed(S3, {"setpoint_c": 25.0})
    assert isinstance(b, Bound) and (b.lo, b.hi, b.pick()) == (21.0, 23.0, 21.0)
    assert b.text == "21–23 °C (2–4 °C below the current 25 °C; never below 18 °C)"
    assert b.holds(22.5) and not b.holds(13.0) and not b.holds(24.0)


def test_floors_cut_the_interval_and_an_empty_one_says_why() -> None:
    near = allowed(S3, {"setpoint_c": 21.0})
    assert isinstance(near, Bound) and (near.lo, near.hi) == (18.0, 19.0)
    humid = allowed(S3, {"setpoint_c": 25.0, "dew_point_c": 20.0})
    assert isinstance(humid, Bound) and (humid.lo, humid.hi) == (22.0, 23.0) and "dew_point_c 20 + 2" in humid.text
    blocked = allowed(S3, {"setpoint_c": 19.0})
    assert isinstance(blocked, str) and blocked.startswith("nothing satisfies it")
    assert "not known" in str(allowed(S3, {}))


def test_a_per_model_range_refuses_a_model_the_step_does_not_name() -> None:
    cap = ParamLimit.model_validate({"models": {"H100-SXM": [450, 500], "A100-SXM": [300, 300]}, "unit": "W"})
    h100 = allowed(cap, {}, "H100-SXM")
    assert isinstance(h100, Bound) and (h100.lo, h100.hi) == (450, 500)
    assert "no range for a B200" in str(allowed(cap, {}, "B200"))
    assert "GPU of unknown model" in str(allowed(cap, {}, None))


@pytest.mark.parametrize("bad", [{"from": "setpoint_c"}, {"change": [-2, -4], "from": "x"}, {"min": 5, "max": 1},
                                 {"models": {"H100-SXM": [500, 450]}}, {"minimum": 3}])
def test_an_inconsistent_limit_is_a_clear_error(bad: dict) -> None:
    with pytest.raises(ValidationError):
        ParamLimit.model_validate(bad)


def test_an_unbounded_limit_is_not_a_bound() -> None:
    assert "both sides" in str(allowed(ParamLimit(min=18), {}))


OLD_STYLE = """---
id: sop-my-cap
title: "SOP: my site's power cap"
type: sop
events: [power_capped]
actions:
  - kind: set_power_limit
    step: s1
    params: {gpu: "{gpu}", watts: 350}
  - kind: set_cooling_setpoint
    step: s9
    params: {unit: "{unit}"}
    limits:
      supply_c: {min: 18, max: 30, unit: "°C"}
---
# SOP: my site's power cap

### s1. Cap the GPU
Cap it.
"""


def test_lint_reports_unbounded_numbers_and_missing_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "sop-my-cap.md").write_text(OLD_STYLE)
    (tmp_path / "broken.md").write_text("---\nid: [\n---\n# x\n")
    assert main(["knowledge", "lint", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert "sop-my-cap#s1: set_power_limit sets watts with no limit from its step" in out.out
    assert "sop-my-cap#s9: set_cooling_setpoint cites step s9, which the document lacks" in out.out
    assert "broken.md: -: does not load" in out.out
    assert "2 documents, 3 finding(s)" in out.err


def test_the_bundled_corpus_lints_clean(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["knowledge", "lint", str(BUNDLED_CORPUS)]) == 0
    doc = load_document(BUNDLED_CORPUS / "eop-cooling-degradation.md")
    assert doc.actions[0].limits["supply_c"] == S3
