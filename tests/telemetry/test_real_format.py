"""Real-format data quality (issue #16): pages as dcgm-exporter prints them, through the parser and validator.

Blank fields are missing (not quarantined, never 0), whole degrees are normal, host names are DNS names, the
page is parsed by ``prometheus_client``, and a stuck temperature is quarantined as a field, not a sample.
"""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from actors.twin.profiles import PROFILES, UNKNOWN, canonical_model, known, profile
from cluster.telemetry.dcgm import parse_metrics
from cluster.telemetry.quality import Quarantined, Validator, is_blank
from cluster.telemetry.samples import GpuSample
from policies.actions import CordonGpu, DrainNode, SetPowerLimit, action_targets, parse_action
from tests.telemetry.dcgm_pages import BLANK, Gpu, page

HOST_A, HOST_B = "ip-10-0-1-23.ec2.internal", "DGX-01"


def test_blank_sentinels_nan_and_real_values() -> None:
    for v in (9223372036854775794, 9223372036854775792.0, 2147483632, 2147483634, 140737488355328.0,
              140737488355330.0, math.nan, math.inf, "<<<NULL>>>"):
        assert is_blank(v), v
    for v in (0, 62, 612.5, 2147483631, 1e12, True, "NVIDIA H100 80GB HBM3"):
        assert not is_blank(v), v


def test_page_parses_with_both_reason_names_blank_fields_and_dns_hosts() -> None:
    text = page(HOST_A, "NVIDIA H100 80GB HBM3", [Gpu(0, reasons=0x4), Gpu(1, mem_temp=70)], new_reason_name=True)
    text += page(HOST_B, "NVIDIA B200", [Gpu(0, reasons=0x40, xid=79)], new_reason_name=False)
    recs = {(r["node"], r["gpu"]): r for r in parse_metrics(text)}
    assert set(recs) == {(HOST_A, 0), (HOST_A, 1), (HOST_B, 0)}
    a0, a1, b0 = recs[(HOST_A, 0)], recs[(HOST_A, 1)], recs[(HOST_B, 0)]
    assert a0["model"] == "H100-SXM" and b0["model"] == "B200"
    assert a0["throttle_reasons"] == ["sw_power_cap"] and b0["throttle_reasons"] == ["hw_thermal_slowdown"]
    assert math.isnan(a0["mem_temp_c"]) and a1["mem_temp_c"] == 70.0  # blank → NaN in the record
    assert a0["temp_c"] == 62.0 and b0["xid"] == 79 and a0["xid"] == 0
    v = Validator()
    samples = [v.check("dcgm", n, {**r, "ts": 1.0}) for n, r in enumerate((a0, a1, b0))]
    assert not any(isinstance(s, Quarantined) for s in samples)
    s0 = samples[0]
    assert isinstance(s0, GpuSample) and s0.mem_temp_c is None and s0.temp_c == 62.0 and s0.node == HOST_A
    assert s0.name == f"{HOST_A}/gpu0"
    summary = v.summary()["dcgm"]
    assert summary["quarantined"] == 0 and summary["fields"] == {} and summary["missing"] == {"mem_temp_c": 2}


def test_a_broken_line_is_skipped_and_named_and_the_rest_of_the_page_kept() -> None:
    bad: list[str] = []
    page = ('DCGM_FI_DEV_GPU_TEMP{gpu="0",Hostname="DGX-01"} 62\n'
            'DCGM_FI_DEV_GPU_TEMP{gpu="1" 62\n'  # truncated labels
            'DCGM_FI_DEV_POWER_USAGE{gpu="0",Hostname="DGX-01"} 310.5\n')
    [rec] = parse_metrics(page, bad_lines=bad)
    assert (rec["node"], rec["gpu"], rec["temp_c"], rec["power_w"]) == ("DGX-01", 0, 62.0, 310.5)
    assert bad == ['DCGM_FI_DEV_GPU_TEMP{gpu="1" 62']
    assert parse_metrics('DCGM_FI_DEV_GPU_TEMP{gpu="0" 62\n', bad_lines=bad) == [] and len(bad) == 2


def test_a_bad_field_is_quarantined_alone_and_the_sample_stays() -> None:
    v = Validator()
    got = v.check("s", 1, {"ts": 1, "node": "DGX-01", "gpu": 0, "temp_c": 61, "power_w": 99999, "util": math.nan,
                           "sm_clock_mhz": int(BLANK)})
    assert isinstance(got, GpuSample) and got.temp_c == 61 and got.power_w is None and got.util is None
    assert got.sm_clock_mhz is None
    s = v.summary()["s"]
    assert s["quarantined"] == 0 and s["fields"] == {"power_w:out_of_range": 1}
    assert s["missing"] == {"sm_clock_mhz": 1, "util": 1}
    # A blank temperature with an XID (a GPU that fell off the bus) is still a sample: the XID gets through.
    lost = v.check("s", 2, {"ts": 2, "node": "DGX-01", "gpu": 0, "temp_c": int(BLANK), "xid": 79})
    assert isinstance(lost, GpuSample) and lost.temp_c is None and lost.xid == 79
    # Nothing left at all: refused, with the reason of its temperature.
    empty = v.check("s", 3, {"ts": 3, "node": "DGX-01", "gpu": 0, "temp_c": int(BLANK)})
    assert isinstance(empty, Quarantined) and empty.reason == "missing_field"


def test_whole_degrees_of_a_steady_gpu_are_not_stuck_but_flat_under_moving_power_is() -> None:
    v = Validator()
    rec = lambda t, temp, p: {"ts": float(t), "node": HOST_A, "gpu": 0, "temp_c": temp, "power_w": p}  # noqa: E731
    steady = [v.check("a", t, rec(t, 62, 650.0 + (t % 5))) for t in range(600)]
    assert all(isinstance(s, GpuSample) and s.temp_c == 62 for s in steady)
    assert v.summary()["a"]["fields"] == {} and v.summary()["a"]["quarantined"] == 0
    # Flat while the power swings 350 ↔ 700 W every 30 s: after the sensor had time to follow, stuck.
    w = Validator()
    swung = [w.check("b", t, rec(t, 62, 350.0 if (t // 30) % 2 else 700.0)) for t in range(200)]
    assert all(isinstance(s, GpuSample) for s in swung)  # the power readings stay
    stuck_from = next(t for t, s in enumerate(swung) if s.temp_c is None)
    assert 60 <= stuck_from <= 120 and all(s.temp_c is None for s in swung[stuck_from:])
    assert w.summary()["b"]["fields"] == {"temp_c:stuck_sensor": 200 - stuck_from}


def test_dns_host_names_are_node_names_for_samples_and_actions() -> None:
    for host in (HOST_A, HOST_B, "n01", "gpu-node-7.Cluster.Example.COM", "a" * 63):
        assert GpuSample(ts=0, node=host, gpu=3, temp_c=50).name == f"{host}/gpu3"
    gpu = f"{HOST_A}/gpu3"
    assert action_targets(CordonGpu(gpu=gpu)) == [gpu] and action_targets(DrainNode(node=HOST_B)) == [HOST_B]
    assert parse_action({"kind": "set_power_limit", "gpu": "DGX-01/gpu0", "watts": 500}) == SetPowerLimit(
        gpu="DGX-01/gpu0", watts=500)
    assert gpu.rsplit("/gpu", 1) == [HOST_A, "3"]
    too_long = ".".join(["a" * 63] * 4) + ".b"  # 257 characters
    for bad in ("", "dgx 01", "a/b", "-a", "a-", "a..b", ".a", "a.", "a\nb", "a" * 64, too_long, "ü01"):
        with pytest.raises(ValidationError):
            DrainNode(node=bad)
    for bad in ("DGX-01/gpu", "DGX-01/gpuX", "DGX 01/gpu1", "a/b/gpu1"):
        with pytest.raises(ValidationError):
            CordonGpu(gpu=bad)


@pytest.mark.parametrize(("printed", "key"), [
    ("NVIDIA H100 80GB HBM3", "H100-SXM"), ("NVIDIA H200", "H200"), ("NVIDIA B200", "B200"),
    ("NVIDIA GB200", "GB200"), ("NVIDIA GB300", "GB300"), ("NVIDIA L40S", "L40S"),
    ("NVIDIA A100-SXM4-80GB", "A100-SXM"), ("NVIDIA A100-SXM4-40GB", "A100-SXM"), ("H100-SXM", "H100-SXM"),
])
def test_model_names_as_printed_map_to_profiles(printed: str, key: str) -> None:
    assert canonical_model(printed) == key and known(printed) and profile(printed) is PROFILES[key]


def test_unknown_models_get_conservative_limits_not_an_h100s() -> None:
    for printed in ("NVIDIA H100 PCIe", "NVIDIA H200 NVL", "Tesla T4", "NVIDIA RTX PRO 6000"):
        assert not known(printed) and profile(printed) is UNKNOWN and canonical_model(printed) == printed
    h100 = PROFILES["H100-SXM"]
    assert UNKNOWN.slowdown_c < h100.slowdown_c and UNKNOWN.max_operating_c < h100.max_operating_c
    for p in PROFILES.values():  # published or marked conservative; never above the unknown's safe line
        assert p.slowdown_c < p.shutdown_c and p.max_operating_c <= p.slowdown_c and p.power_min_w < p.tdp_w
        assert set(p.conservative) <= set(type(p).model_fields)
    assert PROFILES["L40S"].hbm_max_c is None and PROFILES["GB300"].memory_gb == 288


def test_older_exporters_spaces_between_labels_and_kubernetes_labels() -> None:
    text = ('DCGM_FI_DEV_GPU_TEMP{gpu="0", UUID="GPU-a", pci_bus_id="00000000:18:00.0", device="nvidia0", '
            'modelName="NVIDIA A100-SXM4-80GB", Hostname="DGX-01", container="", namespace="", pod=""} 48\n'
            'DCGM_FI_DEV_MEMORY_TEMP{gpu="0", UUID="GPU-a", pci_bus_id="00000000:18:00.0", device="nvidia0", '
            'modelName="NVIDIA A100-SXM4-80GB", Hostname="DGX-01", container="", namespace="", pod=""} 2147483634\n')
    [rec] = parse_metrics(text)
    assert rec["node"] == "DGX-01" and rec["model"] == "A100-SXM" and rec["temp_c"] == 48.0
    assert math.isnan(rec["mem_temp_c"])  # DCGM_INT32_NOT_SUPPORTED
