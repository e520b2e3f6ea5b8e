"""LiteRT INT8 with LiteRT's own quantizer (``ai-edge-quantizer``): static, int8 weights (per-channel) and int8
activations calibrated on a subset of the train split (its ``static_wi8_ai8`` recipe, min-max ranges).

The model keeps float32 input and output (a QUANTIZE op after the input, a DEQUANTIZE before the output), so an
app feeds it like the float one. ``squeeze_excitation: float`` keeps the gates in float as for ONNX Runtime and
OpenVINO (found by structure in the .tflite: :mod:`edgeflow.compress.squeeze_excitation`).
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgeflow.artifact import Artifact
from edgeflow.backends.litert import require_litert
from edgeflow.compress.layers import tflite_scopes
from edgeflow.compress.method import (
    FloatLayerOptions,
    GateOptions,
    PerChannelOptions,
    QuantizationMethod,
    QuantizeJob,
    QuantizeOptions,
)
from edgeflow.compress.squeeze_excitation import find_gates, node_names
from edgeflow.compress.stats import CHOSEN_REASON, GATE_REASON, FloatLayer, QuantizationStats
from edgeflow.data import ImageDataset, calibration_subset
from edgeflow.data.splits import image_stacks
from edgeflow.environment import usable_cores
from edgeflow.errors import ConfigError, ShapeError
from edgeflow.io import atomic_path

# LiteRT operators that hold weights: quantized when their weight tensor (input 1) is an integer.
WEIGHTED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL"}


class LiteRTStaticConfig(QuantizeOptions, PerChannelOptions, GateOptions, FloatLayerOptions):
    """LiteRT's own quantizer (ai-edge-quantizer), static int8 on the ``.tflite``."""


def quantize_litert_static(
    artifact: Artifact,
    *,
    calibration: ImageDataset,
    config: LiteRTStaticConfig,
    path: Path,
    seed: int = 0,
    onnx: Artifact | None = None,
) -> tuple[Artifact, QuantizationStats]:
    """The float ``.tflite`` quantized to int8 by LiteRT's quantizer, calibrated on ``config.subset_size`` train
    images (per-channel weights unless ``per_channel: false``; activation ranges are the moving average of each
    image's min and max, like ONNX Runtime's CalibMovingAverage, which kept EfficientNet-B0 on ONNX Runtime
    where plain min-max collapsed it). Operator types XNNPACK cannot run in int8 stay in float where that lets
    XNNPACK take the whole graph (:func:`_quantize_whole_for_xnnpack`).

    ``config.float_layers`` (node names of ``onnx``, the float ONNX of the same network) stay in float.

    Raises:
        ShapeError: the model is already quantized, or the images do not fit its input.
        ConfigError: ``float_layers`` without the float ONNX, or naming no layer of it.
    """
    require_litert()
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    from edgeflow.backends.base import RuntimeSettings
    from edgeflow.backends.litert import LiteRTBackend

    quantized, _ = weighted_layers(artifact.path)
    if quantized:
        raise ShapeError(f"{artifact.path}: the model is already quantized ({len(quantized)} integer layers)")
    compiled = LiteRTBackend().compile(artifact, settings=RuntimeSettings())
    subset = calibration_subset(calibration, size=config.subset_size, seed=seed)
    batches = image_stacks(subset, input_shape=compiled.input_shape, what="calibration")
    signature, input_name = _signature_input(artifact.path)
    if compiled.layout == "NHWC":
        batches = [np.ascontiguousarray(batch.transpose(0, 2, 3, 1)) for batch in batches]
    granularity = qtyping.QuantGranularity.CHANNELWISE if config.per_channel else qtyping.QuantGranularity.TENSORWISE
    found = find_gates(artifact.path) if config.squeeze_excitation == "float" else []
    gates = node_names(found)
    if config.float_layers and onnx is None:
        raise ConfigError("quantize.float_layers names layers of the float ONNX; this .tflite came without one")
    chosen = tflite_scopes(config.float_layers, onnx=onnx, tflite=artifact.path) if config.float_layers else []
    tool = quantizer.Quantizer(str(artifact.path))

    def configure(float_types: list[str]) -> None:
        """The static int8 recipe (its ALL_SUPPORTED entry resets the scope), then what stays in float: the
        graph's input and output (the quantizer then puts a QUANTIZE op after the input and a DEQUANTIZE before
        the output, so an app feeds the model like the float one), ``float_types``, and the gates' operators
        (each matched by its whole scope: one operator's scope can begin another's)."""
        tool.add_static_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                               activation_num_bits=8, weight_num_bits=8, weight_granularity=granularity)  # fmt: skip
        for kind in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT, *float_types):
            tool.update_quantization_recipe(regex=".*", operation_name=kind, algorithm_key=AlgorithmName.NO_QUANTIZE)
        for scope in [*gates, *chosen]:
            tool.update_quantization_recipe(regex=f"^{re.escape(scope)}$",
                                            operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                            algorithm_key=AlgorithmName.NO_QUANTIZE)  # fmt: skip

    configure([])
    with _quiet():
        ranges = tool.calibrate({signature: [{input_name: batch} for batch in batches]}, num_threads=usable_cores())
        ranges, dead = widen_dead_ranges(ranges)
        if ranges:
            model, kept_float, partitions = _quantize_whole_for_xnnpack(tool, ranges, configure=configure)
        else:  # every operator kept in float (mixed precision's reference): the quantizer has nothing to do
            model, kept_float = artifact.path.read_bytes(), []
            partitions = dict.fromkeys(("all_int8", "kept"), xnnpack_partitions(model))
    with atomic_path(path) as temporary:
        temporary.write_bytes(model)
    settings = {
        "recipe": "static_wi8_ai8",
        "weights": "int8, symmetric",
        "per_channel": config.per_channel,
        "activations": "int8, asymmetric (ranges: the quantizer's moving average, 0.95, of each image's min and max)",
        "subset_size": len(batches) * compiled.input_shape[0],
        "io": "float32 (quantize and dequantize inside the model)",
        "float_operators": kept_float,
        "xnnpack_partitions": partitions,
        **({"dead_tensors": dead} if dead else {}),
        "squeeze_excitation": config.squeeze_excitation,
    }
    if config.squeeze_excitation == "float":
        settings["float_gates"] = len(found)
    if chosen:
        settings["float_layers"] = list(config.float_layers)
    done, floating = weighted_layers(path)
    in_gate, in_chosen = set(gates), set(chosen)
    stats = QuantizationStats(
        method="litert-static", settings=settings, quantized_layers=len(done),
        float_layers=[FloatLayer(name=name, type=kind,
                                 reason=CHOSEN_REASON if any(scope.startswith(f"{name};") for scope in in_chosen)
                                 else GATE_REASON if f"{name};" in in_gate else "the quantizer left it in float")
                      for name, kind in floating],
        notes=[f"kept in float so that XNNPACK runs the whole graph: {', '.join(kept_float)} (XNNPACK partitions: "
               f"{partitions['all_int8']} all-int8, {partitions['kept']} kept)"] if kept_float else [],
    )  # fmt: skip
    lineage = [*artifact.lineage, f"int8 static (ai-edge-quantizer static_wi8_ai8, {len(batches)} calibration batches)"]
    return Artifact(format="litert", path=path, precision="int8", input_shape=artifact.input_shape,
                    lineage=lineage), stats  # fmt: skip


def widen_dead_ranges(ranges: dict) -> tuple[dict, int]:
    """Calibration ranges with every empty one (min == max: a tensor the calibration images never moved, such as a
    ReLU whose inputs all stayed negative) widened by 1e-3 upward: the quantizer turns an empty range into a zero
    scale, and XNNPACK refuses the whole model ("failed to prepare"). Returns the ranges and how many were widened.
    """
    widened = 0
    for entry in ranges.values():
        if not isinstance(entry, dict) or "min" not in entry or "max" not in entry:
            continue
        low, high = np.asarray(entry["min"], dtype=np.float32), np.asarray(entry["max"], dtype=np.float32)
        empty = high <= low
        if np.any(empty):
            entry["max"] = np.where(empty, low + 1e-3, high).astype(np.float32)
            widened += 1
    return ranges, widened


def _quantize_whole_for_xnnpack(tool, ranges, *, configure) -> tuple[bytes, list[str], dict[str, int]]:
    """The model quantized with every operator int8 where XNNPACK runs it so: an operator type XNNPACK has no int8
    kernel for (MobileNetV3's HARD_SWISH in this LiteRT) stays out of the delegate and cuts the graph into
    pieces at every use (22 XNNPACK partitions for mobilenet_v3_large, 2.2x slower than float). Each such type
    is tried in float (the quantizer wraps it in DEQUANTIZE/QUANTIZE, which XNNPACK runs) and kept so when that
    joins partitions; the calibration ranges are reused, so a try costs one quantization pass. ``configure``
    sets the recipe with the given types in float.

    Returns the model, the operator types kept in float, and the XNNPACK partitions before and after."""

    def quantize(float_types: list[str]) -> bytes:
        configure(float_types)
        return bytes(tool.quantize(ranges, enable_progress_report=False, enable_progress_bar=False).quantized_model)

    model = quantize([])
    before = partitions = xnnpack_partitions(model)
    kept_float: list[str] = []
    for kind in sorted(_unweighted_types(model)) if partitions > 1 else []:
        trial = quantize([*kept_float, kind])
        joined = xnnpack_partitions(trial)
        if joined < partitions:
            model, partitions = trial, joined
            kept_float.append(kind)
        if partitions == 1:
            break
    return model, kept_float, {"all_int8": before, "kept": partitions}


# operator types never tried in float: the weighted ones (their int8 form is the point) and the graph's ends
_NEVER_FLOAT = WEIGHTED_OPS | {"QUANTIZE", "DEQUANTIZE", "DELEGATE"}


def _unweighted_types(model: bytes) -> set[str]:
    from ai_edge_litert.interpreter import OpResolverType

    from edgeflow.backends.litert import interpreter_class

    interpreter = interpreter_class()(
        model_content=model, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    return {op["op_name"] for op in interpreter._get_ops_details()} - _NEVER_FLOAT  # noqa: SLF001


def xnnpack_partitions(model: bytes) -> int:
    """How many pieces XNNPACK's delegate takes of ``model`` (1: the whole graph runs in XNNPACK)."""
    from edgeflow.backends.litert import interpreter_class

    interpreter = interpreter_class()(model_content=model, num_threads=1)
    interpreter.allocate_tensors()
    return sum(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())  # noqa: SLF001


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The quantizer draws tqdm bars on stderr (with ``disable`` set by itself, so ``TQDM_DISABLE`` cannot turn
    them off) and warns that calibration keeps every tensor (it must, to read their ranges): both held back while
    it runs; its errors are exceptions and still propagate. edgeflow's own progress says what runs."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")
        yield


def _signature_input(path: Path) -> tuple[str, str]:
    """The model's one signature and its one input's name (what the quantizer's calibration is keyed by)."""
    from edgeflow.backends.litert import interpreter_class

    signatures = interpreter_class()(model_path=str(path)).get_signature_list()
    if len(signatures) != 1:
        raise ShapeError(f"{path}: LiteRT's quantizer needs one signature, the model has {len(signatures)}")
    key, entry = next(iter(signatures.items()))
    if len(entry["inputs"]) != 1:
        raise ShapeError(f"{path}: expected one input, the signature {key} has {len(entry['inputs'])}")
    return key, entry["inputs"][0]


def is_quantized_file(artifact: Artifact) -> bool:
    """Whether a ``.tflite`` holds integer weights."""
    return bool(weighted_layers(artifact.path)[0])


def weighted_layers(path: Path | None) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(quantized, float) weighted operators of a ``.tflite``, each as (output tensor name, operator)."""
    from edgeflow.backends.litert import tflite_operators

    quantized, floating = [], []
    for name, inputs, outputs in tflite_operators(path):
        if name not in WEIGHTED_OPS or len(inputs) < 2 or inputs[1] is None:
            continue
        entry = (outputs[0]["name"] if outputs and outputs[0] else name, name)
        (quantized if np.issubdtype(inputs[1]["dtype"], np.integer) else floating).append(entry)
    return quantized, floating


class LiteRTStatic(QuantizationMethod):
    """LiteRT's quantizer, ai-edge-quantizer's static int8 recipe, on the float ``.tflite``."""

    name = "litert-static"
    float_units = ("layer", "gate", "add")
    backends = ("litert",)
    config = LiteRTStaticConfig

    def quantize(self, job: QuantizeJob) -> tuple[Artifact, QuantizationStats]:
        return quantize_litert_static(
            job.base, calibration=job.splits.train, config=job.config, path=job.path, seed=job.seed, onnx=job.onnx
        )
