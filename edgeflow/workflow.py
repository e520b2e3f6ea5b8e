"""The steps of ``optimize``, in the order a run flows: load the model and data, train if needed, search
(when the recipe has a NetAdapt section), export, build each variant (the compression chain), time and
evaluate it where the device is, recommend one, bundle it, write the report.

:func:`edgeflow.api.optimize` is the public entry; this module is how it gets done.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from edgeflow.accuracy import ParityStats, collect_logits, measure_parity
from edgeflow.artifact import Artifact
from edgeflow.backends import format_owner, get_backend
from edgeflow.backends.base import RuntimeSettings
from edgeflow.compress.stats import QuantizationStats
from edgeflow.data import DataSplits
from edgeflow.device import DeviceSpec
from edgeflow.environment import environment, host_has_bf16
from edgeflow.errors import ConfigError, RuntimeUnavailableError
from edgeflow.export.onnx import export_onnx
from edgeflow.io import (
    atomic_path,
    check_output_folder,
    ensure_writable_dir,
    json_digest,
    staged_dir,
    unused_path,
    write_json,
)
from edgeflow.mixed_precision import build_mixed_variant
from edgeflow.models.onnx_input import save_with_fixed_input, write_metadata
from edgeflow.profiling.cost import COUNTED_FORMATS
from edgeflow.progress import Progress
from edgeflow.recipe import Recipe, VariantSpec
from edgeflow.report import write_report
from edgeflow.report.schema import ModelRecord, Report, VariantRecord
from edgeflow.source import ModelSource, load_model_and_data
from edgeflow.train import TrainStats, train_if_needed
from edgeflow.variants import FloatArtifacts, build_variant

_PARITY_SETTINGS = {"execution_precision": "f32"}


def run_optimize(
    model: str,
    *,
    device: DeviceSpec,
    recipe: Recipe,
    data: str | None,
    out: Path,
    arch: str | None,
    progress: Progress,
    resume: bool = False,
) -> Report:
    """The steps of :func:`edgeflow.api.optimize` for a resolved device and recipe, in order."""
    started = time.perf_counter()
    device_spec, recipe_spec = device, recipe
    _check_variants_fit_device(recipe_spec.variants, device_spec)
    data_source = data or recipe_spec.data
    reading = (model, data_source, recipe_spec.class_map, recipe_spec.labels)
    check_output_folder(out, reading=reading)  # before an hour of training, not after
    ensure_writable_dir(out.parent)
    work = _open_unfinished(out, recipe=recipe_spec, resume=resume)
    torch.manual_seed(recipe_spec.seed)

    source, splits = load_model_and_data(model, arch=arch, data=data_source, recipe=recipe_spec)
    sizes = splits.describe()
    height, width = splits.size
    progress.stage(
        f"model {source.name} ({source.kind}) at {height}x{width} px; data {splits.name}: "
        f"{sizes['train']} train / {sizes['holdout']} holdout / {sizes['test']} test images"
    )

    notes: list[str] = []
    if source.weights_notes:
        notes.append(f"weights {source.weights}: {'; '.join(source.weights_notes)}")
    if splits.output_indices is not None:
        notes.append(
            f"class map: the {splits.num_classes} classes are outputs {splits.output_indices} of "
            f"{source.num_classes or 'the model'}'s; top-1 is over every output (a pick outside them counts wrong). "
            "edgeflow eval --class-map gives the top-1 over the mapped outputs beside it"
        )
    with staged_dir(out, reading=reading) as stage:
        run = _Run(source=source, splits=splits, recipe=recipe_spec, device=device_spec, stage=stage, progress=progress,
                   work=work, resume=resume)  # fmt: skip
        training = _train_or_resume(run, notes)
        if source.module is not None:  # the trained model (a search's start: search/ holds what it changed)
            torch.save(source.module.state_dict(), stage / "model.pt")
        with _trained_weights_kept(stage / "model.pt", trained=training is not None, out=out, run=run):
            report = _after_training(run, training=training, notes=notes, started=started)
    if work is not None:  # the run succeeded: nothing left to resume
        shutil.rmtree(work, ignore_errors=True)
    return report


def unfinished_folder(out: Path) -> Path:
    """What an ``optimize`` run keeps beside ``out`` while it runs (``out`` appears only when the whole run
    succeeded), so that a killed run can go on (``--resume``): ``<out>.unfinished/`` holds the trained start model,
    the search's state and the mixed-precision sensitivity measured so far. A run that succeeds removes it."""
    out = Path(out).expanduser().resolve()
    return out.parent / f"{out.name}.unfinished"


def _open_unfinished(out: Path, *, recipe: Recipe, resume: bool) -> Path | None:
    """The run's :func:`unfinished_folder`, where it has steps worth resuming (a search, a mixed-precision
    variant); checked before training: a resume needs one, a new run refuses to start over an unfinished one. It is
    created when the first thing is kept there, so a run that fails before leaves nothing to refuse."""
    long = recipe.search is not None or any(variant.mixed_precision is not None for variant in recipe.variants)
    work = unfinished_folder(out)
    if resume and not long:
        raise ConfigError(f"nothing to resume: recipe {recipe.name} has no search and no mixed-precision variant")
    if resume and not work.is_dir():
        raise ConfigError(f"nothing to resume: {work} does not exist (a killed run leaves it)")
    if not long:
        return None
    if not resume and work.exists() and any(work.iterdir()):
        raise ConfigError(f"{work} holds what an unfinished run measured; add --resume to go on from it, or "
                          "delete it to start over")  # fmt: skip
    return work


def _train_or_resume(run: _Run, notes: list[str]) -> TrainStats | None:
    """Train the source if it needs it, and keep the result in the unfinished folder (``start.pt``, and in
    ``start.json`` what made it and what training did); a resumed run loads the model trained before the kill
    instead, refused where the model, data, training settings or seed differ."""
    source, recipe, work = run.source, run.recipe, run.work
    if work is None or source.module is None:
        return train_if_needed(source, run.splits, train_config=recipe.train, finetune_config=recipe.finetune,
                               seed=recipe.seed, progress=run.progress)  # fmt: skip
    start, record = work / "start.pt", work / "start.json"
    described = {
        "model": source.name, "arch": source.arch, "weights": source.weights, "resolution": source.resolution,
        "data": run.splits.describe(), "train": recipe.train.model_dump(), "finetune": recipe.finetune.model_dump(),
        "seed": recipe.seed,
    }  # fmt: skip
    key = json_digest(described)
    if run.resume and start.exists() and record.exists():
        kept = json.loads(record.read_text())
        if kept.get("key") != key:
            raise ConfigError(f"cannot resume: {work} was left by a run with another model, data, training settings "
                              "or seed; run that command, or delete the folder to start over")  # fmt: skip
        source.module.load_state_dict(torch.load(start, map_location="cpu", weights_only=True))
        source.trained = True
        notes.append(f"resumed: the model trained before the run was stopped, from {start}")
        return TrainStats.model_validate(kept["training"]) if kept.get("training") else None
    training = train_if_needed(source, run.splits, train_config=recipe.train, finetune_config=recipe.finetune,
                               seed=recipe.seed, progress=run.progress)  # fmt: skip
    ensure_writable_dir(work)
    with atomic_path(start) as temporary:
        torch.save(source.module.state_dict(), temporary)
    write_json(record, {"key": key, "training": training.model_dump(mode="json") if training else None})
    return training


@contextlib.contextmanager
def _trained_weights_kept(weights: Path, *, trained: bool, out: Path, run: _Run) -> Iterator[None]:
    """Training can take an hour: when a later step fails (or is interrupted), the weights trained here move
    beside ``out`` (``<out>.trained.pt``, whole) instead of going with the staging folder. A run with an unfinished
    folder keeps them there already, with what it measured after: the failure says to go on with ``--resume``."""
    try:
        yield
    except BaseException as exc:
        if run.work is not None and run.work.is_dir():
            message = (
                f"what this run trained and measured is kept in {run.work}: the same command with --resume goes on"
            )
            run.progress.stage(message)
            exc.add_note(message)
            raise
        if not trained or not weights.exists():
            raise
        kept = unused_path(out.parent / f"{out.name}.trained", suffix=".pt")  # never over an earlier file
        weights.replace(kept)  # the staging folder is in out.parent: a rename, never a partial file
        message = (
            f"the weights trained here are kept in {kept}: give it as the model (with --arch "
            f"{run.source.arch or run.source.name}) to go on without training"
        )
        run.progress.stage(message)
        exc.add_note(message)
        raise


def _after_training(run: _Run, *, training: TrainStats | None, notes: list[str], started: float) -> Report:
    """Everything after training: the search step, export, every variant, the bundle and the report."""
    source, splits, recipe_spec, device_spec, stage, progress = (
        run.source,
        run.splits,
        run.recipe,
        run.device,
        run.stage,
        run.progress,
    )
    if training is not None and training.started_from != "random weights":
        notes.insert(0, f"{training.describe()}, on {Path(splits.name).name} ({splits.num_classes} classes)")
    search = _search_step(run, notes)
    onnx_artifact, parity = _export(run)
    floats = FloatArtifacts.of(
        onnx_artifact,
        module=source.module,
        input_shape=source.input_shape,
        folder=stage,
        export=recipe_spec.export,
        model_name=source.name,
    )
    skipped = _float_artifacts(run, floats, parity)
    reference = _ReferenceLogits.compute(onnx_artifact, splits=splits, recipe=recipe_spec)
    records, artifacts = [], {}
    for variant in recipe_spec.variants:
        if variant.backend in skipped:
            notes.append(f"variant {variant.name} skipped: {skipped[variant.backend]}")
            continue
        progress.stage(f"variant {variant.name}: build, time, evaluate")
        settings = variant.runtime_settings(device_spec.runtime)
        if variant.mixed_precision is not None:
            artifact, summary = build_mixed_variant(variant, floats=floats, splits=splits, folder=stage,
                                                    seed=recipe_spec.seed, progress=progress, settings=settings,
                                                    keep_in=run.work,
                                                    keep_key=device_spec.model_dump_json())  # fmt: skip
        else:
            artifact, summary = build_variant(variant, floats=floats, splits=splits, folder=stage,
                                              seed=recipe_spec.seed, progress=progress, settings=settings)  # fmt: skip
        records.append(
            _measure_variant(run, variant, artifact=artifact, floats=floats, reference=reference, quantization=summary)
        )
        artifacts[variant.name] = artifact
    _mark_baseline_and_recommendation(records, max_drop=recipe_spec.max_accuracy_drop)
    notes += _latency_notes(records, device_spec)
    bundle = _write_bundle(run, records, artifacts=artifacts)
    if bundle is not None:
        notes.append(f"ship bundle: bundle/ ({bundle.variant}, {len(bundle.files)} files, manifest.json)")
        for deployable in bundle.deployables:
            for where, command in deployable.build.items():
                if where != "note":
                    notes.append(f"build and measure {deployable.file} on the device ({where.replace('_', ' ')}): "
                                 f"{command}")  # fmt: skip
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
            input_shape=list(source.input_shape),
            outputs="probabilities" if source.probabilities else "logits",
            weights=source.weights,
            new_head=source.new_head,
            weights_notes=source.weights_notes,
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
    notes = []
    estimated = [record for record in records if record.latency_kind == "estimated"]
    if estimated:
        reasons = sorted({record.latency_source for record in estimated})
        notes.append(f"{len(estimated)} of {len(records)} latencies are estimated, not measured on {device.name}: "
                     + "; ".join(reasons))  # fmt: skip
    emulated = [record for record in records if record.emulated]
    if emulated:
        notes.append(
            f"{len(emulated)} of {len(records)} latencies are emulated: {device.name} is an emulator on this host, so "
            "they are neither the device's nor a prediction; no speed-up is computed from them and they choose "
            "nothing (the recommendation is by accuracy alone, its latency unknown); its accuracy is what the "
            "device's own runtime builds computed"
        )
    return notes


def _write_bundle(run: _Run, records: list[VariantRecord], *, artifacts: dict[str, Artifact]):
    """The recommended deployable variant as a ship bundle (torch eager is never shipped)."""
    from edgeflow.report.bundle import write_bundle

    chosen = next((r for r in records if r.recommended and get_backend(r.backend).ships), None)
    if chosen is None:
        return None
    also = [(r, artifacts[r.name]) for r in records if r is not chosen and get_backend(r.backend).ships_every_variant]
    run.progress.stage(f"ship bundle of {chosen.name}" + (f" (and {len(also)} more files)" if also else ""))
    return write_bundle(
        folder=run.stage / "bundle", record=chosen, artifact=artifacts[chosen.name], model_name=run.source.name,
        splits=run.splits, device=run.device, also=also,
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


def _search_step(run: _Run, notes: list[str]) -> dict | None:
    """The recipe's NetAdapt step: the adapted model replaces the source for everything after it."""
    source, recipe = run.source, run.recipe
    if recipe.search is None:
        return None
    from edgeflow.netadapt.run import adapt, proposal_executor, search_config

    folder = run.work / "search"  # kept beside the output until the run succeeds: --resume goes on from it
    resume = run.resume and (folder / "state.json").exists()
    with proposal_executor(recipe.ray) as executor:  # the recipe's ray: proposals as Ray tasks
        engine = adapt(
            source, run.splits, recipe=recipe, config=search_config(recipe), device=run.device,
            folder=folder, resume=resume, train=False, executor=executor, progress=run.progress,
        )  # fmt: skip
    shutil.copytree(folder, run.stage / "search", ignore=shutil.ignore_patterns(".*"))  # not a killed write's temp
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


def _export(run: _Run) -> tuple[Artifact, list[ParityStats]]:
    """The float ONNX every variant is built from (an ONNX input is copied as it is), with its parity."""
    source, stage = run.source, run.stage
    path = stage / "model_fp32.onnx"
    if source.onnx_path is not None:  # copied with its dynamic dimensions fixed at the shape it runs at
        save_with_fixed_input(source.onnx_path, path, source.input_shape)
        write_metadata(path, splits=run.splits)
        return Artifact(format="onnx", path=path, input_shape=source.input_shape, lineage=["onnx file"]), []
    run.progress.stage("export to ONNX and check parity with torch")
    artifact = export_onnx(source.module, input_shape=source.input_shape, path=path, opset=run.recipe.export.opset)
    write_metadata(path, splits=run.splits)
    artifact.lineage = [f"torch {source.name}", "torch->onnx"]
    return artifact, [_parity(run, artifact, runtime=format_owner(artifact.format).name)]


def _float_artifacts(run: _Run, floats: FloatArtifacts, parity: list[ParityStats]) -> dict[str, str]:
    """Each variant backend's float artifact (OpenVINO's IR converted from the ONNX, LiteRT's ``.tflite`` converted
    from the torch model, ...), with its parity against torch; returns the backends whose variants are skipped,
    and why (an ONNX input has no torch model to convert; an optional runtime that is not installed)."""
    skipped: dict[str, str] = {}
    for name in dict.fromkeys(variant.backend for variant in run.recipe.variants):
        backend = get_backend(name)
        if backend.needs_module and run.source.module is None:
            skipped[name] = f"an ONNX model has no torch module for {name}"
            continue
        if backend.exporter is None:  # the float ONNX itself
            continue
        missing = backend.unavailable()
        if missing is not None:
            skipped[name] = missing
            continue
        run.progress.stage(f"build the float {name} artifact" + (" and check it against torch" if run.source.module
                                                                  else ""))  # fmt: skip
        try:
            artifact = floats.base(name)
        except RuntimeUnavailableError as exc:  # its converter is an extra that is not installed
            skipped[name] = str(exc)
            continue
        if run.source.module is not None and artifact.module is None:  # a file made from the model: compared
            parity.append(_parity(run, artifact, runtime=name))
    return skipped


def _parity(run: _Run, artifact: Artifact, *, runtime: str) -> ParityStats:
    """Logits of the artifact (run in f32) against torch on the first test images."""
    test = run.splits.test
    count = min(run.recipe.export.parity_samples, len(test))
    images = np.stack([test[index][0].numpy() for index in range(count)])
    compiled = get_backend(runtime).compile(artifact, settings=RuntimeSettings(**_PARITY_SETTINGS))
    candidate = np.concatenate([compiled.run(images[index : index + 1]) for index in range(count)])
    with torch.inference_mode():
        reference = run.source.module.eval()(torch.from_numpy(images)).numpy()
    return measure_parity(reference, candidate, reference_name="torch", runtime=f"{runtime} (f32)")


@dataclass
class _Run:
    """What every step of one ``optimize`` run reads: the model, its data, the recipe, the device, the staging
    folder and the progress display."""

    source: ModelSource
    splits: DataSplits
    recipe: Recipe
    device: DeviceSpec
    stage: Path
    progress: Progress
    work: Path | None = None  # what a killed run leaves to resume from (:func:`unfinished_folder`)
    resume: bool = False


@dataclass
class _ReferenceLogits:
    """Logits of the fp32 ONNX, executed in f32 by ONNX Runtime: what every variant is compared with."""

    test: np.ndarray

    @classmethod
    def compute(cls, onnx_artifact: Artifact, *, splits: DataSplits, recipe: Recipe) -> _ReferenceLogits:
        compiled = format_owner(onnx_artifact.format).compile(onnx_artifact, settings=RuntimeSettings())
        logits, _labels = collect_logits(compiled, splits.test, max_samples=recipe.evaluate.max_samples)
        return cls(test=logits)


def _measure_variant(
    run: _Run,
    variant: VariantSpec,
    *,
    artifact: Artifact,
    floats: FloatArtifacts,
    reference: _ReferenceLogits,
    quantization: QuantizationStats | None,
) -> VariantRecord:
    """Time ``variant``'s artifact where the device is (or estimate it), evaluate it there, and compare its
    logits with the float reference's."""
    from edgeflow.targets.run import run_on_device

    # MACs and params of a torch or LiteRT variant are counted on the float ONNX of the same network
    cost_graph = None if artifact.format in COUNTED_FORMATS else floats.onnx
    device = run.device
    settings = variant.runtime_settings(device.runtime)
    measured = run_on_device(
        artifact, device=device, backend=variant.backend, precision=variant.precision, settings=settings,
        profile=run.recipe.profile, test=run.splits.test, holdout=run.splits.holdout,
        max_samples=run.recipe.evaluate.max_samples, holdout_samples=run.recipe.evaluate.holdout_count,
        cost_graph=cost_graph,
        float_graph=floats.onnx, module=floats.module,
    )  # fmt: skip
    agreement = measure_parity(
        reference.test, measured.test_logits, reference_name="fp32 onnx (f32)", runtime=variant.name
    )
    return VariantRecord.from_measurement(
        variant, measured, artifact=artifact, folder=run.stage, agreement=agreement, quantization=quantization
    )


def _mark_baseline_and_recommendation(records: list[VariantRecord], *, max_drop: float) -> None:
    """Speed-up against the first variant. Recommend the fastest deployable variant (not torch eager)
    whose holdout top-1 is within ``max_drop`` of the best fp32 variant's: chosen on holdout, never test. A mixed
    precision file that mixed precision timed no faster than its float file is never recommended (the float file
    is the better answer)."""
    if not records:
        return
    first = records[0]
    for record in records:
        # a measured and an estimated figure are never divided, nor emulated ones (an emulator's ratios are its own)
        if record.latency_kind == first.latency_kind != "emulated":
            record.speedup_vs_baseline = round(first.p50() / record.p50(), 3)
    deployable = [record for record in records if get_backend(record.backend).ships] or records
    floats = [record for record in deployable if record.precision == "fp32"] or deployable
    floor = max(record.holdout_top1 for record in floats) - max_drop

    def dominated(record: VariantRecord) -> bool:  # a mixed file timed no faster than its float file
        mixed = record.quantization.mixed_precision if record.quantization is not None else None
        return mixed is not None and not mixed.faster_than_float

    eligible = [record for record in deployable
                if record.holdout_top1 >= floor - 1e-9 and not dominated(record)] or floats  # fmt: skip

    def choice(record: VariantRecord) -> tuple:  # measured first, then estimated; an emulated latency never counts
        if record.emulated:
            return (2, -record.holdout_top1, 0.0)
        return (0 if record.measured else 1, 0.0, record.p50())

    min(eligible, key=choice).recommended = True
