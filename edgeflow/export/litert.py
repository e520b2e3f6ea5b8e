"""torch -> LiteRT (``.tflite``) with Google's own converter, ``litert-torch`` (``torch.export``, then LiteRT's
lowering), and the float16-weights variant with LiteRT's quantizer (``ai-edge-quantizer``'s float casting).

Both are optional (``pip install 'edgeflow[litert]'``); :func:`litert_available` says whether they are here.
The input keeps torch's NCHW layout unless ``layout="NHWC"`` (``litert_torch.to_channel_last_io``: the
layout most TensorFlow-era apps feed); the file records nothing of it, so the bundle's manifest says which.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from edgeflow.artifact import Artifact
from edgeflow.backends.base import FloatSources
from edgeflow.backends.litert import litert_available, require_litert  # noqa: F401 - the extra's check
from edgeflow.errors import ModelLoadError, first_line
from edgeflow.io import atomic_path


def export_tflite(
    module: torch.nn.Module, *, input_shape: tuple[int, ...], path: Path, layout: str = "NCHW"
) -> Artifact:
    """``module`` (float, eval) converted to a float32 ``.tflite`` at ``path``; an operator the converter cannot
    lower is one error naming the operator and the layer that calls it."""
    require_litert()
    import litert_torch

    if "LITERT_TORCH_SHOW_PROGRESS" not in os.environ:  # edgeflow's own progress says what runs
        litert_torch.config.show_progress = False
    module = module.eval()
    example = torch.zeros(input_shape)
    if layout == "NHWC":
        module = litert_torch.to_channel_last_io(module, args=[0])
        example = example.permute(0, 2, 3, 1).contiguous()
    try:
        converted = litert_torch.convert(module, (example,))
    except Exception as exc:  # torch.export or LiteRT's lowering refused something: say what, in one line
        raise ModelLoadError(
            f"LiteRT could not convert the model: {_conversion_problem(exc, module, example)}"
        ) from None
    with atomic_path(path) as temporary:
        converted.export(str(temporary))
    lineage = ["torch->litert (litert-torch)" + (", NHWC input" if layout == "NHWC" else "")]
    return Artifact(format="litert", path=path, input_shape=tuple(input_shape), lineage=lineage)


def float_tflite(sources: FloatSources) -> Artifact:
    """LiteRT's float artifact: the torch model converted to ``model_fp32.tflite`` (the recipe's input layout)."""
    layout = sources.export.litert_layout if sources.export is not None else "NCHW"
    artifact = export_tflite(
        sources.module, input_shape=sources.input_shape, path=sources.folder / "model_fp32.tflite", layout=layout
    )
    artifact.lineage = [f"torch {sources.model_name}", *artifact.lineage]
    return artifact


def _conversion_problem(exc: Exception, module: torch.nn.Module, example: torch.Tensor) -> str:
    """The converter's complaint as one line: the operator it names, with the module that calls it where
    ``torch.export`` can tell (its ``nn_module_stack``)."""
    text = str(exc).strip()
    first = first_line(exc, limit=240)
    operator = re.search(r"\b(aten[.:]+\w+(?:\.\w+)?)", text)
    if operator is None:
        return first
    name = operator.group(1).replace("::", ".")
    layer = _layer_calling(module, example, name)
    where = f" in layer {layer}" if layer else ""
    return f"operator {name}{where} has no LiteRT lowering ({first})"


def _layer_calling(module: torch.nn.Module, example: torch.Tensor, operator: str) -> str | None:
    """The module path of the first node of ``torch.export``'s graph that calls ``operator`` (compared by its
    base name: the converter names the decomposed form, ``aten._linalg_det``, of what the graph calls,
    ``aten.linalg_det``)."""
    try:
        graph = torch.export.export(module, (example,)).graph
    except Exception:
        return None
    wanted = _base_name(operator)
    for node in graph.nodes:
        if node.op != "call_function" or _base_name(str(node.target)) != wanted:
            continue
        stack = node.meta.get("nn_module_stack") or {}
        if not stack:
            return node.name
        path, kind = list(stack.values())[-1]
        return f"{path} ({getattr(kind, '__name__', str(kind).rpartition('.')[2])})"
    return None


def _base_name(operator: str) -> str:
    """``aten._linalg_det.default`` -> ``linalg_det``."""
    parts = operator.split(".")
    return parts[1].strip("_") if len(parts) > 1 and parts[0] == "aten" else operator


def compress_tflite_fp16(base: Artifact, *, path: Path) -> Artifact:
    """The float ``.tflite`` with float16 weights (LiteRT's quantizer, float casting of every supported op's
    weights): half the file; XNNPACK computes in float32 after widening them at load."""
    require_litert()
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    tool = quantizer.Quantizer(str(base.path))
    tool.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                algorithm_key=AlgorithmName.FLOAT_CASTING)  # fmt: skip
    result = tool.quantize(enable_progress_report=False)
    with atomic_path(path) as temporary:
        temporary.write_bytes(bytes(result.quantized_model))
    return Artifact(format="litert", path=path, precision="fp16", input_shape=base.input_shape,
                    lineage=[*base.lineage, "fp16 weights (ai-edge-quantizer float casting)"])  # fmt: skip
