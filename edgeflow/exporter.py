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
    """How closely one artifact reproduces a reference (torch, or the float artifact) on the same inputs."""

    reference: str
    runtime: str
    samples: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    cosine_similarity: float  # mean over samples of the cosine between the two logit vectors


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


def measure_parity(reference: np.ndarray, candidate: np.ndarray, *, reference_name: str, runtime: str) -> ParityStats:
    """Compare two stacks of logits (N x classes) computed on the same inputs."""
    reference = reference.astype(np.float64)
    candidate = candidate.astype(np.float64)
    diff = np.abs(reference - candidate)
    agreement = float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1)))
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    cosine = np.sum(reference * candidate, axis=1) / np.where(norms == 0, 1.0, norms)
    return ParityStats(
        reference=reference_name,
        runtime=runtime,
        samples=int(reference.shape[0]),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        top1_agreement=agreement,
        cosine_similarity=float(cosine.mean()),
    )
