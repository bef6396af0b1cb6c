"""bench/chat_eval.py without a model: held-out states and questions, the scoring read from the services' own state
(a hand-made wrong answer scores 0, and a change in the gateway changes the score), the template answer scored in
full, and the model path with a scripted worker standing in for vLLM (kept and withheld words, the answers cache).

The state is the bench's own, on this test's seeds (31000 on, which the bench refuses), on the tests' private Redis.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bench import chat_eval
from bench.chat_eval import (
    QUESTIONS,
    SEED_BASE,
    TEST_SEED_BASE,
    EngineModel,
    Question,
    State,
    Truth,
    assert_held_out,
    build_state,
    evaluate,
    expected,
    found,
    main,
    questions_for,
    questions_in_tests,
    said_temperatures,
    score,
    split_answer,
    state_variants,
    truth_of,
)
from serving.fact_check import model_part
from serving.facts import FleetFacts
from serving.llm import NoModel

pytestmark = pytest.mark.anyio

#: This test's own state: a cooling degradation. ``used_by_tests`` finds this ``seed_base=`` (31000-31009), so the
#: bench refuses these seeds.
MINE = state_variants(1, seed_base=31_000)


@pytest.fixture
async def state(redis_url: str) -> AsyncIterator[State]:
    st = await build_state(MINE[0], redis_url)
    yield st
    await st.close()


def by_kind(truth: Truth) -> dict[str, list[Question]]:
    out: dict[str, list[Question]] = {}
    for q in questions_for(0, MINE[0].seed, truth):
        out.setdefault(q.kind, []).append(q)
    return out


def test_the_states_and_questions_are_held_out_from_the_tests(tmp_path: Path) -> None:
    assert TEST_SEED_BASE == MINE[0].seed and MINE[0].fault.startswith("cooling_degradation@")
    variants = state_variants(3)
    assert [v.seed for v in variants] == [SEED_BASE, SEED_BASE + 1, SEED_BASE + 2]
    assert [v.fault.split("@")[0] for v in variants] == ["cooling_degradation", "fan_failure", "supply_drift"]
    assert_held_out(variants)
    with pytest.raises(ValueError, match=f"seed {MINE[0].seed}"):
        assert_held_out(MINE)
    assert questions_in_tests() == [], "no test asks the bench's questions"
    (tmp_path / "tests").mkdir()
    asked = QUESTIONS["gpu_temp"][1].format(gpu="n09/gpu7")
    (tmp_path / "tests" / "test_x.py").write_text(f"ASKED = {asked!r}\n")
    assert questions_in_tests(tmp_path) == [QUESTIONS["gpu_temp"][1]], "a phrasing is found around its placeholder"


def test_a_temperature_counts_only_when_said_of_the_gpu() -> None:
    assert said_temperatures("- n01/gpu0 (node n01): 80.54 °C sensed, estimated 82 °C", "n01/gpu0") == [80.54]
    assert said_temperatures("n01/gpu0 and n01/gpu1 are both at 80 °C.", "n01/gpu0") == []
    assert said_temperatures("n01/gpu0 runs at 50 % power, 400 W. It is at 81 °C.", "n01/gpu0") == []
    assert said_temperatures("n01/gpu10 is at 90 °C", "n01/gpu1") == []
    node = chat_eval.Expect("hottest node", "name", ("n01",))
    assert not found(node, "n01/gpu0 is the hottest") and found(node, "the hottest node is n01.")
    kind = chat_eval.Expect("kind", "words", ("set_cooling_setpoint",))
    assert found(kind, "it would set cooling setpoint on cu01") and not found(kind, "set_cooling_setpoints")


def test_the_model_part_is_told_apart_kept_withheld_or_none() -> None:
    snap = {"ts": 1.0, "gpus": [{"gpu": "n01/gpu0", "node": "n01", "sensed_c": 80.0, "alarm": False}]}
    fleet = FleetFacts.build(snap, [], {"open_incidents": []})
    facts = "Facts (verbatim …):\n- n01/gpu0 …"
    kept, _ = model_part("n01/gpu0 is at 80 °C.", fleet)
    withheld, why = model_part("n01/gpu0 is at 40 °C.", fleet)
    sources = "\n\nSources: [eop-cooling-degradation#s3] EOP"
    assert split_answer(facts + kept + sources) == {"model": "kept", "words": "n01/gpu0 is at 80 °C.", "why": None}
    part = split_answer(facts + withheld + sources)
    assert part["model"] == "withheld" and part["why"] == "; ".join(why) and "the twin says 80" in part["why"]
    assert split_answer(facts + sources)["model"] == "none"


async def test_scores_come_from_the_services_state_not_from_the_answer(state: State) -> None:
    assert state.reached, "the loop reached a pending approval and a GPU in alarm"
    truth = await truth_of(state)
    qs = by_kind(truth)
    assert set(qs) == {"hottest_node", "hottest_gpu", "gpu_temp", "pending", "root_cause", "runbook", "past_decision"}
    hot, [pending], [incident] = truth.hottest(), truth.pending(), truth.status["open_incidents"]
    decided = truth.approval(qs["past_decision"][0].subject or "")
    doc = pending["citations"][0]["doc_id"]
    right = {"hottest_node": f"The hottest node is {hot['node']}.", "hottest_gpu": f"{hot['gpu']} is the hottest.",
             "pending": f"Approval {pending['approval_id']} would run {pending['action']['kind']}.",
             "root_cause": f"{incident['root_cause']['kind']} on {incident['root_cause']['subject']}.",
             "runbook": f"Follow [{doc}#s3].",
             "past_decision": f"It was {decided['status']}: {decided['action']['kind']}."}
    other = next(n for n in truth.snapshot["nodes"] if n != hot["node"])
    wrong = {"hottest_node": f"The hottest node is {other}.", "hottest_gpu": f"{other}/gpu0 is the hottest.",
             "pending": "Approval ap-0000deadbeef would run drain_node.", "root_cause": "xid_error on n01/gpu0.",
             "runbook": "Follow [sop-gpu-xid#s1].", "past_decision": "It was rejected: reset_gpu."}
    for kind, [q] in ((k, v) for k, v in qs.items() if k != "gpu_temp"):
        facts = expected(q, truth)
        assert facts and all(f["ok"] for f in score(q, truth, right[kind])), kind
        assert not any(f["ok"] for f in score(q, truth, wrong[kind])), f"a wrong answer scores 0: {kind}"
    for q in qs["gpu_temp"]:
        sensed = truth.gpu(q.subject or "")["sensed_c"]
        assert score(q, truth, f"{q.subject} reads {sensed + 1.9:.2f} °C.")[0]["ok"]
        assert not score(q, truth, f"{q.subject} reads {sensed + 2.5:.2f} °C.")[0]["ok"]

    # The template answer (--llm none) holds every fact ...
    run = await evaluate([state], "none", NoModel(), "-")
    assert run["summary"]["right"] == run["summary"]["facts"] > 0 and run["summary"]["no_text"] == len(run["rows"])
    said = {r["question"]: r["answer"] for r in run["rows"]}
    # ... and once an operator rejects the pending approval, the same words no longer give its status: the truth is
    # the gateway's, read when scoring.
    ap = pending
    reply = await state.gateway.decide(ap["approval_id"], {
        "decision": "reject", "by": "alice", "role": "approver", "reason": "not now", "channel": "http",
        "action_hash": ap["action_hash"]})
    assert reply.approval is not None and reply.approval.status == "rejected"
    after = await truth_of(state)
    asked = Question("past_decision", "…", ap["approval_id"])
    old = said[qs["pending"][0].text]
    assert expected(qs["pending"][0], after) == [], "nothing is pending any more"
    assert [f["ok"] for f in score(asked, after, old)] == [False, True], "the status is now 'rejected'"


class ScriptedWorker:
    """Stands in for bench/agent_eval_vllm.VllmWorker: streams a set answer per question, word by word."""

    def __init__(self, says: dict[str, str]) -> None:
        self.says = says
        self.proc: Any = None
        self.requests: list[dict[str, Any]] = []

    def start(self) -> dict[str, Any]:
        self.proc = object()
        return {}

    def stream(self, request: dict[str, Any]):  # noqa: ANN201 - a generator of protocol messages
        self.requests.append(request)
        text = self.says.get(request["messages"][-1]["content"], "")
        for word in text.split(" ") if text else []:
            yield {"delta": word + " "}
        yield {"done": True, "finish": "stop", "prompt_tokens": 100, "gen_tokens": len(text.split()),
               "first_token_s": 0.01, "seconds": 0.02}


async def test_a_model_behind_the_chat_is_checked_and_its_own_words_scored(state: State) -> None:
    truth = await truth_of(state)
    qs = by_kind(truth)
    hot, [pending] = truth.hottest(), truth.pending()
    cold = qs["gpu_temp"][0]
    says = {qs["hottest_gpu"][0].text: f"{hot['gpu']} is the hottest GPU.",
            cold.text: f"{cold.subject} is at {truth.gpu(cold.subject)['sensed_c'] - 30:.1f} °C.",
            qs["pending"][0].text: f"Approval {pending['approval_id']} would run {pending['action']['kind']}."}
    worker, answers = ScriptedWorker(says), {}
    run = await evaluate([state], "vllm", EngineModel(worker, "scripted", 4096, answers), "scripted")
    rows = {r["question"]: r for r in run["rows"]}
    assert len(worker.requests) == len(rows) and all(r["temperature"] == 0.0 for r in worker.requests)
    assert all("DATA: FACTS for this question" in r["messages"][0]["content"] for r in worker.requests), \
        "the model gets the chat's own grounded prompt"
    top = rows[qs["hottest_gpu"][0].text]
    assert (top["model"], top["model_right"], top["right"]) == ("kept", 1, 1)
    assert top["answer"].index("Hottest GPUs:") < top["answer"].index(f"{hot['gpu']} is the hottest GPU."), \
        "the facts lead, the model's words follow"
    temp = rows[cold.text]
    assert temp["model"] == "withheld" and "the twin says" in temp["withheld_why"]
    assert (temp["right"], temp["model_right"], temp["raw_right"]) == (1, 0, 0), "the facts block still answers"
    assert says[cold.text] not in temp["answer"], "the refuted sentence is never shown"
    assert (rows[qs["pending"][0].text]["model"], rows[qs["pending"][0].text]["model_right"]) == ("kept", 2)
    assert rows[qs["root_cause"][0].text]["model"] == "none", "a model that says nothing adds nothing"
    s = run["summary"]
    assert (s["kept"], s["withheld"], s["no_text"]) == (2, 1, len(rows) - 3) and s["right"] == s["facts"]
    assert len(answers) == len(rows) and all("ttft_s" in a and "total_s" in a for a in answers.values())

    again = ScriptedWorker(says)
    rerun = await evaluate([state], "vllm", EngineModel(again, "scripted", 4096, answers), "scripted")
    assert again.requests == [] and again.proc is None, "a rerun on stored answers asks the model nothing"
    assert all(r["cached"] for r in rerun["rows"])
    assert [(r["model"], r["ttft_s"], r["total_s"]) for r in rerun["rows"]] == \
        [(r["model"], r["ttft_s"], r["total_s"]) for r in run["rows"]]


def test_the_command_refuses_seeds_a_test_uses_and_writes_its_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval.json"
    argv = ["--states", "1", "--seed-base", str(MINE[0].seed), "--llm", "none", "--json", str(out)]
    with pytest.raises(ValueError, match="not held out"):
        main(argv)
    monkeypatch.setattr(chat_eval, "assert_held_out", lambda variants: None)  # this test's seeds, on purpose
    assert main(argv) == 0
    data = json.loads(out.read_text())
    [run] = data["runs"]
    assert {r["seed"] for r in run["rows"]} == {MINE[0].seed} and run["summary"]["right"] == run["summary"]["facts"]
    assert data["states"][0]["reached"] and data["states"][0]["fault"] == MINE[0].fault
    assert f"| none | - | {len(run['rows'])} |" in capsys.readouterr().out
    assert main(["--tables-from", str(out)]) == 0
    assert "| hottest_node | 1/1 |" in capsys.readouterr().out
