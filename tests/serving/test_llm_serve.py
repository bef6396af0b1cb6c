"""The default model end to end: SmolLM2 converted from the bundled GGUF, served by vLLM through ray.serve.llm
on a real local Ray, asked through the ingress with the official ``openai`` client (streaming included).

SmolLM2-135M is a demonstration model: its words are not checked, only the structure, the citations opsloop
adds, the errors, and that the endpoint keeps serving.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from cluster import deploy
from cluster.settings import Settings
from tests.helpers import free_port
from tests.requirements_check import require

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]
QUESTION = "The coolant flow to n01 dropped and its GPUs are heating up. What should I do?"



@pytest.fixture(scope="module")
def runtime(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[deploy.Runtime]:
    require("vllm")
    require("smollm2")
    import redis

    redis.Redis.from_url(redis_server).flushall()
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("data"), redis_url=redis_server, port=free_port(), namespace="llmtest",
        sim_nodes=2, sim_gpus_per_node=4, sim_speed=8.0, demo_fault_at_s=5.0, llm="vllm", llm_metrics_every_s=1.0,
        max_model_len=2048,
    )
    rt = deploy.start(settings, progress=lambda _line: None)
    assert deploy.wait_healthy(rt.url, 120)
    yield rt
    deploy.stop(rt)


def token(rt: deploy.Runtime) -> str:
    """The admin token `deploy.start` keeps in the data directory."""
    return rt.settings.token_file.read_text().strip()


def test_openai_client_streams_a_cited_answer_from_smollm2(runtime: deploy.Runtime) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{runtime.url}/v1", api_key=token(runtime), timeout=300)
    ids = [m.id for m in client.models.list()]
    assert ids == ["opsloop", "smollm2-135m-instruct"]
    chunks = list(client.chat.completions.create(
        model="opsloop", messages=[{"role": "user", "content": QUESTION}], stream=True, max_tokens=48,
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "[eop-cooling-degradation" in text
    # the runbook is cited; so may be an experience document the running loop has written by now (the agent and
    # the chat share one knowledge base), ranked before it or not
    cited = [c["doc_id"] for c in chunks[0].model_extra["citations"]]
    assert "eop-cooling-degradation" in cited, cited
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)
    raw = client.chat.completions.create(model="smollm2-135m-instruct", max_tokens=8,
                                         messages=[{"role": "user", "content": "Say hello."}])
    assert raw.choices[0].message.content and raw.usage.completion_tokens <= 8
    assert "citations" not in (raw.model_extra or {})


def test_errors_are_4xx_in_openai_shape_and_serving_goes_on(runtime: deploy.Runtime) -> None:
    url = f"{runtime.url}/v1/chat/completions"
    auth = {"Authorization": f"Bearer {token(runtime)}"}
    anonymous = httpx.post(url, json={"model": "opsloop", "messages": [{"role": "user", "content": "hi"}]}, timeout=60)
    assert anonymous.status_code == 401, "chat answers from fleet data: it needs a token like the API"
    bad = httpx.post(url, content=b"{not json", headers={"content-type": "application/json", **auth}, timeout=60)
    unknown = httpx.post(url, json={"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}, timeout=60,
                         headers=auth)
    long = httpx.post(url, json={"model": "smollm2-135m-instruct", "max_tokens": 8,
                                 "messages": [{"role": "user", "content": "cooling " * 5000}]}, timeout=120,
                      headers=auth)
    for resp, status, code in ((bad, 400, "invalid_json"), (unknown, 404, "model_not_found"),
                               (long, 400, "context_length_exceeded")):
        assert resp.status_code == status, resp.text
        assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
        assert resp.json()["error"]["code"] == code
    ok = httpx.post(url, json={"model": "opsloop", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
                    timeout=120, headers=auth)
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"]


def test_the_twin_reads_every_replicas_engine_metrics(runtime: deploy.Runtime) -> None:
    """vLLM's metrics reach the twin as telemetry (cluster/telemetry/vllm.py): its snapshot shows the replica."""
    import ray

    twin = runtime.handles["twin"]
    deadline = time.monotonic() + 60
    llm = None
    while time.monotonic() < deadline and not llm:
        llm = ray.get(twin.snapshot.remote(), timeout=30).get("llm")
        time.sleep(1)
    assert llm is not None and 0.0 <= llm["kv_cache_usage"] <= 1.0 and llm["waiting"] >= 0
    assert len(llm["replicas"]) == runtime.settings.llm_replicas
    assert all(r["deployment"].startswith(deploy.LLM_PREFIX) and r["replica"] for r in llm["replicas"])


def _answer_in_the_cluster(spec: object, messages: list[dict[str, str]], max_tokens: int, schema: dict) -> str:
    """The agent's model port (``ChatCompleter`` over ``ServeLLMModel``) asked from a Ray task, as the agent actor
    asks it: the Serve handle lives in a worker of the cluster, never in this test process (a handle left here
    keeps a long-poll thread that outlives ``ray.shutdown``)."""
    import asyncio

    from cluster.agent_llm import ChatCompleter
    from serving.llm import make_chat_model

    return asyncio.run(ChatCompleter(make_chat_model(spec)).complete(messages, max_tokens, schema))


def test_the_agents_answer_from_smollm2_parses_under_its_schema(runtime: deploy.Runtime) -> None:
    """The agent's prompt for the demo incident, decoded by SmolLM2 on the LLM deployment under the answer schema
    (vLLM structured outputs, sent by our ServeLLMModel): the answer parses and obeys the steps it cites."""
    import ray

    from actors.agent.incidents import IncidentBook
    from actors.agent.planner import incident_facts, plan, retrieve
    from actors.agent.propose import MAX_TOKENS, _obeying_steps, answer_schema, build_messages, check_answer
    from cluster.model_files import DEFAULT_MODEL_ID
    from knowledge.retrieval import KnowledgeBase
    from serving.llm import ChatSpec
    from tests.agent.test_incidents_and_planner import TOPOLOGY, fault_events

    kb = KnowledgeBase.bundled(dense=False)
    book = IncidentBook()
    inc = next(i for i, needs in (book.observe(e) for e in fault_events()) if needs)
    found = retrieve(inc, kb)
    allowed = [a for a in plan(inc, kb, TOPOLOGY, found).actions if a.citations]
    passages = [(p.citation.doc_id, p.citation.step_id, p.text) for p in found]
    facts = incident_facts(inc)
    model = DEFAULT_MODEL_ID  # the fixture serves the bundled default
    spec = ChatSpec("vllm", model, runtime.settings.max_model_len, deployment=deploy.LLM_PREFIX
                    + deploy._deployment_suffix(model), app=deploy.LLM_APP)
    task = ray.remote(num_cpus=0, max_retries=0)(_answer_in_the_cluster)
    raw = ray.get(task.remote(spec, build_messages(inc, facts, passages, allowed), MAX_TOKENS,
                              answer_schema(allowed)), timeout=600)
    retrieved = {(d, s) for d, s, _ in passages} | {(c.doc_id, c.step_id) for a in allowed for c in a.citations}
    answer, actions, errs = check_answer(raw, allowed, retrieved, {})
    actions, errs = _obeying_steps(actions, kb, facts, errs)
    assert answer is not None and actions and errs == [], raw
