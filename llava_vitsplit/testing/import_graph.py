"""The package's own import graph, read statically (``ast``; function-level imports included).

Used by the import-cycle test and by ``docs/architecture.py``, which writes the dependency table of
``docs/ARCHITECTURE.md`` from it. Nothing is imported to build the graph.
"""

from __future__ import annotations

import ast
from pathlib import Path

import llava_vitsplit

PACKAGE_DIR = Path(llava_vitsplit.__file__).parent


def module_files(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """``{dotted module name: file}`` for every module of the package (``__init__`` = the package)."""
    files = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        files[name] = path
    return files


def _imported_names(tree: ast.AST) -> list[str]:
    """Dotted names a module imports from the package (``from pkg import sub`` gives ``pkg.sub``)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("llava_vitsplit"):
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names if alias.name.startswith("llava_vitsplit"))
    return names


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}``; a name resolves to its longest known module."""

    def known(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = {known(target) for target in _imported_names(ast.parse(path.read_text(encoding="utf-8")))}
        graph[name] = {t for t in targets if t and t != name}
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
        for target in sorted(graph[node]):
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def package_of(module: str) -> str:
    """The first-level part a module belongs to: ``llava_vitsplit.dense.build`` -> ``dense``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph collapsed to first-level parts (``adapter``, ``model``, ``cli`` ...)."""
    collapsed: dict[str, set[str]] = {}
    for module, targets in graph.items():
        source = package_of(module)
        collapsed.setdefault(source, set()).update(package_of(t) for t in targets)
    return {source: targets - {source} for source, targets in collapsed.items()}
