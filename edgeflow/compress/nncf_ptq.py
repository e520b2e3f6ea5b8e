"""INT8 post-training quantization with NNCF, calibrated on the train split.

OpenVINO IR in, IR out; or ONNX in, QDQ ONNX out (the format TensorRT and mobile runtimes consume).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeflow.artifact import Artifact
from edgeflow.backends.openvino import read_model, static_input_shape
from edgeflow.compress.squeeze_excitation import find_gates, node_names
from edgeflow.compress.stats import QuantizationStats, summarize
from edgeflow.data import ImageDataset, calibration_subset
from edgeflow.data.splits import image_stacks
from edgeflow.errors import DataError, ShapeError
from edgeflow.export.openvino import save_openvino
from edgeflow.recipe import QuantizeConfig

_QUANTIZED_OPS = {"FakeQuantize", "FakeConvert"}
# Activations whose outputs go negative: symmetric (performance) activation ranges waste half their codes.
_NEGATIVE_ACTIVATIONS = {"HSwish", "Swish", "Gelu", "Elu", "PRelu", "Mish", "SoftPlus", "Selu"}
MIN_CALIBRATION_SAMPLES = 8


def is_quantized(model) -> bool:
    """True when an OpenVINO model already carries quantization (FakeQuantize or int8 weights)."""
    from edgeflow.compress.stats import layer_precisions

    if any(op.get_type_name() in _QUANTIZED_OPS for op in model.get_ordered_ops()):
        return True
    quantized, _ = layer_precisions(model)
    return bool(quantized)


def resolve_preset(model, config: QuantizeConfig) -> str:
    """``auto`` (and ``fastest``, when one preset must be named): mixed (asymmetric activations) for
    h-swish/swish/GELU networks, else performance."""
    if config.preset not in ("auto", "fastest"):
        return config.preset
    kinds = {op.get_type_name() for op in model.get_ordered_ops()}
    return "mixed" if kinds & _NEGATIVE_ACTIVATIONS else "performance"


@contextlib.contextmanager
def quiet_nncf() -> Iterator[None]:
    """NNCF logs per step and imports torch's C++ extension helper, which warns about CUDA."""
    quiet = [logging.getLogger(name) for name in ("nncf", "torch.utils.cpp_extension")]
    previous = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(quiet, previous, strict=True):
            logger.setLevel(level)


def calibration_dataset(
    dataset: ImageDataset, *, size: int, input_shape: tuple[int, ...], seed: int, input_name: str | None = None
):
    """An ``nncf.Dataset`` of images from the train split in the model's batch size, checked against its input.

    With ``input_name`` each item is a feed dict, as NNCF's ONNX backend expects.
    """
    import nncf

    subset = calibration_subset(dataset, size=size, seed=seed)
    if len(subset) < min(size, MIN_CALIBRATION_SAMPLES):
        raise DataError(
            f"calibration needs at least {min(size, MIN_CALIBRATION_SAMPLES)} images; the train split has {len(subset)}"
        )
    batches = image_stacks(subset, input_shape=input_shape, what="calibration")

    def transform(array):
        return {input_name: array} if input_name is not None else array

    return nncf.Dataset(batches, transform), len(subset)


def ignored_scope(config: QuantizeConfig, *, gates: list[str] | None = None):
    """NNCF's ignored scope: the recipe's, plus ``gates`` (node names kept in float)."""
    import nncf

    scope = config.ignored_scope
    names = [*scope.names, *(gates or [])]
    if not (names or scope.patterns or scope.types):
        return None
    return nncf.IgnoredScope(names=names, patterns=scope.patterns, types=scope.types, validate=False)


def float_gates(model, config: QuantizeConfig) -> list[list[str]]:
    """The squeeze-and-excitation gates of an OpenVINO ``model`` that stay in float, by friendly name (those
    hold the ONNX node names too, so the names serve NNCF's ONNX backend as well)."""
    return find_gates(model) if config.squeeze_excitation == "float" else []


def nncf_settings(model, config: QuantizeConfig, *, subset: int, gates: list[list[str]]) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "preset": resolve_preset(model, config),
        "model_type": config.model_type,
        "subset_size": subset,
        "fast_bias_correction": config.fast_bias_correction,
        "squeeze_excitation": config.squeeze_excitation,
    }
    if config.squeeze_excitation == "float":
        settings["float_gates"] = len(gates)
    scope = config.ignored_scope
    if scope.names or scope.patterns or scope.types:
        settings["ignored_scope"] = scope.model_dump()
    return settings


def nncf_quantize_arguments(
    settings: dict[str, Any], config: QuantizeConfig, *, gates: list[list[str]]
) -> dict[str, Any]:
    import nncf

    arguments: dict[str, Any] = {
        "preset": nncf.QuantizationPreset(settings["preset"]),
        "subset_size": settings["subset_size"],
        "fast_bias_correction": settings["fast_bias_correction"],
    }
    if config.model_type == "transformer":
        arguments["model_type"] = nncf.ModelType.TRANSFORMER
    scope = ignored_scope(config, gates=node_names(gates))
    if scope is not None:
        arguments["ignored_scope"] = scope
    return arguments


def quantize_nncf(
    artifact: Artifact, *, calibration: ImageDataset, config: QuantizeConfig, path: Path, seed: int = 0
) -> tuple[Artifact, QuantizationStats]:
    """NNCF PTQ. An ``.xml`` ``path`` gives OpenVINO IR; an ``.onnx`` one (from an ONNX artifact) QDQ ONNX."""
    import nncf

    model = read_model(artifact)
    if is_quantized(model):
        raise ShapeError(f"{artifact.path} is already quantized; give the float model")
    shape = static_input_shape(
        model.inputs[0].get_partial_shape(), source=str(artifact.path), given=artifact.input_shape
    )
    input_name = model.inputs[0].get_any_name() if path.suffix == ".onnx" else None
    dataset, subset = calibration_dataset(
        calibration, size=config.subset_size, input_shape=shape, seed=seed, input_name=input_name
    )
    gates = float_gates(model, config)
    settings = nncf_settings(model, config, subset=subset, gates=gates)
    arguments = nncf_quantize_arguments(settings, config, gates=gates)
    with quiet_nncf():
        if path.suffix == ".onnx":
            quantized_onnx = _quantize_onnx_proto(artifact, dataset, arguments)
            _save_onnx(quantized_onnx, path)
            quantized_view = read_model(Artifact(format="onnx", path=path))
            result_format = "onnx"
        else:
            quantized_view = nncf.quantize(model, dataset, **arguments)
            save_openvino(quantized_view, path=path)
            result_format = "openvino"
    summary = summarize(
        quantized_view, method="nncf-ptq", settings=settings,
        reason="not quantized by NNCF's CNN patterns (e.g. a layer whose input is not quantizable)",
        gates=node_names(gates),
    )  # fmt: skip
    result = Artifact(
        format=result_format, path=path, precision="int8", input_shape=shape,
        lineage=[*artifact.lineage, f"nncf-ptq(preset={settings['preset']}, subset={subset})"],
    )  # fmt: skip
    return result, summary


def _quantize_onnx_proto(artifact: Artifact, dataset, arguments: dict[str, Any]):
    import nncf
    import onnx

    if artifact.format != "onnx":
        raise ShapeError(f"NNCF builds QDQ ONNX from an ONNX artifact, not from {artifact.format}")
    proto = onnx.load(str(artifact.path))
    return nncf.quantize(proto, dataset, **arguments)


def _save_onnx(proto, path: Path) -> None:
    import onnx

    from edgeflow.io import atomic_path

    with atomic_path(path) as temporary:
        onnx.save(proto, str(temporary))
