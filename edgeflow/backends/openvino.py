"""OpenVINO backend: reads ONNX or IR, compiles for the CPU with explicit, recorded settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeflow.artifact import Artifact
from edgeflow.backends.base import Backend, Compiled, RuntimeSettings, loading, resolve_dims
from edgeflow.backends.layers import LayerProfileStats, summarize
from edgeflow.errors import ModelLoadError

_PRECISION_HINTS = {"f32": "f32", "bf16": "bf16", "f16": "f16"}


def static_input_shape(partial_shape: Any, *, source: str, given: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """A static shape from a (possibly dynamic) input: ``given`` (the artifact's input shape) fills the dynamic
    dimensions, else a dynamic batch becomes 1."""
    dims = [dim.get_length() if dim.is_static else None for dim in partial_shape]
    return resolve_dims(dims, given, source=source)


def read_model(artifact: Artifact):
    """Read an ONNX or IR file into an ``openvino.Model``, with a clear error for bad files.

    The file is checked first with its own format's parser: handed a broken file, OpenVINO tries every
    frontend in turn, and the TensorFlow one prints parse errors straight to stderr.
    """
    import openvino as ov

    check_model_file(artifact)
    with loading("OpenVINO", artifact.path, reason=runtime_message):
        model = ov.Core().read_model(str(artifact.path))
    if len(model.inputs) != 1:
        raise ModelLoadError(f"{artifact.path}: expected one input, found {len(model.inputs)}")
    return model


def check_model_file(artifact: Artifact) -> None:
    """Refuse files that are not what their suffix says, before any runtime sees them."""
    if artifact.format == "onnx":
        from edgeflow.backends.onnx_file import load_onnx

        load_onnx(artifact.path)
    elif artifact.format == "openvino":
        import xml.etree.ElementTree as ElementTree

        try:
            root = ElementTree.parse(artifact.path).getroot()
        except (ElementTree.ParseError, OSError) as exc:
            raise ModelLoadError(f"{artifact.path} is not an OpenVINO IR file: {exc}") from None
        if root.tag != "net" or root.find("layers") is None:
            raise ModelLoadError(f"{artifact.path} is not an OpenVINO IR file: no <net> with <layers>")


def runtime_message(exc: BaseException) -> str:
    """The line of a runtime's multi-line exception text that says what went wrong: OpenVINO's first lines
    name the C++ source that raised ("Exception from src/...", "Check '...' failed at ..."), its last the cause."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return (useful or lines or [exc.__class__.__name__])[-1]


@dataclass
class OpenVINOCompiled(Compiled):
    compiled_model: Any = None

    def run(self, batch: np.ndarray) -> np.ndarray:
        result = self.compiled_model(self.check_shape(batch))
        return np.asarray(result[self.compiled_model.outputs[0]], dtype=np.float32)

    def bind(self, batch: np.ndarray) -> Callable[[], None]:
        import openvino as ov

        request = self.compiled_model.create_infer_request()
        request.set_input_tensor(ov.Tensor(self.check_shape(batch)))
        return request.infer

    def layer_profile(self, *, inferences: int, warmup: int = 5) -> LayerProfileStats:
        """PERF_COUNT of each inference (layers the plugin fused away report NOT_RUN and are left out)."""
        import openvino as ov

        request = self.compiled_model.create_infer_request()
        request.set_input_tensor(ov.Tensor(np.zeros(self.input_shape, dtype=np.float32)))
        for _ in range(warmup):
            request.infer()
        runs = []
        for _ in range(inferences):
            request.infer()
            runs.append(
                [
                    (info.node_name, info.node_type, info.exec_type, info.real_time.total_seconds() * 1000)
                    for info in request.get_profiling_info()
                    if info.status == ov.ProfilingInfo.Status.EXECUTED
                ]
            )
        return summarize(runs)


class OpenVINOBackend(Backend):
    name = "openvino"
    formats = ("openvino", "onnx")
    precisions = ("fp32", "fp16", "bf16", "int8")
    execution_precisions = ("default", "f32", "bf16", "f16")
    default_int8 = "nncf-ptq"
    computes_accuracy_for = ("openvino",)
    suffixes = (".xml",)
    remote_timers = {"ssh": "agent"}
    searchable = True
    supports_layer_profile = True
    exporter = "edgeflow.export.openvino:float_ir"
    fp16_converter = "edgeflow.export.openvino:compress_openvino_fp16"
    quantized_check = "edgeflow.compress.nncf_ptq:is_quantized_ir"

    def model_input(self, artifact: Artifact) -> tuple[str, list[int], str | None]:
        return read_model(artifact).inputs[0].get_any_name(), list(artifact.input_shape or []), None

    def version(self) -> str:
        import openvino as ov

        return ov.__version__.split("-")[0]

    def cannot_read(self, artifact: Artifact) -> str | None:
        """Whether OpenVINO reads an ONNX (its ONNX frontend has no QLinear*/QGemm conversion, for one), so that
        another runtime can take it. An IR is OpenVINO's alone: its refusal is the error compile raises."""
        if artifact.format != "onnx":
            return None
        try:
            read_model(artifact)
        except ModelLoadError as exc:
            return str(exc).split(f"OpenVINO cannot load {artifact.path}: ", 1)[-1]
        return None

    def compile(
        self, artifact: Artifact, *, settings: RuntimeSettings, layer_profile: bool = False
    ) -> OpenVINOCompiled:
        import openvino as ov

        model = read_model(artifact)
        shape = static_input_shape(
            model.inputs[0].get_partial_shape(), source=str(artifact.path), given=artifact.input_shape
        )
        if not model.inputs[0].get_partial_shape().is_static:
            model.reshape({model.inputs[0]: ov.PartialShape(list(shape))})
        config: dict[str, Any] = {"PERFORMANCE_HINT": settings.performance_hint.upper()}
        if settings.threads is not None:
            config["INFERENCE_NUM_THREADS"] = settings.threads
        if settings.execution_precision != "default":
            config["INFERENCE_PRECISION_HINT"] = _PRECISION_HINTS[settings.execution_precision]
        if layer_profile:
            config["PERF_COUNT"] = True
        with loading("OpenVINO", artifact.path, reason=runtime_message):
            compiled_model = ov.Core().compile_model(model, "CPU", config)
        return OpenVINOCompiled(
            backend=self.name,
            input_shape=shape,
            settings={
                "device": "CPU",
                "performance_hint": str(compiled_model.get_property("PERFORMANCE_HINT")).split(".")[-1].lower(),
                "threads": int(compiled_model.get_property("INFERENCE_NUM_THREADS")),
                "streams": int(compiled_model.get_property("NUM_STREAMS")),
                "execution_precision": _type_name(compiled_model.get_property("INFERENCE_PRECISION_HINT")),
                "requested_execution_precision": settings.execution_precision,
            },
            compiled_model=compiled_model,
        )


def _type_name(element_type: Any) -> str:
    """'bf16' / 'f32' / 'f16' from an OpenVINO element type."""
    name = getattr(element_type, "get_type_name", lambda: str(element_type))()
    return {"bfloat16": "bf16", "float32": "f32", "float16": "f16"}.get(name, name)
