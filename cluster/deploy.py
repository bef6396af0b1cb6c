"""The composition root: builds every component from settings and applies Ray's decorators.

Nothing else calls ``ray.remote`` or ``serve.deployment``: the classes stay plain and testable.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.agent.service import AgentService
from actors.gateway.service import GatewayService
from actors.remote import RemotePort
from cluster.actuators import build_actuator
from cluster.actuators.feedback import FeedbackSource, MergedSource
from cluster.actuators.node import start_node_actuators
from cluster.agent_llm import completer_from_spec
from cluster.gateway_deploy import start_gateway
from cluster.keeper import LoopKeeper
from cluster.lifetime import keep_sigterm_handler
from cluster.masking import redact_url
from cluster.redis_server import EmbeddedRedis
from cluster.settings import Settings
from cluster.sources import start_fleet
from cluster.tracing import HOOK, ray_env
from cluster.twin_deploy import SHARD_CPUS, on_head, start_twin
from policies.policy import load_policy

log = logging.getLogger("opsloop")

START_TIMEOUT_S = 120.0
#: Bound on the loop actors' ``stop`` calls together, when stopping.
STOP_TIMEOUT_S = 5.0
LOOP_ACTORS = ("twin", "agent", "gateway")
LLM_PREFIX = "llm:"
#: The vLLM deployment is its own Serve app (deployed from a task; see ``deploy_llm_app``).
LLM_APP = "opsloop-llm"
LLM_START_TIMEOUT_S = 900.0
INGRESS_MAX_ONGOING = 100
#: Task events the GCS of a local Ray keeps (Ray's default is 100k, ~0.2 GiB; see ``_start_ray``).
GCS_TASK_EVENTS = 10_000
#: glibc malloc arenas per process of a local Ray (see ``_start_ray``).
MALLOC_ARENAS = 2
APP_NAME = "opsloop"


def build_knowledge(settings: Settings) -> Any:
    """A factory, not the index: the agent and the chat each open it in their own process, on one store under the
    data directory. The agent records experience there; the chat reloads it when it changed (``refresh``), and a
    restart finds it again."""
    from knowledge.retrieval import KnowledgeBase

    return functools.partial(KnowledgeBase.bundled, extra_dirs=tuple(settings.knowledge_dirs),
                             store=settings.knowledge_dir, dense=False)


@dataclass
class Runtime:
    """Everything ``start`` brought up, so ``stop`` can take exactly that down again."""

    settings: Settings
    redis_url: str
    url: str
    redis: EmbeddedRedis | None = None
    started_ray: bool = False
    handles: dict[str, Any] = field(default_factory=dict)
    ray_tmp: str | None = None
    keeper: LoopKeeper | None = None


def start(settings: Settings, progress: Any = print, started: Callable[[Runtime], None] | None = None) -> Runtime:
    """Start Redis (unless given), Ray (unless joining), the simulator, twin, gateway, agent and Serve; tell
    ``progress`` each piece as a line of text, and call ``started(rt)`` after each (``opsloop up`` records them)."""
    import ray
    from ray import serve

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    rt = Runtime(settings=settings, redis_url=settings.redis_url or "", url=f"http://{settings.host}:{settings.port}")

    def step(line: str) -> None:
        progress(line)
        if started is not None:
            started(rt)

    try:
        if settings.redis_url:
            step(f"redis      {redact_url(settings.redis_url)} (external)")
        else:
            rt.redis = EmbeddedRedis(settings.redis_dir, settings.redis_appendfsync)
            rt.redis_url = rt.redis.url
            step(f"redis      embedded, pid {rt.redis.pid}, appendfsync {settings.redis_appendfsync}, "
                 f"data in {settings.redis_dir}")
        with keep_sigterm_handler():  # ray.init replaces it with sys.exit; up's own must stay
            _start_ray(rt, ray)
        if started is not None:
            started(rt)  # Ray's processes and temp dir
        rt.handles = start_loop(settings, rt.redis_url, step)
        rt.keeper = LoopKeeper({name: rt.handles[name] for name in LOOP_ACTORS})
        rt.keeper.start()
        step(f"actors     twin, agent, gateway (Ray namespace {settings.namespace})")
        _start_serve(rt, serve, step)
        step(f"http       {rt.url}  (GET /healthz, /api/status, /api/approvals; OpenAI chat at {rt.url}/v1)")
        return rt
    except BaseException:
        stop(rt)
        raise


def start_loop(settings: Settings, redis_url: str, progress: Any = print, detached: bool = False) -> dict[str, Any]:
    """Create the simulator, the sharded twin, the gateway and the agent actors (``run`` not yet called).

    Args:
        settings: Fleet, namespace and policy come from here.
        redis_url: opsloop's Redis (event log, approvals, state the actors resume from).
        progress: Told what started.
        detached: Detached actors outlive the process that created them (a Serve app builder).

    Returns:
        Name → actor handle for ``simulator``, ``twin``, ``gateway`` and ``agent``.
    """
    import ray

    ns = settings.namespace
    # The loop's single actors stay on the head node (soft: elsewhere if it has no room), so losing a worker node
    # costs only its twin shard, which the coordinator spawns again; left to Ray they landed on any node.
    opts: dict[str, Any] = {"namespace": ns, "num_cpus": SHARD_CPUS, "max_restarts": -1 if detached else 3,
                            "scheduling_strategy": on_head()}  # not 0 CPUs: Ray ignores affinity for those
    if detached:
        opts["lifetime"] = "detached"
    fleet, sim = start_fleet(settings, redis_url, opts, progress)  # the simulator, or the real fleet's sources
    # The twin: one shard actor per node, a coordinator that runs the barrier and writes the event log.
    # vLLM's engine metrics are telemetry too (llm=vllm|external): the twin is the only writer of what they mean.
    from cluster.telemetry.alerts import AlertSource  # Alertmanager's alerts (POST /api/alerts/alertmanager)

    twin = start_twin(settings, MergedSource(*fleet.sources, FeedbackSource(redis_url, ns), *llm_sources(settings, sim),
                                             AlertSource(redis_url, ns)), redis_url, detached=detached,
                      nodes=fleet.nodes or None)
    # actuator=nvml: one actuator per GPU node, where that node's power limits and resets run.
    nodes = start_node_actuators(ns) if settings.actuator == "nvml" else None
    if nodes is not None:
        progress(f"actuator   nvml: an actuator on each of {len(nodes.ports)} GPU node(s): {', '.join(nodes.ports)}")
    actuator = build_actuator(settings, RemotePort(sim) if sim is not None else None, nodes)
    gateway = ray.remote(GatewayService).options(name="gateway", **opts).remote(
        redis_url, ns, load_policy(settings.policy_file), actuator, fleet=RemotePort(twin)
    )
    agent = ray.remote(AgentService).options(name="agent", **opts).remote(
        redis_url, ns, build_knowledge(settings), RemotePort(gateway), RemotePort(twin), batch=settings.agent_batch,
        model_pending=settings.llm != "none",  # incidents wait for the model `_start_serve` hands the agent
    )
    handles = {"twin": twin, "gateway": gateway, "agent": agent, **({"simulator": sim} if sim is not None else {})}
    ray.get([twin.status.remote(), gateway.counts.remote(), agent.status.remote()], timeout=START_TIMEOUT_S)
    start_gateway(settings, gateway, progress)
    return handles


@contextlib.contextmanager
def _without_monitors() -> Iterator[None]:
    """Start a local Ray head without its autoscaler monitor and its log monitor (two Python processes, ~0.16 GiB
    of the main job's memory; docs/benchmarks.md "Main job"): a local cluster never scales, and with
    ``log_to_driver=False`` nobody reads the lines the log monitor forwards (the logs stay in Ray's session
    directory). ``ray.init`` has no flag for either (``ray start`` has ``--no-monitor`` and
    ``--include-log-monitor``), so the two start methods of Ray's ``Node`` do nothing while it starts; a joined
    cluster is left as its owner started it."""
    from ray._private.node import Node

    saved = Node.start_monitor, Node.start_log_monitor
    Node.start_monitor = Node.start_log_monitor = lambda self: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        Node.start_monitor, Node.start_log_monitor = saved  # type: ignore[method-assign]


def _start_ray(rt: Runtime, ray: Any) -> None:
    s = rt.settings
    if s.ray_address:
        # The tracing hook only works if the cluster itself was started with it (see docs/deploy.md).
        ray.init(address=s.ray_address, namespace=s.namespace, log_to_driver=False,
                 runtime_env={"env_vars": ray_env(s)} if s.tracing else None)
    else:
        # A short private temp dir: Ray's Unix socket paths must stay under ~107 bytes.
        rt.ray_tmp = tempfile.mkdtemp(prefix="opsloop-ray-", dir="/tmp")
        # glibc's malloc gives threads arenas of their own, up to 8 per core; every Ray process runs a dozen threads,
        # and each arena keeps what it once held. Two per process: -0.3 GiB over the main job's tree (measured with
        # eight chats; docs/benchmarks.md "Main job"). Read by glibc when each process Ray starts from here begins.
        os.environ.setdefault("MALLOC_ARENA_MAX", str(MALLOC_ARENAS))
        with _without_monitors():
            ray.init(
                address="local", num_cpus=s.ray_num_cpus, include_dashboard=False, namespace=s.namespace,
                _temp_dir=rt.ray_tmp, log_to_driver=False,
                # Kill idle task workers at once: one that ran ray.serve.llm's node set-up keeps vLLM (~0.7 GiB).
                # The GCS keeps ~2 KiB of events per task for Ray's state API (`ray list tasks`, unused by opsloop)
                # up to 100k tasks by default (measured: +90 MiB after 40k actor calls). The twin's steps and every
                # chat are tasks, so a long run crept towards +0.2 GiB; the newest 10k are plenty to debug with.
                _system_config={"num_workers_soft_limit": 0, "task_events_max_num_task_in_gcs": GCS_TASK_EVENTS},
                runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                                          **(ray_env(s) if s.tracing else {})}},
                **({"_tracing_startup_hook": HOOK} if s.tracing else {}),
            )
        rt.started_ray = True


def _chat_spec(rt: Runtime, progress: Any) -> tuple[Any, str | None]:
    """The chat model the ingress builds, and the model folder vLLM serves (``llm=vllm`` only)."""
    from serving.llm import ChatSpec

    s = rt.settings
    if s.llm == "none":
        progress("llm        none: chat answers are composed from the runbooks and the live twin (no model)")
        return ChatSpec("none", None, s.max_model_len, max_tokens=s.llm_max_tokens), None
    if s.llm == "external":
        if not s.openai_base_url:
            raise ValueError("llm=external needs openai_base_url (--openai-base-url URL)")
        progress(f"llm        external OpenAI-compatible server at {redact_url(s.openai_base_url)}")
        return ChatSpec("external", s.openai_model, s.max_model_len, s.openai_base_url, s.openai_api_key,
                        s.llm_max_tokens), None
    from cluster.model_files import convert_in_subprocess

    source, model_id = convert_in_subprocess(s, progress)
    return ChatSpec("vllm", model_id, s.max_model_len, max_tokens=s.llm_max_tokens,
                    deployment=LLM_PREFIX + _deployment_suffix(model_id), app=LLM_APP), source


def build_llm_app(settings: Settings, source: str, model_id: str) -> Any:
    """The vLLM deployment (``ray.serve.llm``) for the settings, not yet bound into an application."""
    from ray.serve.llm import build_llm_deployment

    from cluster.llm_spec import llm_spec
    from serving.llm_config import build_llm_config, llm_config_dict, supported_engine_args
    from serving.llm_server import OpsloopLLMServer

    cfg = build_llm_config(llm_config_dict(llm_spec(settings), source, model_id, supported_engine_args()))
    return build_llm_deployment(cfg, name_prefix=LLM_PREFIX, deployment_cls=OpsloopLLMServer)


def deploy_llm_app(settings: Settings, source: str, model_id: str) -> str:
    """Deploy the LLM app and wait until it is healthy; runs as a one-shot Ray task.

    Importing ``ray.serve.llm`` imports vLLM and torch (~0.7 GiB); doing it in a task whose worker exits
    afterwards (``max_calls=1``) keeps that out of the long-lived ``opsloop up`` process.
    """
    from ray import serve

    # Not waiting: this worker (vLLM imported, ~0.7 GiB) exits before the engine loads; the driver waits.
    # serve.run always waits for the app to be healthy; _run(_blocking=False) is its documented-internal form.
    serve._run(build_llm_app(settings, source, model_id), name=LLM_APP, route_prefix=None, _blocking=False)
    return LLM_PREFIX + _deployment_suffix(model_id)


def _wait_llm_app(serve: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        app = serve.status().applications.get(LLM_APP)
        state = str(getattr(app, "status", ""))
        if state.endswith("RUNNING"):
            return
        if state.endswith("DEPLOY_FAILED") or state.endswith("UNHEALTHY"):
            raise RuntimeError(f"the LLM deployment failed: {getattr(app, 'message', '')[-2000:]}")
        time.sleep(1.0)
    raise TimeoutError(f"the LLM deployment did not become ready in {timeout_s:.0f} s")


def llm_sources(settings: Settings, sim: Any = None) -> list[Any]:
    """The LLM engine's metrics as a telemetry source for the twin: every replica of the vLLM app (``llm=vllm``) or
    the external server's ``/metrics`` (``llm=external``), stamped with the simulator's clock (else Unix time)."""
    from cluster.telemetry.vllm import HttpMetricsReader, PortClock, ServeReplicasReader, VllmSource

    s = settings
    if s.llm == "vllm":
        reader: Any = ServeReplicasReader(LLM_APP)
    elif s.llm == "external" and s.openai_base_url:
        url = s.openai_base_url.rstrip("/").removesuffix("/v1") + "/metrics"
        reader = HttpMetricsReader([url], s.openai_model or "external")
    else:
        return []
    clock = PortClock(RemotePort(sim)) if sim is not None else time.time
    return [VllmSource(reader, clock, every_s=s.llm_metrics_every_s)]


def _deployment_suffix(model_id: str | None) -> str:
    return (model_id or "model").replace("/", "--").replace(".", "_")


def _start_serve(rt: Runtime, serve: Any, progress: Any = print) -> None:
    import ray

    from serving.ingress import Ingress

    s = rt.settings
    serve.start(http_options={"host": s.host, "port": s.port}, detached=False)
    spec, source = _chat_spec(rt, progress)
    if spec.backend == "vllm":
        assert source is not None
        progress(f"llm        vLLM on Ray Serve (ray.serve.llm): {spec.model_id} from {source}, {s.accelerator}, "
                 f"tp={s.tensor_parallel_size} pp={s.pipeline_parallel_size}, {s.llm_replicas} replica(s) …")
        task = ray.remote(num_cpus=0, max_calls=1, max_retries=0)(deploy_llm_app)
        ray.get(task.remote(s, source, spec.model_id), timeout=LLM_START_TIMEOUT_S)
        _wait_llm_app(serve, LLM_START_TIMEOUT_S)
    # The agent asks the same model (verified, with the runbook mapping as fallback); it builds the client itself.
    ray.get(rt.handles["agent"].set_llm.remote(functools.partial(completer_from_spec, spec)), timeout=60)
    # Chat streams stay open for seconds: Serve's default of 5 ongoing requests per replica would queue the 6th.
    deployment = serve.deployment(serve.ingress()(Ingress), name="ingress", ray_actor_options={"num_cpus": 0},
                                  max_ongoing_requests=INGRESS_MAX_ONGOING)
    h = rt.handles
    serve.run(
        deployment.bind(h["gateway"], h["twin"], h["agent"], chat=spec,
                        knowledge=build_knowledge(s), **ingress_options(s, rt.redis_url)),
        name=APP_NAME, route_prefix="/",
    )


def ingress_options(s: Settings, redis_url: str) -> dict[str, Any]:
    """What the ingress needs besides the actors and the chat: Slack and the Alertmanager receiver (when
    configured), limits, traces."""
    slack = None
    if s.slack_bot_token and s.slack_signing_secret and s.slack_channel:
        from serving.slack import SlackConfig

        slack = SlackConfig(bot_token=s.slack_bot_token, signing_secret=s.slack_signing_secret,
                            channel=s.slack_channel, api_url=s.slack_api_url, users=s.slack_users)
    http = {"traces_dir": str(s.data_dir / "traces") if s.tracing else None,
            "max_body_bytes": s.http_max_body_bytes, "rate_per_s": s.http_rate_per_s, "burst": s.http_burst}
    if s.alertmanager_token:  # the Alertmanager receiver; unset, its route answers 404
        from serving.alerts import AlertReceiver

        http["alerts"] = AlertReceiver(redis_url, s.namespace, s.alertmanager_token)
    return {"slack": slack, "redis_url": redis_url, "namespace": s.namespace, "http": http}


def stop(rt: Runtime) -> None:
    """Stop what ``start`` started, in reverse order; safe to call twice or after a partial start."""
    import ray

    if rt.keeper is not None:
        rt.keeper.stop()
    if ray.is_initialized():
        # All at once, one bound for all: a hung actor must not hold the stop for 5 s each.
        refs = []
        for name in LOOP_ACTORS:
            handle = rt.handles.get(name)
            if handle is not None:
                with contextlib.suppress(Exception):
                    refs.append(handle.stop.remote())
        if refs:
            with contextlib.suppress(Exception):  # it is going down anyway
                done, _ = ray.wait(refs, num_returns=len(refs), timeout=STOP_TIMEOUT_S)
                for ref in done:  # fetched, so that Ray does not print an error nobody looked at
                    with contextlib.suppress(Exception):
                        ray.get(ref, timeout=0)
        if rt.started_ray:
            ray.shutdown()  # our own local cluster: every process of it goes, Serve included
        else:
            # A shared cluster: remove only what we added.
            from ray import serve

            for app in (APP_NAME, LLM_APP):
                try:
                    serve.delete(app)
                except Exception:  # noqa: BLE001
                    log.warning("could not delete the Serve app %s", app)
            for handle in rt.handles.values():
                ray.kill(handle, no_restart=True)
            ray.shutdown()
    if rt.redis is not None:
        rt.redis.stop()
        rt.redis = None
    if rt.ray_tmp:
        _rmtree_quiet(Path(rt.ray_tmp))


def _rmtree_quiet(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def wait_healthy(url: str, timeout_s: float = 60.0) -> bool:
    """Poll ``/healthz`` until it answers 200."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False

