"""INT8 and FP16 ONNX with ONNX Runtime's own tools, for the onnxruntime backend.

Static QDQ is the method to use: ONNX Runtime fuses the QuantizeLinear/DequantizeLinear pairs into integer
kernels, and the same file feeds TensorRT and mobile runtimes. Dynamic quantization is the naive baseline:
activation ranges are computed at every inference, which costs time on CNNs. FP16 halves the file.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from edgeflow.artifact import Artifact
from edgeflow.backends.base import resolve_dims
from edgeflow.backends.openvino import read_model, runtime_message
from edgeflow.compress.layers import onnx_float_nodes
from edgeflow.compress.method import (
    FloatLayerOptions,
    GateOptions,
    PerChannelOptions,
    QuantizationMethod,
    QuantizeJob,
    QuantizeOptions,
)
from edgeflow.compress.nncf_ptq import MIN_CALIBRATION_SAMPLES
from edgeflow.compress.squeeze_excitation import find_gates, node_names
from edgeflow.compress.stats import QuantizationStats, summarize
from edgeflow.data import ImageDataset, calibration_subset
from edgeflow.data.splits import image_stacks
from edgeflow.environment import host_int8_saturates
from edgeflow.errors import (
    DataError,
    ModelLoadError,
    OutputError,
    RuntimeUnavailableError,
    ShapeError,
    first_line,
)
from edgeflow.io import atomic_path

_QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QGemm", "QAttention"}
_QUANTIZED_PREFIXES = ("QLinear", "DynamicQuantize")
_FLOAT_REASON = "left in float by ONNX Runtime's quantizer (op not in its quantizable set)"


# ``calibrate_method: auto``: min-max ranges first, their moving average over the calibration images when the
# holdout drop exceeds the budget (on Imagenette it keeps EfficientNet-B0 at 54.6% holdout top-1 where min-max
# collapses it to 17.1%, while min-max agrees more with float on the other models).
AUTO_CALIBRATION = ("minmax", "minmax-average")


class OrtDynamicConfig(QuantizeOptions, PerChannelOptions):
    """ONNX Runtime dynamic quantization."""


class OrtStaticConfig(OrtDynamicConfig, GateOptions, FloatLayerOptions):
    """ONNX Runtime static QDQ quantization, after ORT's pre-processing."""

    calibrate_method: Literal["auto", "minmax", "minmax-average", "entropy", "percentile"] = Field(
        default="auto",
        description="ort-static activation ranges: min and max over every calibration image, or their moving "
        "average over the images (ORT's CalibMovingAverage, close to NNCF's mean of per-image ranges: on "
        "Imagenette it kept EfficientNet-B0 at 54.6% holdout top-1 where minmax fell to 17.1%), or a histogram; "
        "auto: minmax, then minmax-average when the holdout drop exceeds max_drop, the more accurate kept",
    )
    activation_type: Literal["uint8", "int8"] = "uint8"
    reduce_range: Literal["auto"] | bool = Field(
        default="auto",
        description="ort-static: 7-bit weights. An x86 CPU without VNNI multiplies uint8 x int8 pairs into int16 "
        "sums that saturate with 8-bit weights (ONNX Runtime's own advice: reduce_range there); auto: on when "
        "this host is such a CPU, off with VNNI (AVX512-VNNI, AVX-VNNI, AMX) and off ARM",
    )
    symmetric: bool = Field(
        default=False, description="ort-static: zero points 0 for weights and activations (TensorRT reads only these)"
    )


def is_quantized_file(artifact: Artifact) -> bool:
    """Whether an ONNX artifact carries quantization (QDQ pairs, QLinear* or *Integer nodes)."""
    return is_quantized_onnx(artifact.path)


def is_quantized_onnx(path: Path) -> bool:
    """True when an ONNX file already holds quantized ops (QDQ pairs, QLinear* or *Integer nodes)."""
    from edgeflow.backends.onnx_file import load_onnx

    return _has_quantized_ops(load_onnx(path))


def quantize_onnx_static(
    artifact: Artifact, *, calibration: ImageDataset, config: OrtStaticConfig, path: Path, seed: int = 0
) -> tuple[Artifact, QuantizationStats]:
    """ONNX Runtime static quantization to QDQ ONNX, calibrated on ``config.subset_size`` train images.

    ORT's pre-processing (symbolic shape inference, basic graph optimization) runs first, as ORT recommends:
    the quantizer needs every tensor's type and shape to decide what it can quantize. ``calibrate_method: auto``
    is the method chain's choice on the holdout split (:mod:`edgeflow.variants`); called here, without a
    holdout split, it calibrates with min-max, and the settings say so.

    Raises:
        ShapeError: the model is already quantized, or the images do not fit its input.
        DataError: too few calibration images.
        OutputError: ``path`` cannot be written.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    input_name, shape = _float_model_input(artifact)
    subset = _calibration_images(calibration, size=config.subset_size, input_shape=shape, seed=seed)
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "minmax-average": CalibrationMethod.MinMax,  # with CalibMovingAverage below
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    calibrate = "minmax" if config.calibrate_method == "auto" else config.calibrate_method
    reduce_range = host_int8_saturates() if config.reduce_range == "auto" else config.reduce_range
    activation_type = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[config.activation_type]
    settings = {
        "format": "qdq",
        "per_channel": config.per_channel,
        "weight_type": "int8",
        "activation_type": config.activation_type,
        "calibrate_method": calibrate,
        "symmetric": config.symmetric,
        "reduce_range": reduce_range,
        "subset_size": len(subset) * shape[0],
        "preprocessed": True,
    }
    with atomic_path(_onnx_output(path)) as temporary, _scratch_file(temporary) as preprocessed:
        with _scratch_file(preprocessed) as upgraded:  # quant_pre_process loses its work written in place
            settings["opset"] = _at_least_opset_13(artifact.path, upgraded)
            settings["preprocessed"] = _pre_process(quant_pre_process, upgraded, preprocessed)
        gates = _float_gates(preprocessed, config)
        chosen = _float_layers(preprocessed, config)
        settings["squeeze_excitation"] = config.squeeze_excitation
        if chosen:
            settings["float_layers"] = list(config.float_layers)
        if config.squeeze_excitation == "float":
            settings["float_gates"] = len(gates)
        # The histogram calibrators (entropy, percentile) print progress to stdout.
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(preprocessed), str(temporary), _ImageReader(subset, input_name),
                quant_format=QuantFormat.QDQ, per_channel=config.per_channel, weight_type=QuantType.QInt8,
                activation_type=activation_type, calibrate_method=methods[calibrate], reduce_range=reduce_range,
                nodes_to_exclude=list(dict.fromkeys([*node_names(gates), *chosen])),
                extra_options={
                    "ActivationSymmetric": config.symmetric, "WeightSymmetric": True,
                    "CalibMovingAverage": calibrate == "minmax-average",
                },
            )  # fmt: skip
    lineage = (
        f"ort-static(qdq, per_channel={config.per_channel}, calibrate={calibrate}"
        + (", 7-bit weights" if reduce_range else "")
        + (", symmetric int8)" if config.symmetric else ")")
    )
    return _int8_result(
        artifact, path=path, shape=shape, lineage=lineage, method="ort-static", settings=settings, gates=gates,
        chosen=chosen,
    )  # fmt: skip


def quantize_onnx_dynamic(
    artifact: Artifact, *, config: OrtDynamicConfig, path: Path
) -> tuple[Artifact, QuantizationStats]:
    """ONNX Runtime dynamic quantization: int8 weights, activations quantized on the fly at each inference.

    Kept as the naive baseline to show what it loses on CNNs: every Conv becomes
    DynamicQuantizeLinear + ConvInteger + a float rescale, which ORT's CPU provider runs several times slower
    than the fused kernels of static QDQ (and slower than float).
    The same pre-processing as the static path runs first, so only the quantization scheme differs.

    Raises:
        ShapeError: the model is already quantized.
        RuntimeUnavailableError: this ONNX Runtime has no CPU kernel for the result (older releases had
            no ConvInteger for int8 weights, microsoft/onnxruntime#15888); nothing is written then.
        OutputError: ``path`` cannot be written.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    _input_name, shape = _float_model_input(artifact)
    settings = {
        "weight_type": "int8",
        "activations": "uint8, range computed at each inference",
        "per_channel": config.per_channel,
        "preprocessed": True,
    }
    with atomic_path(_onnx_output(path)) as temporary, _scratch_file(temporary) as preprocessed:
        settings["preprocessed"] = _pre_process(quant_pre_process, artifact.path, preprocessed)
        quantize_dynamic(str(preprocessed), str(temporary), weight_type=QuantType.QInt8, per_channel=config.per_channel)
        _check_runs_on_cpu(temporary, what=f"ORT dynamic quantization of {artifact.path}")
    lineage = f"ort-dynamic(weights=int8, per_channel={config.per_channel})"
    return _int8_result(artifact, path=path, shape=shape, lineage=lineage, method="ort-dynamic", settings=settings)


def convert_onnx_fp16(artifact: Artifact, *, path: Path) -> Artifact:
    """FP16 weights and compute; the input and output stay float32 so callers feed the same tensors.

    On x86 CPUs ONNX Runtime runs most fp16 nodes by casting back to float32: the file halves, the
    latency does not. Execution providers with fp16 arithmetic (GPUs, some ARM cores) can gain speed.

    Raises:
        ShapeError: the model is quantized.
        RuntimeUnavailableError: ONNX Runtime's CPU execution provider cannot load the result.
        OutputError: ``path`` cannot be written.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    _input_name, shape = _float_model_input(artifact)
    converted = convert_float_to_float16(onnx.load(str(artifact.path)), keep_io_types=True)
    with atomic_path(_onnx_output(path)) as temporary:
        onnx.save(converted, str(temporary))
        _check_runs_on_cpu(temporary, what=f"the fp16 conversion of {artifact.path}")
    return Artifact(
        format="onnx", path=path, precision="fp16", input_shape=shape, lineage=[*artifact.lineage, "onnx-fp16"]
    )


class _ImageReader:
    """ORT's CalibrationDataReader protocol (``get_next``), reading one model batch at a time."""

    def __init__(self, batches: list[np.ndarray], input_name: str) -> None:
        self._batches = batches
        self._input_name = input_name
        self._index = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._index >= len(self._batches):
            return None
        self._index += 1
        return {self._input_name: self._batches[self._index - 1]}


def _float_gates(path: Path, config: OrtStaticConfig) -> list[list[str]]:
    """The squeeze-and-excitation gates of the pre-processed ONNX that stay in float."""
    from edgeflow.backends.onnx_file import load_onnx

    return find_gates(load_onnx(path)) if config.squeeze_excitation == "float" else []


def _float_layers(path: Path, config: OrtStaticConfig) -> list[str]:
    """``config.float_layers`` in the pre-processed ONNX, with their companions
    (:func:`edgeflow.compress.layers.onnx_float_nodes`)."""
    if not config.float_layers:
        return []
    from edgeflow.backends.onnx_file import load_onnx

    return onnx_float_nodes(load_onnx(path).graph, list(config.float_layers))


def _float_model_input(artifact: Artifact) -> tuple[str, tuple[int, ...]]:
    """The input name and static shape of a float ONNX artifact; refuses other formats and quantized files."""
    from edgeflow.backends.onnx_file import load_onnx

    if artifact.format != "onnx" or artifact.path is None:
        raise ModelLoadError(f"ONNX Runtime's tools take an .onnx artifact, not {artifact.format}")
    model = load_onnx(artifact.path)
    if _has_quantized_ops(model):
        raise ShapeError(f"{artifact.path} is already quantized; give the float model")
    initializers = {initializer.name for initializer in model.graph.initializer}
    (graph_input,) = [value for value in model.graph.input if value.name not in initializers]
    dims = [
        dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None
        for dim in graph_input.type.tensor_type.shape.dim
    ]
    return graph_input.name, resolve_dims(dims, artifact.input_shape, source=str(artifact.path))


def _at_least_opset_13(source: Path, target: Path) -> int:
    """Write ``source`` to ``target`` at opset 13 or above (per-channel QDQ needs DequantizeLinear's ``axis``,
    new in opset 13; PaddlePaddle and older exporters write opset 11); returns the opset written."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(source))
    opset = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 13)
    if opset >= 13:
        target.write_bytes(Path(source).read_bytes())
        return opset
    try:
        converted = version_converter.convert_version(model, 13)
    except Exception as exc:  # noqa: BLE001 - the converter raises bare RuntimeErrors
        reason = first_line(exc, limit=160)
        raise ModelLoadError(
            f"{source}: opset {opset} cannot be converted to 13 for per-channel int8: {reason}"
        ) from None
    onnx.save(converted, str(target))
    return 13


def _pre_process(quant_pre_process, source: Path, target: Path) -> str | bool:
    """ORT's pre-processing (symbolic shape inference, graph optimization, ONNX shape inference). Its symbolic
    shape inference fails on some exporters' graphs (PaddlePaddle's Concat of constant shapes on axis 1): then
    it runs without that step, and says so (``"without symbolic shape inference"``)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            quant_pre_process(str(source), str(target))
        return True
    except Exception:  # noqa: BLE001 - an assertion deep in ORT's symbolic shape inference
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
        return "without symbolic shape inference"


def _has_quantized_ops(model) -> bool:
    return any(
        node.op_type in _QUANTIZED_OPS or node.op_type.startswith(_QUANTIZED_PREFIXES) or "Integer" in node.op_type
        for node in model.graph.node
    )


def _calibration_images(dataset: ImageDataset, *, size: int, input_shape: tuple[int, ...], seed: int):
    """The calibration subset in the model's batches, with the same checks as the NNCF path."""
    subset = calibration_subset(dataset, size=size, seed=seed)
    needed = min(size, MIN_CALIBRATION_SAMPLES)
    if len(subset) < needed:
        raise DataError(f"calibration needs at least {needed} images; the train split has {len(subset)}")
    return image_stacks(subset, input_shape=input_shape, what="calibration")


def _onnx_output(path: Path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise OutputError(f"{path}: ONNX Runtime's tools write .onnx files")
    return path


@contextlib.contextmanager
def _scratch_file(beside: Path) -> Iterator[Path]:
    """A temporary .onnx next to ``beside`` (same disk, no system temp space needed), always removed."""
    handle, name = tempfile.mkstemp(dir=beside.parent, prefix=f"{beside.stem}.pre.", suffix=".onnx")
    os.close(handle)
    scratch = Path(name)
    try:
        yield scratch
    finally:
        scratch.unlink(missing_ok=True)


def _check_runs_on_cpu(path: Path, *, what: str) -> None:
    """Refuse a model ONNX Runtime cannot load here now, rather than at the first benchmark."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own pybind exception types
        raise RuntimeUnavailableError(
            f"{what} cannot run on ONNX Runtime {ort.__version__}'s CPU execution provider: {runtime_message(exc)}"
        ) from None


def _int8_result(
    artifact: Artifact,
    *,
    path: Path,
    shape: tuple[int, ...],
    lineage: str,
    method: str,
    settings: dict[str, Any],
    gates: list[list[str]] = (),
    chosen: list[str] = (),
) -> tuple[Artifact, QuantizationStats]:
    result = Artifact(
        format="onnx", path=path, precision="int8", input_shape=shape, lineage=[*artifact.lineage, lineage]
    )
    summary = summarize(
        read_model(result), method=method, settings=settings, reason=_FLOAT_REASON, gates=node_names(gates),
        chosen=chosen,
    )  # fmt: skip
    return result, summary


class OrtStatic(QuantizationMethod):
    """ONNX Runtime's static QDQ quantizer (per-channel weights); TensorRT reads its symmetric int8 form."""

    name = "ort-static"
    float_units = ("layer", "gate", "add")
    backends = ("onnxruntime", "tensorrt")
    config = OrtStaticConfig

    def attempts(self, config: OrtStaticConfig) -> list[tuple[str, dict[str, Any]]]:
        if config.calibrate_method != "auto":
            return [(self.name, {})]
        return [(f"{self.name} ({method})", {"calibrate_method": method}) for method in AUTO_CALIBRATION]

    def quantize(self, job: QuantizeJob) -> tuple[Artifact, QuantizationStats]:
        return quantize_onnx_static(
            job.base, calibration=job.splits.train, config=job.config, path=job.path, seed=job.seed
        )


class OrtDynamic(QuantizationMethod):
    """ONNX Runtime's dynamic quantization: the naive baseline, kept to show what it loses (never in ``auto``)."""

    name = "ort-dynamic"
    backends = ("onnxruntime",)
    config = OrtDynamicConfig
    tier = None

    def quantize(self, job: QuantizeJob) -> tuple[Artifact, QuantizationStats]:
        return quantize_onnx_dynamic(job.base, config=job.config, path=job.path)
