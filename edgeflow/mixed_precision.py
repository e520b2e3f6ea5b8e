"""Mixed precision from measurements through the exported runtime: what each unit costs in accuracy when it
alone is INT8, what keeping it alone in float costs in latency on the device, and the set of units kept in float
that meets an agreement budget at the least latency, checked whole.

A unit (:mod:`edgeflow.compress.layers`) is a weighted layer, a squeeze-and-excitation gate (its nodes share one
precision) or a residual add; each method declares which kinds it can keep in float (``float_units``).

Every artifact here is built by the post-training quantization the variant's method stands for (its
``float_layers`` key keeps the chosen layers in float: nncf-ptq, ort-static, litert-static, executorch-pt2e; NNCF's
accuracy control and ``auto`` are built as the method they start from) and scored and timed through its runtime,
on the holdout split (never test), against the float file: top-1 agreement, and the mean KL divergence of the
float file's softmax to the candidate's (continuous, where agreement on a few hundred images moves in steps):

* *start*: where the variant's settings stand for several post-training quantizations (ort-static's
  ``calibrate_method: auto``: each calibration; ``method: auto``: each post-training method), each is built
  all-INT8, scored and timed in turn; the one of least KL among those within 10% of the fastest's p50 is the start
  every file below is built with (:func:`pick_start`). The choice of calibration comes before the choice of float
  units.
* *reference*: every unit in float (what the method quantizes outside them stays INT8); a unit's damage is
  measured over it.
* *INT8 alone*: every other unit in float. A unit whose rounding hurts shows here.
* *float alone*: every other unit INT8; scored (what keeping it buys) and timed in turn with the all-INT8 file
  (medians of rounds): the latency a float layer costs where it sits, conversions included.
* *the choice*: units ranked by KL recovered per millisecond they cost in float; each is tried in float with
  those kept so far, the whole file built and scored, and kept only if the KL fell by 2% or more; until the agreement
  budget is met on the whole file. Effects do not add exactly, so the budget is judged on the whole file, and a
  second pass tries again each unit not kept that the kept set has grown since.
* *backward*: where adding units does not reach the budget (the damage is spread thin: no unit alone recovers
  much) but the reference does, the file starts from the reference instead and returns units to INT8, least KL
  added alone per millisecond saved first, as many as the whole file's agreement allows (bisection on how many).
  Where ``mixed_precision.layers`` names a few units, the start is those in float, built and checked first.
* *against float*: the chosen file and the float file timed in turn. A mixed file no faster than the float file
  is said to be (ship the float file: it agrees 100%), in the summary's note and the report.

AIMET and TensorRT Model Optimizer rank layers in simulation against a bit budget; here both sides are measured
on the artifact that ships.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeflow.accuracy import collect_logits, wilson_interval
from edgeflow.artifact import Artifact
from edgeflow.backends import get_backend
from edgeflow.backends.base import RuntimeSettings
from edgeflow.compress import AUTO, auto_methods, get_method
from edgeflow.compress.layers import QuantLayer, module_name, quantizable_layers
from edgeflow.compress.stats import (
    START_SLOWER_BY,
    LayerSensitivity,
    MixedPrecisionStats,
    MixedStep,
    QuantizationStats,
    SensitivityStats,
    StartStats,
    pick_start,
)
from edgeflow.data import DataSplits
from edgeflow.errors import ConfigError
from edgeflow.io import ensure_writable_dir, json_digest, sha256, write_json
from edgeflow.profiling.in_turn import time_in_turn
from edgeflow.profiling.loop import ProfileConfig
from edgeflow.progress import Progress
from edgeflow.recipe import VariantSpec
from edgeflow.variants import FloatArtifacts, build_variant, post_training_tries

TIMING = ProfileConfig(warmup=10, iterations=100_000, max_seconds=0.4, min_iterations=20)
#: a layer tried in float is kept only where the whole file's KL to the float file fell by at least this fraction:
#: on a few hundred holdout images smaller falls are noise (LiteRT's MobileNetV3 kept 13 layers on them, +30%
#: latency, and agreed no more on the test split: reports/mixed-precision-mnv3-imagenette-cpu.md)
MIN_KL_GAIN = 0.02


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def mean_kl(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean KL divergence of softmax(reference) to softmax(candidate), over the rows."""
    p, q = _softmax(reference), _softmax(candidate)
    return float(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), axis=1)))


class _Builder:
    """Builds the variant with a float set (always with the layers the variant itself keeps in float), scores it
    on holdout against the float file, compiles it."""

    def __init__(self, variant: VariantSpec, *, floats: FloatArtifacts, splits: DataSplits, folder: Path, seed: int,
                 settings: RuntimeSettings, max_samples: int | None) -> None:  # fmt: skip
        self.variant, self.floats, self.splits, self.folder, self.seed = variant, floats, splits, folder, seed
        self.settings, self.max_samples = settings, max_samples
        self.base = list(variant.quantize.float_layers)
        self.units = {unit.name: unit for unit in quantizable_layers(
            floats.onnx, kinds=get_method(variant.quantize.method).float_units)}  # fmt: skip
        self.runtime = get_backend(variant.backend)
        reference = reference_settings(self.runtime, settings)
        compiled = self.runtime.compile(floats.base(variant.backend), settings=reference)
        self.float_logits, self.labels = collect_logits(compiled, splits.holdout, max_samples=max_samples)
        self.summaries: dict[Path, QuantizationStats] = {}

    def start(self, tries: list[tuple[str, VariantSpec]], *, rounds: int, timing: ProfileConfig,
              progress: Progress) -> tuple[str, Artifact, Any]:  # fmt: skip
        """The all-INT8 file of each try, scored on holdout and (where there are several) timed in turn,
        ``rounds`` rounds; the builder goes on with the one :func:`pick_start` picks. Returns its label, its file
        and (agreement, top-1, KL, compiled); every try is in ``self.starts``."""
        built: list[tuple[str, Artifact, Any]] = []
        self.starts: list[StartStats] = []
        for index, (label, variant) in enumerate(tries):
            if len(tries) > 1:
                progress.stage(f"all-INT8 as {label} ({index + 1}/{len(tries)} tries), scored on holdout")
            self.variant = variant
            artifact = self.build([], stem=f"sensitivity-all-int8-{index}")
            scores = self.score(artifact)
            self.starts.append(StartStats(label=label, agreement=scores[0], top1=scores[1], kl=scores[2]))
            built.append((label, artifact, scores))
        if len(built) > 1:
            progress.stage(f"time the {len(built)} all-INT8 files in turn ({rounds} rounds)")
            medians = time_in_turn({str(i): scores[3] for i, (_, _, scores) in enumerate(built)}, rounds=rounds,
                                   config=timing).medians()  # fmt: skip
            self.starts = [start.model_copy(update={"ms": medians[str(i)]}) for i, start in enumerate(self.starts)]
        best = built[pick_start(self.starts)]
        for other in built:
            if other is not best:
                other[1].remove()
        self.variant = dict(tries)[best[0]]
        return best

    def build(self, float_units: list[str], *, stem: str) -> Artifact:
        """The variant with the units named ``float_units`` (and the variant's own float layers) in float."""
        nodes = [node for name in float_units for node in (self.units[name].node_names() if name in self.units
                                                            else [name])]  # fmt: skip
        chosen = list(dict.fromkeys([*self.base, *nodes]))
        quantize = self.variant.quantize.model_copy(update={"float_layers": chosen})
        variant = self.variant.model_copy(update={"quantize": quantize})
        artifact, summary = build_variant(variant, floats=self.floats, splits=self.splits, folder=self.folder,
                                          seed=self.seed, file_stem=stem, settings=self.settings)  # fmt: skip
        self.summaries[Path(artifact.path)] = summary
        return artifact

    def score(self, artifact: Artifact) -> tuple[float, float, float, Any]:
        """(agreement with float, top-1, mean KL to float) on holdout, and the compiled model."""
        compiled = self.runtime.compile(artifact, settings=self.settings)
        return (*self.score_compiled(compiled), compiled)

    def against_float(self, artifact: Artifact, *, rounds: int) -> tuple[float, float]:
        """p50 of ``artifact`` and of the float file (compiled as the variant ships), medians of ``rounds`` timed
        in turn: a mixed file is worth shipping only where it is faster than the float file."""
        compiled = {
            "chosen": self.runtime.compile(artifact, settings=self.settings),
            "float": self.runtime.compile(self.floats.base(self.variant.backend), settings=self.settings),
        }
        medians = time_in_turn(compiled, rounds=rounds, config=TIMING).medians()
        return medians["chosen"], medians["float"]

    def score_compiled(self, compiled) -> tuple[float, float, float]:
        logits, _ = collect_logits(compiled, self.splits.holdout, max_samples=self.max_samples)
        predicted = logits.argmax(1)
        agreement = float(np.mean(predicted == self.float_logits.argmax(1)))
        return agreement, float(np.mean(predicted == self.labels)), mean_kl(self.float_logits, logits)


def reference_settings(runtime, settings: RuntimeSettings) -> RuntimeSettings:
    """The settings the float file is scored with, as the reference every INT8 file is compared to: the float
    model's own arithmetic, f32, where the runtime would otherwise choose (OpenVINO on a CPU with AMX executes a
    float file in bf16 by default: on the Imagenette MobileNetV3 its answers differ from f32's on 0.2% of the
    holdout photos, a fifth of a 99% budget)."""
    if settings.execution_precision == "default" and "f32" in runtime.execution_precisions:
        return settings.model_copy(update={"execution_precision": "f32"})
    return settings


def _started(tries: list[tuple[str, VariantSpec]], sensitivity: SensitivityStats) -> VariantSpec:
    """The try a measured sensitivity was built with (the first where it names none: one measured before tries)."""
    return dict(tries).get(sensitivity.start, tries[0][1])


def mixed_tries(variant: VariantSpec) -> tuple[list[tuple[str, VariantSpec]], list[str]]:
    """``variant`` as mixed precision builds it: each post-training quantization its method stands for
    (:func:`edgeflow.variants.post_training_tries`: one, or one per calibration where ``calibrate_method`` is
    auto; with ``method: auto``, those of every post-training method of the runtime that can keep units in float,
    such as ort-static and NNCF's ONNX quantizer for ONNX Runtime), labelled, and what that changed, said in words.
    Mixed precision starts from the try whose all-INT8 file is closest to the float file on holdout among those
    near the fastest (:func:`pick_start`): the choice of method and calibration comes before the choice of float
    units.

    Raises:
        ConfigError: the variant is not INT8, or that method cannot keep layers in float.
    """
    if variant.precision != "int8" or variant.quantize is None:
        raise ConfigError(f"variant {variant.name}: mixed precision is for INT8 variants")
    notes = []
    if variant.quantize.method == AUTO:
        backend = get_backend(variant.backend)
        names = [name for name in auto_methods(backend.name, default=backend.default_int8)
                 if get_method(name).tier == 0 and get_method(name).float_units]  # fmt: skip
        if not names:
            raise ConfigError(f"variant {variant.name}: no post-training method for {backend.name} can keep "
                              "chosen layers in float (float_layers)")  # fmt: skip
        tries = [tried for name in names for tried in post_training_tries(
            variant.model_copy(update={"quantize": variant.quantize.model_copy(update={"method": name})}))]  # fmt: skip
        if len(names) > 1:
            notes.append(f"method auto: the all-INT8 file of each post-training method for {backend.name} "
                         f"({', '.join(names)}) built, scored on holdout and timed; mixed precision starts from "
                         f"the one of least KL to the float file among those within {100 * START_SLOWER_BY:.0f}% of "
                         "the fastest")  # fmt: skip
    else:
        tries = post_training_tries(variant)
        method = tries[0][1].quantize.method
        if not get_method(method).float_units:
            raise ConfigError(f"variant {variant.name}: {method} cannot keep chosen layers in float (float_layers)")
        if method != variant.quantize.method:
            notes.append(f"built with {method}, the post-training quantization {variant.quantize.method} starts "
                         "from; the agreement budget replaces its holdout loop")  # fmt: skip
    for key in ("calibrate_method", "preset"):
        before = getattr(variant.quantize, key, None)
        after = [getattr(v.quantize, key) for _, v in tries if key in get_method(v.quantize.method).config.model_fields]
        if len(set(after)) > 1:
            notes.append(f"{key} {before}: each of {', '.join(map(str, after))} built all-INT8, scored on "
                         "holdout and timed; mixed precision starts from the one of least KL to the float file "
                         f"among those within {100 * START_SLOWER_BY:.0f}% of the fastest")  # fmt: skip
        elif after and before != after[0]:
            notes.append(f"{key} {before} built as {after[0]}")
    return tries, notes


def _selected(every: list[QuantLayer], layers: list[str] | None) -> list[QuantLayer]:
    """The units named in ``layers`` (by name, by module, or by any node of theirs); all where None."""
    if layers is None:
        return every

    def names(unit: QuantLayer) -> set[str]:  # a gate also by the modules of its nodes (its convolutions)
        nodes = unit.node_names()
        return {unit.name, unit.module, *nodes, *(module_name(node) for node in nodes)}

    known = set().union(*(names(unit) for unit in every))
    missing = [name for name in layers if name not in known]
    if missing:
        raise ConfigError(f"mixed_precision.layers: {missing[0]!r} is not a unit the method can keep in float")
    return [unit for unit in every if names(unit) & set(layers)]


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
    timing: ProfileConfig = TIMING,
    progress: Progress | None = None,
    keep_in: Path | None = None,
) -> SensitivityStats:
    """Each unit the variant's method can keep in float (or those named in ``layers``) INT8 alone and in float
    alone, through the variant's method and runtime (module docstring). With ``keep_in`` the measurement is kept
    there and read back by a later call on the same float file, variant, data and settings."""
    tries, _notes = mixed_tries(variant)
    kept = _KeptSensitivity(keep_in, variant=variant, floats=floats, splits=splits,
                            context=[settings.model_dump_json(), str(seed), str(max_samples), str(rounds),
                                     json.dumps(layers), timing.model_dump_json()])  # fmt: skip
    sensitivity = kept.load()
    if sensitivity is None:
        builder = _Builder(tries[0][1], floats=floats, splits=splits, folder=folder, seed=seed, settings=settings,
                           max_samples=max_samples)  # fmt: skip
        sensitivity = _sensitivity(builder, tries, layers=layers, rounds=rounds, timing=timing, progress=progress)
        kept.save(sensitivity)
    elif progress is not None:
        progress.stage(f"sensitivity of {variant.name} measured before, from {kept.path}")
    return sensitivity


def _sensitivity(
    builder: _Builder,
    tries: list[tuple[str, VariantSpec]],
    *,
    layers: list[str] | None,
    rounds: int,
    timing: ProfileConfig,
    progress: Progress | None,
) -> SensitivityStats:
    progress = progress or Progress.silent()
    started = time.perf_counter()
    every = list(builder.units.values())
    chosen = _selected(every, layers)
    names = [layer.name for layer in every]
    float_top1 = float(np.mean(builder.float_logits.argmax(1) == builder.labels))
    start, all_int8, (int8_agreement, int8_top1, int8_kl, int8_compiled) = builder.start(
        tries, rounds=rounds, timing=timing, progress=progress
    )
    variant, settings = builder.variant, builder.settings
    progress.stage(f"sensitivity of {len(chosen)} units through {variant.backend} ({start})")
    reference = builder.build(names, stem="sensitivity-reference")
    reference_agreement, _top1, reference_kl, _compiled = builder.score(reference)
    reference.remove()
    alone: dict[str, tuple[float, float, float]] = {}
    in_float: dict[str, Any] = {}
    scored: dict[str, tuple[float, float, float]] = {}
    for index, layer in enumerate(chosen):
        progress.stage(f"unit {index + 1}/{len(chosen)} {layer.module} ({layer.op}): INT8 alone, then float alone")
        only = builder.build([name for name in names if name != layer.name], stem=f"sensitivity-{index}-alone")
        alone[layer.name] = builder.score(only)[:3]
        only.remove()
        kept = builder.build([layer.name], stem=f"sensitivity-{index}-float")
        in_float[layer.name] = builder.runtime.compile(kept, settings=settings)
        scored[layer.name] = builder.score_compiled(in_float[layer.name])
        kept.remove()
    progress.stage(f"time the all-INT8 file and the {len(in_float)} with one layer in float, in turn ({rounds} rounds)")
    timed = time_in_turn({"__all_int8__": int8_compiled, **in_float}, rounds=rounds, config=timing).medians()
    int8_ms = timed.pop("__all_int8__")
    all_int8.remove()
    rows = [
        LayerSensitivity(
            **layer.model_dump(),
            alone_agreement=alone[layer.name][0],
            alone_top1=alone[layer.name][1],
            alone_kl=alone[layer.name][2],
            float_agreement=scored[layer.name][0],
            float_kl=scored[layer.name][2],
            float_ms=timed[layer.name],
            float_cost=timed[layer.name] / int8_ms - 1,
        )  # fmt: skip
        for layer in chosen
    ]
    return SensitivityStats(
        variant=variant.name, backend=variant.backend, method=variant.quantize.method,
        holdout_images=len(builder.labels), float_top1=float_top1, int8_top1=int8_top1,
        int8_agreement=int8_agreement, int8_kl=int8_kl, reference_agreement=reference_agreement,
        reference_kl=reference_kl, int8_ms=int8_ms, rounds=rounds, layers=rows,
        seconds=round(time.perf_counter() - started, 1), start=start,
        starts=builder.starts if len(tries) > 1 else [],
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
    """The variant's file with a float set that meets ``agreement`` with the float file on holdout: the layers of
    :meth:`SensitivityStats.ranked` tried in float one at a time with those kept so far (at most ``max_layers``
    tries), the whole file built and scored after each, a layer kept only if the whole file's KL divergence to the
    float file fell by at least :data:`MIN_KL_GAIN`. Greedy by measured KL recovered per measured millisecond, so
    the cheapest useful layers come first; the set's own latency is what the report then measures. Where the budget
    is not met, a second pass (at most ``max_layers`` tries more) tries again each unit not kept that the set has
    grown since, then those the first did not reach: effects do not add, and a residual add helps only once its
    neighbours are in float. Where the budget is still not met but the reference (every unit in float) meets it,
    a backward pass returns units to INT8 from there (:func:`_back_to_int8`). Where it is still not met, the best
    file tried is kept and ``met`` is false.

    The file is written as ``file_stem`` (else ``mixed-<layers>``) in ``folder``; its summary carries what was
    chosen, the steps and the sensitivity (``QuantizationStats.mixed_precision``)."""
    tries, notes = mixed_tries(variant)
    builder = _Builder(_started(tries, sensitivity), floats=floats, splits=splits, folder=folder,
                       seed=seed, settings=settings, max_samples=max_samples)  # fmt: skip
    return _choose(builder, sensitivity, notes=notes, agreement=agreement, max_layers=max_layers, file_stem=file_stem,
                   progress=progress)  # fmt: skip


def _choose(
    builder: _Builder,
    sensitivity: SensitivityStats,
    *,
    notes: list[str],
    agreement: float,
    max_layers: int,
    file_stem: str | None,
    progress: Progress | None,
) -> tuple[Artifact, QuantizationStats]:
    progress = progress or Progress.silent()
    variant, folder = builder.variant, builder.folder
    kept: list[str] = []
    steps: list[MixedStep] = []
    best = (sensitivity.int8_agreement, sensitivity.int8_top1, sensitivity.int8_kl)
    best_artifact: Artifact | None = None
    ranked = sensitivity.ranked()
    tried_with: dict[str, int] = {}  # unit -> how many units were kept in float when it was tried
    tries = 0
    for first in (True, False):
        if best[0] >= agreement:
            break
        # the second pass: each unit not kept that the set kept has grown since it was tried (effects do not add:
        # a residual add helps only once its neighbours are in float), then those the first pass did not reach
        again = [layer for layer in ranked if layer.name not in kept and tried_with.get(layer.name, -1) < len(kept)]
        for layer in ranked[:max_layers] if first else again[:max_layers]:
            tries += 1
            tried_with[layer.name] = len(kept)
            progress.stage(f"mixed precision: try {tries}, {len(kept) + 1} units in float (+{layer.label()})")
            artifact = builder.build([*kept, layer.name], stem=f"mixed-try-{tries}")
            score, top1, kl, _compiled = builder.score(artifact)
            better = kl < best[2] * (1 - MIN_KL_GAIN)
            steps.append(MixedStep(added=layer.name, float_layers=len(kept) + better, agreement=score, top1=top1,
                                   kl=kl, kept=better))  # fmt: skip
            if better:
                kept.append(layer.name)
                if best_artifact is not None:
                    best_artifact.remove()
                best, best_artifact = (score, top1, kl), artifact
            else:
                artifact.remove()
            if best[0] >= agreement:
                break
    returned: list[str] = []
    # every unit measured in float: known from the sensitivity where it measured them all; where the user named a
    # few (mixed_precision.layers) the backward pass builds those in float first and goes on only if that meets
    every_unit = len(sensitivity.layers) == len(builder.units)
    if best[0] < agreement and (sensitivity.reference_agreement >= agreement or not every_unit):
        backward = _back_to_int8(builder, sensitivity, agreement=agreement, steps=steps, progress=progress,
                                 start_known=every_unit)  # fmt: skip
        if backward is not None:
            if best_artifact is not None:
                best_artifact.remove()
            kept, returned, best, best_artifact = backward
    if best_artifact is None:
        best_artifact = builder.build([], stem="mixed-0")
    summary = builder.summaries[Path(best_artifact.path)]
    if file_stem is not None:
        best_artifact = best_artifact.move_to(Path(folder) / f"{file_stem}{Path(best_artifact.path).suffix}")
    modules = {name: unit.label() for name, unit in builder.units.items()}
    score, top1, _kl = best
    progress.stage(f"time the chosen file and the float file in turn ({sensitivity.rounds} rounds)")
    mixed_ms, float_ms = builder.against_float(best_artifact, rounds=sensitivity.rounds)
    mixed = MixedPrecisionStats(
        agreement_interval=wilson_interval(round(score * len(builder.labels)), len(builder.labels)),
        agreement_budget=agreement, float_layers=kept, float_modules=[modules.get(name, name) for name in kept],
        returned_modules=[modules.get(name, name) for name in returned], steps=steps, agreement=score, top1=top1,
        met=score >= agreement, method=variant.quantize.method, notes=notes, sensitivity=sensitivity,
        ms=mixed_ms, float_ms=float_ms,
    )  # fmt: skip
    chosen = (
        f"every unit in float but {len(returned)} returned to INT8 ({', '.join(mixed.returned_modules) or 'none'}), "
        f"{len(kept)} kept in float"
        if mixed.backward
        else f"{len(kept)} units kept in float ({', '.join(mixed.float_modules) or 'none'})"
    )
    note = (
        f"mixed precision: {chosen}; holdout "
        f"agreement with float {100 * sensitivity.int8_agreement:.2f}% all-INT8 -> {100 * score:.2f}% "
        f"(95% interval {100 * mixed.agreement_interval[0]:.1f}-{100 * mixed.agreement_interval[1]:.1f}% on "
        f"{len(builder.labels)} images; budget {100 * agreement:.2f}%{'' if mixed.met else ', NOT met'})"
    )
    if sensitivity.starts:
        tried = ", ".join(start.describe() for start in sensitivity.starts)
        note += (f"; started from {sensitivity.start}, the least KL among the starts within "
                 f"{100 * START_SLOWER_BY:.0f}% of the fastest; all-INT8 on holdout: {tried}")  # fmt: skip
    note += f"; p50 timed in turn with the float file on this host: {mixed_ms:.3f} ms against {float_ms:.3f} ms"
    if not mixed.faster_than_float:
        note += (
            " -- NOT faster than the float file, which agrees 100% with itself: ship the float file, or loosen "
            "the agreement budget"
        )
    return best_artifact, summary.model_copy(update={"mixed_precision": mixed, "notes": [*summary.notes, note, *notes]})


def _back_to_int8(
    builder: _Builder,
    sensitivity: SensitivityStats,
    *,
    agreement: float,
    steps: list[MixedStep],
    progress: Progress,
    start_known: bool = True,
) -> tuple[list[str], list[str], tuple[float, float, float], Artifact] | None:
    """The backward pass, where adding units to the float set one at a time did not reach the budget but every unit
    in float does: the units of :meth:`SensitivityStats.returnable` returned to INT8 from that file, as many as the
    whole file's agreement allows, found by bisection on how many (each count built whole and scored: about
    log2 of the units' count files). Returns the float set, the units returned, the score and the file.

    The units are those the sensitivity measured (``mixed_precision.layers`` where named). Unless ``start_known``
    (the sensitivity's reference, every unit in float, met the budget), those units all in float are built and
    scored first, and where that misses the budget the pass returns None."""
    every = [layer.name for layer in sensitivity.layers]
    order = [layer.name for layer in sensitivity.returnable()]

    def attempt(count: int, *, keep_anyway: bool = False) -> tuple[bool, tuple[float, float, float], Artifact]:
        """The file with the first ``count`` units of ``order`` returned to INT8, built, scored and recorded."""
        back = set(order[:count])
        floats = [name for name in every if name not in back]
        progress.stage(f"mixed precision, backward: every unit in float but {count} returned to INT8")
        artifact = builder.build(floats, stem=f"mixed-back-{count}")
        score, top1, kl, _compiled = builder.score(artifact)
        met = score >= agreement
        steps.append(MixedStep(returned=count, float_layers=len(floats), agreement=score, top1=top1, kl=kl,
                               kept=met or keep_anyway))  # fmt: skip
        return met, (score, top1, kl), artifact

    low, high = 0, len(order)  # low: a count of units returned known to meet the budget (0: the reference)
    best: tuple[tuple[float, float, float], Artifact] | None = None
    if not start_known:
        met, score, artifact = attempt(0)
        if not met:
            artifact.remove()
            return None
        best = score, artifact
    while low < high:
        count = (low + high + 1) // 2
        met, score, artifact = attempt(count)
        if met:
            if best is not None:
                best[1].remove()
            best, low = (score, artifact), count
        else:
            artifact.remove()
            high = count - 1
    if best is None:  # no count met the budget: the reference itself, kept whatever its rebuild scores
        _met, score, artifact = attempt(0, keep_anyway=True)
        best = score, artifact
    score, artifact = best
    return [name for name in every if name not in set(order[:low])], order[:low], score, artifact


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
    keep_in: Path | None = None,
    keep_key: str = "",
) -> tuple[Artifact, QuantizationStats]:
    """A variant with ``mixed_precision`` set, built as :func:`edgeflow.variants.build_variant` builds the others
    (written as ``model_<variant>``): its sensitivity measured, its float set chosen and checked whole.

    With ``keep_in`` (a killed ``optimize``'s unfinished folder) the sensitivity is kept there once measured, and a
    resumed run that builds the same variant from the same float file, data and ``keep_key`` (the caller's word
    for the device it timed on) reads it instead of measuring again."""
    config = variant.mixed_precision
    if config is None:
        raise ConfigError(f"variant {variant.name} has no mixed_precision section")
    tries, notes = mixed_tries(variant)
    settings = settings or RuntimeSettings()
    builder = _Builder(tries[0][1], floats=floats, splits=splits, folder=folder, seed=seed, settings=settings,
                       max_samples=config.holdout_samples)  # fmt: skip
    kept = _KeptSensitivity(keep_in, variant=variant, floats=floats, splits=splits,
                            context=[settings.model_dump_json(), str(seed), keep_key])  # fmt: skip
    sensitivity = kept.load()
    if sensitivity is None:
        sensitivity = _sensitivity(builder, tries, layers=config.layers, rounds=config.rounds, timing=TIMING,
                                   progress=progress)  # fmt: skip
        kept.save(sensitivity)
    else:
        builder.variant = _started(tries, sensitivity)
        if progress is not None:
            progress.stage(f"variant {variant.name}: sensitivity measured before the run was stopped, from "
                           f"{kept.path}")  # fmt: skip
    return _choose(builder, sensitivity, notes=notes, agreement=config.agreement, max_layers=config.max_layers,
                   file_stem=file_stem or f"model_{variant.name}", progress=progress)  # fmt: skip


class _KeptSensitivity:
    """A variant's measured sensitivity kept in a folder, keyed by everything that made it: the float ONNX's
    bytes, the variant, the data splits and the ``context`` (runtime settings, seed, device): another model,
    recipe or device measures again."""

    def __init__(self, folder: Path | None, *, variant: VariantSpec, floats: FloatArtifacts, splits: DataSplits,
                 context: list[str]) -> None:  # fmt: skip
        self.path = Path(folder) / f"sensitivity-{variant.name}.json" if folder is not None else None
        if self.path is None:
            return
        self.key = json_digest([sha256(Path(floats.onnx.path)), variant.model_dump(mode="json"), splits.describe(),
                                *context])  # fmt: skip

    def load(self) -> SensitivityStats | None:
        if self.path is None or not self.path.exists():
            return None
        try:
            kept = json.loads(self.path.read_text())
            return SensitivityStats.model_validate(kept["sensitivity"]) if kept.get("key") == self.key else None
        except (OSError, ValueError, KeyError, TypeError):  # unreadable: measured again
            return None

    def save(self, sensitivity: SensitivityStats) -> None:
        if self.path is not None:
            ensure_writable_dir(self.path.parent)
            write_json(self.path, {"key": self.key, "sensitivity": sensitivity.model_dump(mode="json")})
