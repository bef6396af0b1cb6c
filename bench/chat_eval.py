"""Held-out chat evaluation (issue #19 item 2): questions over a running loop with a known state, scored on the
facts each answer must contain, per model and per ``--llm`` mode.

Usage::

    .venv/bin/python bench/chat_eval.py --states 3 --llm none [--json OUT]
    .venv/bin/python bench/chat_eval.py --states 3 --llm vllm [--model default|PATH ...] [--data-dir DIR]
        [--answers F] [--json OUT]
    .venv/bin/python bench/chat_eval.py --tables-from OUT1 OUT2 ...   # the tables of earlier runs, together

The state: the real twin, agent and gateway services in one process on a private Redis server (started here, as
``opsloop up`` starts its own), without Ray; the simulator carries one cooling fault (cooling degradation, fan
failure, supply drift in turn; fleet, target, severity and onset drawn from the seed by ``bench/agent_eval.py``'s
generator) and is stepped a fixed number of ticks per turn, so a seed always gives the same state. The loop runs
until an approval is pending and a GPU is in alarm (at most ``TURNS`` turns), then stops: nothing moves while the
questions are asked. Held-out seeds: ``--seed-base`` on (default 30000); a seed or fault spec that tests/ uses is
refused (``bench.agent_eval.used_by_tests``), and so is a question whose wording a test contains. Seeds 31000-31009
are this bench's own test's (``tests/serving/test_chat_eval.py``).

The questions (several phrasings each; one of each kind per state, the phrasing turning with the state): the
hottest node, the hottest GPU, two named GPUs' temperatures (one in alarm, one not), the pending approval's id and
action kind, the open incident's root cause, what the runbook says to do, and what became of a decided approval.
Each is asked as an operator would, ``model: opsloop``, through ``serving.chat.ChatService.answer`` (grounding, the
facts block, the model's words checked by ``serving.fact_check``), the same object the endpoint serves; only the
HTTP wire format is left out.

The truth comes from the services' own state read at question time (the twin's snapshot, the gateway's approvals,
the agent's open incidents), never from the chat's grounding text. Facts, each found verbatim in the answer: the
node or GPU name; a temperature said of the named GPU (the first number after its name in the same sentence)
within 2 °C of the snapshot's sensed value; every pending approval's id and action kind; the open incident's cause
kind and subject; the id of a runbook document a pending approval cites; a decided approval's status and action
kind (a kind or status may also be written with spaces for underscores). Scored twice: the whole answer as the
operator reads it (facts block included), and the model's own words when the fact check kept them; a model text
that repeats the chat's system prompt (a base model continuing its input) counts as kept, but the facts block
inside it is not the model's words and is not counted.

Modes: ``--llm none``: no model, the template answer. ``--llm vllm``: each ``--model`` (``default``: the bundled
SmolLM2-135M-Instruct, converted once into ``<data-dir>/models``; or a Hugging Face folder) runs on vLLM in a child
process (``bench/agent_eval_vllm.py``, opsloop's engine arguments), behind a chat model of the ``ChatModel`` port
that streams one request at a time from the engine; greedy (the request says ``temperature: 0``), the endpoint's
256-token answer length. TTFT is the time from the request to the answer's first piece (the facts block, sent before
the model has read its prompt, as the endpoint does), total the time to its last (the checked model words).
``--answers F`` keeps each model answer by model and prompt with the timings it was measured with; a rerun replays
those (marked cached).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from actors.agent.service import AgentService  # noqa: E402
from actors.gateway.service import GatewayService  # noqa: E402
from actors.twin.physics import FleetPhysics  # noqa: E402
from actors.twin.service import TwinService  # noqa: E402
from bench.agent_eval import KINDS as FAULT_KINDS  # noqa: E402
from bench.agent_eval import Variant, generate, prompt_key, resolve_model  # noqa: E402
from bench.agent_eval import assert_held_out as assert_seeds_held_out  # noqa: E402
from cluster.actuators import SimActuator  # noqa: E402
from cluster.actuators.feedback import FeedbackSource, MergedSource  # noqa: E402
from cluster.sources import SimSource  # noqa: E402
from cluster.telemetry.sim import Fault, Simulator, SimulatorService  # noqa: E402
from policies.policy import load_policy  # noqa: E402
from serving.chat import OPSLOOP_MODEL, ChatRequest, ChatService, Message  # noqa: E402
from serving.chat_model import ChatError, Delta, GenParams  # noqa: E402
from serving.fact_check import LABEL, WITHHELD  # noqa: E402
from serving.grounding import SYSTEM_PROMPT  # noqa: E402

SEED_BASE = 30_000
#: Seeds 31000-31009 belong to tests/serving/test_chat_eval.py (its ``seed_base=`` marks them used).
TEST_SEED_BASE = 31_000
#: Faults that heat GPUs and make the agent propose a cooling action an approver must decide.
STATE_KINDS = ("cooling_degradation", "fan_failure", "supply_drift")
TICKS_PER_TURN = 2  # simulated seconds per turn of the loop
TURNS = 400
TOLERANCE_C = 2.0
OK = {True: "✓", False: "✗"}

#: Phrasings per question kind; state i asks phrasing (i + j) % 3 for the j-th question of a kind.
QUESTIONS: dict[str, tuple[str, ...]] = {
    "hottest_node": ("Which of our nodes is running the hottest at the moment?",
                     "Where in the fleet is it warmest right now? Which node?",
                     "Name the node with the highest GPU temperatures."),
    "hottest_gpu": ("Which single GPU is the hottest one right now?",
                    "What's the warmest GPU in the data center?",
                    "Tell me which GPU has the highest temperature reading."),
    "gpu_temp": ("How hot is {gpu} right now?",
                 "What temperature is {gpu} reading?",
                 "Give me the current temp of {gpu}."),
    "pending": ("Is anything waiting for my sign-off? Give me the approval id and what it would do.",
                "Which approval is pending right now, and what action does it propose?",
                "Do I need to decide on something? List the open approval requests with their actions."),
    "root_cause": ("What is the root cause of the current incident?",
                   "Why are the GPUs overheating, what caused it?",
                   "Which component is behind the open incident, and what kind of failure is it?"),
    "runbook": ("What does the runbook tell us to do about this?",
                "Which procedure should we follow for the current problem, step by step?",
                "How should we handle this according to our runbooks?"),
    "past_decision": ("What became of {approval}?",
                      "Was {approval} carried out, and what did it do?",
                      "Tell me the outcome of {approval}."),
}
KIND_ORDER = ("hottest_node", "hottest_gpu", "gpu_temp", "gpu_temp", "pending", "root_cause", "runbook",
              "past_decision")


# --- held-out states -------------------------------------------------------------------------------------------------
def state_variants(n: int, seed_base: int = SEED_BASE) -> list[Variant]:
    """``n`` faults, seeds ``seed_base`` … ``seed_base + n - 1``, the kinds of :data:`STATE_KINDS` in turn, each drawn
    by ``bench.agent_eval.generate`` (whose i-th variant has seed ``seed_base + i`` and kind ``KINDS[i % 8]``)."""
    out = []
    for i in range(n):
        k = FAULT_KINDS.index(STATE_KINDS[i % len(STATE_KINDS)])
        out.append(generate(k + 1, seed_base + i - k)[-1])
    return out


def questions_in_tests(root: Path = ROOT) -> list[str]:
    """The phrasings whose fixed text (each part of 12 characters or more around a placeholder) a test file holds."""
    texts = [" ".join(py.read_text(errors="replace").lower().split()) for py in (root / "tests").rglob("*.py")]
    out = []
    for phrasings in QUESTIONS.values():
        for p in phrasings:
            parts = [s.strip().lower() for s in re.split(r"\{\w+\}", p) if len(s.strip()) >= 12]
            if any(part in t for part in parts for t in texts):
                out.append(p)
    return out


def assert_held_out(variants: list[Variant], root: Path = ROOT) -> None:
    """Raise ``ValueError`` when a seed, fault spec or question wording is one a test uses."""
    assert_seeds_held_out(variants, root)
    asked = questions_in_tests(root)
    if asked:
        raise ValueError(f"not held out, the tests ask: {'; '.join(asked)}")


class SteppedSim(SimulatorService):
    """The simulator service stepped a fixed number of ticks per read, not by the wall clock: same seed, same state."""

    def __init__(self, sim: Simulator, ticks: int = TICKS_PER_TURN) -> None:
        super().__init__(sim, speed=1.0)
        self.ticks = ticks

    async def read(self, max_steps: int = 600) -> list:
        return [s for _ in range(min(self.ticks, max_steps)) for s in self.sim.step()]


@dataclass
class State:
    """A loop stopped in a known state: its services answer the chat and give the truth."""

    variant: Variant
    sim: SteppedSim
    twin: TwinService
    gateway: GatewayService
    agent: AgentService
    kb: Any
    turns: int
    reached: bool

    async def close(self) -> None:
        for svc in (self.twin, self.gateway, self.agent):
            await svc.redis.aclose()


async def build_state(v: Variant, redis_url: str, turns: int = TURNS) -> State:
    """Simulator → twin → agent → gateway (real services, one namespace per seed) until an approval is pending and a
    GPU is in alarm, or ``turns`` turns. The knowledge base is the loop's own: the agent's and the chat's."""
    from knowledge.retrieval import KnowledgeBase

    topo = v.topology()
    sim = Simulator(topo, faults=[Fault.parse(v.fault)], seed=v.seed, noise_c=v.noise_c)
    sim.physics = FleetPhysics(topo, supply_c=v.setpoint_c)  # the same fleet at another setpoint
    stepped = SteppedSim(sim)
    ns = f"chat-eval-{v.seed}"
    kb = KnowledgeBase.bundled(dense=False)
    # the twin reads the gateway's feedback stream beside the fleet, as deployed
    twin = TwinService(MergedSource(SimSource(stepped), FeedbackSource(redis_url, ns)), redis_url, ns)
    gateway = GatewayService(redis_url, ns, load_policy(), SimActuator(stepped), fleet=twin)
    agent = AgentService(redis_url, ns, kb, gateway, twin)
    state = State(v, stepped, twin, gateway, agent, kb, 0, False)
    for turn in range(1, turns + 1):
        await twin.step()
        await agent.step(block_ms=1)
        if (await twin.snapshot())["hot_gpus"] and await gateway.list(status="pending"):
            state.turns, state.reached = turn, True
            break
    else:
        state.turns = turns
    return state


# --- the truth, the questions and the scoring ------------------------------------------------------------------------
@dataclass(frozen=True)
class Truth:
    """The services' own state: the twin's snapshot, the gateway's approvals (newest first), the agent's status."""

    snapshot: dict[str, Any]
    approvals: list[dict[str, Any]]
    status: dict[str, Any]

    def hottest(self) -> dict[str, Any]:
        return max(self.snapshot["gpus"], key=lambda g: g["sensed_c"])

    def gpu(self, name: str) -> dict[str, Any] | None:
        return next((g for g in self.snapshot["gpus"] if g["gpu"] == name), None)

    def pending(self) -> list[dict[str, Any]]:
        return [a for a in self.approvals if a["status"] == "pending"]

    def decided(self) -> list[dict[str, Any]]:
        return [a for a in self.approvals if a["status"] != "pending"]

    def approval(self, approval_id: str) -> dict[str, Any] | None:
        return next((a for a in self.approvals if a["approval_id"] == approval_id), None)


async def truth_of(state: State) -> Truth:
    """Read the truth from the services now."""
    snap, approvals, status = await asyncio.gather(state.twin.snapshot(), state.gateway.list(), state.agent.status())
    return Truth(snap, approvals, status)


@dataclass(frozen=True)
class Question:
    kind: str
    text: str
    subject: str | None = None  # the GPU or approval it names


def questions_for(index: int, seed: int, truth: Truth) -> list[Question]:
    """The state's questions: one per entry of :data:`KIND_ORDER` that the state can answer (no decided approval: no
    past-decision question); the GPUs named are drawn from the seed, one in alarm and one not when there are both."""
    rng = np.random.default_rng(seed)
    gpus = sorted(truth.snapshot["gpus"], key=lambda g: g["gpu"])
    hot, cool = [g["gpu"] for g in gpus if g["alarm"]], [g["gpu"] for g in gpus if not g["alarm"]]
    named = [str(rng.choice(group)) for group in (hot, cool) if group]
    if len(named) < 2:
        named = [str(g) for g in rng.choice([g["gpu"] for g in gpus], size=min(2, len(gpus)), replace=False)]
    decided = truth.decided()
    out: list[Question] = []
    seen: dict[str, int] = {}
    for kind in KIND_ORDER:
        j = seen.get(kind, 0)
        seen[kind] = j + 1
        phrasing = QUESTIONS[kind][(index + j) % len(QUESTIONS[kind])]
        if kind == "gpu_temp":
            if j < len(named):
                out.append(Question(kind, phrasing.format(gpu=named[j]), named[j]))
        elif kind == "past_decision":
            if decided:
                out.append(Question(kind, phrasing.format(approval=decided[0]["approval_id"]),
                                    decided[0]["approval_id"]))
        else:
            out.append(Question(kind, phrasing))
    return out


@dataclass(frozen=True)
class Expect:
    """One fact an answer must contain: ``how`` it is matched (``name``, ``words``, ``temperature``), any of
    ``wants``; for a temperature, the GPU it is said of and the value."""

    what: str
    how: str
    wants: tuple[str, ...]
    value: float | None = None


def expected(q: Question, truth: Truth) -> list[Expect]:
    """The facts ``q`` must be answered with, from the services' state (empty: the state has no such fact)."""
    if q.kind == "hottest_node":
        return [Expect("hottest node", "name", (truth.hottest()["node"],))]
    if q.kind == "hottest_gpu":
        return [Expect("hottest GPU", "name", (truth.hottest()["gpu"],))]
    if q.kind == "gpu_temp":
        g = truth.gpu(q.subject or "")
        return [] if g is None else [Expect(f"{g['gpu']} temperature", "temperature", (g["gpu"],), g["sensed_c"])]
    if q.kind == "pending":
        return [e for a in truth.pending() for e in (Expect("pending approval id", "name", (a["approval_id"],)),
                                                     Expect("its action kind", "words", (a["action"]["kind"],)))]
    if q.kind == "root_cause":
        return [e for i in truth.status.get("open_incidents") or [] for e in (
            Expect("root cause kind", "words", (i["root_cause"]["kind"],)),
            Expect("root cause subject", "name", (i["root_cause"]["subject"],)))]
    if q.kind == "runbook":
        docs = tuple(dict.fromkeys(c["doc_id"] for a in truth.pending() for c in a.get("citations") or []))
        return [Expect("cited runbook", "name", docs)] if docs else []
    if q.kind == "past_decision":
        a = truth.approval(q.subject or "")
        return [] if a is None else [Expect("its status", "words", (a["status"],)),
                                     Expect("its action kind", "words", (a["action"]["kind"],))]
    raise ValueError(f"unknown question kind {q.kind!r}")


_GPU = re.compile(r"[\w.-]+/gpu\d{1,3}\b", re.I)
#: A temperature-like number: 2-3 digits, not part of a name, not a share, power, time or size.
_NUM = re.compile(r"(?<![\w.])(\d{2,3}(?:\.\d+)?)(?![\d.]*\d)(?!\s*(?:%|W\b|s\b|ms\b|[KMG]i?B\b))")
_SENTENCE_END = re.compile(r"\n|(?<=[.!?;])\s")


def said_temperatures(text: str, gpu: str) -> list[float]:
    """The temperature said of ``gpu`` at each mention: the first number after its name, before the sentence ends
    or another GPU is named."""
    out = []
    for m in re.finditer(rf"(?<![\w/.-]){re.escape(gpu)}(?!\d)", text, re.I):
        window = _SENTENCE_END.split(text[m.end():m.end() + 160], maxsplit=1)[0]
        other = _GPU.search(window)
        n = _NUM.search(window[:other.start()] if other else window)
        if n:
            out.append(float(n.group(1)))
    return out


def found(e: Expect, text: str) -> bool:
    """Whether ``text`` contains the fact."""
    if e.how == "temperature":
        return any(abs(t - (e.value or 0.0)) <= TOLERANCE_C for t in said_temperatures(text, e.wants[0]))
    for w in e.wants:
        forms = {w, w.replace("_", " ")} if e.how == "words" else {w}
        for f in forms:
            tail = r"(?![\w-]|/gpu)" if e.how == "name" else r"(?!\w)"
            if re.search(rf"(?<![\w/.-]){re.escape(f)}{tail}", text, re.I):
                return True
    return False


def score(q: Question, truth: Truth, text: str) -> list[dict[str, Any]]:
    """Each expected fact and whether ``text`` contains it."""
    return [{"fact": e.what, "want": " | ".join(e.wants) + (f" ≈ {e.value} °C" if e.value is not None else ""),
             "ok": found(e, text)} for e in expected(q, truth)]


_KEPT = f"\n\n{LABEL}\n"
_WITHHELD_HEAD, _WITHHELD_TAIL = WITHHELD.split("{why}")


def split_answer(text: str) -> dict[str, Any]:
    """The model's part of an ``opsloop`` answer: ``kept`` (its words, shown under the label), ``withheld`` (the
    fact check's reasons) or neither (no model words: ``--llm none``, or a model that said nothing)."""
    if _KEPT in text:
        return {"model": "kept", "words": text.split(_KEPT, 1)[1].rsplit("\n\nSources:", 1)[0], "why": None}
    if _WITHHELD_HEAD in text:
        return {"model": "withheld", "words": None,
                "why": text.split(_WITHHELD_HEAD, 1)[1].split(_WITHHELD_TAIL, 1)[0]}
    return {"model": "none", "words": None, "why": None}


_PROMPT_HEAD = SYSTEM_PROMPT.split(".")[0].lower()  # "you are opsloop, the operations assistant of …"


def echoes_prompt(raw: str | None) -> bool:
    """Whether the model's text repeats the chat's own system prompt (a base model continuing its input)."""
    return bool(raw) and _PROMPT_HEAD in str(raw).lower()


# --- the model behind the chat ---------------------------------------------------------------------------------------
class EngineModel:
    """The chat model port (``serving.chat_model.ChatModel``) over a model on vLLM in a child process
    (``bench.agent_eval_vllm.VllmWorker.stream``): one request at a time, streamed as the engine makes it.

    ``answers`` (prompt key → the answer and its timings) is read first and filled on a miss; ``calls`` keeps each
    request's key, whether it was cached, the text and the engine's token counts. ``loading_s`` is the time spent
    starting the engine (inside the first request that needed it; :func:`ask` takes it out of that answer's times).
    """

    def __init__(self, worker: Any, name: str, context_length: int,
                 answers: dict[str, dict[str, Any]] | None = None) -> None:
        self.worker, self._name, self.context_length = worker, name, context_length
        self.answers = {} if answers is None else answers
        self.calls: list[dict[str, Any]] = []
        self.loading_s = 0.0

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        """Nothing to resolve; the engine starts on the first prompt no stored answer covers."""

    async def stream(self, messages: list[dict[str, str]], params: GenParams) -> AsyncIterator[Delta]:
        request = {"messages": messages, "max_tokens": params.max_tokens or 256, "temperature": params.temperature,
                   "top_p": params.top_p, "stop": params.stop, "seed": params.seed}
        key = prompt_key(messages, {k: v for k, v in request.items() if k != "messages"})
        call: dict[str, Any] = {"key": key, "cached": key in self.answers}
        self.calls.append(call)
        if call["cached"]:
            hit = self.answers[key]
            call.update(hit)
            yield Delta(hit["text"], finish_reason=hit.get("finish") or "stop", usage=_usage(hit))
            return
        if getattr(self.worker, "proc", True) is None:
            t0 = time.perf_counter()
            await asyncio.to_thread(self.worker.start)
            self.loading_s += time.perf_counter() - t0
        pieces = self.worker.stream(request)
        words: list[str] = []
        while (msg := await asyncio.to_thread(next, pieces, None)) is not None:
            if "stream_error" in msg:
                from serving.llm import error_from

                call.update(text="", error=msg["stream_error"])
                raise error_from({"message": msg["stream_error"], "code": 400})
            if "delta" in msg:
                words.append(msg["delta"])
                yield Delta(msg["delta"])
            elif msg.get("done"):
                entry = {"text": "".join(words), "finish": msg.get("finish"),
                         **{k: msg.get(k) for k in ("prompt_tokens", "gen_tokens", "first_token_s", "seconds")}}
                self.answers[key] = entry
                call.update(entry)
                yield Delta("", finish_reason=entry["finish"] or "stop", usage=_usage(entry))


def _usage(a: dict[str, Any]) -> dict[str, int]:
    p, c = int(a.get("prompt_tokens") or 0), int(a.get("gen_tokens") or 0)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


async def ask(service: ChatService, question: str) -> dict[str, Any]:
    """One ``opsloop`` question through the chat service: the answer's text, TTFT (its first piece) and total time,
    or the error the endpoint would send."""
    req = ChatRequest(model=OPSLOOP_MODEL, messages=[Message(role="user", content=question)], temperature=0.0)
    loading = getattr(service.model, "loading_s", 0.0)
    t0 = time.perf_counter()
    parts, first, error = [], None, None
    spent_first = 0.0  # an engine start is not the answer's time: what of it came before the first piece
    try:
        deltas, _ = await service.answer(req)
        async for d in deltas:
            if d.text and first is None:
                first = time.perf_counter() - t0
                spent_first = getattr(service.model, "loading_s", 0.0) - loading
            parts.append(d.text)
    except ChatError as exc:
        error = f"{exc.status} {exc.code}: {exc.message}"
    spent = getattr(service.model, "loading_s", 0.0) - loading
    total = time.perf_counter() - t0 - spent
    return {"text": "".join(parts), "error": error, "total_s": round(total, 3),
            "ttft_s": round(first - spent_first, 3) if first is not None else None}


# --- one mode over the states ----------------------------------------------------------------------------------------
async def evaluate(states: list[State], llm: str, chat_model: Any, label: str,
                   save: Callable[[], None] | None = None) -> dict[str, Any]:
    """Every state's questions through a :class:`ChatService` over ``chat_model``; the rows and their summary."""
    from cluster.settings import Settings

    max_tokens = Settings().llm_max_tokens  # the endpoint's default answer length
    t0, rows = time.perf_counter(), []
    for i, st in enumerate(states):
        service = ChatService(chat_model, st.twin, st.agent, st.kb, default_max_tokens=max_tokens,
                              gateway=st.gateway)
        for q in questions_for(i, st.variant.seed, await truth_of(st)):
            truth = await truth_of(st)  # at question time
            got = await ask(service, q.text)
            call = chat_model.calls[-1] if isinstance(chat_model, EngineModel) and chat_model.calls else None
            cached = bool(call and call["cached"] and "ttft_s" in call)
            if call is not None and cached:
                got.update(ttft_s=call["ttft_s"], total_s=call["total_s"])
            elif call and call["key"] in chat_model.answers:  # a fresh answer: keep its timings with it
                chat_model.answers[call["key"]].update(ttft_s=got["ttft_s"], total_s=got["total_s"])
            part = split_answer(got["text"])
            facts = score(q, truth, got["text"])
            model_facts = score(q, truth, part["words"]) if part["words"] is not None else []
            raw = call.get("text") if call else None
            rows.append({
                "seed": st.variant.seed, "kind": q.kind, "question": q.text, "facts": facts,
                "right": sum(f["ok"] for f in facts), "model": part["model"], "withheld_why": part["why"],
                "model_right": sum(f["ok"] for f in model_facts),
                "raw_right": sum(f["ok"] for f in score(q, truth, raw)) if raw else 0,
                "ttft_s": got["ttft_s"], "total_s": got["total_s"], "cached": cached, "error": got["error"],
                "tokens": {k: call.get(k) for k in ("prompt_tokens", "gen_tokens")} if call else None,
                "answer": got["text"], "raw_model": raw,
            })
            r = rows[-1]
            print(f"[{len(rows)}] {label} seed {r['seed']} {r['kind']}: {r['right']}/{len(facts)} facts, model "
                  f"{r['model']} ({r['model_right']} in its words), {r['total_s']} s{' cached' if cached else ''}",
                  file=sys.stderr)
            if save is not None and call is not None:
                save()
    return {"llm": llm, "model": label, "summary": summary(rows), "rows": rows,
            "wall_s": round(time.perf_counter() - t0, 1)}


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts over the rows, overall and by question kind."""
    def counts(rs: list[dict[str, Any]]) -> dict[str, Any]:
        return {"questions": len(rs), "facts": sum(len(r["facts"]) for r in rs), "right": sum(r["right"] for r in rs),
                "complete": sum(r["right"] == len(r["facts"]) for r in rs),
                "kept": sum(r["model"] == "kept" for r in rs), "withheld": sum(r["model"] == "withheld" for r in rs),
                "kept_echo": sum(r["model"] == "kept" and echoes_prompt(r.get("raw_model")) for r in rs),
                "no_text": sum(r["model"] == "none" for r in rs), "errors": sum(bool(r["error"]) for r in rs),
                # facts in the model's own words: a repeated system prompt holds the facts block, not an answer
                "model_right": sum(r["model_right"] for r in rs if not echoes_prompt(r.get("raw_model"))),
                "raw_right": sum(r["raw_right"] for r in rs if not echoes_prompt(r.get("raw_model")))}

    ttft = [r["ttft_s"] for r in rows if r["ttft_s"] is not None]
    total = [r["total_s"] for r in rows if r["total_s"] is not None]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_kind.setdefault(r["kind"], []).append(r)
    return {**counts(rows), "ttft_median_s": round(statistics.median(ttft), 3) if ttft else None,
            "total_median_s": round(statistics.median(total), 3) if total else None,
            "cached": sum(r["cached"] for r in rows), "by_kind": {k: counts(v) for k, v in by_kind.items()}}


def _pct(a: int, b: int) -> str:
    return f"{a}/{b} ({100 * a / b:.0f} %)" if b else "-"


def headline_table(runs: list[dict[str, Any]]) -> str:
    out = ("| --llm | model | questions | facts right in the answer | answers with every fact | model text kept / "
           "withheld / none | facts in the model's own words, kept | … before the check | median TTFT s | "
           "median total s |\n" + "|---" * 10 + "|\n")
    for run in runs:
        s = run["summary"]
        echo = f" ({s['kept_echo']} of them echo the system prompt)" if s.get("kept_echo") else ""
        model = "-" if run["llm"] == "none" else f"{s['kept']}{echo} / {s['withheld']} / {s['no_text']}"
        words = "-" if run["llm"] == "none" else _pct(s["model_right"], s["facts"])
        raw = "-" if run["llm"] == "none" else _pct(s["raw_right"], s["facts"])
        out += (f"| {run['llm']} | {run['model']} | {s['questions']} | {_pct(s['right'], s['facts'])} | "
                f"{s['complete']}/{s['questions']} | {model} | {words} | {raw} | {s['ttft_median_s']} | "
                f"{s['total_median_s']} |\n")
    return out


def kind_table(runs: list[dict[str, Any]]) -> str:
    """Facts right by question kind: in the answer, and (models) in the kept model text."""
    head = "| question | " + " | ".join(f"{r['llm']} {r['model']}" for r in runs) + " |\n"
    out = head + "|---" * (len(runs) + 1) + "|\n"
    kinds = list(dict.fromkeys(k for k in KIND_ORDER for r in runs if k in r["summary"]["by_kind"]))
    for k in kinds:
        cells = []
        for r in runs:
            c = r["summary"]["by_kind"].get(k)
            if c is None:
                cells.append("-")
            elif r["llm"] == "none":
                cells.append(f"{c['right']}/{c['facts']}")
            else:
                echo = f" ({c['kept_echo']} echoes)" if c.get("kept_echo") else ""
                cells.append(f"{c['right']}/{c['facts']} · words {c['model_right']}/{c['facts']} · kept {c['kept']}"
                             f"{echo}, withheld {c['withheld']} of {c['questions']}")
        out += f"| {k} | " + " | ".join(cells) + " |\n"
    return out


def row_table(run: dict[str, Any]) -> str:
    out = ("| seed | question | facts | model | in its words | TTFT s | total s | withheld because |\n"
           + "|---" * 8 + "|\n")
    for r in run["rows"]:
        why = (r["withheld_why"] or "").replace("|", "/")
        out += (f"| {r['seed']} | {r['question']} | {r['right']}/{len(r['facts'])} | {r['model']} | "
                f"{r['model_right'] if r['model'] == 'kept' else '-'} | {r['ttft_s']} | {r['total_s']} | "
                f"{why[:160] or '-'} |\n")
    return out


# --- the command -----------------------------------------------------------------------------------------------------
async def build_states(variants: list[Variant], redis_url: str) -> list[State]:
    states = []
    for i, v in enumerate(variants):
        t0 = time.perf_counter()
        st = await build_state(v, redis_url)
        states.append(st)
        truth = await truth_of(st)
        pending = ", ".join(f"{a['approval_id']} {a['action']['kind']}" for a in truth.pending()) or "none"
        print(f"[{i + 1}/{len(variants)}] seed {v.seed} {v.fault} on {v.nodes}x{v.gpus_per_node}, {v.units} CDU: "
              f"{'reached' if st.reached else 'NOT reached'} after {st.turns} turns (t={truth.snapshot['ts']} s, "
              f"{time.perf_counter() - t0:.1f} s): hottest {truth.hottest()['gpu']} {truth.hottest()['sensed_c']} °C, "
              f"{len(truth.snapshot['hot_gpus'])} in alarm, pending {pending}", file=sys.stderr)
    return states


def describe_state(st: State, truth: Truth) -> dict[str, Any]:
    v = st.variant
    return {"seed": v.seed, "fault": v.fault, "fleet": f"{v.nodes}x{v.gpus_per_node} GPUs, {v.units} CDU, "
            f"{v.setpoint_c:g} °C", "turns": st.turns, "reached": st.reached, "twin_ts": truth.snapshot["ts"],
            "hottest": f"{truth.hottest()['gpu']} {truth.hottest()['sensed_c']} °C",
            "in_alarm": truth.snapshot["hot_gpus"],
            "approvals": [f"{a['approval_id']} {a['status']} {a['action']['kind']}" for a in truth.approvals],
            "incidents": [f"{i['incident_id']} {i['root_cause']['kind']} {i['root_cause']['subject']}"
                          for i in truth.status.get("open_incidents") or []]}


async def run_all(args: argparse.Namespace, variants: list[Variant], redis_url: str) -> dict[str, Any]:
    from cluster.settings import Settings
    from serving.llm import NoModel

    states = await build_states(variants, redis_url)
    store = json.loads(args.answers.read_text()) if args.answers and args.answers.exists() else {}
    save = (lambda: args.answers.write_text(json.dumps(store))) if args.answers else None  # noqa: E731
    runs = []
    try:
        for llm in args.llm or ["none"]:
            if llm == "none":
                runs.append(await evaluate(states, "none", NoModel(Settings().max_model_len), "-"))
                continue
            for model in args.model or ["default"]:
                from bench.agent_eval_vllm import VllmWorker

                path, name = resolve_model(model, args.data_dir)
                label = name if model == "default" else model
                worker = VllmWorker(path, Path(tempfile.gettempdir()) / "chat_eval_vllm.log")
                chat_model = EngineModel(worker, name, Settings().max_model_len,
                                         store.setdefault(f"{llm} {label}", {}))
                try:
                    run = await evaluate(states, llm, chat_model, label, save)
                finally:
                    worker.close()
                runs.append(run | {"model_run": worker.report()})
        described = [describe_state(st, await truth_of(st)) for st in states]
    finally:
        for st in states:
            await st.close()
    return {"states": described, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--states", type=int, default=3, help="how many held-out loop states (default 3)")
    ap.add_argument("--seed-base", type=int, default=SEED_BASE, help=f"first held-out seed (default {SEED_BASE})")
    ap.add_argument("--llm", action="append", choices=("none", "vllm"), help="none (the template answer) or vllm (a "
                    "model on vLLM in a child process); repeatable, one table row each (default none)")
    ap.add_argument("--model", action="append", help="with vllm: default (the bundled SmolLM2-135M-Instruct, "
                    "converted once into <data-dir>/models) or a Hugging Face model folder; repeatable, one row each")
    ap.add_argument("--data-dir", type=Path, help="opsloop's data directory, where the default model is kept "
                    "(default: the settings' data_dir, .opsloop)")
    ap.add_argument("--json", type=Path, help="write the states and every row, answers and raw model text included")
    ap.add_argument("--answers", type=Path, help="model answers by model and prompt, with their timings: read when "
                    "it exists, written after each answer; a rerun asks the model only what is not in it")
    ap.add_argument("--tables-from", type=Path, nargs="+", metavar="JSON", help="print the tables of the runs in "
                    "these --json files together, and do nothing else")
    args = ap.parse_args(argv)
    if args.tables_from:
        runs = [run | {"summary": summary(run["rows"])}  # counted afresh from the rows
                for f in args.tables_from for run in json.loads(f.read_text())["runs"]]
        print(headline_table(runs) + "\n" + kind_table(runs))
        return 0
    if args.states < 1:
        ap.error("--states must be at least 1")
    if args.model and "vllm" not in (args.llm or []):
        ap.error("--model needs --llm vllm")
    variants = state_variants(args.states, args.seed_base)
    assert_held_out(variants)
    from cluster.redis_server import EmbeddedRedis

    data = Path(tempfile.mkdtemp(prefix="chat-eval-redis-"))
    redis = EmbeddedRedis(data, appendfsync="no")
    try:
        result = asyncio.run(run_all(args, variants, redis.url))
    finally:
        redis.stop()
        shutil.rmtree(data, ignore_errors=True)
    for run in result["runs"]:
        print(f"\n--llm {run['llm']} ({run['model']}), {run['wall_s']} s\n\n{row_table(run)}")
    print(headline_table(result["runs"]) + "\n" + kind_table(result["runs"]))
    if args.json:
        machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
        args.json.write_text(json.dumps({"command": sys.argv, "machine": machine, **result,
                                         "variants": [asdict(v) for v in variants]}, indent=1, default=sorted))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
