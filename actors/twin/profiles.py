"""GPU model profiles: data, not code, so a new model is one more entry.

Sources. Temperatures are the thresholds NVML reports (``nvidia-smi -q -d TEMPERATURE``: GPU Shutdown, GPU
Slowdown, GPU Max Operating and Memory Max Operating Temp) where such output is published: H100 80GB HBM3
92/89/87/95 °C, A100 92/89/85/95 °C. Power ranges and memory are from NVIDIA's product datasheets (H100 SXM
700 W, H200 SXM 700 W / 141 GB, HGX B200 1000 W / 180 GB, GB200 NVL72 1200 W / 186 GB per GPU, GB300 NVL72
1400 W / 288 GB per GPU, A100 SXM4 400 W / 80 GB, L40S 350 W / 48 GB GDDR6) and the minimum power limits from
``nvidia-smi -q`` (H100 200 W, A100 SXM4 100 W). A figure NVIDIA does not publish is a **conservative**
value (the field is named in the profile's ``conservative``): thresholds lower than any published
datacenter GPU's (slowdown 87, shutdown 90, max operating 83, HBM 85 °C), so the twin warns early rather
than late; unknown minimum power limits are 200 W. Where NVML gives the real limits, they win.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict


class GpuProfile(BaseModel):
    """Thermal and electrical limits of one GPU model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    slowdown_c: float
    shutdown_c: float
    max_operating_c: float
    hbm_max_c: float | None  # None: no HBM (GDDR memory reports no memory max operating temperature)
    tdp_w: float  # the maximum power limit
    power_min_w: float  # the minimum power limit one may set
    idle_w: float
    clock_max_mhz: float
    clock_min_mhz: float
    memory_gb: float
    conservative: tuple[str, ...] = ()  # fields NVIDIA does not publish: a conservative value stands in


#: Thresholds for a figure that is not published: below every published datacenter GPU's.
_SAFE = {"slowdown_c": 87.0, "shutdown_c": 90.0, "max_operating_c": 83.0, "hbm_max_c": 85.0}
_SAFE_FIELDS = tuple(_SAFE)

#: The profile an unknown model gets (after it was reported once): conservative everything.
UNKNOWN = GpuProfile(name="unknown", **_SAFE, tdp_w=700, power_min_w=200, idle_w=80, clock_max_mhz=1980,
                     clock_min_mhz=345, memory_gb=80,
                     conservative=(*_SAFE_FIELDS, "tdp_w", "power_min_w", "idle_w", "clock_max_mhz", "memory_gb"))

PROFILES: dict[str, GpuProfile] = {
    p.name: p
    for p in (
        GpuProfile(name="H100-SXM", slowdown_c=89, shutdown_c=92, max_operating_c=87, hbm_max_c=95, tdp_w=700,
                   power_min_w=200, idle_w=80, clock_max_mhz=1980, clock_min_mhz=345, memory_gb=80),
        # Same GH100 die as H100; NVML thresholds for H200 are not published in a datasheet: conservative.
        GpuProfile(name="H200", **_SAFE, tdp_w=700, power_min_w=200, idle_w=80, clock_max_mhz=1980,
                   clock_min_mhz=345, memory_gb=141, conservative=(*_SAFE_FIELDS, "power_min_w")),
        GpuProfile(name="B200", **_SAFE, tdp_w=1000, power_min_w=200, idle_w=140, clock_max_mhz=1965,
                   clock_min_mhz=345, memory_gb=180,
                   conservative=(*_SAFE_FIELDS, "power_min_w", "idle_w", "clock_max_mhz")),
        GpuProfile(name="GB200", **_SAFE, tdp_w=1200, power_min_w=200, idle_w=150, clock_max_mhz=2062,
                   clock_min_mhz=345, memory_gb=186,
                   conservative=(*_SAFE_FIELDS, "power_min_w", "idle_w", "clock_max_mhz")),
        GpuProfile(name="GB300", **_SAFE, tdp_w=1400, power_min_w=200, idle_w=160, clock_max_mhz=2062,
                   clock_min_mhz=345, memory_gb=288,
                   conservative=(*_SAFE_FIELDS, "power_min_w", "idle_w", "clock_max_mhz")),
        GpuProfile(name="A100-SXM", slowdown_c=89, shutdown_c=92, max_operating_c=85, hbm_max_c=95, tdp_w=400,
                   power_min_w=100, idle_w=55, clock_max_mhz=1410, clock_min_mhz=210, memory_gb=80),
        # GDDR6, no HBM; the L40S datasheet gives 350 W and 48 GB but no NVML thresholds: conservative.
        GpuProfile(name="L40S", slowdown_c=87, shutdown_c=90, max_operating_c=83, hbm_max_c=None, tdp_w=350,
                   power_min_w=100, idle_w=35, clock_max_mhz=2520, clock_min_mhz=210, memory_gb=48,
                   conservative=("slowdown_c", "shutdown_c", "max_operating_c", "power_min_w", "idle_w")),
    )
}

# Model names as NVML and dcgm-exporter print them ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB",
# "NVIDIA GB200", ...) → profile. Order matters: GB200 before B200. PCIe and NVL cards (other power and
# thermal limits) are not these profiles and stay unknown until one is added.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), name) for p, name in (
        (r"^H100-SXM$|\bH100\b.*\b(SXM\d?|HBM3)\b", "H100-SXM"),
        (r"^H200$|\bH200\b(?!.*\bNVL\b)", "H200"),
        (r"\bGB300\b", "GB300"),
        (r"\bGB200\b", "GB200"),
        (r"\bB200\b", "B200"),
        (r"^A100-SXM$|\bA100[- ]SXM", "A100-SXM"),
        (r"\bL40S\b", "L40S"),
    )
)


def canonical_model(name: str) -> str:
    """The profile name of a model as NVML/DCGM print it, or the name unchanged when no profile fits."""
    clean = " ".join(name.upper().split())
    for pattern, key in _PATTERNS:
        if pattern.search(clean):
            return key
    return name.strip()


def known(name: str) -> bool:
    """Whether a model (as printed, or a profile name) has a profile."""
    return canonical_model(name) in PROFILES


def profile(name: str) -> GpuProfile:
    """The profile of a GPU model; an unknown model gets :data:`UNKNOWN`'s conservative limits (never an
    H100's). The twin reports an unknown model once (a ``gpu_model_unknown`` event)."""
    return PROFILES.get(canonical_model(name), UNKNOWN)
