"""Runtimes edgeflow can compile, run and time artifacts with. Registered lazily by import path."""

from __future__ import annotations

from edgeflow.backends.base import Backend, Compiled
from edgeflow.registry import Registry

BACKENDS: Registry[type[Backend]] = Registry("backend")
BACKENDS.register("openvino", "edgeflow.backends.openvino:OpenVINOBackend", aliases=("ov",))
BACKENDS.register("onnxruntime", "edgeflow.backends.onnxruntime:OnnxRuntimeBackend", aliases=("ort",))
BACKENDS.register("torch", "edgeflow.backends.torch_eager:TorchEagerBackend")
BACKENDS.register("tensorrt", "edgeflow.backends.tensorrt:TensorRTBackend", aliases=("trt",))


def get_backend(name: str) -> Backend:
    """An instance of the backend registered as ``name``."""
    return BACKENDS.get(name)()


__all__ = ["BACKENDS", "Backend", "Compiled", "get_backend"]
