"""LiteRT (TensorFlow Lite's successor) backend: a ``.tflite`` run by the LiteRT interpreter with its XNNPACK
delegate (the CPU path phones and Raspberry Pis use), threads explicit.

The interpreter comes from ``ai-edge-litert`` (``pip install 'edgeflow[litert]'``), imported only here. edgeflow
feeds images as NCHW: a model whose input is NHWC (converted that way, or from TensorFlow) is fed transposed,
and its layout is recorded in the settings. A model with integer inputs or outputs is fed and read through
their quantization parameters, so accuracy is always computed on float logits.

The Python interpreter has no per-operator profiler; per-operator figures come from ``benchmark_model`` on a
phone (:mod:`edgeflow.targets.benchmark_model`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeflow.artifact import Artifact
from edgeflow.backends.base import Backend, Compiled, RuntimeSettings, loading, resolve_dims
from edgeflow.environment import usable_cores
from edgeflow.errors import ModelLoadError, RuntimeUnavailableError

# A LiteRT model is a FlatBuffer whose file identifier (bytes 4 to 8) is "TFL3".
TFLITE_IDENTIFIER = b"TFL3"


def litert_available() -> bool:
    """Whether the converter, the quantizer and the interpreter are all installed."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
        import ai_edge_quantizer  # noqa: F401
        import litert_torch  # noqa: F401
    except Exception:  # an install without its native parts is as good as none
        return False
    return True


def require_litert() -> None:
    if not litert_available():
        raise RuntimeUnavailableError(
            "LiteRT is not installed here: pip install 'edgeflow[litert]' (litert-torch, ai-edge-litert, "
            "ai-edge-quantizer)"
        )


def interpreter_class():
    """LiteRT's ``Interpreter``, or a clear error where ``ai-edge-litert`` is not installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise RuntimeUnavailableError(
            "LiteRT is not installed here (pip install 'edgeflow[litert]' brings ai-edge-litert)"
        ) from None
    return Interpreter


def check_tflite(path: Path) -> None:
    """Refuse a file that is not a LiteRT FlatBuffer before the interpreter sees it."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if len(head) < 8 or head[4:8] != TFLITE_IDENTIFIER:
        raise ModelLoadError(f"{path}: not a LiteRT model (a .tflite FlatBuffer starts with the identifier TFL3 "
                             f"at byte 4; this file has {head[4:8]!r})")  # fmt: skip


def open_interpreter(path: Path, **options: Any):
    """LiteRT's interpreter of the ``.tflite`` at ``path`` (``options`` as the interpreter takes them), checked
    to be a LiteRT FlatBuffer first; the interpreter's refusal (quantization parameters it rejects, ...) is one
    ModelLoadError naming the file."""
    interpreter_type = interpreter_class()
    check_tflite(path)
    with loading("LiteRT", path):
        return interpreter_type(model_path=str(path), **options)


def tflite_operators(path: Path) -> list[tuple[str, list[dict | None], list[dict | None]]]:
    """Every operator of a ``.tflite`` in execution order, as (operator name, input tensors, output tensors),
    each tensor the interpreter's detail dict (name, shape, dtype, quantization) or None for an absent optional
    input; read without delegates, so the delegated ones are listed too."""
    from ai_edge_litert.interpreter import OpResolverType

    interpreter = open_interpreter(path, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    return [
        (op["op_name"], [tensors.get(int(i)) for i in op["inputs"]], [tensors.get(int(i)) for i in op["outputs"]])
        for op in interpreter._get_ops_details()  # noqa: SLF001 - the interpreter's only listing of its operators
    ]


def input_layout(shape: list[int], given: tuple[int, ...] | None = None) -> str:
    """NCHW or NHWC. Where the artifact's input shape (NCHW, edgeflow's order) is known, the order in which the
    file's fixed dimensions (``-1``: dynamic) match it; where both or neither do, read from a 4-D image input's
    shape (channels are 1 or 3 wide); NCHW when it cannot tell. A block cut from a network at 3 x 3 (its input
    ``1 x 160 x 3 x 3``) is NCHW: its last dimension is no channel count."""
    if len(shape) != 4:
        return "NCHW"
    if given is not None and len(given) == 4:

        def fits(dims: list[int]) -> bool:
            return all(own <= 0 or own == wanted for own, wanted in zip(dims, given, strict=True))

        nchw, nhwc = fits(list(shape)), fits([shape[0], shape[3], shape[1], shape[2]])
        if nchw != nhwc:
            return "NCHW" if nchw else "NHWC"
    if shape[3] in (1, 3) and shape[1] not in (1, 3):
        return "NHWC"
    return "NCHW"


def _quantization(detail: dict) -> tuple[float, int] | None:
    scale, zero = detail.get("quantization", (0.0, 0))
    return (float(scale), int(zero)) if np.issubdtype(detail["dtype"], np.integer) and scale else None


@dataclass
class LiteRTCompiled(Compiled):
    interpreter: Any = None
    layout: str = "NCHW"
    input_detail: dict | None = None
    output_detail: dict | None = None

    def _feed(self, batch: np.ndarray) -> np.ndarray:
        data = self.check_shape(batch)
        if self.layout == "NHWC":
            data = np.ascontiguousarray(data.transpose(0, 2, 3, 1))
        quantized = _quantization(self.input_detail)
        if quantized is not None:
            scale, zero = quantized
            info = np.iinfo(self.input_detail["dtype"])
            data = np.clip(np.round(data / scale) + zero, info.min, info.max)
        return data.astype(self.input_detail["dtype"], copy=False)

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input_detail["index"], self._feed(batch))
        self.interpreter.invoke()
        output = self.interpreter.get_tensor(self.output_detail["index"])
        quantized = _quantization(self.output_detail)
        if quantized is not None:
            scale, zero = quantized
            output = (output.astype(np.float32) - zero) * scale
        return np.asarray(output, dtype=np.float32)

    def bind(self, batch: np.ndarray) -> Callable[[], None]:
        self.interpreter.set_tensor(self.input_detail["index"], self._feed(batch))  # copied in once
        return self.interpreter.invoke


class LiteRTBackend(Backend):
    name = "litert"
    formats = ("litert",)
    default_int8 = "litert-static"
    computes_accuracy_for = ("litert",)
    suffixes = (".tflite",)
    ships_every_variant = True  # the app picks float or int8
    remote_timers = {"ssh": "agent", "adb": "benchmark_model"}
    needs_module = True  # converted from the torch model (litert-torch), not from the ONNX
    exporter = "edgeflow.export.litert:float_tflite"
    fp16_converter = "edgeflow.export.litert:compress_tflite_fp16"
    quantized_check = "edgeflow.compress.litert_quantize:is_quantized_file"
    cost_counter = "edgeflow.profiling.cost:count_litert_cost"

    def unavailable(self) -> str | None:
        try:
            interpreter_class()
        except RuntimeUnavailableError as exc:
            return str(exc)
        return None

    def model_input(self, artifact: Artifact) -> tuple[str, list[int], str | None]:
        detail = open_interpreter(artifact.path).get_input_details()[0]
        native = [int(dim) for dim in detail["shape"]]
        return detail["name"], native, input_layout(native, artifact.input_shape)

    def version(self) -> str:
        interpreter_class()
        import ai_edge_litert

        return str(ai_edge_litert.__version__)

    def compile(self, artifact: Artifact, *, settings: RuntimeSettings, layer_profile: bool = False) -> LiteRTCompiled:
        if artifact.format != "litert" or artifact.path is None:
            raise ModelLoadError(f"{artifact.path}: the litert backend runs .tflite files, not {artifact.format}")
        threads = settings.threads or usable_cores()  # explicit: LiteRT's default is the build's
        interpreter = open_interpreter(artifact.path, num_threads=threads)
        inputs = interpreter.get_input_details()
        if len(inputs) != 1:
            raise ModelLoadError(f"{artifact.path}: expected one input, found {len(inputs)}")
        detail = inputs[0]
        own = [int(dim) for dim in detail.get("shape_signature", detail["shape"])]
        layout = input_layout(own, artifact.input_shape)
        dims = [dim if dim > 0 else None for dim in own]
        if layout == "NHWC":  # edgeflow's shapes are NCHW: resolve in that order, feed transposed
            dims = [dims[0], dims[3], dims[1], dims[2]]
        shape = resolve_dims(dims, artifact.input_shape, source=str(artifact.path))
        native = [shape[0], shape[2], shape[3], shape[1]] if layout == "NHWC" else list(shape)
        with loading("LiteRT", f"{artifact.path} at input shape {native}"):
            if native != [int(dim) for dim in detail["shape"]]:
                interpreter.resize_tensor_input(detail["index"], native, strict=False)
            interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        integer = _quantization(detail) is not None
        return LiteRTCompiled(
            backend=self.name,
            input_shape=tuple(shape),
            settings={
                "delegate": "XNNPACK (LiteRT's default CPU delegate)",
                "threads": threads,
                "input_layout": layout,
                "input_dtype": np.dtype(detail["dtype"]).name,
                "execution_precision": "int8" if artifact.precision == "int8" or integer else "f32",
            },
            interpreter=interpreter,
            layout=layout,
            input_detail=detail,
            output_detail=interpreter.get_output_details()[0],
        )
