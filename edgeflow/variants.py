"""Each recipe variant's artifact, built from the run's float artifacts (each backend's own, asked of the backend):
fp16 by the backend's converter, or INT8 by the variant's quantization method (:mod:`edgeflow.compress`), and
``auto``, a policy over the registered methods that tries them in order until the holdout drop fits the budget."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeflow.accuracy import holdout_top1
from edgeflow.artifact import Artifact
from edgeflow.backends import FloatSources, float_artifact, fp16_artifact, get_backend
from edgeflow.backends.base import RuntimeSettings
from edgeflow.compress import AUTO, QuantizeJob, auto_methods, get_method
from edgeflow.compress.stats import QuantizationStats
from edgeflow.data import DataSplits
from edgeflow.data.splits import synthetic_splits
from edgeflow.errors import ConfigError
from edgeflow.progress import Progress
from edgeflow.recipe import QuantizeConfig, VariantSpec


@dataclass
class FloatArtifacts:
    """What every variant is built from: the float ONNX, the torch model (None for an ONNX input), and each
    backend's own float artifact (its :meth:`~edgeflow.backends.Backend.float_artifact`: OpenVINO's IR, LiteRT's
    ``.tflite``, ...), built when first asked for."""

    sources: FloatSources
    built: dict[str, Artifact] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        onnx: Artifact,
        *,
        module: Any,
        input_shape: tuple[int, ...],
        folder: Path,
        export: Any = None,
        model_name: str = "model",
    ) -> FloatArtifacts:
        sources = FloatSources(onnx=onnx, module=module, input_shape=tuple(input_shape), folder=folder, export=export,
                               model_name=model_name)  # fmt: skip
        return cls(sources)

    @property
    def onnx(self) -> Artifact:
        return self.sources.onnx

    @property
    def module(self) -> Any:
        return self.sources.module

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.sources.input_shape

    def base(self, backend: str) -> Artifact:
        """The float artifact a variant on ``backend`` is built from (built the first time it is asked for)."""
        if backend not in self.built:
            self.built[backend] = float_artifact(backend, self.sources)
        return self.built[backend]


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
    backend = get_backend(variant.backend)
    if backend.needs_module and floats.module is None:
        raise ConfigError(f"variant {variant.name}: an ONNX model has no torch module for {backend.name}")
    base = floats.base(backend.name)
    if variant.precision in ("fp32", "bf16"):  # bf16 is an execution precision of the fp32 artifact
        return base, None
    if variant.precision == "fp16" and backend.fp16_from_float:
        return base, None  # the runtime builds fp16 from the float file: no fp16 file to ship
    path = folder / f"{file_stem or 'model_' + variant.name}{backend.suffix()}"
    if variant.precision == "fp16":
        return fp16_artifact(backend.name, base, path=path), None
    return _int8(
        variant, base=base, floats=floats, splits=splits, path=path, seed=seed, progress=progress, settings=settings
    )


#: synthetic inputs an INT8 build made for timing is calibrated on (:class:`ShippedBuild`)
TIMING_CALIBRATION = 8


def post_training_variant(variant: VariantSpec) -> VariantSpec:
    """``variant`` as the one post-training quantization it stands for: a method that chooses by holdout accuracy
    (``auto``, NNCF's accuracy control, QAT: tier 1 and above) becomes the backend's default method, a setting
    that asks for a search becomes its first try (ort-static's ``calibrate_method: auto``: min-max), nncf-ptq's
    ``preset: fastest`` becomes ``auto``. Methods never in ``auto`` (ort-dynamic) stay as they are. A float
    variant is returned as it is."""
    return post_training_tries(variant)[0][1]


def post_training_tries(variant: VariantSpec) -> list[tuple[str, VariantSpec]]:
    """Every post-training quantization ``variant`` stands for, labelled, in the order its method tries them (one,
    except where a setting asks for a search: ort-static's ``calibrate_method: auto`` gives each calibration);
    :func:`post_training_variant` is the first. A float variant is its own one try."""
    config = variant.quantize
    if variant.precision != "int8" or config is None:
        return [(variant.name, variant)]
    tier = get_method(config.method).tier if config.method != AUTO else None
    method = config.method if config.method != AUTO and (tier is None or tier == 0) else None
    method = method or get_backend(variant.backend).default_int8
    update: dict[str, Any] = {}
    if getattr(config, "preset", None) == "fastest":
        update["preset"] = "auto"
    return [
        (attempt.label, variant.model_copy(update={"quantize": attempt.config(config).model_copy(update=update)}))
        for attempt in attempts_of((method,), config.model_copy(update={"method": method}))
    ]


@dataclass(frozen=True)
class ShippedBuild:
    """How a torch module becomes the file ``variant`` ships, for timing: the backend's float artifact, its fp16
    file, or INT8 by the variant's quantization method. NetAdapt's candidates, the lookup table's blocks and its
    calibration models are timed as this file, so a search judges what ships, not its float ancestor.

    INT8 is calibrated on :data:`TIMING_CALIBRATION` synthetic inputs of the module's input shape: an INT8
    graph's operators, layouts and kernels do not depend on its scales (only its accuracy does), and a block cut
    from the middle of a network takes no images. A method that chooses by holdout accuracy (``auto``, NNCF's
    accuracy control, QAT, ort-static's calibration search, nncf-ptq's ``preset: fastest``) is timed as the
    post-training quantization it starts from: the backend's default method, its first calibration, preset auto.
    """

    variant: VariantSpec
    seed: int = 0

    @property
    def precision(self) -> str:
        return self.variant.precision

    @property
    def method(self) -> str | None:
        """The quantization method the timing builds use (None for a float variant)."""
        timing = self.timing_variant()
        return timing.quantize.method if timing.quantize is not None else None

    @property
    def context(self) -> str:
        """What timings of these builds depend on beyond the device and runtime: precision, method, and a digest of
        every quantization setting the timing builds use (per-channel, symmetric, preset...)."""
        timing = self.timing_variant()
        if timing.quantize is None:
            return f"precision={self.precision}"
        settings = json.dumps(timing.quantize.model_dump(mode="json"), sort_keys=True)
        digest = hashlib.sha256(settings.encode()).hexdigest()[:10]
        return f"precision={self.precision}|method={timing.quantize.method}|settings={digest}"

    def timing_variant(self) -> VariantSpec:
        """The variant as the timing builds make it: its post-training quantization (:func:`post_training_variant`)
        calibrated on :data:`TIMING_CALIBRATION` inputs, without the layers a recipe keeps in float (a block cut
        from the network does not have them; the search's final models are built with them)."""
        variant = post_training_variant(self.variant)
        if variant.quantize is None:
            return variant
        quantize = variant.quantize.model_copy(update={"subset_size": TIMING_CALIBRATION, "float_layers": []})
        return variant.model_copy(update={"quantize": quantize})

    def __call__(self, module: Any, input_shape: tuple[int, ...], *, folder: Path) -> Artifact:
        """``module``'s artifact for this variant, written into ``folder``."""
        from edgeflow.export.onnx import export_onnx

        input_shape = tuple(input_shape)
        onnx = export_onnx(module.eval(), input_shape=input_shape, path=Path(folder) / "candidate.onnx")
        floats = FloatArtifacts.of(onnx, module=module, input_shape=input_shape, folder=Path(folder))
        splits = synthetic_splits(input_shape, count=TIMING_CALIBRATION, seed=self.seed)
        artifact, _ = build_variant(self.timing_variant(), floats=floats, splits=splits, folder=Path(folder),
                                    seed=self.seed, file_stem="candidate-shipped")  # fmt: skip
        return artifact


@dataclass(frozen=True)
class Attempt:
    """One try of a budget search: a method, with the config update it tries (a calibration of ort-static)."""

    method: str
    label: str
    update: tuple[tuple[str, Any], ...] = ()

    @property
    def slug(self) -> str:
        """The label as a file-name part."""
        return self.label.replace(" (", "-").replace(")", "")

    def config(self, config: QuantizeConfig) -> QuantizeConfig:
        return config.model_copy(update={"method": self.method, **dict(self.update)})


def attempts_of(methods: tuple[str, ...], config: QuantizeConfig) -> list[Attempt]:
    """The tries ``methods`` stand for (a method may stand for several: :meth:`QuantizationMethod.attempts`)."""
    attempts = []
    for name in methods:
        method = get_method(name)
        for label, update in method.attempts(method.own_config(config)):
            attempts.append(Attempt(name, label, tuple(update.items())))
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
        methods = tuple(method for method in methods if not get_method(method).needs_module)
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
    backend = get_backend(variant.backend)
    if config.method == AUTO:
        methods = auto_methods(backend.name, default=backend.default_int8)
    else:
        methods = (config.method,)
    if config.method == AUTO or len(attempts_of(methods, config)) > 1:
        return quantize_within_budget(
            variant, methods=methods, base=base, floats=floats, splits=splits, path=path, seed=seed,
            progress=progress, settings=settings,
        )  # fmt: skip
    method = get_method(config.method)
    if method.needs_module and floats.module is None:
        raise ConfigError(f"variant {variant.name}: {method.name} needs a torch model, not ONNX")
    job = QuantizeJob(
        base=base, splits=splits, config=method.own_config(config), path=path, seed=seed, module=floats.module,
        input_shape=floats.input_shape, progress=progress, settings=settings, onnx=floats.onnx,
    )  # fmt: skip
    return method.quantize(job)
