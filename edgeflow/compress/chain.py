"""The method chain: build each recipe variant's artifact from the run's float artifacts (fp16, or INT8 by the
variant's method: one step each in this package), and ``auto``, which tries methods in order until the holdout
drop fits the budget."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeflow.accuracy import holdout_top1
from edgeflow.artifact import Artifact
from edgeflow.compress.stats import QuantizationStats
from edgeflow.data import DataSplits
from edgeflow.device import RuntimeSettings
from edgeflow.errors import ConfigError
from edgeflow.progress import Progress
from edgeflow.recipe import QuantizeConfig, VariantSpec


@dataclass
class FloatArtifacts:
    """What every variant is built from: the float ONNX, its IR (if any variant runs OpenVINO), its LiteRT
    ``.tflite`` (if any runs LiteRT, converted from the torch model), the torch model."""

    onnx: Artifact
    openvino: Artifact | None
    module: Any  # torch module, or None for an ONNX input
    input_shape: tuple[int, ...]
    litert: Artifact | None = None

    def base(self, backend: str) -> Artifact:
        """The float artifact a variant on ``backend`` is built from."""
        chosen = {"openvino": self.openvino, "litert": self.litert}.get(backend, self.onnx)
        assert chosen is not None, f"the float {backend} artifact is built whenever a variant runs on {backend}"
        return chosen


def build_variant(
    variant: VariantSpec,
    *,
    floats: FloatArtifacts,
    splits: DataSplits,
    folder: Path,
    seed: int = 0,
    progress: Progress | None = None,
    file_stem: str | None = None,
    settings: RuntimeSettings | None = None,
) -> tuple[Artifact, QuantizationStats | None]:
    """The artifact ``variant`` runs, written into ``folder`` (as ``model_<variant>`` unless ``file_stem``),
    and what quantization did (if any). ``settings`` are the device's runtime settings, for steps that
    time candidates (``preset: fastest``)."""
    if variant.backend == "torch":
        if floats.module is None:
            raise ConfigError(f"variant {variant.name}: an ONNX model has no torch module to run")
        artifact = Artifact(
            format="torch", path=folder / "model.pt", module=floats.module, input_shape=floats.input_shape,
            lineage=["torch"],
        )  # fmt: skip
        return artifact, None
    base = floats.base(variant.backend)
    if variant.precision in ("fp32", "bf16"):  # bf16 is an execution precision of the fp32 artifact
        return base, None
    if variant.backend == "tensorrt" and variant.precision == "fp16":
        # TensorRT reads the float ONNX and builds an fp16 engine from it (--fp16): no fp16 file to ship
        return base, None
    suffix = {"openvino": ".xml", "litert": ".tflite"}.get(variant.backend, ".onnx")
    path = folder / f"{file_stem or 'model_' + variant.name}{suffix}"
    if variant.precision == "fp16":
        return _fp16(base, path=path), None
    return _int8(
        variant, base=base, floats=floats, splits=splits, path=path, seed=seed, progress=progress, settings=settings
    )


def is_quantized_artifact(artifact: Artifact) -> bool:
    """Whether an ONNX, IR or LiteRT file already carries quantization: an ONNX is read as ONNX (QDQ pairs,
    QLinear* or *Integer nodes, which OpenVINO may not read), an IR through OpenVINO (FakeQuantize, int8
    weights), a ``.tflite`` through LiteRT's interpreter (integer weights)."""
    if artifact.format == "onnx":
        from edgeflow.compress.ort_quantize import is_quantized_onnx

        return is_quantized_onnx(artifact.path)
    if artifact.format == "litert":
        from edgeflow.compress.litert_quantize import weighted_layers

        return bool(weighted_layers(artifact.path)[0])
    from edgeflow.backends.openvino import read_model
    from edgeflow.compress.nncf_ptq import is_quantized

    return is_quantized(read_model(artifact))


def _fp16(base: Artifact, *, path: Path) -> Artifact:
    if base.format == "onnx":
        from edgeflow.compress.ort_quantize import convert_onnx_fp16

        return convert_onnx_fp16(base, path=path)
    if base.format == "litert":
        from edgeflow.export.litert import compress_tflite_fp16

        return compress_tflite_fp16(base, path=path)
    from edgeflow.export.openvino import compress_openvino_fp16

    return compress_openvino_fp16(base, path=path)


# What ``auto`` tries, in order, until the holdout drop fits the budget.
AUTO_CHAIN = {
    "openvino": ("nncf-ptq", "nncf-accuracy-control", "nncf-qat"),
    "onnxruntime": ("ort-static", "nncf-ptq"),
    "litert": ("litert-static",),
}
# ``ort-static`` with ``calibrate_method: auto``: min-max ranges first, their moving average over the calibration
# images when the holdout drop exceeds the budget (on Imagenette it keeps EfficientNet-B0 at 54.6% holdout top-1
# where min-max collapses it to 17.1%, while min-max agrees more with float on the other models).
AUTO_CALIBRATION = ("minmax", "minmax-average")


@dataclass(frozen=True)
class Attempt:
    """One try of a budget search: a method, and the calibration it uses where the method has a choice."""

    method: str
    calibrate_method: str | None = None

    @property
    def label(self) -> str:
        return self.method + (f" ({self.calibrate_method})" if self.calibrate_method else "")

    @property
    def slug(self) -> str:
        """The label as a file-name part."""
        return self.method + (f"-{self.calibrate_method}" if self.calibrate_method else "")

    def config(self, config: QuantizeConfig) -> QuantizeConfig:
        update: dict[str, Any] = {"method": self.method}
        if self.calibrate_method:
            update["calibrate_method"] = self.calibrate_method
        return config.model_copy(update=update)


def attempts_of(methods: tuple[str, ...], config: QuantizeConfig) -> list[Attempt]:
    """The tries ``methods`` stand for: ``ort-static`` is one per calibration when ``calibrate_method`` is auto."""
    attempts = []
    for method in methods:
        if method == "ort-static" and config.calibrate_method == "auto":
            attempts.extend(Attempt(method, calibration) for calibration in AUTO_CALIBRATION)
        else:
            attempts.append(Attempt(method))
    return attempts


def quantize_within_budget(
    variant: VariantSpec,
    *,
    methods: tuple[str, ...],
    base: Artifact,
    floats: FloatArtifacts,
    splits: DataSplits,
    path: Path,
    seed: int,
    progress: Progress | None,
    settings: RuntimeSettings | None = None,
) -> tuple[Artifact, QuantizationStats]:
    """Try ``methods`` in order (each calibration of ``ort-static`` when ``calibrate_method`` is auto, see
    :func:`attempts_of`) until the holdout drop is within ``max_drop``; keep the best artifact.

    Every attempt is written beside ``path`` under its label; the best is renamed to ``path`` and the others
    removed. The summary records the attempts and whether the budget was met.
    """
    config = variant.quantize
    assert config is not None
    if floats.module is None:
        methods = tuple(method for method in methods if method != "nncf-qat")
    float_top1 = holdout_top1(base, splits.holdout)
    best: tuple[Artifact, QuantizationStats, float] | None = None
    attempts, tried = [], []
    for attempt in attempts_of(methods, config):
        if progress is not None:
            progress.stage(f"variant {variant.name}: {attempt.label}")
        step = variant.model_copy(update={"quantize": attempt.config(config)})
        artifact, summary = _int8(
            step, base=base, floats=floats, splits=splits,
            path=path.with_name(f"{path.stem}.{attempt.slug}{path.suffix}"),
            seed=seed, progress=progress, settings=settings,
        )  # fmt: skip
        top1 = holdout_top1(artifact, splits.holdout)
        tried.append(attempt.label)
        attempts.append(f"{attempt.label}: holdout top-1 {100 * top1:.2f}% (float {100 * float_top1:.2f}%)")
        if best is None or top1 > best[2]:
            if best is not None:
                best[0].remove()
            best = (artifact, summary, top1)
        else:
            artifact.remove()
        if float_top1 - best[2] <= config.max_drop + 1e-9:
            break
    assert best is not None, "no quantization method to try"
    artifact, summary, top1 = best
    final = artifact.move_to(path)
    met = float_top1 - top1 <= config.max_drop + 1e-9
    summary = summary.model_copy(
        update={
            "holdout_top1_float": float_top1,
            "holdout_top1_quantized": top1,
            "max_drop": config.max_drop,
            "budget_met": met,
            "attempts": tried,
            "notes": [*summary.notes, *attempts]
            + (
                [] if met else [f"budget not met: best drop {100 * (float_top1 - top1):.2f} points, kept that artifact"]
            ),
        }
    )
    return final, summary


def _int8(
    variant: VariantSpec,
    *,
    base: Artifact,
    floats: FloatArtifacts,
    splits: DataSplits,
    path: Path,
    seed: int,
    progress: Progress | None,
    settings: RuntimeSettings | None = None,
) -> tuple[Artifact, QuantizationStats]:
    config = variant.quantize
    assert config is not None
    if config.method == "auto":
        return quantize_within_budget(
            variant, methods=AUTO_CHAIN[variant.backend], base=base, floats=floats, splits=splits, path=path,
            seed=seed, progress=progress, settings=settings,
        )  # fmt: skip
    if config.method == "nncf-ptq" and config.preset == "fastest":
        from edgeflow.compress.fastest_preset import quantize_fastest_preset

        return quantize_fastest_preset(base, splits=splits, config=config, path=path, seed=seed, settings=settings)
    if config.method == "nncf-ptq":
        from edgeflow.compress.nncf_ptq import quantize_nncf

        return quantize_nncf(base, calibration=splits.train, config=config, path=path, seed=seed)
    if config.method == "nncf-accuracy-control":
        from edgeflow.compress.accuracy_control import quantize_with_accuracy_control

        return quantize_with_accuracy_control(
            base, calibration=splits.train, holdout=splits.holdout, config=config, path=path, seed=seed
        )
    if config.method == "nncf-qat":
        if floats.module is None:
            raise ConfigError(f"variant {variant.name}: quantization-aware training needs a torch model, not ONNX")
        from edgeflow.compress.qat import quantization_aware_training

        return quantization_aware_training(
            floats.module, splits=splits, config=config, input_shape=floats.input_shape, path=path, seed=seed,
            progress=progress,
        )  # fmt: skip
    if config.method == "ort-static" and config.calibrate_method == "auto":
        return quantize_within_budget(
            variant, methods=("ort-static",), base=base, floats=floats, splits=splits, path=path, seed=seed,
            progress=progress, settings=settings,
        )  # fmt: skip
    if config.method == "ort-static":
        from edgeflow.compress.ort_quantize import quantize_onnx_static

        return quantize_onnx_static(base, calibration=splits.train, config=config, path=path, seed=seed)
    if config.method == "litert-static":
        from edgeflow.compress.litert_quantize import quantize_litert_static

        return quantize_litert_static(base, calibration=splits.train, config=config, path=path, seed=seed)
    if config.method == "ort-dynamic":
        from edgeflow.compress.ort_quantize import quantize_onnx_dynamic

        return quantize_onnx_dynamic(base, config=config, path=path)
    raise ConfigError(f"variant {variant.name}: unknown quantization method {config.method}")
