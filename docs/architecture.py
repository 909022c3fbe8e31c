"""Write the generated half of ``docs/ARCHITECTURE.md`` from the code: parts, their imports, every module.

The tables between the ``generated`` markers come from the package itself: each module's first docstring
line and the static import graph (``llava_vitsplit.testing.import_graph``). The prose around them (the
extension points) is written by hand. ``--check`` exits 1 when the file is out of date
(``tests/test_architecture_doc.py`` runs it), so the document cannot drift from the tree.

    python docs/architecture.py            # rewrite docs/ARCHITECTURE.md
    python docs/architecture.py --check    # fail if it would change
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

from llava_vitsplit.testing.import_graph import PACKAGE_DIR, import_graph, module_files, package_graph
from llava_vitsplit.util.atomic import write_atomic

DOC = Path(__file__).resolve().parent / "ARCHITECTURE.md"
BEGIN = "<!-- generated: begin (python docs/architecture.py) -->"
END = "<!-- generated: end -->"


def summary_line(path: Path) -> str:
    """The first line of a module's docstring (an error names a module without one)."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    if not doc:
        raise ValueError(f"{path}: no module docstring")
    return doc.strip().splitlines()[0].replace("|", "\\|")


def generated_section() -> str:
    files = module_files()
    packages = package_graph(import_graph(files))
    lines = [BEGIN, "", "### Parts and the parts they import", "", "| part | imports |", "|---|---|"]
    for part in sorted(packages):
        lines.append(f"| `{part}` | {', '.join(f'`{p}`' for p in sorted(packages[part])) or '-'} |")
    lines += ["", "### Modules", "", "| module | purpose |", "|---|---|"]
    for path in sorted(files.values()):
        lines.append(f"| `{path.relative_to(PACKAGE_DIR.parent).as_posix()}` | {summary_line(path)} |")
    return "\n".join(lines + ["", END])


def render(text: str) -> str:
    """``text`` with its generated section replaced (appended when the markers are missing)."""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        return head + generated_section() + rest.split(END, 1)[1]
    return text.rstrip("\n") + "\n\n" + generated_section() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    args = parser.parse_args(argv)
    current = DOC.read_text(encoding="utf-8")
    wanted = render(current)
    if args.check:
        if wanted != current:
            print(f"{DOC} is out of date: run python docs/architecture.py", file=sys.stderr)
            return 1
        return 0
    write_atomic(DOC, lambda tmp: tmp.write_text(wanted, encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
