"""ONNX -> OpenVINO IR, the IR saved atomically, and IR with fp16 weights."""

from __future__ import annotations

from pathlib import Path

from edgeflow.artifact import Artifact
from edgeflow.backends.base import FloatSources
from edgeflow.errors import ModelLoadError
from edgeflow.io import atomic_path, os_refusal


def convert_to_openvino(onnx_artifact: Artifact, *, path: Path) -> Artifact:
    """Convert an ONNX artifact to OpenVINO IR (.xml + .bin), keeping fp32 weights."""
    import openvino as ov

    from edgeflow.backends.openvino import check_model_file, runtime_message

    check_model_file(onnx_artifact)
    try:
        model = ov.convert_model(str(onnx_artifact.path))
    except Exception as exc:
        if (refused := os_refusal(onnx_artifact.path)) is not None:  # the system, not the file
            raise ModelLoadError(f"cannot read {refused}") from None
        message = runtime_message(exc)
        raise ModelLoadError(f"{onnx_artifact.path}: OpenVINO cannot convert it: {message}") from None
    save_openvino(model, path=path)
    return Artifact(
        format="openvino",
        path=path,
        precision=onnx_artifact.precision,
        input_shape=onnx_artifact.input_shape,
        lineage=[*onnx_artifact.lineage, "onnx->openvino"],
    )


def float_ir(sources: FloatSources) -> Artifact:
    """OpenVINO's float artifact: the run's float ONNX converted to IR (``model_fp32.xml``)."""
    return convert_to_openvino(sources.onnx, path=sources.folder / "model_fp32.xml")


def save_openvino(model, *, path: Path, fp16_weights: bool = False) -> None:
    """Save IR atomically. Weights stay fp32 unless ``fp16_weights`` (OpenVINO's own default is to halve them)."""
    import openvino as ov

    bin_path = path.with_suffix(".bin")
    with atomic_path(path) as temporary_xml:
        ov.save_model(model, str(temporary_xml), compress_to_fp16=fp16_weights)
        temporary_xml.with_suffix(".bin").replace(bin_path)


def compress_openvino_fp16(artifact: Artifact, *, path: Path) -> Artifact:
    """IR with fp16 weights (half the file); the runtime still executes at its inference precision."""
    from edgeflow.backends.openvino import read_model

    save_openvino(read_model(artifact), path=path, fp16_weights=True)
    return Artifact(
        format="openvino", path=path, precision="fp16", input_shape=artifact.input_shape,
        lineage=[*artifact.lineage, "openvino-fp16-weights"],
    )  # fmt: skip
