"""Build the artifact of each recipe variant from the run's float artifacts (one function per kind)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeflow.artifact import Artifact
from edgeflow.compress.summary import QuantizationSummary
from edgeflow.data import DataSplits
from edgeflow.errors import ConfigError
from edgeflow.progress import Progress
from edgeflow.recipe import VariantSpec


@dataclass
class FloatArtifacts:
    """What every variant is built from: the float ONNX, its IR (if any variant runs OpenVINO), the torch model."""

    onnx: Artifact
    openvino: Artifact | None
    module: Any  # torch module, or None for an ONNX input
    input_shape: tuple[int, ...]


def build_variant(
    variant: VariantSpec,
    *,
    floats: FloatArtifacts,
    splits: DataSplits,
    folder: Path,
    seed: int = 0,
    progress: Progress | None = None,
    file_stem: str | None = None,
) -> tuple[Artifact, QuantizationSummary | None]:
    """The artifact ``variant`` runs, written into ``folder`` (as ``model_<variant>`` unless ``file_stem``),
    and what quantization did (if any)."""
    if variant.backend == "torch":
        if floats.module is None:
            raise ConfigError(f"variant {variant.name}: an ONNX model has no torch module to run")
        artifact = Artifact(
            format="torch", path=folder / "model.pt", module=floats.module, input_shape=floats.input_shape,
            lineage=["torch"],
        )  # fmt: skip
        return artifact, None
    base = floats.onnx if variant.backend == "onnxruntime" else floats.openvino
    assert base is not None, "the OpenVINO IR is built whenever a variant runs on openvino"
    if variant.precision in ("fp32", "bf16"):  # bf16 is an execution precision of the fp32 artifact
        return base, None
    suffix = ".onnx" if variant.backend == "onnxruntime" else ".xml"
    path = folder / f"{file_stem or 'model_' + variant.name}{suffix}"
    if variant.precision == "fp16":
        return _fp16(base, path=path), None
    return _int8(variant, base=base, floats=floats, splits=splits, path=path, seed=seed, progress=progress)


def _fp16(base: Artifact, *, path: Path) -> Artifact:
    if base.format == "onnx":
        from edgeflow.compress.onnx_quantize import convert_onnx_fp16

        return convert_onnx_fp16(base, path=path)
    from edgeflow.exporter import compress_openvino_fp16

    return compress_openvino_fp16(base, path=path)


def _int8(
    variant: VariantSpec,
    *,
    base: Artifact,
    floats: FloatArtifacts,
    splits: DataSplits,
    path: Path,
    seed: int,
    progress: Progress | None,
) -> tuple[Artifact, QuantizationSummary]:
    config = variant.quantize
    assert config is not None
    if config.method == "nncf-ptq":
        from edgeflow.compress.quantize import quantize_nncf

        return quantize_nncf(base, calibration=splits.train, config=config, path=path, seed=seed)
    if config.method == "nncf-accuracy-control":
        from edgeflow.compress.accuracy_control import quantize_with_accuracy_control

        return quantize_with_accuracy_control(
            base, calibration=splits.train, holdout=splits.holdout, config=config, path=path, seed=seed
        )
    if config.method == "nncf-qat":
        if floats.module is None:
            raise ConfigError(f"variant {variant.name}: quantization-aware training needs a torch model, not ONNX")
        from edgeflow.compress.qat import quantization_aware_training

        return quantization_aware_training(
            floats.module, splits=splits, config=config, input_shape=floats.input_shape, path=path, seed=seed,
            progress=progress,
        )  # fmt: skip
    if config.method == "ort-static":
        from edgeflow.compress.onnx_quantize import quantize_onnx_static

        return quantize_onnx_static(base, calibration=splits.train, config=config, path=path, seed=seed)
    if config.method == "ort-dynamic":
        from edgeflow.compress.onnx_quantize import quantize_onnx_dynamic

        return quantize_onnx_dynamic(base, config=config, path=path)
    raise ConfigError(f"variant {variant.name}: unknown quantization method {config.method}")
