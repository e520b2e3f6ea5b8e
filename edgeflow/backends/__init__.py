"""Runtimes edgeflow can compile, run and time artifacts with. Registered lazily by import path."""

from __future__ import annotations

from pathlib import Path

from edgeflow.artifact import Artifact
from edgeflow.backends.base import Backend, Compiled, FloatSources, RuntimeSettings
from edgeflow.errors import ConfigError, ModelLoadError
from edgeflow.registry import Registry, load_entry

BACKENDS: Registry[type[Backend]] = Registry("backend")
BACKENDS.register("openvino", "edgeflow.backends.openvino:OpenVINOBackend", aliases=("ov",))
BACKENDS.register("onnxruntime", "edgeflow.backends.onnxruntime:OnnxRuntimeBackend", aliases=("ort",))
BACKENDS.register("torch", "edgeflow.backends.torch_eager:TorchEagerBackend")
BACKENDS.register("litert", "edgeflow.backends.litert:LiteRTBackend", aliases=("tflite",))
BACKENDS.register("tensorrt", "edgeflow.backends.tensorrt:TensorRTBackend", aliases=("trt",))
BACKENDS.register("executorch", "edgeflow.backends.executorch:ExecuTorchBackend", aliases=("et", "pte"))


def get_backend(name: str) -> Backend:
    """An instance of the backend registered as ``name``."""
    return BACKENDS.get(name)()


def all_backends() -> list[Backend]:
    """Every registered backend, in registration order."""
    return [get_backend(name) for name in BACKENDS.names(ordered=True)]


def host_runtime(artifact: Artifact) -> str:
    """The backend of this host that runs ``artifact``'s format in f32: where accuracy is computed when the
    device's own runtime is not at hand (an estimated latency, a tool that only times), and holdout budgets are
    judged (each backend declares the formats it does this for: ONNX Runtime for ONNX, OpenVINO for IR, ...)."""
    return format_owner(artifact.format).name


def artifact_from_path(path: str | Path) -> Artifact:
    """Recognize an exported artifact by its suffix, as the backends declare them (``.onnx``, OpenVINO ``.xml``
    with its ``.bin``, LiteRT ``.tflite``, ...)."""
    path = Path(path)
    owners = {suffix: backend for backend in all_backends() for suffix in backend.suffixes}
    if not path.exists():
        raise ModelLoadError(f"artifact not found: {path}")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder; give the {', '.join(owners)} file")
    owner = owners.get(path.suffix.lower())
    if owner is None:
        raise ModelLoadError(f"{path}: unsupported artifact type {path.suffix or '(none)'}; expected "
                             f"{', '.join(owners)}")  # fmt: skip
    artifact = Artifact(format=owner.computes_accuracy_for[0], path=path)
    missing = [file for file in artifact.files if not file.exists()]
    if missing:
        raise ModelLoadError(f"{path}: its weights file {missing[0].name} is missing (it lies beside the "
                             f"{owner.name} file)")  # fmt: skip
    return artifact


def format_owner(format: str) -> Backend:
    """The backend that computes accuracy for ``format`` on this host (:attr:`Backend.computes_accuracy_for`)."""
    for backend in all_backends():
        if format in backend.computes_accuracy_for:
            return backend
    raise ConfigError(f"no runtime of this host reads {format} artifacts")


def is_quantized_artifact(artifact: Artifact) -> bool | None:
    """Whether a file already carries quantization, asked of the runtime that owns its format (an ONNX read as
    ONNX: QDQ pairs, QLinear* or *Integer nodes; an IR through OpenVINO; a ``.tflite`` through LiteRT's
    interpreter; a ``.pte`` as edgeflow's programs say); None where the file cannot tell."""
    owner = format_owner(artifact.format)
    if owner.quantized_check is None:
        return None
    return load_entry(owner.quantized_check)(artifact)


def float_artifact(backend: str, sources: FloatSources) -> Artifact:
    """The float artifact ``backend``'s variants are built from: its exporter's (OpenVINO's IR, LiteRT's
    ``.tflite``, ...), or the float ONNX itself."""
    exporter = get_backend(backend).exporter
    return sources.onnx if exporter is None else load_entry(exporter)(sources)


def fp16_artifact(backend: str, base: Artifact, *, path: Path) -> Artifact:
    """``base`` with fp16 weights for ``backend``, written to ``path``."""
    converter = get_backend(backend).fp16_converter
    if converter is None:
        raise ConfigError(f"the {backend} backend has no fp16 artifact")
    return load_entry(converter)(base, path=path)


def searchable_backends() -> list[str]:
    """The backends NetAdapt's candidates and the lookup table's blocks can be timed with, in preference order."""
    return [backend.name for backend in all_backends() if backend.searchable]


__all__ = [
    "BACKENDS",
    "Backend",
    "Compiled",
    "FloatSources",
    "RuntimeSettings",
    "all_backends",
    "artifact_from_path",
    "float_artifact",
    "fp16_artifact",
    "format_owner",
    "get_backend",
    "host_runtime",
    "is_quantized_artifact",
    "searchable_backends",
]
