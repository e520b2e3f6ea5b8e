"""LiteRT INT8 with LiteRT's own quantizer (``ai-edge-quantizer``): static, int8 weights (per-channel) and int8
activations calibrated on a subset of the train split (its ``static_wi8_ai8`` recipe, min-max ranges).

The model keeps float32 input and output (a QUANTIZE op after the input, a DEQUANTIZE before the output), so an
app feeds it like the float one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeflow.artifact import Artifact
from edgeflow.compress.stats import FloatLayer, QuantizationStats
from edgeflow.data import ImageDataset, calibration_subset
from edgeflow.data.splits import image_stacks
from edgeflow.environment import usable_cores
from edgeflow.errors import ShapeError
from edgeflow.export.litert import require_litert
from edgeflow.io import atomic_path
from edgeflow.recipe import QuantizeConfig

# LiteRT operators that hold weights: quantized when their weight tensor (input 1) is an integer.
WEIGHTED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL"}


def quantize_litert_static(
    artifact: Artifact, *, calibration: ImageDataset, config: QuantizeConfig, path: Path, seed: int = 0
) -> tuple[Artifact, QuantizationStats]:
    """The float ``.tflite`` quantized to int8 by LiteRT's quantizer, calibrated on ``config.subset_size`` train
    images (per-channel weights unless ``per_channel: false``; activation ranges are the moving average of each
    image's min and max, like ONNX Runtime's CalibMovingAverage, which kept EfficientNet-B0 on ONNX Runtime
    where plain min-max collapsed it).

    Raises:
        ShapeError: the model is already quantized, or the images do not fit its input.
    """
    require_litert()
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    from edgeflow.backends.litert import LiteRTBackend
    from edgeflow.device import RuntimeSettings

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
    tool = quantizer.Quantizer(str(artifact.path))
    tool.add_static_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, activation_num_bits=8,
                           weight_num_bits=8, weight_granularity=granularity)  # fmt: skip
    # the recipe alone makes the graph's input and output int8 too; left in float, the quantizer puts a QUANTIZE
    # op after the input and a DEQUANTIZE before the output, and an app feeds the model like the float one
    for end in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
        tool.update_quantization_recipe(regex=".*", operation_name=end, algorithm_key=AlgorithmName.NO_QUANTIZE)
    ranges = tool.calibrate({signature: [{input_name: batch} for batch in batches]}, num_threads=usable_cores())
    result = tool.quantize(ranges, enable_progress_report=False)
    with atomic_path(path) as temporary:
        temporary.write_bytes(bytes(result.quantized_model))
    settings = {
        "recipe": "static_wi8_ai8",
        "weights": "int8, symmetric",
        "per_channel": config.per_channel,
        "activations": "int8, asymmetric (ranges: the quantizer's moving average, 0.95, of each image's min and max)",
        "subset_size": len(batches) * compiled.input_shape[0],
        "io": "float32 (quantize and dequantize inside the model)",
    }
    done, floating = weighted_layers(path)
    stats = QuantizationStats(
        method="litert-static", settings=settings, quantized_layers=len(done),
        float_layers=[FloatLayer(name=name, type=kind, reason="the quantizer left it in float")
                      for name, kind in floating],
    )  # fmt: skip
    lineage = [*artifact.lineage, f"int8 static (ai-edge-quantizer static_wi8_ai8, {len(batches)} calibration batches)"]
    return Artifact(format="litert", path=path, precision="int8", input_shape=artifact.input_shape,
                    lineage=lineage), stats  # fmt: skip


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
