"""Mixed precision from measurements through the exported runtime: what each weighted layer costs in accuracy
when it alone is INT8, what keeping it alone in float costs in latency on the device, and the set of layers
kept in float that meets an agreement budget at the least latency, checked whole.

Every artifact here is built by the variant's own quantization method (its ``float_layers`` key keeps the
chosen layers in float: nncf-ptq, nncf-accuracy-control, ort-static) and scored and timed through its runtime:

* *quantized alone*: every other weighted layer in float; top-1 agreement with the float artifact and top-1 on
  the holdout split (never test). A layer whose rounding hurts shows here, whatever the others do.
* *kept alone in float*: every other layer INT8; timed in turn with the all-INT8 file (medians of rounds): the
  latency a float layer costs where it sits, with the conversions around it, as the runtime runs it.
* *the choice*: layers ranked by agreement lost alone per millisecond they cost in float, added one at a time to
  the float set, the whole file built and scored on holdout after each, until the budget is met. Effects do not
  add exactly, so the budget is judged on the whole file, never on the sum.

AIMET and TensorRT Model Optimizer rank layers in simulation against a bit budget; here both sides are measured
on the artifact that ships.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeflow.accuracy import collect_logits
from edgeflow.artifact import Artifact
from edgeflow.backends import get_backend
from edgeflow.backends.base import RuntimeSettings
from edgeflow.compress import AUTO, get_method
from edgeflow.compress.layers import quantizable_layers
from edgeflow.compress.stats import (
    LayerSensitivity,
    MixedPrecisionStats,
    MixedStep,
    QuantizationStats,
    SensitivityStats,
)
from edgeflow.data import DataSplits
from edgeflow.errors import ConfigError
from edgeflow.profiling.in_turn import time_in_turn
from edgeflow.profiling.loop import ProfileConfig
from edgeflow.progress import Progress
from edgeflow.recipe import VariantSpec
from edgeflow.variants import FloatArtifacts, build_variant

TIMING = ProfileConfig(warmup=10, iterations=100_000, max_seconds=0.4, min_iterations=20)


class _Builder:
    """Builds the variant with a float set, scores it on holdout against the float artifact, compiles it."""

    def __init__(self, variant: VariantSpec, *, floats: FloatArtifacts, splits: DataSplits, folder: Path, seed: int,
                 settings: RuntimeSettings, max_samples: int | None) -> None:  # fmt: skip
        self.variant, self.floats, self.splits, self.folder, self.seed = variant, floats, splits, folder, seed
        self.settings, self.max_samples = settings, max_samples
        self.runtime = get_backend(variant.backend)
        compiled = self.runtime.compile(floats.base(variant.backend), settings=settings)
        self.float_logits, self.labels = collect_logits(compiled, splits.holdout, max_samples=max_samples)
        self.summaries: dict[Path, QuantizationStats] = {}

    def build(self, float_layers: list[str], *, stem: str) -> Artifact:
        quantize = self.variant.quantize.model_copy(update={"float_layers": list(float_layers)})
        variant = self.variant.model_copy(update={"quantize": quantize})
        artifact, summary = build_variant(variant, floats=self.floats, splits=self.splits, folder=self.folder,
                                          seed=self.seed, file_stem=stem, settings=self.settings)  # fmt: skip
        self.summaries[Path(artifact.path)] = summary
        return artifact

    def score(self, artifact: Artifact):
        """(agreement with float, top-1) on holdout, and the compiled model."""
        compiled = self.runtime.compile(artifact, settings=self.settings)
        logits, _ = collect_logits(compiled, self.splits.holdout, max_samples=self.max_samples)
        predicted = logits.argmax(1)
        agreement = float(np.mean(predicted == self.float_logits.argmax(1)))
        return agreement, float(np.mean(predicted == self.labels)), compiled


def mixed_variant(variant: VariantSpec) -> VariantSpec:
    """``variant`` with a method that keeps chosen layers in float (``auto``: the backend's default).

    Raises:
        ConfigError: the variant is not INT8, or its method cannot keep layers in float.
    """
    if variant.precision != "int8" or variant.quantize is None:
        raise ConfigError(f"variant {variant.name}: mixed precision is for INT8 variants")
    method = variant.quantize.method
    if method == AUTO:
        method = get_backend(variant.backend).default_int8
    if "float_layers" not in get_method(method).config.model_fields:
        raise ConfigError(f"variant {variant.name}: {method} cannot keep chosen layers in float (float_layers)")
    return variant.model_copy(update={"quantize": variant.quantize.model_copy(update={"method": method})})


def measure_sensitivity(
    variant: VariantSpec,
    *,
    floats: FloatArtifacts,
    splits: DataSplits,
    folder: Path,
    settings: RuntimeSettings,
    seed: int = 0,
    rounds: int = 5,
    max_samples: int | None = None,
    layers: list[str] | None = None,
    progress: Progress | None = None,
) -> SensitivityStats:
    """Each weighted layer (or those named in ``layers``) quantized alone and kept alone in float, through the
    variant's method and runtime (module docstring)."""
    progress = progress or Progress.silent()
    started = time.perf_counter()
    variant = mixed_variant(variant)
    every = quantizable_layers(floats.onnx)
    chosen = [layer for layer in every if layers is None or layer.name in layers or layer.module in layers]
    if layers is not None and len(chosen) < len(set(layers)):
        known = {name for layer in every for name in (layer.name, layer.module)}
        missing = sorted(set(layers) - known)
        raise ConfigError(f"mixed_precision.layers: {missing[0]!r} is not a weighted layer of the model")
    names = [layer.name for layer in every]
    builder = _Builder(variant, floats=floats, splits=splits, folder=folder, seed=seed, settings=settings,
                       max_samples=max_samples)  # fmt: skip
    float_top1 = float(np.mean(builder.float_logits.argmax(1) == builder.labels))
    progress.stage(f"sensitivity of {len(chosen)} layers through {variant.backend} ({variant.quantize.method})")
    all_int8 = builder.build([], stem="sensitivity-all-int8")
    int8_agreement, int8_top1, int8_compiled = builder.score(all_int8)
    alone: dict[str, tuple[float, float]] = {}
    in_float: dict[str, Any] = {}
    for index, layer in enumerate(chosen):
        progress.stage(f"layer {index + 1}/{len(chosen)} {layer.module}: INT8 alone, then float alone")
        only = builder.build([name for name in names if name != layer.name], stem=f"sensitivity-{index}-alone")
        agreement, top1, _compiled = builder.score(only)
        alone[layer.name] = (agreement, top1)
        only.remove()
        kept = builder.build([layer.name], stem=f"sensitivity-{index}-float")
        in_float[layer.name] = builder.runtime.compile(kept, settings=settings)
        kept.remove()
    progress.stage(f"time the all-INT8 file and the {len(in_float)} with one layer in float, in turn ({rounds} rounds)")
    timed = time_in_turn({"__all_int8__": int8_compiled, **in_float}, rounds=rounds, config=TIMING).medians()
    int8_ms = timed.pop("__all_int8__")
    all_int8.remove()
    rows = [
        LayerSensitivity(
            **layer.model_dump(),
            alone_agreement=alone[layer.name][0],
            alone_top1=alone[layer.name][1],
            float_ms=timed[layer.name],
            float_cost=timed[layer.name] / int8_ms - 1,
        )  # fmt: skip
        for layer in chosen
    ]
    return SensitivityStats(
        variant=variant.name, backend=variant.backend, method=variant.quantize.method,
        holdout_images=len(builder.labels), float_top1=float_top1, int8_top1=int8_top1,
        int8_agreement=int8_agreement, int8_ms=int8_ms, rounds=rounds, layers=rows,
        seconds=round(time.perf_counter() - started, 1),
    )  # fmt: skip


def choose_float_layers(
    variant: VariantSpec,
    sensitivity: SensitivityStats,
    *,
    floats: FloatArtifacts,
    splits: DataSplits,
    folder: Path,
    settings: RuntimeSettings,
    agreement: float = 0.99,
    max_layers: int = 16,
    seed: int = 0,
    max_samples: int | None = None,
    file_stem: str | None = None,
    progress: Progress | None = None,
) -> tuple[Artifact, QuantizationStats]:
    """The variant's file with the fewest-milliseconds float set that meets ``agreement`` with float on holdout:
    layers added in :meth:`SensitivityStats.ranked` order, the whole file built and scored after each (at most
    ``max_layers``). Where no set of ``max_layers`` meets it, the best one tried is kept and ``met`` is false.

    The file is written as ``file_stem`` (else ``mixed-<layers>``) in ``folder``; its summary carries what was
    chosen, the steps and the sensitivity (``QuantizationStats.mixed_precision``)."""
    progress = progress or Progress.silent()
    variant = mixed_variant(variant)
    builder = _Builder(variant, floats=floats, splits=splits, folder=folder, seed=seed, settings=settings,
                       max_samples=max_samples)  # fmt: skip
    kept: list[str] = []
    steps: list[MixedStep] = []
    best: tuple[float, float, Artifact | None, list[str]] = (
        sensitivity.int8_agreement, sensitivity.int8_top1, None, [],
    )  # fmt: skip
    if sensitivity.int8_agreement < agreement:
        for layer in sensitivity.ranked()[:max_layers]:
            kept.append(layer.name)
            progress.stage(f"mixed precision: {len(kept)} layers in float (+{layer.module})")
            artifact = builder.build(kept, stem=f"mixed-{len(kept)}")
            score, top1, _ = builder.score(artifact)
            steps.append(MixedStep(added=layer.name, float_layers=len(kept), agreement=score, top1=top1))
            if score > best[0]:
                if best[2] is not None:
                    best[2].remove()
                best = (score, top1, artifact, list(kept))
            else:
                artifact.remove()
            if score >= agreement:
                break
    score, top1, artifact, chosen = best
    if artifact is None:
        artifact = builder.build([], stem="mixed-0")
    summary = builder.summaries[Path(artifact.path)]
    if file_stem is not None:
        artifact = artifact.move_to(Path(folder) / f"{file_stem}{Path(artifact.path).suffix}")
    modules = {layer.name: layer.module for layer in sensitivity.layers}
    mixed = MixedPrecisionStats(
        agreement_budget=agreement, float_layers=chosen, float_modules=[modules.get(name, name) for name in chosen],
        steps=steps, agreement=score, top1=top1, met=score >= agreement, sensitivity=sensitivity,
    )  # fmt: skip
    note = (
        f"mixed precision: {len(chosen)} layers kept in float ({', '.join(mixed.float_modules) or 'none'}); holdout "
        f"agreement with float {100 * sensitivity.int8_agreement:.2f}% all-INT8 -> {100 * score:.2f}% "
        f"(budget {100 * agreement:.2f}%{'' if mixed.met else ', NOT met'})"
    )
    return artifact, summary.model_copy(update={"mixed_precision": mixed, "notes": [*summary.notes, note]})


def build_mixed_variant(
    variant: VariantSpec,
    *,
    floats: FloatArtifacts,
    splits: DataSplits,
    folder: Path,
    seed: int = 0,
    progress: Progress | None = None,
    file_stem: str | None = None,
    settings: RuntimeSettings | None = None,
) -> tuple[Artifact, QuantizationStats]:
    """A variant with ``mixed_precision`` set, built as :func:`edgeflow.variants.build_variant` builds the others
    (written as ``model_<variant>``): its sensitivity measured, its float set chosen and checked whole."""
    config = variant.mixed_precision
    if config is None:
        raise ConfigError(f"variant {variant.name} has no mixed_precision section")
    settings = settings or RuntimeSettings()
    sensitivity = measure_sensitivity(
        variant, floats=floats, splits=splits, folder=folder, settings=settings, seed=seed, rounds=config.rounds,
        max_samples=config.holdout_samples, layers=config.layers, progress=progress,
    )  # fmt: skip
    return choose_float_layers(
        variant, sensitivity, floats=floats, splits=splits, folder=folder, settings=settings,
        agreement=config.agreement, max_layers=config.max_layers, seed=seed, max_samples=config.holdout_samples,
        file_stem=file_stem or f"model_{variant.name}", progress=progress,
    )  # fmt: skip
