"""No import cycle inside the ``fastsam2`` package (static: the source is parsed, nothing imported).

Counted: every ``import`` / ``from ... import`` anywhere in a module, at module level and inside
functions and methods (a deferred import is still a dependency), relative ones resolved.
``from pkg import name`` depends on ``pkg.name`` when that is a module, else on ``pkg``.
Not counted: imports under ``if TYPE_CHECKING:`` (annotations only, never run), and the
implicit import of a module's parent packages (``import a.b.c`` runs ``a/__init__`` and
``a/b/__init__`` first; counting those would make every package with submodules a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "fastsam2"

#: Known edges taken out of the graph, each with the change that removes it.
ALLOWED_EDGES: dict[tuple[str, str], str] = {}


def module_names(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under ``package_dir``."""
    root = package_dir.parent
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every Import / ImportFrom node, skipping ``if TYPE_CHECKING:`` bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (see the module docstring for what counts)."""
    modules = module_names(package_dir)

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in _imports(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    sub = f"{base}.{alias.name}" if base else alias.name
                    targets.append(sub if sub in modules else base)
            for target in targets:
                dep = known(target)
                if dep and dep != mod:
                    graph[mod].add(dep)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    sccs: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return [_cycle_in(graph, comp) for comp in sccs]


def _cycle_in(graph: dict[str, set[str]], comp: list[str]) -> list[str]:
    """A concrete cycle through the component's first module (breadth first: a shortest one)."""
    members, start = set(comp), comp[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return comp


def _without(graph: dict[str, set[str]], edges) -> dict[str, set[str]]:
    return {m: {d for d in deps if (m, d) not in edges} for m, deps in graph.items()}


def test_fastsam2_has_no_import_cycle():
    graph = import_graph(PACKAGE_DIR)
    assert "fastsam2.pipeline" in graph and "fastsam2.config" in graph["fastsam2.pipeline"]  # the graph is real
    cycles = find_cycles(_without(graph, ALLOWED_EDGES))
    assert not cycles, "import cycles in fastsam2:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_allowed_edges_still_exist():
    """An allow-list entry whose edge is gone must go too (so the list only ever shrinks)."""
    graph = import_graph(PACKAGE_DIR)
    stale = [e for e in ALLOWED_EDGES if e[1] not in graph.get(e[0], set())]
    assert not stale, f"remove these ALLOWED_EDGES entries, the imports are gone: {stale}"


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import b\n")
    (pkg / "a.py").write_text("import pkg.sub.b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import x\n")  # deferred, relative: still a cycle
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.a"}
    assert graph["pkg.c"] == set()  # annotations only
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.a"]]
    assert find_cycles(_without(graph, {("pkg.sub.b", "pkg.a")})) == []
