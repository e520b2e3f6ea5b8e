"""Compression steps: each takes an artifact and returns a new one with its lineage.

Quantization methods are registered here by import path (importing edgeflow never imports NNCF, ONNX
Runtime's quantizer or LiteRT's); each declares itself in its own module (:class:`QuantizationMethod`).
"""

from __future__ import annotations

from edgeflow.compress.method import QuantizationMethod, QuantizeJob
from edgeflow.errors import ConfigError
from edgeflow.registry import Registry

METHODS: Registry[type[QuantizationMethod]] = Registry("quantization method")
METHODS.register("nncf-ptq", "edgeflow.compress.nncf_ptq:NncfPtq")
METHODS.register("nncf-accuracy-control", "edgeflow.compress.accuracy_control:NncfAccuracyControl")
METHODS.register("nncf-qat", "edgeflow.compress.qat:NncfQat")
METHODS.register("ort-static", "edgeflow.compress.ort_quantize:OrtStatic")
METHODS.register("ort-dynamic", "edgeflow.compress.ort_quantize:OrtDynamic")
METHODS.register("litert-static", "edgeflow.compress.litert_quantize:LiteRTStatic")
METHODS.register("executorch-pt2e", "edgeflow.compress.executorch_quantize:ExecuTorchPt2e")

AUTO = "auto"


def get_method(name: str) -> QuantizationMethod:
    """The method registered as ``name``."""
    return METHODS.get(name)()


def all_methods() -> list[QuantizationMethod]:
    return [get_method(name) for name in METHODS.names(ordered=True)]


def methods_for(backend: str) -> list[str]:
    """The methods that build INT8 artifacts for ``backend``, in registration order."""
    return [method.name for method in all_methods() if backend in method.backends]


def auto_methods(backend: str, *, default: str | None, with_module: bool = True) -> tuple[str, ...]:
    """What ``auto`` tries for ``backend``, in order: its ``default`` method, then the other methods that serve
    it, cheapest tier first (a method that needs the torch model only ``with_module``)."""
    serving = [method for method in all_methods() if backend in method.backends and method.tier is not None]
    if not with_module:
        serving = [method for method in serving if not method.needs_module]
    ordered = sorted(serving, key=lambda method: (method.name != default, method.tier))
    if not ordered:
        raise ConfigError(f"no quantization method builds {backend} artifacts")
    return tuple(method.name for method in ordered)


def settings_keys(method: str, backend: str, *, default: str | None) -> set[str]:
    """The ``quantize:`` keys a recipe may set for ``method`` on ``backend`` (``auto``: every key of the
    methods it may try)."""
    names = auto_methods(backend, default=default) if method == AUTO else (method,)
    keys = {"method"}
    for name in names:
        keys |= set(get_method(name).config.model_fields)
    return keys


__all__ = [
    "AUTO",
    "METHODS",
    "QuantizationMethod",
    "QuantizeJob",
    "all_methods",
    "auto_methods",
    "get_method",
    "methods_for",
    "settings_keys",
]
