"""Settings of the fleet `opsloop up` watches: where its telemetry comes from, and the built-in simulator.

Part of the one settings model (:class:`cluster.settings.Settings` inherits these fields; env ``OPSLOOP_*``, the
YAML file and ``opsloop up`` flags set them the same way). ``cluster/sources.py`` builds the source they name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from cluster.modbus_map import PlantMap, load_map, parse_endpoint

#: Sources that read a real fleet (their samples carry wall-clock Unix time); ``sim`` and ``replay`` do not.
LIVE_SOURCES = ("dcgm", "prometheus", "nvml")


def _http_urls(urls: list[str]) -> list[str]:
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) URL: {url!r}")
    return urls


class FleetSettings(BaseModel):
    """Telemetry source, scrape timing and the simulated fleet."""

    # --- where the fleet's telemetry comes from ----------------------------------------------------------
    telemetry: Literal["sim", "dcgm", "prometheus", "nvml", "replay"] = Field(
        "sim",
        description="Telemetry source of `opsloop up`: sim (the built-in simulator), dcgm (scrape dcgm-exporter "
        "pages, dcgm_urls), prometheus (the dcgm-exporter series in a Prometheus server, prometheus_url), nvml "
        "(a reader on every GPU node of the Ray cluster) or replay (a recorded JSON Lines trace, replay_file).",
    )
    dcgm_urls: list[str] = Field(
        default_factory=list,
        description="dcgm-exporter /metrics URLs, one per host (telemetry=dcgm), e.g. http://dgx-01:9400/metrics.",
    )
    prometheus_url: str | None = Field(
        None, description="Base URL of the Prometheus server that scrapes the dcgm-exporters (telemetry=prometheus)."
    )
    replay_file: Path | None = Field(
        None, description="JSON Lines trace to replay (telemetry=replay), paced by sim_speed (--speed)."
    )
    redfish_urls: list[str] = Field(
        default_factory=list,
        description="Redfish services of BMCs and CDUs, each URL or NAME=URL (beside any telemetry source): chassis "
        "temperatures, fans, power, leak detectors and cooling units, polled every scrape_interval_s. Name a BMC "
        "as the GPU telemetry names its host (a leak there is on that node); a CDU's NAME is its cooling unit.",
    )
    redfish_username: str | None = Field(None, description="Account on the Redfish services (with redfish_password).")
    redfish_password: SecretStr | None = Field(
        None, description="Password of redfish_username (login needs HTTPS). Shown masked; never logged."
    )
    redfish_verify_tls: bool = Field(
        True, description="Check the Redfish services' TLS certificates (off: accept any, e.g. a BMC's self-signed)."
    )
    facility: Literal["none", "modbus", "redfish"] = Field(
        "none",
        description="The cooling plant opsloop acts on and reads beside the GPU telemetry: none, modbus (CDUs or "
        "CRAHs over Modbus TCP: set_cooling_setpoint and set_fan_speed write the holding registers modbus_map names, "
        "every other action still goes to the actuator, and the same registers are read as cooling-unit telemetry "
        "every scrape_interval_s) or redfish (CDUs' Redfish services, redfish_urls: set_cooling_setpoint PATCHes "
        "the CoolingUnit's SupplyTemperatureControlCelsius.SetPoint and set_fan_speed its pumps' "
        "SpeedControlPercent.SetPoint; the Redfish source reads them back).",
    )
    modbus_endpoint: str | None = Field(
        None, description="HOST[:PORT] (port 502 by default) of the Modbus TCP server of every unit in modbus_map "
        "that names no endpoint of its own (facility=modbus).",
    )
    modbus_map: Annotated[PlantMap, NoDecode] = Field(
        default_factory=dict,
        description="The Modbus register map (facility=modbus): unit name -> its registers, as a YAML mapping in the "
        "settings file, or YAML/JSON text or a file name in OPSLOOP_MODBUS_MAP / --modbus-map. Per unit: supply_c, "
        "return_c, setpoint_c, fan_pct, flow_lpm, each a Modicon reference (40001 = holding register 0, 30001 = "
        "input register 0) or {register: 40001, scale: 0.1, signed: true} (value = register x scale); setpoint_c "
        "and fan_pct must be holding registers. Optional: endpoint HOST[:PORT], device_id (default 1), serves "
        "[nodes], rated_flow_lpm. E.g. {cu01: {supply_c: {register: 30001, scale: 0.1}, setpoint_c: {register: "
        "40001, scale: 0.1}, fan_pct: 40002}}.",
    )
    modbus_timeout_s: float = Field(
        3.0, gt=0, le=10, description="Timeout of one Modbus connect or request, in seconds."
    )
    scrape_interval_s: float = Field(
        5.0, gt=0, le=600, description="Seconds between two scrapes of a live source (dcgm, prometheus, nvml, redfish, "
        "modbus)."
    )
    scrape_timeout_s: float = Field(
        4.0, gt=0, le=120, description="Timeout of one request to one exporter, Prometheus or BMC, in seconds."
    )
    telemetry_lost_after: int = Field(
        3, ge=1, le=1000,
        description="Missed scrapes in a row after which an exporter, a BMC or a GPU missing from its host's page "
        "is reported as telemetry_lost (telemetry_restored when it answers again).",
    )

    # --- the simulated fleet -----------------------------------------------------------------------------
    sim_nodes: int = Field(2, ge=1, le=4096, description="Simulated nodes.")
    sim_gpus_per_node: int = Field(8, ge=1, le=16, description="Simulated GPUs per node.")
    sim_units: int = Field(1, ge=1, le=1024, description="Simulated cooling units; nodes are served round-robin.")
    sim_faults: list[str] = Field(
        default_factory=list,
        description="Extra scheduled faults, each KIND@SECONDS:TARGET[=VALUE] (e.g. fan_failure@60:cu01=25).",
    )
    sim_speed: float = Field(
        2.0, gt=0, le=1000,
        description="Simulated (or replayed: telemetry=replay) seconds per wall-clock second (1 = real time).",
    )
    sim_seed: int = Field(7, description="Seed of the simulator's random numbers (sensor noise).")
    demo_fault: bool = Field(
        True,
        description="Inject the demo fault: the coolant flow to the first node degrades shortly after start.",
    )
    demo_fault_at_s: float = Field(20.0, ge=0, description="Simulated second at which the demo fault starts.")
    sensor_tau_s: float = Field(
        15.0, gt=0, le=120, description="Time constant of the GPU temperature sensors (63 % of a step at tau)."
    )
    tick_s: float = Field(1.0, gt=0, le=60, description="Simulated seconds per twin tick.")

    @field_validator("dcgm_urls", mode="after")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        return _http_urls(v)

    @field_validator("redfish_urls", mode="after")
    @classmethod
    def _named_urls(cls, v: list[str]) -> list[str]:
        _http_urls([entry.split("=", 1)[1] if "=" in entry.split("://", 1)[0] else entry for entry in v])
        return v

    @field_validator("modbus_map", mode="before")
    @classmethod
    def _plant_map(cls, v: object) -> object:
        return load_map(v)

    @field_validator("modbus_endpoint", mode="after")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        return None if v is None else str(parse_endpoint(v))

    @field_validator("prometheus_url", mode="after")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else _http_urls([v])[0]

    @model_validator(mode="after")
    def _source_complete(self) -> FleetSettings:
        """Each source names what it reads; the simulator's actuator acts on nothing when it does not run."""
        needs = {"dcgm": ("dcgm_urls", "--dcgm-url URL"), "prometheus": ("prometheus_url", "--prometheus-url URL"),
                 "replay": ("replay_file", "--replay FILE")}
        if self.telemetry in needs:
            name, flag = needs[self.telemetry]
            if not getattr(self, name):
                raise ValueError(f"telemetry={self.telemetry} needs {name} ({flag})")
        if self.facility == "modbus":
            if not self.modbus_map:
                raise ValueError("facility=modbus needs modbus_map (--modbus-map FILE): the units' registers")
            for name, unit in self.modbus_map.items():
                if not (unit.endpoint or self.modbus_endpoint):
                    raise ValueError(f"facility=modbus: unit {name} has no endpoint and modbus_endpoint "
                                     "(--modbus-endpoint HOST:PORT) is unset")
        if self.facility == "redfish" and not self.redfish_urls:
            raise ValueError("facility=redfish needs redfish_urls (--redfish-url NAME=URL): the CDUs' Redfish "
                             "services, each NAME the cooling unit it is")
        if self.telemetry == "replay" and self.replay_file is not None and not self.replay_file.is_file():
            raise ValueError(f"replay_file: no such file: {self.replay_file}")
        actuator = getattr(self, "actuator", None)
        if self.telemetry != "sim" and actuator == "sim":
            if "actuator" in self.model_fields_set:
                raise ValueError(f"actuator=sim acts on the simulator, which does not run with telemetry="
                                 f"{self.telemetry}: use dry-run, nvml or webhook")
            object.__setattr__(self, "actuator", "dry-run")  # the default follows the source
        return self
