"""``edgeflow quantize``: quantize one exported artifact for a device, within an accuracy budget, with evidence
(the method chain of :mod:`edgeflow.variants` on a file, rather than on ``optimize``'s variants)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel

from edgeflow.accuracy import (
    AccuracyStats,
    ParityStats,
    accuracy_from_logits,
    check_outputs,
    collect_logits,
    measure_parity,
)
from edgeflow.backends import artifact_from_path, get_backend, is_quantized_artifact
from edgeflow.backends.base import RuntimeSettings
from edgeflow.compress import AUTO, auto_methods, get_method, methods_for, settings_keys
from edgeflow.compress.stats import QuantizationStats
from edgeflow.data.classes import read_class_order
from edgeflow.data.load import load_data_for_input
from edgeflow.data.preprocess import PreprocessSpec, as_preprocess, parse_input_shape
from edgeflow.device import DeviceSpec, as_device, choose_backend
from edgeflow.errors import ConfigError, ShapeError
from edgeflow.io import staged_entries
from edgeflow.models.onnx_input import prepare_artifact
from edgeflow.progress import Progress
from edgeflow.recipe import QuantizeConfig, VariantSpec
from edgeflow.variants import FloatArtifacts, quantize_within_budget

Preset = Literal["fastest", "auto", "mixed", "performance"]
_F32 = RuntimeSettings(execution_precision="f32")


class QuantizeStats(BaseModel):
    """A quantized artifact and the evidence that it is close to its float original."""

    artifact: str
    backend: str
    method: str
    attempts: list[str]  # methods tried, in order (auto tries PTQ first)
    float_accuracy: AccuracyStats  # test split, through the runtime
    accuracy: AccuracyStats  # test split, through the runtime
    holdout_top1_float: float
    holdout_top1: float
    max_drop: float
    budget_met: bool  # judged on the holdout split
    agreement: ParityStats  # quantized vs float logits on the test images
    summary: QuantizationStats
    message: str


def quantize_artifact(
    artifact: str | Path,
    *,
    device: str | Path | DeviceSpec = "cpu",
    data: str = "digits",
    method: str = "auto",
    max_drop: float = 0.01,
    backend: str | None = None,
    out: str | Path | None = None,
    subset_size: int = 300,
    preset: Preset = "fastest",
    seed: int = 0,
    progress: Progress | None = None,
    preprocess: str | Path | PreprocessSpec | None = None,
    input_shape: str | tuple[int, ...] | None = None,
    labels: str | Path | None = None,
    class_map: str | Path | None = None,
) -> QuantizeStats:
    """Quantize a float ``.onnx``/``.xml``/``.tflite`` artifact to INT8 for ``device``.

    ``auto`` runs the backend's default method (:mod:`edgeflow.compress`) and, while the holdout drop
    exceeds ``max_drop``, the other methods that serve the backend and quantize a file, cheapest first
    (accuracy-controlled PTQ, which keeps the most sensitive layers in float, for OpenVINO IR).
    When the budget cannot be met, the best artifact is kept and the result says what was reached.
    ``preset`` (NNCF PTQ): ``fastest`` builds both activation schemes and keeps the one that runs
    fastest on ``device`` within the budget; ``auto`` picks by rule (mixed for h-swish networks).
    ``preprocess``, ``input_shape``, ``labels`` and ``class_map`` are as for :func:`edgeflow.evaluate`; with a
    sparse class map, calibration is the same and top-1 is over every output.
    """
    progress = progress or Progress.silent()
    if preset not in get_args(Preset):
        raise ConfigError(f"unknown preset {preset!r}; choose {', '.join(get_args(Preset))}")
    device_spec = as_device(device)
    if "int8" not in device_spec.precisions:
        raise ConfigError(f"device {device_spec.name} does not run int8 (it has: {', '.join(device_spec.precisions)})")
    mapping = read_class_order(labels=labels, class_map=class_map)
    source = artifact_from_path(artifact)
    spec, own_order = prepare_artifact(
        source, input_shape=parse_input_shape(input_shape), preprocess=as_preprocess(preprocess)
    )
    mapping = mapping if mapping is not None else own_order
    if is_quantized_artifact(source):  # said before anything is built or printed
        raise ShapeError(f"{source.path} is already quantized; give the float model")
    target = choose_backend(source, device_spec, backend=backend)
    methods = _methods(method, target)  # before anything is compiled or loaded
    out_dir = Path(out) if out is not None else source.path.parent
    float_model = get_backend(target).compile(source, settings=_F32)
    splits = load_data_for_input(
        data, input_shape=float_model.input_shape, preprocess=spec, seed=seed, class_map=mapping
    ).labelled_by_output()

    float_test, truth = collect_logits(float_model, splits.test)
    if mapping is None:
        check_outputs(float_test, num_classes=splits.num_classes, data=str(data))
    elif max(mapping.values()) >= float_test.shape[1]:  # a labels file or map naming outputs with no folder is fine
        raise ShapeError(
            f"{getattr(mapping, 'source', 'the class map')} names output {max(mapping.values())} but the model has "
            f"{float_test.shape[1]} outputs (0 to {float_test.shape[1] - 1})"
        )
    floats = FloatArtifacts.of(source, module=None, input_shape=tuple(float_model.input_shape), folder=out_dir)
    floats.built[target] = source  # the given file is the float artifact of its runtime
    source.input_shape = tuple(float_model.input_shape)
    keys = settings_keys(AUTO, target, default=get_backend(target).default_int8)  # every method's keys auto may try
    variant = VariantSpec(
        name="int8",
        backend=target,
        precision="int8",
        quantize=QuantizeConfig(
            method="auto",
            subset_size=subset_size,
            max_drop=max_drop,
            **({"preset": preset} if "preset" in keys else {}),
        ),  # fmt: skip
    )
    written = source.path.with_name(f"{source.path.stem}_int8{source.path.suffix}")
    names = [file.name for file in replace(source, path=written).files]
    with staged_entries(out_dir, names=names) as stage:  # a file edgeflow did not write there is never overwritten
        quantized, summary = quantize_within_budget(
            variant, methods=methods, base=source, floats=floats, splits=splits,
            path=stage / written.name, seed=seed, progress=progress,
            settings=device_spec.runtime,
        )  # fmt: skip
        compiled = get_backend(target).compile(quantized, settings=_F32)
        logits, _ = collect_logits(compiled, splits.test)
    quantized.path = out_dir / quantized.path.name
    float_holdout, holdout = summary.holdout_top1_float, summary.holdout_top1_quantized
    message = (
        f"holdout top-1 {100 * holdout:.2f}% vs float {100 * float_holdout:.2f}%: "
        f"drop {100 * (float_holdout - holdout):.2f} points, budget {100 * max_drop:.2f}"
        + ("" if summary.budget_met else "; budget NOT met: kept the best artifact reached")
    )
    return QuantizeStats(
        artifact=str(quantized.path),
        backend=target,
        method=summary.method,
        attempts=summary.attempts,
        float_accuracy=accuracy_from_logits(float_test, truth, split="test", runtime=target),
        accuracy=accuracy_from_logits(logits, truth, split="test", runtime=target),
        holdout_top1_float=float_holdout,
        holdout_top1=holdout,
        max_drop=max_drop,
        budget_met=bool(summary.budget_met),
        agreement=measure_parity(float_test, logits, reference_name=str(source.path), runtime=target),
        summary=summary,
        message=message,
    )


def _methods(method: str, target: str) -> tuple[str, ...]:
    """The methods to try on a float file for ``target``: the one named, or ``auto``'s (a method that needs the
    torch model cannot quantize a file)."""
    default = get_backend(target).default_int8
    serving = methods_for(target)
    allowed = [name for name in serving if not get_method(name).needs_module]
    if not allowed:
        raise ConfigError(f"{target} files are quantized from the torch model ({', '.join(serving)}), not from a file: "
                          f"give the model to `edgeflow optimize` with an int8 {target} variant")  # fmt: skip
    if method != AUTO:
        if method not in allowed:
            raise ConfigError(f"method {method} does not build {target} artifacts from a file (use "
                              f"{', '.join(sorted(allowed))})")  # fmt: skip
        return (method,)
    return auto_methods(target, default=default, with_module=False)
