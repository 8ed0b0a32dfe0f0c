"""Loading has one direction: the network modules know nothing of files, loaders build models.

Reads the import statements (top-level and inside functions) of every dap_core.model module
and checks that the graph between them has no cycle and that dap.py imports no loader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import dap_core.model

PACKAGE = Path(dap_core.model.__file__).parent
LOADERS = {"checkpoint", "official", "state", "hub"}


def _imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            if name.startswith("dap_core.model."):
                found.add(name.split(".")[2])
    return found - {module}


def test_network_modules_import_no_loader():
    for module in ("dap", "vit", "dpt", "adapter", "config"):
        assert not (_imports(module) & LOADERS), f"{module}.py imports {_imports(module) & LOADERS}"


def test_model_package_imports_have_no_cycle():
    modules = [p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"]
    graph = {m: _imports(m) & set(modules) for m in modules}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join([*path, node, nxt])
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for module in sorted(modules):
        if module not in state:
            visit(module, [])
