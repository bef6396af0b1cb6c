"""Telemetry: the sample types every source emits and the ``TelemetrySource`` protocol."""

from cluster.telemetry.samples import (
    ActionResult,
    CoolingSample,
    GpuSample,
    JobSample,
    LinkSample,
    Sample,
    TelemetrySource,
    parse_sample,
)

__all__ = [
    "ActionResult",
    "CoolingSample",
    "GpuSample",
    "JobSample",
    "LinkSample",
    "Sample",
    "TelemetrySource",
    "parse_sample",
]
