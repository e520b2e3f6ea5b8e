"""The one code path behind the CLI, notebooks and tests.

Example:
    >>> import edgeflow
    >>> report = edgeflow.optimize("mobilenetv3", recipe="demo", out="reports/demo")  # doctest: +SKIP
    >>> [(v.name, v.latency_ms.p50, v.accuracy.top1) for v in report.variants]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from edgeflow.accuracy import AccuracyStats, collect_logits, evaluate_compiled
from edgeflow.artifact import Artifact, artifact_from_path
from edgeflow.backends import get_backend
from edgeflow.config import parse_spec
from edgeflow.data import DataSplits, load_data
from edgeflow.device import DeviceSpec, RuntimeSettings, as_device
from edgeflow.environment import environment, host_has_bf16
from edgeflow.errors import ConfigError, DeviceError
from edgeflow.exporter import ParityStats, convert_to_openvino, export_onnx, measure_parity
from edgeflow.io import ensure_writable_dir, staged_dir
from edgeflow.measure import ProfileResult, artifact_cost, choose_backend, compile_and_profile
from edgeflow.model_source import ModelSource, looks_like_file, resolve_model
from edgeflow.models import model_info
from edgeflow.prepare import load_model_and_data, train_if_needed
from edgeflow.progress import Progress
from edgeflow.recipe import ModelConfig, ProfileConfig, Recipe, VariantSpec, as_recipe
from edgeflow.report import write_report
from edgeflow.report.schema import ModelRecord, Report, VariantRecord
from edgeflow.variants import FloatArtifacts, build_variant

_PARITY_SETTINGS = {"execution_precision": "f32"}


def optimize(
    model: str,
    *,
    device: str | Path | DeviceSpec = "cpu",
    recipe: str | Path | Recipe | None = None,
    data: str | None = None,
    out: str | Path = "reports/latest",
    arch: str | None = None,
    progress: Progress | None = None,
) -> Report:
    """Scale, train (if needed), export, quantize, then time and evaluate every variant on ``device``.

    ``recipe`` defaults to the device's own (``recipe:`` in its file: ``tensorrt`` for Jetsons), else
    ``default``. Where the device is not attached, latencies are estimated and labelled so.

    Writes ``out/report.{json,md,html}``, the accuracy-latency plot and the artifacts; the folder
    appears only when the whole run succeeded.
    """
    started = time.perf_counter()
    progress = progress or Progress.silent()
    device_spec = as_device(device)
    recipe_spec = as_recipe(recipe if recipe is not None else device_spec.recipe or "default")
    _check_variants_fit_device(recipe_spec.variants, device_spec)
    out = Path(out)
    ensure_writable_dir(out.parent)
    torch.manual_seed(recipe_spec.seed)

    data_source = data or recipe_spec.data
    source, splits = load_model_and_data(model, arch=arch, data=data_source, recipe=recipe_spec)
    sizes = splits.describe()
    progress.stage(
        f"model {source.name} ({source.kind}) at {source.resolution} px; data {splits.name}: "
        f"{sizes['train']} train / {sizes['holdout']} holdout / {sizes['test']} test images"
    )

    notes: list[str] = []
    with staged_dir(out) as stage:
        training = train_if_needed(source, splits, recipe_spec, progress)
        if source.module is not None:  # the trained model (a search's start: search/ holds what it changed)
            torch.save(source.module.state_dict(), stage / "model.pt")
        search = _search_step(source, splits, recipe_spec, device_spec, stage, progress, notes)
        onnx_artifact, parity = _export(source, splits, recipe_spec, stage, progress)
        openvino_artifact = None
        if any(variant.backend == "openvino" for variant in recipe_spec.variants):
            progress.stage("convert to OpenVINO IR")
            openvino_artifact = convert_to_openvino(onnx_artifact, path=stage / "model_fp32.xml")
            if source.module is not None:  # an ONNX input has no torch reference to compare with
                parity.append(_parity(openvino_artifact, source, splits, recipe_spec, runtime="openvino"))

        floats = FloatArtifacts(
            onnx=onnx_artifact, openvino=openvino_artifact, module=source.module, input_shape=source.input_shape
        )
        reference = _ReferenceLogits.compute(onnx_artifact, splits, recipe_spec)
        records, artifacts = [], {}
        for variant in recipe_spec.variants:
            if variant.backend == "torch" and source.module is None:
                notes.append(f"variant {variant.name} skipped: an ONNX model has no torch module")
                continue
            progress.stage(f"variant {variant.name}: build, time, evaluate")
            artifact, summary = build_variant(
                variant, floats=floats, splits=splits, folder=stage, seed=recipe_spec.seed, progress=progress,
                settings=device_spec.runtime,
            )  # fmt: skip
            record = _measure_variant(variant, artifact, floats, splits, device_spec, recipe_spec, stage, reference)
            record.quantization = summary
            records.append(record)
            artifacts[variant.name] = artifact
        _mark_baseline_and_recommendation(records, max_drop=recipe_spec.max_accuracy_drop)
        notes += _latency_notes(records, device_spec)
        bundle = _write_bundle(records, artifacts, source, splits, device_spec, stage, progress)
        if bundle is not None:
            notes.append(f"ship bundle: bundle/ ({bundle.variant}, {len(bundle.files)} files, manifest.json)")
            if device_spec.kind == "phone" and not any(f.role.startswith("executorch") for f in bundle.files):
                notes.append("no ExecuTorch program (.pte) in the bundle: it needs ExecuTorch installed "
                             "(pip install 'edgeflow[executorch]') and a torch model (not an ONNX file)")  # fmt: skip
            for where, command in bundle.build.items():
                if where != "note":
                    notes.append(f"build and measure on the device ({where.replace('_', ' ')}): {command}")
        report = Report(
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            model=ModelRecord(
                name=source.name,
                source=source.kind,
                arch=source.arch,
                width=source.width,
                resolution=source.resolution,
                num_classes=splits.num_classes,
                trained_here=training is not None,
            ),
            device=device_spec.model_dump(),
            data=splits.describe(),
            recipe=recipe_spec.model_dump(),
            environment=environment(),
            training=training,
            parity=parity,
            variants=records,
            notes=notes,
            search=search,
            max_accuracy_drop=recipe_spec.max_accuracy_drop,
            seconds=round(time.perf_counter() - started, 2),
        )
        progress.stage("write report")
        write_report(report, folder=stage)
    return report


def _latency_notes(records: list[VariantRecord], device: DeviceSpec) -> list[str]:
    estimated = [record for record in records if not record.measured]
    if not estimated:
        return []
    reasons = sorted({record.latency_source for record in estimated})
    return [
        f"{len(estimated)} of {len(records)} latencies are estimated, not measured on {device.name}: "
        + "; ".join(reasons)
    ]


def _write_bundle(records, artifacts, source, splits, device, stage, progress):
    """The recommended deployable variant as a ship bundle (torch eager is never shipped)."""
    from edgeflow.bundle import write_bundle

    chosen = next((r for r in records if r.recommended and artifacts[r.name].format in ("onnx", "openvino")), None)
    if chosen is None:
        return None
    progress.stage(f"ship bundle of {chosen.name}")
    return write_bundle(
        folder=stage / "bundle", record=chosen, artifact=artifacts[chosen.name], model_name=source.name,
        splits=splits, device=device, module=source.module,
    )  # fmt: skip


def _check_variants_fit_device(variants: list[VariantSpec], device: DeviceSpec) -> None:
    for variant in variants:
        if variant.backend not in device.runtimes:
            raise ConfigError(
                f"variant {variant.name}: device {device.name} has no {variant.backend} runtime "
                f"(it has: {', '.join(device.runtimes)})"
            )
        if variant.precision not in device.precisions:
            raise ConfigError(f"variant {variant.name}: device {device.name} does not support {variant.precision}")
        if variant.execution_precision == "bf16" and device.transport == "local" and not host_has_bf16():
            raise ConfigError(f"variant {variant.name}: this CPU has no bf16 instructions (AVX512-BF16 or AMX)")


def _search_step(
    source: ModelSource,
    splits: DataSplits,
    recipe: Recipe,
    device: DeviceSpec,
    stage: Path,
    progress: Progress,
    notes: list[str],
) -> dict | None:
    """The recipe's NetAdapt step: the adapted model replaces the source for everything after it."""
    if recipe.search is None:
        return None
    from edgeflow.netadapt.run import adapt, search_config

    engine = adapt(
        source, splits, recipe=recipe, config=search_config(recipe, None, None), device=device,
        folder=stage / "search", progress=progress,
    )  # fmt: skip
    source.module = engine.final_model()
    state = engine.state
    notes.append(
        f"NetAdapt ({engine.oracle.name} oracle): {len(state.iterations)} iterations, budget {state.budget_ms:.3f} ms; "
        f"{state.stop_reason}; the variants below are built from the adapted model"
    )
    return {
        "budget_ms": state.budget_ms,
        "oracle": engine.oracle.name,
        "stop_reason": state.stop_reason,
        "start_measured_ms": state.start_measured_ms,
        "iterations": [iteration.model_dump(mode="json", exclude={"proposals"}) for iteration in state.iterations],
    }


def _export(
    source: ModelSource, splits: DataSplits, recipe: Recipe, stage: Path, progress: Progress
) -> tuple[Artifact, list[ParityStats]]:
    if source.onnx_path is not None:
        artifact = Artifact(format="onnx", path=source.onnx_path, input_shape=source.input_shape)
        copy = stage / "model_fp32.onnx"
        copy.write_bytes(source.onnx_path.read_bytes())
        return Artifact(format="onnx", path=copy, input_shape=artifact.input_shape, lineage=["onnx file"]), []
    progress.stage("export to ONNX and check parity with torch")
    artifact = export_onnx(
        source.module,
        input_shape=source.input_shape,
        path=stage / "model_fp32.onnx",
        opset=recipe.export.opset,
    )
    artifact.lineage = [f"torch {source.name}", "torch->onnx"]
    return artifact, [_parity(artifact, source, splits, recipe, runtime="onnxruntime")]


def _parity(
    artifact: Artifact, source: ModelSource, splits: DataSplits, recipe: Recipe, *, runtime: str
) -> ParityStats:
    """Logits of the artifact (run in f32) against torch on the first test images."""
    from edgeflow.device import RuntimeSettings

    count = min(recipe.export.parity_samples, len(splits.test))
    images = np.stack([splits.test[index][0].numpy() for index in range(count)])
    compiled = get_backend(runtime).compile(artifact, settings=RuntimeSettings(**_PARITY_SETTINGS))
    candidate = np.concatenate([compiled.run(images[index : index + 1]) for index in range(count)])
    with torch.inference_mode():
        reference = source.module.eval()(torch.from_numpy(images)).numpy()
    return measure_parity(reference, candidate, reference_name="torch", runtime=f"{runtime} (f32)")


@dataclass
class _ReferenceLogits:
    """Logits of the fp32 ONNX, executed in f32 by ONNX Runtime: what every variant is compared with."""

    test: np.ndarray

    @classmethod
    def compute(cls, onnx_artifact: Artifact, splits: DataSplits, recipe: Recipe) -> _ReferenceLogits:
        compiled = get_backend("onnxruntime").compile(onnx_artifact, settings=RuntimeSettings())
        logits, _labels = collect_logits(compiled, splits.test, max_samples=recipe.evaluate.max_samples)
        return cls(test=logits)


def _measure_variant(
    variant: VariantSpec,
    artifact: Artifact,
    floats: FloatArtifacts,
    splits: DataSplits,
    device: DeviceSpec,
    recipe: Recipe,
    stage: Path,
    reference: _ReferenceLogits,
) -> VariantRecord:
    from edgeflow.device_run import run_on_device

    settings = device.runtime
    if variant.execution_precision is not None:
        settings = settings.model_copy(update={"execution_precision": variant.execution_precision})
    result = run_on_device(
        artifact, device=device, backend=variant.backend, precision=variant.precision, settings=settings,
        profile=recipe.profile, test=splits.test, holdout=splits.holdout, max_samples=recipe.evaluate.max_samples,
        cost_graph=floats.onnx if artifact.format == "torch" else None, float_graph=floats.onnx, module=floats.module,
    )  # fmt: skip
    return VariantRecord(
        name=variant.name,
        backend=variant.backend,
        precision=variant.precision,
        execution_precision=result.execution_precision,
        artifact=str(artifact.path.relative_to(stage)) if artifact.path else "",
        lineage=artifact.lineage,
        accuracy=result.test,
        holdout_top1=result.holdout.top1,
        agreement=measure_parity(
            reference.test, result.test_logits, reference_name="fp32 onnx (f32)", runtime=variant.name
        ),  # fmt: skip
        latency_ms=result.latency_ms,
        estimate=result.estimate,
        measured=result.measured,
        latency_source=result.why,
        memory=result.memory,
        size_bytes=result.size_bytes,
        params=result.params,
        macs=result.macs,
        runtime_settings=result.runtime_settings,
        runtime_version=result.runtime_version,
    )


def _mark_baseline_and_recommendation(records: list[VariantRecord], *, max_drop: float) -> None:
    """Speed-up against the first variant. Recommend the fastest deployable variant (not torch eager)
    whose holdout top-1 is within ``max_drop`` of the best fp32 variant's: chosen on holdout, never test."""
    if not records:
        return
    first = records[0]
    for record in records:
        if record.measured == first.measured:  # a measured and an estimated figure are never divided
            record.speedup_vs_baseline = round(first.p50() / record.p50(), 3)
    deployable = [record for record in records if record.backend != "torch"] or records
    floats = [record for record in deployable if record.precision == "fp32"] or deployable
    floor = max(record.holdout_top1 for record in floats) - max_drop
    eligible = [record for record in deployable if record.holdout_top1 >= floor - 1e-9] or floats
    min(eligible, key=lambda record: (not record.measured, record.p50())).recommended = True


def export(
    model: str,
    *,
    format: str = "onnx",
    out: str | Path = "reports/export",
    width: float = 1.0,
    resolution: int | None = None,
    resolution_multiplier: float | None = None,
    arch: str | None = None,
    num_classes: int = 1000,
    opset: int = 17,
) -> Artifact:
    """Export a model (registry name, checkpoint or ONNX) to ONNX or OpenVINO IR in ``out``.

    ``width`` is the width multiplier alpha; ``resolution`` (pixels) or ``resolution_multiplier``
    (rho, times the model's default input side) set the input size.
    """
    if format not in {"onnx", "openvino"}:
        raise ConfigError(f"unknown export format {format!r}; choose onnx or openvino")
    if resolution_multiplier is not None:
        options = {"width": width, "resolution": resolution, "resolution_multiplier": resolution_multiplier}
        scale = parse_spec(ModelConfig, options, source="export options")
        if looks_like_file(model) and arch is None:
            raise ConfigError("the resolution multiplier needs the model's default size: give --arch or --resolution")
        resolution = scale.input_side(model_info(arch or model).default_resolution)
    source = resolve_model(model, arch=arch, width=width, resolution=resolution, num_classes=num_classes)
    out = Path(out)
    ensure_writable_dir(out)
    if source.onnx_path is not None:
        onnx_artifact = Artifact(format="onnx", path=source.onnx_path, input_shape=source.input_shape)
        if format == "onnx":
            raise ConfigError(f"{model} is already an ONNX file")
    else:
        onnx_artifact = export_onnx(
            source.module, input_shape=source.input_shape, path=out / f"{source.name}.onnx", opset=opset
        )
    if format == "onnx":
        return onnx_artifact
    artifact = convert_to_openvino(onnx_artifact, path=out / f"{source.name}.xml")
    if source.onnx_path is None:
        onnx_artifact.path.unlink()
    return artifact


def profile(
    artifact: str | Path,
    *,
    device: str | Path | DeviceSpec = "cpu",
    backend: str | None = None,
    config: ProfileConfig | None = None,
) -> ProfileResult:
    """Time an exported artifact (.onnx or .xml) on ``device``'s runtime: in this process for a local
    device, through the benchmark agent or trtexec for an SSH device (never estimated: a device that
    cannot be reached is an error)."""
    from edgeflow.device_run import time_remotely, timing_plan

    device_spec = as_device(device)
    loaded = artifact_from_path(artifact)
    _infer_precision(loaded)
    chosen = choose_backend(loaded, device_spec, backend)
    config = config or ProfileConfig()
    plan, why = timing_plan(device_spec, chosen)
    if plan == "local":
        _compiled, result = compile_and_profile(loaded, device=device_spec, backend=chosen, config=config)
        return result
    if plan == "estimate":
        raise DeviceError(device_spec.name, "profile", why.replace(": latency estimated", ""))
    cost = artifact_cost(loaded)
    precision = loaded.precision
    if plan == "trtexec":
        precision = "int8" if loaded.precision == "int8" else "fp16"
    timing = time_remotely(loaded, plan=plan, device=device_spec, backend=chosen, precision=precision, profile=config)
    return ProfileResult(
        artifact=str(loaded.path), device=device_spec.name, backend=chosen, input_shape=list(loaded.input_shape or []),
        measured=True, size_bytes=loaded.size_bytes, params=cost.params, macs=cost.macs,
        runtime_version=timing.runtime_version, precision=precision, execution_precision=timing.execution_precision,
        latency_ms=timing.latency_ms, memory=timing.memory, runtime_settings=timing.runtime_settings,
    )  # fmt: skip


def evaluate(
    artifact: str | Path,
    *,
    data: str = "digits",
    device: str | Path | DeviceSpec = "cpu",
    backend: str | None = None,
    split: str = "test",
    max_samples: int | None = None,
    seed: int = 0,
) -> AccuracyStats:
    """Top-1/top-5 of an exported artifact on a data split, computed through the device's runtime."""
    if split not in {"test", "holdout"}:
        raise ConfigError(f"unknown split {split!r}; choose test or holdout")
    device_spec = as_device(device)
    loaded = artifact_from_path(artifact)
    chosen = choose_backend(loaded, device_spec, backend)
    compiled = get_backend(chosen).compile(loaded, settings=device_spec.runtime)
    resolution = compiled.input_shape[-1]
    splits = load_data(data, resolution=resolution, seed=seed)
    return evaluate_compiled(compiled, getattr(splits, split), split=split, max_samples=max_samples)


def _infer_precision(artifact: Artifact) -> None:
    """Mark an artifact int8 when its graph carries quantization."""
    from edgeflow.backends.openvino import read_model
    from edgeflow.compress.quantize import is_quantized

    if is_quantized(read_model(artifact)):
        artifact.precision = "int8"
