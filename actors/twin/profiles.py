"""GPU model profiles: data, not code, so a new model is one more entry."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class GpuProfile(BaseModel):
    """Thermal and electrical limits of one GPU model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    slowdown_c: float
    shutdown_c: float
    max_operating_c: float
    hbm_max_c: float
    tdp_w: float
    idle_w: float
    clock_max_mhz: float
    clock_min_mhz: float


PROFILES: dict[str, GpuProfile] = {
    p.name: p
    for p in (
        GpuProfile(
            name="H100-SXM", slowdown_c=89, shutdown_c=92, max_operating_c=87, hbm_max_c=95,
            tdp_w=700, idle_w=80, clock_max_mhz=1980, clock_min_mhz=345,
        ),
        GpuProfile(
            name="A100-SXM", slowdown_c=89, shutdown_c=92, max_operating_c=85, hbm_max_c=95,
            tdp_w=400, idle_w=55, clock_max_mhz=1410, clock_min_mhz=210,
        ),
    )
}


def profile(name: str) -> GpuProfile:
    """The profile of a GPU model; unknown models fall back to H100-SXM limits (the conservative default)."""
    return PROFILES.get(name, PROFILES["H100-SXM"])
