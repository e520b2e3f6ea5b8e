"""The package's layout: no import cycles, and the lower layers never import the higher ones.

The graph is read from the source with ``ast`` (every import, at module level or inside a function: a
cycle hidden behind a lazy import is still a cycle), so it sees what a newcomer reading the code sees.
Imports under ``if TYPE_CHECKING:`` never run and name a type only: the cycle check leaves them out, the
layering checks count them.
"""

from __future__ import annotations

import ast
from pathlib import Path

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


# The packages (and top-level modules) from the ground floor up: a run's data flows upward through them. A module
# may import from its own layer's packages and from the layers below, never from a layer above: every import
# counts, at module level, inside a function, or under TYPE_CHECKING (a type named from above is still a
# dependency on it).
LAYERS = [
    ["errors", "registry", "config", "io", "progress", "environment", "artifact"],  # records and settings
    ["data"],  # images and splits
    ["backends"],  # runtimes: what each reads, compiles and runs, and its declarations
    ["device"],  # descriptors: which runtimes a device has
    ["profiling"],  # the timing loop, the in-turn function, memory, MACs, compile-and-time here
    ["models"],  # architectures, weights, checkpoints
    ["export"],  # torch -> ONNX, IR, .tflite, .pte
    ["accuracy"],  # top-1 through a runtime, parity
    ["compress"],  # the quantization methods
    ["latency"],  # estimates: roofline, lookup tables
    ["targets"],  # where work runs: here, the agent, the tools, an estimate
    ["recipe"],  # the pipeline's settings, validated against the declarations below
    ["source", "train"],  # where a model comes from; training and fine-tuning
    ["variants", "mixed_precision", "report"],  # each recipe variant built; mixed precision; report and bundle
    ["cluster"],  # Ray
    ["netadapt"],  # the search
    ["workflow", "quantize_file"],  # the steps of optimize; edgeflow quantize
    ["nightly"],  # matrices and their history
    ["api"],  # the public verbs
    ["cli"],  # the commands
]


def _unit(module: str) -> str:
    """A module's package under edgeflow (or the top-level module itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_violations(graph: dict[str, set[str]], layers: list[list[str]]) -> list[str]:
    """Every import of a module from a higher layer's, as ``module imports target (layer a < layer b)``."""
    rank = {name: index for index, layer in enumerate(layers) for name in layer}
    found = []
    for module, targets in graph.items():
        for target in targets:
            here, there = _unit(module), _unit(target)
            if "edgeflow" in (here, there) or here == there:
                continue
            if rank[there] > rank[here]:
                found.append(f"{module} imports {target} ({here} is below {there})")
    return sorted(found)


def test_every_package_has_a_layer() -> None:
    units = {_unit(module) for module in import_graph()} - {"edgeflow"}
    ranked = {name for layer in LAYERS for name in layer}
    assert units == ranked, f"not in LAYERS: {sorted(units - ranked)}; gone: {sorted(ranked - units)}"


def test_packages_import_only_their_own_layer_and_below() -> None:
    violations = layer_violations(import_graph(), LAYERS)
    assert not violations, "\n".join(violations)


def test_the_layer_check_finds_an_import_from_above() -> None:
    graph = {"edgeflow.backends.x": {"edgeflow.report.y"}, "edgeflow.report.y": {"edgeflow.backends.x"}}
    assert layer_violations(graph, [["backends"], ["report"]]) == [
        "edgeflow.backends.x imports edgeflow.report.y (backends is below report)"
    ]


def test_the_cli_imports_only_the_api() -> None:
    """One front door: every command goes through edgeflow.api, as the Python API and the tests do."""
    assert import_graph()["edgeflow.cli"] == {"edgeflow.api"}


def test_only_the_cli_imports_the_cli() -> None:
    graph = import_graph()
    assert not [module for module, targets in graph.items() if "edgeflow.cli" in targets]


def test_every_public_name_resolves() -> None:
    """``edgeflow.<name>`` for every name of the public API (they are imported lazily, so a moved or removed
    entry would only show when a user first touched it)."""
    import edgeflow

    for name in edgeflow.__all__:
        assert getattr(edgeflow, name) is not None, name
    assert callable(edgeflow.quantize) and edgeflow.quantize.__module__ == "edgeflow.quantize_file"
