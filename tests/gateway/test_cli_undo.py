"""``opsloop approvals undo ID`` as a user runs it (the real CLI in a subprocess, the REST API on loopback, the real
gateway on a real Redis): an executed drain shows its undo, and ``undo`` opens the resume as a new approval whose
proposer is the CLI's user."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gateway.test_cli_decisions import Server, server  # noqa: F401 - the fixture
from tests.gateway.test_service import proposal, said

pytestmark = [pytest.mark.timeout(180)]


def test_cli_undoes_an_executed_drain_through_a_new_approval(server: Server, tmp_path: Path) -> None:  # noqa: F811
    [ap] = [r.approval for r in server.run(server.gw.submit(proposal({"kind": "drain_node", "node": "n01"},
                                                                     pid="pr-cu")))]
    assert ap is not None
    early = server.cli("undo", ap.approval_id, cwd=tmp_path)
    assert early.returncode != 0 and "it did not execute" in early.stderr + early.stdout
    server.run(server.gw.decide(ap.approval_id, said(ap)))
    server.run(server.gw.decide(ap.approval_id, said(ap, by="bob")))
    shown = server.cli("show", ap.approval_id, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert (f'  undo         resume_node {{"drained_by": "{ap.approval_id}", "node": "n01"}} '
            f"(opsloop approvals undo {ap.approval_id})") in shown.stdout

    out = server.cli("undo", ap.approval_id, "--reason", "fan replaced", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.endswith(f"pending  resume_node(node=n01, drained_by={ap.approval_id})"), out.stdout
    assert f"  undoes       {ap.approval_id}" in out.stdout and "  proposed by  admin, undoing" in out.stdout
    undo_id = first.split()[0]
    assert server.run(server.gw.get(ap.approval_id))["undone_by"] == undo_id
