"""No import cycle among fastsam2's modules, lazy (function-level) imports included.

A cycle means two modules each need the other, so neither is the home of its
decision (the captioner factory inside the captioners' base module was one).
The package's own ``__init__`` is left out: it imports ``api`` only on attribute
access, to keep ``import fastsam2`` light.
"""

from __future__ import annotations

import ast
from pathlib import Path

import fastsam2

ROOT = Path(fastsam2.__file__).parent


def _module_names() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = ("fastsam2", *path.relative_to(ROOT).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the fastsam2 modules it imports anywhere in its code."""
    mods = _module_names()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        if name == "fastsam2":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fastsam2"):
                subs = {f"{node.module}.{a.name}" for a in node.names} & mods.keys()
                graph[name] |= subs or ({node.module} & mods.keys())
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names} & mods.keys()
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path ``a -> b -> ... -> a``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for dep in sorted(graph.get(m, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_check_sees_a_lazy_cycle():
    graph = import_graph()
    assert "fastsam2.prompts.caption_vllm" in graph["fastsam2.prompts.captioners"]  # a function-level import
    graph["fastsam2.prompts.caption"].add("fastsam2.prompts.captioners")  # the factory back in the base module
    assert find_cycle(graph) is not None
