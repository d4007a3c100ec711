"""No import cycles inside `service/` or `unlearning/`: a cycle is how a module ends up needing
half the tree, and how "which module is imported first" starts to matter.

The graph is read from the source with `ast`, as tests/test_packaging.py reads imports: a module
points at every project module it imports anywhere in its body (function-level imports
included: a lazy import defers the cost, not the coupling), at the most specific module named
(`from service.probes import base` is `service.probes.base`; `from service.probes.base import
Probe` is `service.probes.base`). Imports under `if TYPE_CHECKING:` never run and are left out.
A cycle is a strongly connected component of two or more modules; the test prints one closed
path through each, with the line of every import on it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "unlearning")

Graph = dict[str, dict[str, int]]
"""module -> {imported project module: line of the first such import}"""


def modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Every module of `packages` under `root`, by dotted name (a package by its own name)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of `tree` except what sits under `if TYPE_CHECKING:`."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def imports(name: str, path: Path, known: set[str]) -> dict[str, int]:
    """The project modules that module `name` (file `path`) imports, with the first line."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        while target and target not in known:  # `a.b.attr` -> `a.b`
            target = target.rpartition(".")[0]
        if target and target != name:
            found.setdefault(target, line)

    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] \
                if node.level else []
            stem = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                add(f"{stem}.{alias.name}", node.lineno)
    return found


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> Graph:
    found = modules(root, packages)
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def cycles(graph: Graph) -> list[list[str]]:
    """One closed path (first module repeated at the end) through every strongly connected
    component of two or more modules (Tarjan), each starting at its smallest name."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while (top := stack.pop()) != node:
                component.add(top)
            component.add(node)
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(_closed_path(graph, c) for c in components)


def _closed_path(graph: Graph, component: set[str]) -> list[str]:
    """A shortest path from the component's smallest module back to itself (breadth first)."""
    start = min(component)
    paths = {start: [start]}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for target in sorted(graph[node]):
            if target == start:
                return [*paths[node], start]
            if target in component and target not in paths:
                paths[target] = [*paths[node], target]
                todo.append(target)
    raise AssertionError(f"no cycle through {start}")


def describe(graph: Graph, path: list[str]) -> str:
    steps = [f"{a} (line {graph[a][b]})" for a, b in zip(path, path[1:], strict=False)]
    return " -> ".join([*steps, path[-1]])


def test_no_import_cycles_in_the_product():
    graph = import_graph()
    found = cycles(graph)
    for path in found:
        print("import cycle:", describe(graph, path))
    assert not found, "import cycles:\n" + "\n".join(describe(graph, p) for p in found)


def test_a_planted_cycle_is_caught_and_type_checking_imports_are_not(tmp_path):
    files = {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg import b\n",
        "pkg/b.py": "def late():\n    from pkg.sub.c import thing\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "from ..a import name\nthing = 1\n",
        "pkg/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.e\n",
        "pkg/e.py": "import pkg.d\nimport os\n",
    }
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.sub.c"] == {"pkg.a": 1} and graph["pkg.d"] == {}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]
    assert describe(graph, cycles(graph)[0]) == (
        "pkg.a (line 1) -> pkg.b (line 2) -> pkg.sub.c (line 1) -> pkg.a")
