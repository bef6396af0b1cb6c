"""The floors of the house: no import cycle, no ``serving`` → ``cluster`` import, no upward import (issue #14).

Every module of ``policies``, ``knowledge``, ``actors``, ``serving`` and ``cluster`` is parsed with :mod:`ast` (never
imported) and every ``import`` / ``from … import`` statement in it is a dependency: at module level, inside
functions and methods (a lazy import is still a dependency, it only runs later), and under ``if TYPE_CHECKING:``
(a type the module names is a module it depends on). ``from a.b import c`` depends on ``a.b.c`` when that is a
module of ours, else on ``a.b`` (the longest dotted prefix that is one of our modules); relative imports are
resolved against the importing package. A dynamic ``importlib.import_module`` (the CLI's sub-command list) is
not an import statement and is not seen.

The layer order (DESIGN.md, docs/architecture.md) is ``policies ← knowledge ← actors ← serving ← cluster``: a
layer imports only itself and layers to its left, except that ``actors`` may import the sample types of
``cluster.telemetry``. ``policies`` is pure: besides itself it imports only the standard library, pydantic and
PyYAML (the policy file is YAML). None of these checks has an exception.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("policies", "knowledge", "actors", "serving", "cluster")
RANK = {name: i for i, name in enumerate(LAYERS)}
#: What ``actors`` may import from ``cluster``: the messages it consumes (DESIGN: "cluster.telemetry types").
ACTORS_MAY_IMPORT = frozenset({"cluster.telemetry", "cluster.telemetry.samples"})
POLICIES_THIRD_PARTY = frozenset({"pydantic", "yaml"})


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def our_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the five packages, by dotted name."""
    found = {module_name(p, root): p for layer in LAYERS for p in sorted((root / layer).rglob("*.py"))}
    assert set(LAYERS) <= set(found), "a layer package is missing its __init__.py"
    return found


def imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, int]]:
    """``(dotted name, line)`` of everything a module imports, wherever the statement sits."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield (f"{base}.{alias.name}" if alias.name != "*" else base), node.lineno


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is one of our modules (``None``: not ours)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def build_graph(root: Path = ROOT) -> tuple[dict[str, dict[str, int]], dict[str, set[str]]]:
    """``(edges, third_party)``: module → {imported module of ours: line}, and module → top-level foreign names."""
    modules = our_modules(root)
    edges: dict[str, dict[str, int]] = {m: {} for m in modules}
    foreign: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name, line in imported_names(tree, mod, path.name == "__init__.py"):
            target = resolve(name, modules)
            if target is None:
                foreign[mod].add(name.split(".")[0])
            elif target != mod:
                edges[mod].setdefault(target, line)
    return edges, foreign


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as one cycle through them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_cycle_in(sorted(component), edges))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _cycle_in(component: list[str], edges: dict[str, dict[str, int]]) -> list[str]:
    """One closed path through a strongly connected component, starting at its first module (breadth-first)."""
    members, start = set(component), component[0]
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v]):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if w in members and w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    return component  # unreachable for a strongly connected component


def layer(module: str) -> str:
    return module.split(".")[0]


def upward(edges: dict[str, dict[str, int]]) -> dict[tuple[str, str], int]:
    """Every import of a layer to the right of the importer's (``actors`` → telemetry samples allowed)."""
    out = {}
    for src, targets in edges.items():
        for dst, line in targets.items():
            if RANK[layer(dst)] <= RANK[layer(src)]:
                continue
            if layer(src) == "actors" and dst in ACTORS_MAY_IMPORT:
                continue
            out[(src, dst)] = line
    return out


@pytest.fixture(scope="module")
def graph() -> tuple[dict[str, dict[str, int]], dict[str, set[str]]]:
    return build_graph()


def test_the_walker_sees_module_level_lazy_and_relative_imports() -> None:
    src = (
        "from __future__ import annotations\nimport cluster.settings\nfrom typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from actors.twin.model import TwinModel\n"
        "def f():\n    from serving import llm\n    from .events import Event\n"
    )
    names = {n for n, _ in imported_names(ast.parse(src), "actors.twin.signals", False)}
    assert {"cluster.settings", "actors.twin.model.TwinModel", "serving.llm", "actors.twin.events.Event"} <= names
    modules = our_modules()
    assert resolve("actors.twin.model.TwinModel", modules) == "actors.twin.model"
    assert resolve("serving.llm", modules) == "serving.llm"
    assert resolve("numpy.linalg", modules) is None


def test_the_cycle_finder_reports_the_modules_of_a_cycle() -> None:
    edges = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert cycles(edges) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b": 1}, "b": {}}) == []
    assert upward({"serving.x": {"cluster.y": 3}, "actors.z": {"cluster.telemetry.samples": 4}}) == {
        ("serving.x", "cluster.y"): 3}


def test_a_house_with_every_fault_fails_every_check(tmp_path: Path) -> None:
    files = {
        "policies/__init__.py": "import numpy\nfrom pydantic import BaseModel\n",
        "knowledge/__init__.py": "",
        "actors/__init__.py": "from cluster.telemetry.samples import GpuSample\n",
        "actors/a.py": "from actors.b import B\n",
        "actors/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n",
        "serving/__init__.py": "",
        "serving/x.py": "def build():\n    from cluster import settings\n",
        "cluster/__init__.py": "import serving.x\n",
        "cluster/settings.py": "",
        "cluster/telemetry/__init__.py": "",
        "cluster/telemetry/samples.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    edges, foreign = build_graph(tmp_path)
    assert cycles(edges) == [["actors.a", "actors.b", "actors.a"]]
    assert upward(edges) == {("serving.x", "cluster.settings"): 2}
    assert foreign["policies"] == {"numpy", "pydantic"}


def test_no_import_cycle(graph: tuple[dict[str, dict[str, int]], dict[str, set[str]]]) -> None:
    edges, _ = graph
    found = cycles(edges)
    assert not found, "import cycles:\n" + "\n".join(" → ".join(c) for c in found)


def test_serving_imports_no_cluster(graph: tuple[dict[str, dict[str, int]], dict[str, set[str]]]) -> None:
    edges, _ = graph
    bad = [f"{src} → {dst} (line {line})" for src, targets in sorted(edges.items()) if layer(src) == "serving"
           for dst, line in sorted(targets.items()) if layer(dst) == "cluster"]
    assert not bad, "serving/ imports cluster/:\n" + "\n".join(bad)


def test_no_upward_import(graph: tuple[dict[str, dict[str, int]], dict[str, set[str]]]) -> None:
    edges, _ = graph
    found = [f"{s} → {d} (line {line})" for (s, d), line in sorted(upward(edges).items())]
    assert not found, "upward imports against policies ← knowledge ← actors ← serving ← cluster:\n" + "\n".join(found)


def test_policies_import_only_the_standard_library_pydantic_and_yaml(
    graph: tuple[dict[str, dict[str, int]], dict[str, set[str]]],
) -> None:
    _, foreign = graph
    bad = {m: sorted(n for n in names if n not in sys.stdlib_module_names and n not in POLICIES_THIRD_PARTY)
           for m, names in foreign.items() if layer(m) == "policies"}
    assert not {m: n for m, n in bad.items() if n}, bad
