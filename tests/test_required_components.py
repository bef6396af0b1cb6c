"""The CI guard of ``tests/requirements_check.py``: a missing component skips here and fails under ``CI=true``.

Chromium is hidden with ``OPSLOOP_TEST_CHROMIUM`` pointing at a file that does not exist (the system browser
stays installed). The runs in a subprocess go through the real ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.requirements_check import REQUIRED, require, session_problems

REPO = Path(__file__).resolve().parents[1]
TINY = '''
import pytest

from tests.requirements_check import require


def test_needs_chromium():
    require("chromium")


def test_skips_for_no_reason():
    pytest.skip("nothing is missing, the test just skips")


@pytest.mark.gpu
def test_needs_a_gpu():
    pytest.skip("no NVIDIA GPU here")
'''


def _pytest(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """A pytest run in a subprocess, in the repository's venv, with the real conftest as a plugin."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )


def _env(ci: bool, hidden: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "OPSLOOP_TEST_CHROMIUM", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = str(REPO)
    if ci:
        env["CI"] = "true"
    if hidden is not None:
        env["OPSLOOP_TEST_CHROMIUM"] = str(hidden)
    return env


def test_require_skips_outside_ci_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gone = tmp_path / "no-chromium-here"
    monkeypatch.setenv("OPSLOOP_TEST_CHROMIUM", str(gone))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"required component missing: Chromium \\(.*{gone}"):
        require("chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=f"^CI=true: required component missing: Chromium \\(.*{gone}"):
        require("chromium")


def test_require_answers_where_the_component_is(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    browser = tmp_path / "chromium"
    browser.write_text("#!/bin/sh\n")
    monkeypatch.setenv("OPSLOOP_TEST_CHROMIUM", str(browser))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="Chromium"):
        require("chromium")  # a file that is not executable is not a browser
    browser.chmod(0o755)
    assert require("chromium") == str(browser)


def test_the_session_check_names_every_missing_component(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPSLOOP_TEST_CHROMIUM", str(tmp_path / "none"))
    monkeypatch.setenv("OPSLOOP_TEST_REDIS_SERVER", str(tmp_path / "none"))
    monkeypatch.delenv("CI", raising=False)
    assert session_problems() == []  # outside CI nothing is checked up front
    monkeypatch.setenv("CI", "true")
    problems = session_problems()
    assert any(p.startswith("required component missing: Chromium (") for p in problems), problems
    assert any(p.startswith("required component missing: Redis server") for p in problems), problems


@pytest.mark.timeout(900)
def test_dashboard_tests_fail_under_ci_naming_chromium(tmp_path: Path) -> None:
    gone = tmp_path / "no-chromium-here"
    tests = sorted(str(p) for p in (REPO / "tests" / "serving").glob("test_dashboard_*.py"))
    run = _pytest(tests, _env(ci=True, hidden=gone), REPO)
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    assert f"CI=true: required component missing: Chromium (no executable at {gone}" in out, out
    assert " passed" not in out, out  # stopped before the first test


def test_a_tiny_suite_skips_without_ci_and_fails_with_it(tmp_path: Path) -> None:
    for key in REQUIRED:
        require(key)  # the CI run below needs every other component (it stops at session start without one)
    (tmp_path / "test_tiny.py").write_text(TINY)
    args = ["-p", "tests.conftest", "--rootdir", str(tmp_path), "-c", str(REPO / "pyproject.toml"), str(tmp_path)]

    here = _pytest(args, _env(ci=False, hidden=tmp_path / "gone"), REPO)
    assert here.returncode == 0, here.stdout + here.stderr
    assert "3 skipped" in here.stdout and "Chromium" in here.stdout, here.stdout

    ci = _pytest(args, _env(ci=True, hidden=None), REPO)  # every component there: only the plain skip fails
    assert ci.returncode == 1, ci.stdout + ci.stderr
    assert "1 failed, 1 passed, 1 skipped" in ci.stdout, ci.stdout
    assert "CI=true: only tests marked gpu may skip, and this one skipped: nothing is missing" in ci.stdout

    hidden = _pytest(args, _env(ci=True, hidden=tmp_path / "gone"), REPO)
    assert hidden.returncode != 0, hidden.stdout + hidden.stderr
    assert "CI=true: required component missing: Chromium" in hidden.stdout + hidden.stderr

    (tmp_path / "test_tiny.py").unlink()  # a whole module skipped at collection is a failure under CI too
    (tmp_path / "test_module.py").write_text('import pytest\npytest.skip("gone", allow_module_level=True)\n')
    (tmp_path / "test_ok.py").write_text("def test_ok():\n    pass\n")
    here = _pytest(args, _env(ci=False, hidden=None), REPO)
    assert here.returncode == 0 and "1 passed, 1 skipped" in here.stdout, here.stdout
    module = _pytest(args, _env(ci=True, hidden=None), REPO)
    assert module.returncode != 0 and "this one skipped: gone" in module.stdout, module.stdout
