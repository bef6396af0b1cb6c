"""Property-based tests of every parser that takes outside input: never a crash, bad input gives a clear error
or a quarantine entry, good input round-trips. Trace JSON Lines, DCGM text, runbook front matter."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.telemetry.dcgm import FIELDS, parse_metrics
from cluster.telemetry.quality import Quarantined, Validator
from cluster.telemetry.samples import GpuSample, parse_sample
from knowledge.documents import DocumentError, split_front_matter

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=20,
)
SAMPLE_KEYS = ["ts", "kind", "node", "gpu", "temp_c", "power_w", "unit", "supply_c", "link", "type", "job",
               "bandwidth_gbps", "gpus", "step_ms", "xid", "util", "model"]


# --- trace JSON Lines (quality.Validator / parse_sample) ----------------------------------------------------
@SETTINGS
@given(st.text(max_size=300))
def test_any_line_is_a_sample_or_a_quarantine_with_a_reason(line: str) -> None:
    out = Validator().check_line("fuzz", 1, line)
    assert isinstance(out, GpuSample | Quarantined) or hasattr(out, "kind")
    if isinstance(out, Quarantined):
        assert out.reason and out.source == "fuzz" and out.line == 1


@SETTINGS
@given(st.dictionaries(st.sampled_from(SAMPLE_KEYS), json_values, max_size=8) | json_values)
def test_any_record_is_validated_never_crashes(record: object) -> None:
    v = Validator()
    out = v.check("fuzz", 7, record)
    if isinstance(out, Quarantined):
        assert v.rejected["fuzz"][out.reason] == 1
    else:
        assert v.accepted["fuzz"] == 1


gpu_records = st.fixed_dictionaries(
    {"ts": st.floats(0, 1e6), "node": st.sampled_from(["n01", "n02", "node-7"]), "gpu": st.integers(0, 255),
     "temp_c": st.floats(-20, 150)},
    optional={"power_w": st.floats(0, 2000), "util": st.floats(0, 1), "sm_clock_mhz": st.floats(0, 5000),
              "xid": st.integers(0, 200), "throttle_reasons": st.lists(st.sampled_from(["hw_slowdown", "sw_power_cap"]),
                                                                       max_size=2)},
)


@SETTINGS
@given(gpu_records)
def test_a_valid_gpu_record_round_trips(record: dict) -> None:
    sample = parse_sample(record)
    again = parse_sample(json.loads(sample.model_dump_json()))
    assert again == sample
    out = Validator().check_line("t", 1, json.dumps(record))
    assert out == sample


@SETTINGS
@given(gpu_records, st.sampled_from([math.nan, math.inf, -math.inf, 1e9, -1e9]))
def test_nan_and_out_of_range_are_quarantined(record: dict, bad: float) -> None:
    # Fields, not samples (#16): the bad temperature is dropped and counted; the sample is refused only when it
    # has no other reading left, with the temperature's reason.
    v = Validator()
    out = v.check("t", 1, {**record, "temp_c": bad})
    if isinstance(out, Quarantined):
        assert out.reason in ("nan", "out_of_range")
    else:
        assert isinstance(out, GpuSample) and out.temp_c is None
        assert v.missing.get("t", {}).get("temp_c", 0) + v.fields.get("t", {}).get("temp_c:out_of_range", 0) == 1


# --- DCGM exporter text --------------------------------------------------------------------------------------
dcgm_line = st.builds(
    lambda name, gpu, host, value: f'{name}{{gpu="{gpu}",Hostname="{host}",modelName="NVIDIA H100 80GB HBM3"}} {value}',
    st.sampled_from(sorted(FIELDS)), st.integers(0, 7), st.sampled_from(["n01", "n02"]),
    st.floats(0, 1e4, allow_nan=False).map(lambda f: f"{f:.3f}"),
)


@SETTINGS
@given(st.text(max_size=500))
def test_any_text_parses_into_gpu_records_or_nothing(text: str) -> None:
    for rec in parse_metrics(text):
        assert isinstance(rec["node"], str) and isinstance(rec["gpu"], int)


@SETTINGS
@given(st.lists(dcgm_line | st.text(max_size=60), max_size=30))
def test_dcgm_records_are_keyed_once_per_gpu_and_keep_their_values(lines: list[str]) -> None:
    records = parse_metrics("\n".join(lines))
    keys = [(r["node"], r["gpu"]) for r in records]
    assert keys == sorted(set(keys))
    temp = {(r["node"], r["gpu"]): r.get("temp_c") for r in records}
    for line in lines:  # the last reading of a GPU's temperature is what the record holds
        if line.startswith("DCGM_FI_DEV_GPU_TEMP{") and FIELDS.get("DCGM_FI_DEV_GPU_TEMP") == "temp_c":
            gpu = int(line.split('gpu="')[1].split('"')[0])
            host = line.split('Hostname="')[1].split('"')[0]
            assert (host, gpu) in temp


# --- runbook front matter ------------------------------------------------------------------------------------
@SETTINGS
@given(st.text(max_size=400))
def test_any_text_splits_or_names_its_problem(text: str) -> None:
    try:
        meta, body = split_front_matter(text, "fuzz.md")
    except DocumentError as exc:
        assert "fuzz.md" in str(exc) and str(exc).split("fuzz.md", 1)[1].strip()
    else:
        assert isinstance(meta, dict) and isinstance(body, str)


meta_values = st.dictionaries(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12),
    st.text(alphabet=st.characters(codec="ascii", categories=["L", "N"]), max_size=20) | st.integers()
    | st.lists(st.text(alphabet="abc-", min_size=1, max_size=8), max_size=3),
    max_size=6,
)


@SETTINGS
@given(meta_values, st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r"), max_size=200))
def test_front_matter_round_trips(meta: dict, body: str) -> None:
    text = "---\n" + yaml.safe_dump(meta, sort_keys=True) + "---\n" + body
    got_meta, got_body = split_front_matter(text, Path("doc.md"))
    assert got_meta == meta
    assert got_body.lstrip("\n") == body.lstrip("\n")
