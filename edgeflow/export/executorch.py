"""ExecuTorch programs (``.pte``) for phones: the torch module exported with ``torch.export`` and lowered whole
to XNNPACK, float or (:mod:`edgeflow.compress.executorch_quantize`) int8.

ExecuTorch is optional (``pip install 'edgeflow[executorch]'``). An operator XNNPACK cannot take would run on
ExecuTorch's portable kernels, which a phone's minimal build may lack and which run far slower: such a model
is refused in one line naming the operator, never shipped half-delegated.
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgeflow.artifact import Artifact
from edgeflow.backends.base import FloatSources
from edgeflow.errors import ConfigError, ModelLoadError, first_line
from edgeflow.io import atomic_path
from edgeflow.profiling.cost import CostStats, artifact_cost

# Graph nodes that are not operators on the image: the delegate call itself and tuple access.
_NOT_OPERATORS = {"getitem", "executorch_call_delegate", "alloc"}


def executorch_available() -> bool:
    try:
        import executorch.exir  # noqa: F401
        import executorch.runtime  # noqa: F401
    except Exception:  # an install without its native parts is as good as none
        return False
    return True


def float_pte(sources: FloatSources) -> Artifact:
    """ExecuTorch's float artifact: the torch model lowered to XNNPACK (``model_fp32.pte``), its cost counted on
    the run's float ONNX."""
    artifact = export_pte(sources.module, input_shape=sources.input_shape, path=sources.folder / "model_fp32.pte",
                          cost=artifact_cost(sources.onnx))  # fmt: skip
    artifact.lineage = [f"torch {sources.model_name}", *artifact.lineage]
    return artifact


def export_pte(
    module: torch.nn.Module, *, input_shape: tuple[int, ...], path: Path, cost: CostStats | None = None
) -> Artifact:
    """``module`` (float, eval) exported with torch.export and lowered to XNNPACK, written to ``path``."""
    example = (torch.zeros(input_shape),)
    try:
        exported = torch.export.export(module.eval(), example)
    except Exception as exc:  # torch.export refuses some Python control flow: say so, in one line
        raise ModelLoadError(f"ExecuTorch could not export the model: {first_line(exc)}") from None
    write_program(exported, path=path, cost=cost)
    return Artifact(format="executorch", path=path, input_shape=tuple(input_shape),
                    lineage=["torch->executorch (torch.export, XNNPACK)"])  # fmt: skip


# Constant methods edgeflow adds to the programs it writes, since the XNNPACK payload is opaque: whether the program
# is int8 (1) or float (0), and the network's params and MACs (counted on its float ONNX). A program written
# elsewhere has none of them.
PRECISION_METHOD = "edgeflow_int8"
COST_METHODS = ("edgeflow_params", "edgeflow_macs")


def write_program(
    exported: torch.export.ExportedProgram, *, path: Path, int8: bool = False, cost: CostStats | None = None
) -> None:
    """Lower ``exported`` to XNNPACK and write the program (saying its precision and ``cost``); refuse one with an
    operator left outside XNNPACK."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        edge = to_edge_transform_and_lower(
            exported, partitioner=[XnnpackPartitioner()], constant_methods=_constants(int8=int8, cost=cost)
        )
    except Exception as exc:
        raise ModelLoadError(f"ExecuTorch could not lower the model to XNNPACK: {first_line(exc)}") from None
    left = undelegated_operators(edge)
    if left:
        raise ModelLoadError(
            f"ExecuTorch: no XNNPACK lowering for {', '.join(left)} (the program would run it on portable kernels, "
            "which a phone build may lack); replace the layer or choose another runtime"
        )
    program = edge.to_executorch()
    with atomic_path(path) as temporary:
        temporary.write_bytes(program.buffer)


def undelegated_operators(edge_program_manager) -> list[str]:
    """The operators (``aten.cumsum``, ...) the partitioner left outside the XNNPACK delegate, on the image's
    data path: copies of constants (MobileNetV3's hard-sigmoid scalars) are not work on the image."""
    names: set[str] = set()
    for method in edge_program_manager.methods:
        program = edge_program_manager.exported_program(method)
        user_inputs = set(program.graph_signature.user_inputs)
        on_path: set = set()
        for node in program.graph_module.graph.nodes:  # topological order
            if node.op == "placeholder":
                if node.name in user_inputs:
                    on_path.add(node)
                continue
            if any(arg in on_path for arg in node.all_input_nodes):
                on_path.add(node)
            if node.op != "call_function" or node not in on_path:
                continue
            if getattr(node.target, "__name__", str(node.target)) in _NOT_OPERATORS:
                continue
            names.add(_operator_name(node.target))
    return sorted(names)


def _operator_name(target) -> str:
    schema = getattr(target, "_schema", None) or getattr(getattr(target, "_op", None), "_schema", None)
    if schema is not None:
        return schema.name.replace("::", ".")
    name = getattr(target, "__name__", None) or str(target)
    return name.rsplit(".", 1)[0] if name.count(".") >= 2 else name


def is_int8_program(artifact: Artifact) -> bool | None:
    """Whether a ``.pte`` is an int8 program, as the program says (edgeflow's own); None for one written
    elsewhere, which does not say."""
    program = _program(artifact)
    if PRECISION_METHOD not in program.method_names:
        return None
    return bool(program.load_method(PRECISION_METHOD).execute([])[0])


def program_cost(artifact: Artifact) -> CostStats:
    """The params and MACs an edgeflow program carries (a program written elsewhere cannot say: an error)."""
    program = _program(artifact)
    if not set(COST_METHODS) <= set(program.method_names):
        raise ConfigError(f"{artifact.path}: this ExecuTorch program does not say its MACs and params (edgeflow's "
                          "programs do); profile the ONNX it was made from for them")  # fmt: skip
    params, macs = (int(program.load_method(name).execute([])[0]) for name in COST_METHODS)
    return CostStats(params=params, macs=macs)


def _program(artifact: Artifact):
    from edgeflow.backends.executorch import check_pte, executorch_runtime

    runtime, _ = executorch_runtime()
    check_pte(artifact.path)
    return runtime.get().load_program(str(artifact.path))


def _constants(*, int8: bool, cost: CostStats | None) -> dict[str, int]:
    constants = {PRECISION_METHOD: int(int8)}
    if cost is not None:
        constants.update(zip(COST_METHODS, (cost.params, cost.macs), strict=True))
    return constants
