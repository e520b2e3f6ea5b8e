"""Export: torch -> ONNX (with numerical parity checked against torch) -> OpenVINO IR."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from edgeflow.artifact import Artifact
from edgeflow.errors import ModelLoadError
from edgeflow.io import atomic_path


class ParityStats(BaseModel):
    """How closely an exported artifact reproduces torch on the same inputs."""

    reference: str
    runtime: str
    samples: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float


def export_onnx(module, *, input_shape: Sequence[int], path: Path, opset: int = 17) -> Artifact:
    """Export a torch module to ONNX with a fixed input shape (what ships to an edge device)."""
    import onnx
    import torch

    module = module.eval()
    example = torch.zeros(tuple(input_shape))
    with atomic_path(path) as temporary, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # The TorchScript exporter is 10x faster than the dynamo one on these CNNs and exact.
            torch.onnx.export(
                module,
                (example,),
                str(temporary),
                dynamo=False,
                opset_version=opset,
                input_names=["input"],
                output_names=["logits"],
                do_constant_folding=True,
            )
        except Exception:  # removed or failing legacy exporter: fall back to torch.export
            torch.onnx.export(
                module,
                (example,),
                str(temporary),
                dynamo=True,
                opset_version=max(opset, 18),
                input_names=["input"],
                output_names=["logits"],
                external_data=False,
            )
        onnx.checker.check_model(str(temporary))
    return Artifact(format="onnx", path=path, precision="fp32", input_shape=tuple(input_shape))


def convert_to_openvino(onnx_artifact: Artifact, *, path: Path) -> Artifact:
    """Convert an ONNX artifact to OpenVINO IR (.xml + .bin), keeping fp32 weights."""
    import openvino as ov

    from edgeflow.backends.openvino import check_model_file, runtime_message

    check_model_file(onnx_artifact)
    try:
        model = ov.convert_model(str(onnx_artifact.path))
    except Exception as exc:
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


def save_openvino(model, *, path: Path) -> None:
    """Save IR atomically; ``compress_to_fp16=False`` so an fp32 artifact really holds fp32 weights."""
    import openvino as ov

    bin_path = path.with_suffix(".bin")
    with atomic_path(path) as temporary_xml:
        ov.save_model(model, str(temporary_xml), compress_to_fp16=False)
        temporary_xml.with_suffix(".bin").replace(bin_path)


def measure_parity(reference: np.ndarray, candidate: np.ndarray, *, reference_name: str, runtime: str) -> ParityStats:
    """Compare two stacks of logits (N x classes)."""
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    agreement = float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1)))
    return ParityStats(
        reference=reference_name,
        runtime=runtime,
        samples=int(reference.shape[0]),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        top1_agreement=agreement,
    )
