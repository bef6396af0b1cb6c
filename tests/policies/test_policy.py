from __future__ import annotations

from pathlib import Path

import pytest

from policies.actions import parse_action
from policies.policy import PolicyError, load_policy
from policies.verify import check_action, check_citations


def test_default_policy_modes() -> None:
    policy = load_policy()
    notify = policy.evaluate(parse_action({"kind": "notify", "message": "hi"}))
    cool = policy.evaluate(parse_action({"kind": "set_cooling_setpoint", "unit": "cu01", "supply_c": 18}))
    drain = policy.evaluate(parse_action({"kind": "drain_node", "node": "n01"}))
    assert (notify.mode, cool.mode, cool.approvers, drain.approvers) == ("auto", "approve", 1, 2)


def test_unnamed_kind_is_denied(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("version: 1\nrules:\n  notify: {mode: auto}\n")
    verdict = load_policy(f).evaluate(parse_action({"kind": "reset_gpu", "gpu": "n01/gpu0"}))
    assert verdict.mode == "deny" and "default deny" in verdict.reason


@pytest.mark.parametrize(
    "text",
    ["rules:\n  format_disk: {mode: auto}\n", "rules:\n  notify: {mode: sometimes}\n", "rules: [1, 2\n", "- a\n"],
)
def test_bad_policy_file_names_the_problem(tmp_path: Path, text: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(PolicyError, match="bad.yaml"):
        load_policy(f)


def test_targets_must_exist() -> None:
    topo = {"gpu": ["n01/gpu0"], "unit": ["cu01"], "node": ["n01"]}
    assert check_action(parse_action({"kind": "cordon_gpu", "gpu": "n01/gpu0"}), topo) == []
    assert check_action(parse_action({"kind": "cordon_gpu", "gpu": "n09/gpu0"}), topo) == [
        "cordon_gpu: gpu 'n09/gpu0' is not in the fleet"
    ]


def test_citations_must_have_been_retrieved() -> None:
    retrieved = [("eop-a", "s1"), ("eop-a", "s2")]
    assert check_citations([("eop-a", "s2")], retrieved) == []
    assert check_citations([("eop-a", None)], retrieved) == []
    assert len(check_citations([("eop-b", "s1")], retrieved)) == 1
