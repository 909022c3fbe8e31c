"""The package's modules import each other without cycles (function-level imports included).

A cycle hidden behind a lazy import still ties two modules together: neither can be understood, moved
or tested alone. The graph is read statically (``ast``, ``llava_vitsplit.testing.import_graph``).
"""

from __future__ import annotations

from llava_vitsplit.testing.import_graph import cycles, import_graph, module_files


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
