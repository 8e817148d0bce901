"""How the package's modules import each other: no cycle among the module-level imports.

What the wheel ships: tests/system/test_packaging.py (it builds one, in a child process).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "django_zkflags"


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_time_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements run when a module is imported: at module level, in the blocks
    of ``if``/``try``/``with``/loops and in class bodies; not inside functions (run later),
    nor under ``if TYPE_CHECKING:`` (never run)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not is_type_checking(node.test):
                yield from import_time_imports(node.body)
            yield from import_time_imports(node.orelse)
        elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            for block in (node.body, node.orelse, node.finalbody):
                yield from import_time_imports(block)
            for handler in node.handlers:
                yield from import_time_imports(handler.body)
        elif isinstance(node, (ast.With, ast.For, ast.While, ast.ClassDef)):
            yield from import_time_imports(node.body)
            yield from import_time_imports(getattr(node, "orelse", []))


def import_graph(package_dir: Path) -> dict[str, dict[str, int]]:
    """module -> {module of the same package it imports at import time: line number}."""
    root = package_dir.parent
    paths = {
        module_name(path, root): path
        for path in package_dir.rglob("*.py")
        if "__pycache__" not in path.parts
    }
    graph: dict[str, dict[str, int]] = {name: {} for name in paths}
    for name, path in paths.items():
        is_package = path.name == "__init__.py"
        for node in import_time_imports(ast.parse(path.read_text(), str(path)).body):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    here = name.split(".") if is_package else name.split(".")[:-1]
                    base = ".".join(here[: len(here) - node.level + 1])
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                # ``from pkg import sub`` imports the submodule; ``from mod import name``, mod.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base
                    for alias in node.names
                ]
            for target in targets:
                if target in paths:
                    graph[name].setdefault(target, node.lineno)
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (first node repeated at the end) per strongly connected component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan; the graph is a few dozen modules
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)

    cycles = []
    for component in components:
        start, members = min(component), set(component)
        paths = {start: [start]}
        queue = [start]
        while queue:  # breadth first, back to start: a shortest cycle through it
            node = queue.pop(0)
            nxt_nodes = sorted(n for n in graph[node] if n in members)
            if start in nxt_nodes:
                cycles.append([*paths[node], start])
                break
            for nxt in nxt_nodes:
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    queue.append(nxt)
    return cycles


def describe_cycles(graph: dict[str, dict[str, int]], cycles: list[list[str]]) -> str:
    lines = ["import cycles among module-level imports:"]
    for cycle in cycles:
        lines.append("  " + " -> ".join(cycle))
        for a, b in zip(cycle, cycle[1:], strict=False):
            lines.append(f"    {a} imports {b} at line {graph[a][b]}")
    return "\n".join(lines)


def test_no_import_cycle_inside_the_package() -> None:
    graph = import_graph(PACKAGE)
    assert "django_zkflags.runtime" in graph and any(graph.values())
    cycles = find_cycles(graph)
    assert cycles == [], describe_cycles(graph, cycles)


def test_the_cycle_check_sees_cycles_and_only_import_time_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n",
        "a.py": "from . import b\n",
        "b.py": "import pkg.sub.c\n",
        "sub/__init__.py": "",
        "sub/c.py": "from ..a import thing\n",
        "d.py": "def later():\n    from . import e\n",
        "e.py": "try:\n    from .d import later\nexcept ImportError:\n    pass\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    graph = import_graph(pkg)
    assert graph["pkg"] == {}  # under TYPE_CHECKING: never run
    assert graph["pkg.d"] == {}  # inside a function: run later
    assert graph["pkg.e"] == {"pkg.d": 2}
    cycles = find_cycles(graph)
    assert cycles == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]
    assert "pkg.sub.c imports pkg.a at line 1" in describe_cycles(graph, cycles)
