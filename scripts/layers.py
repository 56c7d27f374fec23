"""The house's floors, and every import that goes up a floor.

From the bottom: `ingestions` (the domain: tenants, locations, ingestions, history, runs,
sources, engines), `refresh` (refresh operations, batches, schedules), `webhooks`
(subscribes to both), `console` (the project: settings, wiring, the web console). A module
may import from its own floor and the floors below it; an import of a floor above is an
upward edge. Every import counts, at module level or inside a function.

    .venv/bin/python scripts/layers.py           # list the upward edges, exit 0
    .venv/bin/python scripts/layers.py --check   # exit 1 when there is any
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOORS = ("ingestions", "refresh", "webhooks", "console")


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `tree`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".")
                if not is_package:
                    package.pop()
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, node.module] if node.module else package)
            else:
                base = node.module or ""
            found.append((node.lineno, base))
    return found


def upward_edges() -> list[tuple[str, int, str, str]]:
    """(file, line, from floor, imported module) of every import that goes up."""
    rank = {floor: index for index, floor in enumerate(FLOORS)}
    edges = []
    for floor in FLOORS:
        for path in sorted((ROOT / floor).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            module = _module_of(path)
            tree = ast.parse(path.read_text(), filename=str(path))
            for line, target in _imported(tree, module, path.name == "__init__.py"):
                top = target.split(".")[0]
                if top in rank and rank[top] > rank[floor]:
                    edges.append((str(path.relative_to(ROOT)), line, floor, target))
    return edges


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 on any upward edge")
    args = parser.parse_args()
    edges = upward_edges()
    for path, line, _floor, target in edges:
        print(f"{path}:{line}: imports {target}")
    print(f"{len(edges)} upward import(s); floors from the bottom: {' < '.join(FLOORS)}")
    return 1 if args.check and edges else 0


if __name__ == "__main__":
    sys.exit(main())
