"""The package layers and the absence of import cycles, checked on the source itself.

Every ``import`` statement counts, including those inside functions (a lazy import hides a cycle
from Python but not from a reader), except those under ``if TYPE_CHECKING:``, which never run.

Layers, lowest first: ``etfuse`` (the domain), then ``training`` and ``serving``, then ``flows``.
Nothing imports from a layer above its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("etfuse", "training", "serving", "flows")
LAYER = {"etfuse": 0, "training": 1, "serving": 1, "flows": 2}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _runtime_imports(tree: ast.AST) -> list[str]:
    """Modules imported by statements that can run (not under ``if TYPE_CHECKING``)."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """Project module -> project modules it imports at run time."""
    modules = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if imported in modules and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_no_import_from_a_layer_above():
    upward = [f"{a} -> {b}" for a, targets in import_graph().items() for b in targets
              if LAYER[b.split(".")[0]] > LAYER[a.split(".")[0]]]
    assert upward == []


def test_the_checker_sees_a_lazy_cycle():
    """A cycle through an import inside a function is found; one under TYPE_CHECKING is not."""
    lazy = ast.parse("def f():\n    from etfuse.b import x\n")
    typed = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from etfuse.b import x\n")
    assert "etfuse.b" in _runtime_imports(lazy)
    assert "etfuse.b" not in _runtime_imports(typed)
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
