"""INT8 post-training quantization of OpenVINO artifacts with NNCF, calibrated on the train split."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgeflow.artifact import Artifact
from edgeflow.backends.openvino import read_model, static_input_shape
from edgeflow.data import ImageDataset, calibration_subset
from edgeflow.errors import DataError, ShapeError
from edgeflow.exporter import save_openvino
from edgeflow.recipe import QuantizeConfig

_QUANTIZED_OPS = {"FakeQuantize", "FakeConvert"}


def is_quantized(model) -> bool:
    """True when an OpenVINO model already carries quantization (FakeQuantize or int8 weights)."""
    return any(op.get_type_name() in _QUANTIZED_OPS for op in model.get_ordered_ops())


def quantize_openvino(
    artifact: Artifact, *, calibration: ImageDataset, config: QuantizeConfig, path: Path, seed: int = 0
) -> Artifact:
    """Quantize ``artifact`` (ONNX or IR) to INT8 with NNCF and save it as IR at ``path``."""
    import nncf

    model = read_model(artifact)
    if is_quantized(model):
        raise ShapeError(f"{artifact.path} is already quantized; give the float model")
    shape = static_input_shape(model.inputs[0].get_partial_shape(), source=str(artifact.path))
    subset = calibration_subset(calibration, size=config.subset_size, seed=seed)
    if len(subset) == 0:
        raise DataError("calibration needs at least one image from the train split")
    sample_shape = tuple(subset[0][0].shape)
    if (1, *sample_shape) != shape:
        raise ShapeError(f"calibration images have shape {(1, *sample_shape)} but {artifact.path} takes {shape}")

    def transform(item) -> np.ndarray:
        image, _label = item
        return image.unsqueeze(0).numpy()

    # NNCF logs per-step info and imports torch's C++ extension helper, which warns about CUDA.
    quiet = [logging.getLogger(name) for name in ("nncf", "torch.utils.cpp_extension")]
    previous_levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        quantized = nncf.quantize(
            model,
            nncf.Dataset(subset, transform),
            preset=nncf.QuantizationPreset(config.preset),
            subset_size=len(subset),
            fast_bias_correction=config.fast_bias_correction,
        )
    finally:
        for logger, level in zip(quiet, previous_levels, strict=True):
            logger.setLevel(level)
    save_openvino(quantized, path=path)
    return Artifact(
        format="openvino",
        path=path,
        precision="int8",
        input_shape=shape,
        lineage=[*artifact.lineage, f"nncf-ptq(preset={config.preset}, subset={len(subset)})"],
    )
