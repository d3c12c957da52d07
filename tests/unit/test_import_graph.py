"""The package graph of ttc_graph has no cycles, and every import goes down the layers of docs/architecture.md.

Every module is parsed (imports inside functions included, those under ``if TYPE_CHECKING:`` left out). A node is a
package (``ttc_graph.eval``) or a top-level module (``ttc_graph.budget``); ``ttc_graph`` itself is the facade that
``import ttc_graph`` runs. Core modules import only core modules and third-party code.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "ttc_graph"
FACADE = "ttc_graph"

CORE = frozenset(
    {"errors", "usage", "messages", "budget", "state", "prompts", "answers", "tool_calls", "selection", "_loop",
     "_limit", "_files", "progress", "tracing", "prices", "defaults"}
)  # fmt: skip
"""Data and rules every layer shares: they import nothing of ttc_graph above themselves."""

LAYERS: list[frozenset[str]] = [
    CORE,
    frozenset({"endpoints", "graph"}),
    frozenset({"verifiers", "local", "testing"}),
    frozenset({"nodes"}),
    frozenset({"strategies"}),
    frozenset({"specs"}),
    frozenset({"compute_optimal", "agents", "server", "studio"}),
    frozenset({FACADE}),
    frozenset({"scale"}),
    frozenset({"eval"}),
    frozenset({"study"}),
    frozenset({"cli"}),
]
"""A node may import the nodes of lower layers (core modules: each other too); docs/architecture.md has the table."""

LAYER_OF = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _node(module: str) -> str:
    parts = module.split(".")
    return FACADE if len(parts) < 2 else parts[1]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, int]]:
    """``(imported module, line)`` of every import outside ``if TYPE_CHECKING:`` blocks."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            skipped.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            if source == FACADE:  # `from ttc_graph import x`: the submodule x, else the facade's name x
                for alias in node.names:
                    sub = ROOT / alias.name
                    is_sub = sub.is_dir() or sub.with_suffix(".py").is_file()
                    found.append((f"{FACADE}.{alias.name}" if is_sub else FACADE, node.lineno))
            else:
                found.append((source, node.lineno))
    return [(m, line) for m, line in found if m == FACADE or m.startswith(FACADE + ".")]


def package_graph() -> dict[str, dict[str, list[str]]]:
    """``{node: {imported node: [where]}}`` over every module of ttc_graph."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(ROOT.rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        source = _node(module)
        graph[source]  # every node, even one that imports nothing
        for imported, line in _imports(tree, module, path.name == "__init__.py"):
            target = _node(imported)
            if target != source:
                graph[source][target].append(f"{path.relative_to(ROOT.parent)}:{line}")
    return graph


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


GRAPH = package_graph()


def test_every_node_has_a_layer() -> None:
    assert sorted(set(GRAPH) - set(LAYER_OF)) == [], "add the new package or module to LAYERS (and the docs)"


def test_the_package_graph_has_no_cycles() -> None:
    found = cycles(GRAPH)
    detail = [f"{a} -> {b} ({GRAPH[a][b][0]})" for c in found for a in c for b in c if b in GRAPH[a]]
    assert found == [], "\n".join(detail)


def test_core_modules_import_only_core_modules() -> None:
    wrong = [f"{a} -> {b} ({where[0]})" for a in CORE for b, where in GRAPH.get(a, {}).items() if b not in CORE]
    assert wrong == [], "\n".join(wrong)


@pytest.mark.parametrize("node", sorted(set(GRAPH) - CORE))
def test_imports_go_down_the_layers(node: str) -> None:
    up = [
        f"{node} -> {target} ({where[0]})"
        for target, where in GRAPH[node].items()
        if LAYER_OF.get(target, len(LAYERS)) >= LAYER_OF.get(node, -1)
    ]
    assert up == [], "\n".join(up)


def test_the_checker_sees_function_level_imports_and_skips_type_checking_ones() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ttc_graph.eval import store\n"
        "def f():\n    from ttc_graph.study import runner\n    from . import units\n"
    )
    found = [m for m, _ in _imports(tree, "ttc_graph.scale.actors", is_package=False)]
    assert found == ["ttc_graph.study", "ttc_graph.scale"]
