"""Runtimes edgeflow can compile, run and time artifacts with. Registered lazily by import path."""

from __future__ import annotations

from edgeflow.artifact import Artifact
from edgeflow.backends.base import Backend, Compiled
from edgeflow.device import DeviceSpec
from edgeflow.errors import ConfigError
from edgeflow.registry import Registry

BACKENDS: Registry[type[Backend]] = Registry("backend")
BACKENDS.register("openvino", "edgeflow.backends.openvino:OpenVINOBackend", aliases=("ov",))
BACKENDS.register("onnxruntime", "edgeflow.backends.onnxruntime:OnnxRuntimeBackend", aliases=("ort",))
BACKENDS.register("torch", "edgeflow.backends.torch_eager:TorchEagerBackend")
BACKENDS.register("litert", "edgeflow.backends.litert:LiteRTBackend", aliases=("tflite",))
BACKENDS.register("tensorrt", "edgeflow.backends.tensorrt:TensorRTBackend", aliases=("trt",))


def get_backend(name: str) -> Backend:
    """An instance of the backend registered as ``name``."""
    return BACKENDS.get(name)()


# The runtime of this host that reads each artifact format in f32: where accuracy is computed when the device's
# own runtime is not at hand (an estimated latency, a tool that only times), and holdout budgets are judged.
_HOST_RUNTIME = {"onnx": "onnxruntime", "openvino": "openvino", "litert": "litert"}


def host_runtime(artifact: Artifact) -> str:
    """The backend of this host that runs ``artifact``'s format (ONNX Runtime for ONNX, OpenVINO for IR, LiteRT's
    interpreter for ``.tflite``)."""
    return _HOST_RUNTIME[artifact.format]


def choose_backend(artifact: Artifact, device: DeviceSpec, *, backend: str | None = None) -> str:
    """The requested backend, or the device's most preferred runtime that reads this file (an ONNX already
    quantized with QLinear* operators goes to ONNX Runtime where OpenVINO cannot read it)."""
    readable = [name for name in device.runtimes if artifact.format in get_backend(name).formats]
    refusals = {}
    if backend is not None:
        name = get_backend(backend).name
        if name not in device.runtimes:
            raise ConfigError(f"device {device.name} has no {name} runtime (it has: {', '.join(device.runtimes)})")
        if artifact.format not in get_backend(name).formats:
            raise ConfigError(f"the {name} backend cannot run {artifact.format} artifacts")
        readable = [name]
    for name in readable:
        why = get_backend(name).cannot_read(artifact)
        if why is None:
            return name
        refusals[name] = why
    if not refusals:
        raise ConfigError(f"device {device.name} has no runtime for {artifact.format} artifacts")
    others = [name for name in device.runtimes if name not in refusals and artifact.format in get_backend(name).formats]
    hint = f"; try --backend {others[0]}" if backend is not None and others else ""
    reasons = "; ".join(f"{name}: {why}" for name, why in refusals.items())
    raise ConfigError(f"no runtime of {device.name} that was tried can read {artifact.path}: {reasons}{hint}")


__all__ = ["BACKENDS", "Backend", "Compiled", "choose_backend", "get_backend", "host_runtime"]
