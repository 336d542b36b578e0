"""Imports in core/ go one way (docs/architecture.md): no module reaches, at import time or
from inside a function, a module that reaches it back."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "core"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of ``root`` it imports, anywhere in its body. Importing a
    submodule runs its package's ``__init__`` too, so ``from .engine import hooks`` is an
    edge to ``engine`` and to ``engine.hooks``."""
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module
                targets.add(module)
                targets.update(f"{module}.{alias.name}" for alias in node.names)
        expanded = set()
        for target in targets:
            parts = target.split(".")
            expanded.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        graph[name] = {t for t in expanded if t in files and t != name
                       and not name.startswith(t + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_import_cycle_in_core():
    graph = import_graph(CORE)
    assert "internseg.engine.hooks" in graph and "internseg.records" in graph
    assert cycles(graph) == []


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    """The check sees what the two circles it was written for were made of: an import inside
    a function, and a package's ``from .. import module``."""
    pkg = tmp_path / "pkg"
    (pkg / "engine").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "engine" / "__init__.py").write_text("")
    (pkg / "plugin.py").write_text("from .engine import hooks\n")
    (pkg / "engine" / "hooks.py").write_text("from .segmentor import state\n")
    (pkg / "engine" / "segmentor.py").write_text(
        "def build():\n    from .. import plugin\n\ndef state():\n    pass\n")
    (pkg / "records.py").write_text("def records():\n    from .registry import files\n")
    (pkg / "registry.py").write_text("from .records import records\n\ndef files():\n    pass\n")
    (pkg / "leaf.py").write_text("import os\nfrom . import records\n")
    assert cycles(import_graph(tmp_path)) == [
        ["pkg.engine.hooks", "pkg.engine.segmentor", "pkg.plugin"],
        ["pkg.records", "pkg.registry"]]
