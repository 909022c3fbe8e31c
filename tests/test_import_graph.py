"""The package's modules import each other without cycles (function-level imports included).

A cycle hidden behind a lazy import still ties two modules together: neither can be understood, moved
or tested alone. The graph is read statically (``ast``), so nothing is imported here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import llava_vitsplit

PACKAGE_DIR = Path(llava_vitsplit.__file__).parent


def module_files() -> dict[str, Path]:
    files = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        files[name] = path
    return files


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}`` (``from pkg import sub`` counts as ``pkg.sub``)."""

    def known(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("llava_vitsplit"):
                targets = [known(f"{node.module}.{alias.name}") for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [
                    known(alias.name) for alias in node.names if alias.name.startswith("llava_vitsplit")
                ]
            else:
                continue
            graph[name].update(t for t in targets if t and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while component[-1:] != [node]:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle():
    files = module_files()
    assert "llava_vitsplit.dense.build" in files and "llava_vitsplit.util.atomic" in files
    assert cycles(import_graph(files)) == []


def test_a_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_library_never_imports_the_test_fixtures():
    graph = import_graph(module_files())
    users = {
        module: sorted(t for t in targets if t.startswith("llava_vitsplit.testing"))
        for module, targets in graph.items()
        if not module.startswith("llava_vitsplit.testing")
    }
    assert {module: found for module, found in users.items() if found} == {}
