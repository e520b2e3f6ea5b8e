"""The package's layout: no import cycles, and the lower layers never import the higher ones.

The graph is read from the source with ``ast`` (every import, at module level or inside a function: a
cycle hidden behind a lazy import is still a cycle), so it sees what a newcomer reading the code sees.
Imports under ``if TYPE_CHECKING:`` never run and name a type only: the cycle check leaves them out, the
layering checks count them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgeflow"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _type_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            inside |= {id(child) for statement in node.body for child in ast.walk(statement)}
    return inside


def import_graph(*, type_only: bool = True) -> dict[str, set[str]]:
    """Module -> the edgeflow modules it imports (``from pkg import submodule`` counts as the submodule);
    ``type_only=False`` leaves out the imports under ``if TYPE_CHECKING:``."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skipped = set() if type_only else _type_only(tree)
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [
                    f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                    for alias in node.names
                ]
            for target in targets:
                if target in modules and target not in (name, "edgeflow"):
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph(type_only=False))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize(
    "lower, higher",
    [
        ("edgeflow.latency", "edgeflow.netadapt"),
        ("edgeflow.latency", "edgeflow.compress"),
        ("edgeflow.profiling", "edgeflow.compress"),
        ("edgeflow.profiling", "edgeflow.netadapt"),
        ("edgeflow.backends", "edgeflow.profiling.run"),
        ("edgeflow.backends", "edgeflow.workflow"),
        ("edgeflow.compress", "edgeflow.workflow"),
        ("edgeflow.compress", "edgeflow.api"),
        ("edgeflow.export", "edgeflow.compress"),
    ],
)
def test_lower_layers_never_import_higher_ones(lower: str, higher: str) -> None:
    graph = import_graph()
    offenders = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module == lower or module.startswith(lower + ".")
        for target in targets
        if target == higher or target.startswith(higher + ".")
    )
    assert not offenders, offenders


def test_only_the_cli_imports_the_cli() -> None:
    graph = import_graph()
    assert not [module for module, targets in graph.items() if "edgeflow.cli" in targets]


def test_every_public_name_resolves() -> None:
    """``edgeflow.<name>`` for every name of the public API (they are imported lazily, so a moved or removed
    entry would only show when a user first touched it)."""
    import edgeflow

    for name in edgeflow.__all__:
        assert getattr(edgeflow, name) is not None, name
    assert callable(edgeflow.quantize) and edgeflow.quantize.__module__ == "edgeflow.compress.quantize_artifact"
