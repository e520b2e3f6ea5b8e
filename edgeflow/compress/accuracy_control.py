"""INT8 with an accuracy budget: NNCF PTQ, then layers back to float until the holdout drop fits ``max_drop``.

NNCF quantizes the whole model, measures top-1 on the holdout split, and while the drop exceeds the budget
ranks groups of quantizers by how much reverting each one recovers (on a subset of the holdout) and reverts
the worst one. Which layers it reverted is found by comparing the result with a plain PTQ of the same model.

Cost grows with the number of quantizer groups times the holdout passes: a tight budget on a deep model
recompiles the model once per group per ranking round (minutes for MobileNetV3 on two cores).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgeflow.artifact import Artifact
from edgeflow.backends.openvino import read_model, static_input_shape
from edgeflow.compress.method import QuantizationMethod, QuantizeJob
from edgeflow.compress.nncf_ptq import (
    NncfPtqConfig,
    calibration_dataset,
    float_gates,
    float_layer_names,
    is_quantized,
    nncf_quantize_arguments,
    nncf_settings,
    quiet_nncf,
)
from edgeflow.compress.squeeze_excitation import node_names
from edgeflow.compress.stats import GATE_REASON, FloatLayer, QuantizationStats, in_gates, layer_precisions
from edgeflow.data import ImageDataset
from edgeflow.errors import DataError, OutputError, ShapeError
from edgeflow.export.openvino import save_openvino

MIN_HOLDOUT_SAMPLES = 10
NOT_QUANTIZED = "not quantized by NNCF's CNN patterns"
REVERTED = "reverted to float by accuracy control: most sensitive on the holdout split"
# NNCF's own verdict lines, kept as notes: what it concluded and how many operations it reverted.
_VERDICTS = ("Algorithm completed", "The algorithm could not achieve", "Maximum number of iteration")
_F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # bf16 execution would add its own noise to the comparison


def quantize_with_accuracy_control(
    artifact: Artifact,
    *,
    calibration: ImageDataset,
    holdout: ImageDataset,
    config: NncfPtqConfig,
    path: Path,
    seed: int = 0,
) -> tuple[Artifact, QuantizationStats]:
    """NNCF PTQ that keeps the holdout top-1 drop within ``config.max_drop`` (absolute fraction).

    Calibrates on ``calibration`` (the train split) and validates on ``holdout`` (never the test split).
    When NNCF cannot reach the budget, the best model it returned is still saved: the summary then says
    ``budget_met=False`` and notes the drop reached.

    Args:
        artifact: float OpenVINO IR or ONNX.
        calibration: images NNCF collects activation statistics on.
        holdout: images the accuracy drop is measured on (at least 10).
        config: preset, subset size, ignored scope, fast bias correction, and ``max_drop``.
        path: where the int8 IR (``.xml`` + ``.bin``) is written.
        seed: seed of the calibration subset.

    Raises:
        ShapeError: the model is already quantized, or the images do not fit its input.
        DataError: fewer than 10 holdout images, or too few calibration images.
        OutputError: ``path`` is not an ``.xml`` path.
    """
    import nncf
    import openvino as ov

    if path.suffix != ".xml":
        raise OutputError(f"accuracy control writes OpenVINO IR; give a .xml path, not {path.name}")
    model = read_model(artifact)
    if is_quantized(model):
        raise ShapeError(f"{artifact.path} is already quantized; give the float model")
    shape = static_input_shape(
        model.inputs[0].get_partial_shape(), source=str(artifact.path), given=artifact.input_shape
    )
    validation_items = _holdout_items(holdout, input_shape=shape)
    dataset, subset = calibration_dataset(calibration, size=config.subset_size, input_shape=shape, seed=seed)
    gates = float_gates(model, config)
    settings = {
        **nncf_settings(model, config, subset=subset, gates=gates),
        "drop_type": "absolute",
        "holdout_samples": len(validation_items),
    }
    arguments = nncf_quantize_arguments(settings, config, gates=gates, chosen=float_layer_names(model, config))
    core = ov.Core()
    float_top1 = _top1(core.compile_model(model, "CPU", _F32), validation_items)[0]

    with _captured_nncf_log() as nncf_log:
        plain = nncf.quantize(read_model(artifact), dataset, **arguments)
        plain_float_layers = {name for name, _kind in layer_precisions(plain)[1]}
        plain_top1 = _top1(core.compile_model(plain, "CPU", _F32), validation_items)[0]
        del plain
        controlled = nncf.quantize_with_accuracy_control(
            model,
            dataset,
            nncf.Dataset(validation_items),
            _top1,
            max_drop=config.max_drop,
            drop_type=nncf.DropType.ABSOLUTE,
            **arguments,
        )
    save_openvino(controlled, path=path)
    result = Artifact(
        format="openvino", path=path, precision="int8", input_shape=shape,
        lineage=[
            *artifact.lineage,
            f"nncf-accuracy-control(preset={settings['preset']}, subset={subset}, max_drop={config.max_drop})",
        ],
    )  # fmt: skip
    quantized_top1 = _top1(core.compile_model(read_model(result), "CPU", _F32), validation_items)[0]

    quantized, floating = layer_precisions(controlled)
    gate_names = set(node_names(gates))

    def why(name: str) -> str:
        if in_gates(name, gate_names):
            return GATE_REASON
        return NOT_QUANTIZED if name in plain_float_layers else REVERTED

    float_layers = [FloatLayer(name=name, type=kind, reason=why(name)) for name, kind in floating]
    drop = float_top1 - quantized_top1
    budget_met = drop <= config.max_drop + 1e-9
    notes = [f"plain PTQ (no accuracy control) reached holdout top-1 {plain_top1:.4f}"]
    notes += [
        f"nncf: {_first_line(message)}"
        for message in nncf_log
        if message.startswith(_VERDICTS) or " were reverted back " in message
    ]
    if not budget_met:
        notes.append(
            f"budget not met: holdout top-1 drop {drop:.4f} exceeds max_drop {config.max_drop}; "
            "kept the best model NNCF returned"
        )
    summary = QuantizationStats(
        method="nncf-accuracy-control",
        settings=settings,
        quantized_layers=len(quantized),
        float_layers=float_layers,
        holdout_top1_float=float_top1,
        holdout_top1_quantized=quantized_top1,
        max_drop=config.max_drop,
        budget_met=budget_met,
        notes=notes,
    )
    return result, summary


def _holdout_items(holdout: ImageDataset, *, input_shape: tuple[int, ...]) -> list[tuple[np.ndarray, int]]:
    """The holdout split as (1 x C x H x W array, label) pairs, converted once: NNCF validates many times."""
    if len(holdout) < MIN_HOLDOUT_SAMPLES:
        raise DataError(
            f"accuracy control needs at least {MIN_HOLDOUT_SAMPLES} holdout images; the holdout split has "
            f"{len(holdout)}"
        )
    items = [(image.unsqueeze(0).numpy(), int(label)) for image, label in holdout]
    if items[0][0].shape != tuple(input_shape):
        raise ShapeError(f"holdout images have shape {items[0][0].shape} but the model takes {tuple(input_shape)}")
    return items


def _top1(compiled_model, items) -> tuple[float, list[float]]:
    """NNCF's validation function: top-1 (fraction) and per-item correctness of an ``ov.CompiledModel``.

    Returning per-item values puts NNCF in metric mode, so it ranks layers by accuracy on a subset
    instead of collecting every output.
    """
    request = compiled_model.create_infer_request()
    correct = []
    for image, label in items:
        logits = request.infer({0: image})[compiled_model.outputs[0]]
        correct.append(float(int(np.argmax(logits)) == label))
    return (float(np.mean(correct)) if correct else 0.0), correct


@contextlib.contextmanager
def _captured_nncf_log() -> Iterator[list[str]]:
    """NNCF's INFO messages, collected instead of printed (its verdict on the budget is among them)."""
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("nncf")
    with quiet_nncf():
        handlers, level = logger.handlers[:], logger.level
        logger.handlers = [_Collect(logging.INFO)]
        logger.setLevel(logging.INFO)
        try:
            yield messages
        finally:
            logger.handlers = handlers
            logger.setLevel(level)


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0].rstrip(":") if message.strip() else message


class NncfAccuracyControl(QuantizationMethod):
    """NNCF PTQ that keeps the most sensitive layers in float until the holdout drop is within ``max_drop``."""

    name = "nncf-accuracy-control"
    float_units = ("layer", "gate", "add")
    backends = ("openvino",)
    config = NncfPtqConfig
    tier = 1

    def quantize(self, job: QuantizeJob) -> tuple[Artifact, QuantizationStats]:
        return quantize_with_accuracy_control(
            job.base, calibration=job.splits.train, holdout=job.splits.holdout, config=job.config, path=job.path,
            seed=job.seed,
        )  # fmt: skip
