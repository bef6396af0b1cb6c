"""bench/agent_eval.py without a model: held-out variants (no seed or fault spec a test uses), the runbook mapping
scored against the injected fault, a proposal that breaks its step scored as such, and the batched model path
(a scripted worker stands in for vLLM)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from pathlib import Path

import pytest

from bench import agent_eval
from bench.agent_eval import (
    SEED_BASE,
    Case,
    assert_held_out,
    generate,
    main,
    propose_all,
    run_to_incident,
    score,
    summary,
    used_by_tests,
)
from knowledge.retrieval import KnowledgeBase


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return KnowledgeBase.bundled(dense=False)


#: This test's own variants: a cooling fault and a power cap. Not the bench's seeds (SEED_BASE on), which no test
#: may use; ``used_by_tests`` finds this ``seed_base=`` and the bench refuses these seeds.
MINE = generate(2, seed_base=10_000)


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return [run_to_incident(v) for v in MINE]


def test_the_seeds_and_faults_the_tests_use_are_found(tmp_path: Path) -> None:
    scenario = tmp_path / "tests" / "scenarios" / "one" / "expected.yaml"
    scenario.parent.mkdir(parents=True)
    scenario.write_text("made_with: opsloop twin simulate --seed 123 --fault xid@5:n01/gpu0=79\n")
    (tmp_path / "tests" / "test_x.py").write_text(
        'sim = Simulator(topo, seed=456)\nVARIANTS = [("a", 2, "fan_failure@3:cu01=10", 789), ("b", 1000)]\n')
    assert used_by_tests(tmp_path) == ({7, 123, 456, 789}, {"xid@5:n01/gpu0=79", "fan_failure@3:cu01=10"})


def test_the_variants_are_held_out_from_the_tests() -> None:
    seeds, specs = used_by_tests()
    assert 11 in seeds, "the recorded scenarios' seed"
    assert {v.seed for v in MINE} <= seeds, "this test's seeds are known as used"
    variants = generate(20)
    assert [v.seed for v in variants[:2]] == [SEED_BASE, SEED_BASE + 1]
    assert not {v.seed for v in variants} & seeds and not {v.fault for v in variants} & specs
    assert_held_out(variants)
    with pytest.raises(ValueError, match="seed 11"):
        assert_held_out([dataclasses.replace(variants[0], seed=11)])
    with pytest.raises(ValueError, match=f"seed {MINE[0].seed}"):
        assert_held_out(MINE)
    taken = sorted(specs)[0]
    with pytest.raises(ValueError, match=re.escape(taken)):
        assert_held_out([dataclasses.replace(variants[0], fault=taken)])


def test_the_runbook_mapping_is_scored_against_the_injected_fault(cases: list[Case], kb: KnowledgeBase) -> None:
    assert [c.variant.fault.split("@")[0] for c in cases] == ["cooling_degradation", "power_limit"]
    rows = [score(c, p, used, kb) for c, (p, used) in zip(cases, asyncio.run(propose_all(cases, kb)), strict=True)]
    for c, r in zip(cases, rows, strict=True):
        assert r["incident"] == " ".join(c.variant.cause), "the root cause is the fault's, from the generator"
        assert r["cause"] and r["kinds"] and r["targets"] and r["numbers"] and r["verified"], r
        assert r["source"] == "fallback" and r["answers"] == 0
    assert summary(rows)["verified_breaking"] == 0
    wrong = dataclasses.replace(cases[1].variant, cause=("power_capped", "n01/gpu9"), targets=frozenset({"n01/gpu9"}))
    p, used = asyncio.run(propose_all([cases[1]], kb))[0]
    r = score(dataclasses.replace(cases[1], variant=wrong), p, used, kb)
    assert not r["cause"] and not r["targets"] and r["kinds"]


def _with_action(p, i: int, **changes):  # noqa: ANN001, ANN202
    pa = p.actions[i]
    if "citations" in changes:
        pa = pa.model_copy(update={"citations": changes.pop("citations")})
    bad = pa.model_copy(update={"action": pa.action.model_copy(update=changes)})
    return p.model_copy(update={"actions": (*p.actions[:i], bad, *p.actions[i + 1:])})


def test_a_verified_proposal_that_breaks_a_bound_is_counted(cases: list[Case], kb: KnowledgeBase) -> None:
    """The numbers are checked afresh against the step the action cites, not taken from the proposal's own claim."""
    (cool, _), (cap, _) = asyncio.run(propose_all(cases, kb))
    assert cool.actions[0].action.kind == "set_cooling_setpoint" and cap.actions[0].action.kind == "set_power_limit"
    setpoint = cases[0].incident.facts["setpoint_c"]
    broken = {
        "above the step": (0, _with_action(cool, 0, supply_c=setpoint + 1.0)),
        "step, not hardware": (1, _with_action(cap, 0, watts=600.0)),  # H100: 200-700 W; the step: 450-500 W
        "hardware too": (1, _with_action(cap, 0, watts=800.0)),
        "uncited step": (1, _with_action(cap, 0, citations=cap.actions[1].citations)),
    }
    for name, (i, p) in broken.items():
        assert p.verified, "the proposal claims it is verified"
        r = score(cases[i], p, [], kb)
        assert not r["numbers"] and r["broken"], name
        assert summary([r])["verified_breaking"] == 1, name
    assert any("700" in w for w in score(cases[1], broken["hardware too"][1], [], kb)["broken"])
    assert "no cited step prescribes" in score(cases[1], broken["uncited step"][1], [], kb)["broken"][0]


class Worker:
    """Stands in for bench/agent_eval_vllm.VllmWorker: answers each batch from the requests' schemas."""

    def __init__(self, garbage: bool = False) -> None:
        self.garbage = garbage
        self.batches: list[list[dict]] = []

    def chat(self, requests: list[dict]) -> list[dict]:
        self.batches.append(requests)
        return [{"text": "cool it down" if self.garbage else self.answer(r["schema"]), "finish": "stop"}
                for r in requests]

    @staticmethod
    def answer(schema: dict) -> str:
        """The first allowed action, each number at the top of its bound (an answer the schema admits)."""
        opt = schema["properties"]["actions"]["prefixItems"][0]["properties"]
        params = {k: v["const"] if "const" in v else v["enum"][-1] if "enum" in v else "text"
                  for k, v in opt["params"]["properties"].items()}
        cite = {k: v["const"] for k, v in opt["citations"]["items"]["anyOf"][0]["properties"].items()}
        action = {"kind": opt["kind"]["const"], "params": params, "citations": [cite], "rationale": "scripted"}
        return json.dumps({"diagnosis": "scripted", "actions": [action], "confidence": 0.5})


def test_model_answers_go_out_in_one_batch_and_propose_verifies_them(cases: list[Case], kb: KnowledgeBase) -> None:
    worker, saved = Worker(), []
    results = asyncio.run(propose_all(cases, kb, worker=worker, save=lambda a: saved.append(dict(a))))
    assert len(worker.batches) == 1 and len(worker.batches[0]) == 2, "every variant's prompt in one batch"
    assert len(saved) == 1 and len(saved[0]) == 2, "the answers are saved after the batch"
    again = Worker()
    assert asyncio.run(propose_all(cases, kb, worker=again, answers=saved[0])) == results
    assert again.batches == [], "a rerun on saved answers asks the model nothing"
    assert all(r["schema"] and r["messages"][0]["role"] == "system" for r in worker.batches[0])
    (_, _), (cap, used) = results
    r = score(cases[1], cap, used, kb)
    assert cap.source == "llm" and r["verified"] and r["numbers"] and (r["parsed"], r["answers"]) == (1, 1)
    assert cap.actions[0].action.watts == 500.0, "the model's number (top of the step's 450-500 W), not the mapping's"


def test_an_answer_that_fails_is_repaired_in_a_second_batch_then_falls_back(cases: list[Case],
                                                                           kb: KnowledgeBase) -> None:
    worker = Worker(garbage=True)
    results = asyncio.run(propose_all(cases, kb, worker=worker))
    assert [len(b) for b in worker.batches] == [2, 2], "first prompts, then the repair prompts"
    assert "failed verification" in worker.batches[1][0]["messages"][-1]["content"]
    rows = [score(c, p, used, kb) for c, (p, used) in zip(cases, results, strict=True)]
    assert all(r["source"] == "fallback" and (r["parsed"], r["answers"]) == (0, 2) and r["verified"] for r in rows)


def test_the_command_refuses_seeds_a_test_uses_and_writes_its_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval.json"
    argv = ["--variants", "2", "--seed-base", str(MINE[0].seed), "--llm", "none", "--json", str(out)]
    with pytest.raises(ValueError, match="not held out"):
        main(argv)
    monkeypatch.setattr(agent_eval, "assert_held_out", lambda variants: None)  # this test's seeds, on purpose
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert [r["seed"] for r in data["runs"][0]["rows"]] == [v.seed for v in MINE]
    assert data["runs"][0]["summary"]["verified_breaking"] == 0
    captured = capsys.readouterr()
    assert "| none | - | 2 |" in captured.out and captured.err.count("[2/2]") == 2, "a progress line per variant"
