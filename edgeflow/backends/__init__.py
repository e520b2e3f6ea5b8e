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
BACKENDS.register("tensorrt", "edgeflow.backends.tensorrt:TensorRTBackend", aliases=("trt",))


def get_backend(name: str) -> Backend:
    """An instance of the backend registered as ``name``."""
    return BACKENDS.get(name)()


def choose_backend(artifact: Artifact, device: DeviceSpec, *, backend: str | None = None) -> str:
    """The requested backend, or the device's most preferred runtime that reads this format."""
    if backend is not None:
        name = get_backend(backend).name
        if name not in device.runtimes:
            raise ConfigError(f"device {device.name} has no {name} runtime (it has: {', '.join(device.runtimes)})")
        if artifact.format not in get_backend(name).formats:
            raise ConfigError(f"the {name} backend cannot run {artifact.format} artifacts")
        return name
    for name in device.runtimes:
        if artifact.format in get_backend(name).formats:
            return name
    raise ConfigError(f"device {device.name} has no runtime for {artifact.format} artifacts")


__all__ = ["BACKENDS", "Backend", "Compiled", "choose_backend", "get_backend"]
