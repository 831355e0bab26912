"""No import cycles among napari_histo modules, counting imports inside functions too.

An in-function import that exists only to dodge a cycle hides the cycle from Python but
not from the design: the two modules still depend on each other. This test builds the
module import graph of ``src/napari_histo`` from the AST (every ``import`` and
``from ... import`` anywhere in a module: top level, functions, ``TYPE_CHECKING`` blocks)
and asserts it has no cycle.

One documented exception: an import of a package's ``__init__`` from one of its own
submodules is not counted. Package ``__init__`` modules only re-export their submodules'
public names (``engine/inference/__init__.py`` imports ``engine.inference.predict``), so a
submodule importing its package would otherwise always look like a cycle although nothing
in the package depends on it. Imports of *other* packages' ``__init__`` count as usual.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "napari_histo"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest napari_histo module that ``name`` names (``a.b.func`` -> ``a.b``)."""
    while name:
        if name in modules:
            return name
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return None


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if _is_package(name, modules) else name.rsplit(".", 1)[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                targets.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                # ``from pkg import submodule`` names a module; ``from mod import func`` does not.
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    deps: set[str] = set()
    for target in targets:
        if not (target == PACKAGE or target.startswith(PACKAGE + ".")):
            continue
        resolved = _resolve(target, modules)
        if resolved is None or resolved == name:
            continue
        # Documented exception: a submodule importing its own package's __init__ (re-exports).
        if _is_package(resolved, modules) and name.startswith(resolved + "."):
            continue
        deps.add(resolved)
    return deps


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_graph_sees_function_level_imports() -> None:
    """The graph is not just top-level imports: a known in-function import shows up."""
    graph = import_graph()
    assert len(graph) > 50
    assert all(dep.startswith(PACKAGE) for deps in graph.values() for dep in deps)
    # predict opens a path with open_slide, imported inside _open (io stays lazy)
    assert "napari_histo.io.slide" in graph["napari_histo.engine.inference.predict"]


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert cycles == [], "import cycles among napari_histo modules:\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )
