"""Run a nightly matrix: every (model, device, precision) cell through ``optimize``, carrying on past a
failing cell; record the night in the history; compare each cell with its recent nights; write the
night's folder (JSON, Markdown, HTML) atomically."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from edgeflow.cluster.session import connected
from edgeflow.device import DeviceSpec, load_device
from edgeflow.environment import environment
from edgeflow.errors import ConfigError, EdgeflowError
from edgeflow.io import ensure_writable_dir, sha256, staged_dir
from edgeflow.nightly.config import NightlySpec, load_nightly
from edgeflow.nightly.history import CellRecord, History
from edgeflow.nightly.regression import compare_run
from edgeflow.nightly.report import NightCellRecord, NightReport, TrendPoint, finding_record, write_night
from edgeflow.progress import Progress
from edgeflow.recipe import Recipe, VariantSpec


@dataclass
class CellJob:
    """One cell to run: a model (its trained file, or why it could not be prepared), a device, a precision."""

    model: str
    arch: str | None
    checkpoint: Path | None
    model_hash: str | None
    model_error: str | None
    device: DeviceSpec
    backend: str
    precision: str

    @property
    def name(self) -> str:
        return f"{_model_folder(self.model)}-{self.device.name}-{self.precision}"


# (the cell's record, its seconds, its device, its artifact in the night's folder)
CellResult = tuple[CellRecord, float, DeviceSpec, Path | None]


def run_nightly(
    recipe: str | Path | NightlySpec,
    *,
    out: str | Path = "reports/nightly",
    history: str | Path | None = None,
    label: str | None = None,
    ray: str | None = None,
    progress: Progress | None = None,
) -> NightReport:
    """Run the matrix of ``recipe``; write ``out/<label>/`` (label: today's date) and add the night to
    ``history`` (default ``out/history.sqlite``). Returns the night's report, findings included.

    With ``ray`` (``auto`` or ``HEAD:PORT``; else the recipe's ``ray`` key) the cells run as Ray tasks on the
    farm's nodes that declare their devices (:mod:`edgeflow.nightly.farm`); this process stays the only writer
    of the history and the night's folder."""
    spec = recipe if isinstance(recipe, NightlySpec) else load_nightly(recipe)
    with connected(ray or spec.ray) as on_ray:
        return _run_nightly(spec, out=out, history=history, label=label, on_ray=on_ray, progress=progress)


def _run_nightly(spec: NightlySpec, *, out, history, label, on_ray: bool, progress: Progress | None) -> NightReport:
    progress = progress or Progress.silent()
    devices = _check_matrix(spec)
    out = Path(out)
    ensure_writable_dir(out)
    started = datetime.now(timezone.utc)
    label = _free_label(out, label or started.strftime("%Y-%m-%d"))
    with History.open(history or out / "history.sqlite") as store:
        run_id = store.start_run(
            label=label, started=started.isoformat(timespec="seconds"), recipe_name=spec.name,
            recipe_hash=spec.fingerprint(), recipe=spec.model_dump(mode="json"), environment=environment(),
        )  # fmt: skip
        cells: list[CellResult] = []
        with staged_dir(out / label) as stage:
            jobs = []
            for model in spec.matrix.models:
                checkpoint, model_hash, model_error = _trained_model(
                    model, spec, cache=out / "cache", progress=progress
                )
                arch = spec.matrix.arch if Path(model).is_file() else model
                for device in devices:
                    backend = spec.matrix.backend or device.preferred_runtime()
                    jobs += [
                        CellJob(model, arch, checkpoint, model_hash, model_error, device, backend, precision)
                        for precision in spec.matrix.precisions
                    ]
            if on_ray:
                from edgeflow.nightly.farm import run_cells_on_farm, time_in_turn_on_farm

                run_cells, time_cells = run_cells_on_farm, time_in_turn_on_farm
            else:
                run_cells, time_cells = run_cells_here, time_cells_in_turn
            for cell in run_cells(jobs, spec, folder=stage / "cells", progress=progress):
                cells.append(cell)
                store.add_cell(run_id, cell[0])  # kept even if the night dies later
            for cell in time_cells(cells, spec, progress=progress):
                store.update_timing(run_id, cell)
            results = [NightCellRecord.from_cell(cell, seconds=seconds) for cell, seconds, *_ in cells]
            records = [cell for cell, *_ in cells]
            finished = datetime.now(timezone.utc)
            run = store.run(run_id)
            findings = compare_run(store, run, records, spec.regression)
            report = NightReport(
                label=label, started=run.started, finished=finished.isoformat(timespec="seconds"),
                recipe_name=spec.name, recipe_hash=spec.fingerprint(), recipe=run.recipe, description=spec.description,
                history=str(store.path), environment=run.environment, cells=results,
                findings=[finding_record(finding) for finding in findings],
                trends=_trends(store, records, run_id=run_id, label=label, nights=spec.trend_nights),
                seconds=round((finished - started).total_seconds(), 1),
            )  # fmt: skip
            progress.stage("write the night's report")
            write_night(report, folder=stage)
        # finished only once its folder is in place: a night that died before is never a baseline
        store.finish_run(run_id, finished=report.finished)
    return report


def _check_matrix(spec: NightlySpec) -> list[DeviceSpec]:
    """Every device and model of the matrix exists, and every precision runs there: before anything runs."""
    from edgeflow.models import model_info
    from edgeflow.models.source import looks_like_file

    devices = []
    for name in spec.matrix.devices:
        try:
            device = load_device(name)
        except EdgeflowError as exc:
            raise ConfigError(f"matrix device {name!r}: {exc}") from None
        if spec.pipeline.runtime is not None:
            device = device.model_copy(update={"runtime": spec.pipeline.runtime})
        backend = spec.matrix.backend or device.preferred_runtime()
        missing = [p for p in spec.matrix.precisions if p not in device.precisions]
        if missing:
            raise ConfigError(f"matrix device {name!r} does not run {', '.join(missing)} (it runs {device.precisions})")
        if backend not in device.runtimes:
            raise ConfigError(f"matrix device {name!r} has no {backend} runtime (it has {', '.join(device.runtimes)})")
        if any(known.name == device.name for known in devices):
            raise ConfigError(f"matrix device {name!r} is {device.name}, which the matrix already lists")
        devices.append(device)
    for model in spec.matrix.models:
        if looks_like_file(model):
            if not Path(model).is_file():
                raise ConfigError(f"matrix model file not found: {model}")
            if Path(model).suffix != ".onnx" and spec.matrix.arch is None:
                raise ConfigError(f"matrix model {model} is a checkpoint: give matrix.arch (its architecture)")
        else:
            try:
                model_info(model)
            except EdgeflowError as exc:
                raise ConfigError(f"matrix model {model!r}: {exc}") from None
    return devices


def _free_label(out: Path, label: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", label):
        raise ConfigError(f"night label {label!r}: use letters, digits, '.', '_' and '-'")
    candidate, number = label, 1
    while (out / candidate).exists():
        number += 1
        candidate = f"{label}-{number}"
    return candidate


def _trained_model(model: str, spec: NightlySpec, *, cache: Path, progress: Progress):
    """(file, sha256, error): a file model as it is; a registry model trained once with the pipeline's
    training and cached across nights (keyed by everything that decides its weights)."""
    from edgeflow.models.source import load_model_and_data, looks_like_file
    from edgeflow.train import train_if_needed

    if looks_like_file(model):
        return Path(model), sha256(Path(model)), None
    pipeline = spec.pipeline
    described = {
        "model": model, "data": pipeline.data, "seed": pipeline.seed, "scale": pipeline.model.model_dump(),
        "train": pipeline.train.model_dump(), "torch": torch.__version__,
    }  # fmt: skip
    key = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]
    checkpoint = cache / f"{model}-{key}.pt"
    try:
        if not checkpoint.exists():
            torch.manual_seed(pipeline.seed)
            recipe = _cell_recipe(spec, backend="onnxruntime", precision="fp32")
            source, splits = load_model_and_data(model, arch=None, data=pipeline.data, recipe=recipe)
            train_if_needed(source, splits, recipe=recipe, progress=progress)
            ensure_writable_dir(cache)
            temporary = checkpoint.with_name(f".{checkpoint.name}.tmp")
            torch.save(source.module.state_dict(), temporary)
            temporary.replace(checkpoint)
        return checkpoint, sha256(checkpoint), None
    except EdgeflowError as exc:
        return None, None, str(exc)
    except Exception as exc:  # carry on: every cell of this model records the failure
        return None, None, _bug(exc)


def _cell_recipe(spec: NightlySpec, *, backend: str, precision: str) -> Recipe:
    pipeline = spec.pipeline
    quantize = pipeline.quantize.model_copy() if precision == "int8" and pipeline.quantize is not None else None
    return Recipe(
        name=f"{spec.name}-{precision}", description=f"nightly cell of {spec.name}", data=pipeline.data,
        seed=pipeline.seed, model=pipeline.model, train=pipeline.train, export=pipeline.export,
        profile=pipeline.profile, evaluate=pipeline.evaluate,
        variants=[VariantSpec(name=f"{backend}-{precision}", backend=backend, precision=precision, quantize=quantize)],
    )  # fmt: skip


def run_cells_here(jobs: list[CellJob], spec: NightlySpec, *, folder: Path, progress: Progress) -> Iterator[CellResult]:
    """The cells one after another in this process."""
    here = f"this process ({socket.gethostname()})"
    for job in jobs:
        result = run_cell(spec, job, folder=folder, progress=progress)
        result[0].detail["node"] = here
        yield result


def run_cell(spec: NightlySpec, job: CellJob, *, folder: Path, progress: Progress) -> CellResult:
    """One cell through ``optimize`` into ``folder/<cell>``; a failure is the cell's record, never raised."""
    from edgeflow.api import optimize

    model, device, backend, precision = job.model, job.device, job.backend, job.precision
    device_name, name = device.name, job.name
    cell = CellRecord(model=model, device=device_name, precision=precision, backend=backend, status="failed")
    artifact: Path | None = None
    started = time.perf_counter()
    progress.stage(f"cell {model} on {device_name}, {precision} ({backend})")
    try:
        if job.model_error is not None:
            raise EdgeflowError(f"the model could not be prepared: {job.model_error}")
        recipe = _cell_recipe(spec, backend=backend, precision=precision)
        report = optimize(str(job.checkpoint), arch=job.arch, device=device, recipe=recipe, out=folder / name)
        variant = report.variants[0]
        artifact = folder / name / variant.artifact
        _drop_copies(folder / name)
        cell.status, cell.measured, cell.model_hash = "ok", variant.measured, job.model_hash
        cell.top1, cell.test_images, cell.size_bytes = (
            variant.accuracy.top1,
            variant.accuracy.samples,
            variant.size_bytes,
        )
        cell.runtime_version = variant.runtime_version
        cell.artifact_hash = _artifact_hash(artifact)
        if variant.latency_ms is not None:
            cell.p50_ms, cell.p90_ms = variant.latency_ms.p50, variant.latency_ms.p90
            if variant.latency_ms.samples_ms:
                cell.samples = np.asarray(variant.latency_ms.samples_ms)
        cell.detail = {
            "report": f"cells/{name}/report.html",
            "estimate_ms": variant.estimate.ms if variant.estimate is not None else None,
            "estimate_method": variant.estimate.method if variant.estimate is not None else None,
            "latency_source": variant.latency_source,
            "execution_precision": variant.execution_precision,
            "noisy": bool(variant.latency_ms is not None and variant.latency_ms.noisy),
            "slowest_layers": _slowest_layers(artifact, device=device, backend=backend, spec=spec)
            if variant.measured
            else [],
        }
    except EdgeflowError as exc:
        cell.error = str(exc)
    except Exception as exc:  # a bug in one cell must not lose the night: recorded, the run goes on
        cell.error = _bug(exc)
    seconds = round(time.perf_counter() - started, 1)
    if cell.error:
        progress.stage(f"cell {name} failed: {cell.error}")
    return cell, seconds, device, artifact


def _model_folder(model: str) -> str:
    """A folder name for a model: a registry name as it is; a file's stem and a hash of its path (two
    files called model.onnx in different folders must not share a cell folder)."""
    if not Path(model).suffix:
        return model
    digest = hashlib.sha256(str(Path(model).resolve()).encode()).hexdigest()[:8]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(model).stem)
    return f"{stem}-{digest}"


def time_cells_in_turn(cells: list[CellResult], spec: NightlySpec, *, progress: Progress) -> list[CellRecord]:
    """Time every cell measured in this process again, all in turn, ``rounds`` times: a cell's figures for the
    history are its samples pooled over the rounds, and its per-round p50s (the units regressions resample).
    A transient slowdown of the host then touches one round of every cell, not all of one cell's samples."""
    from edgeflow.artifact import artifact_from_path
    from edgeflow.backends import get_backend
    from edgeflow.profiling.in_turn import time_in_turn
    from edgeflow.profiling.loop import ProfileConfig

    timing = spec.timing
    chosen = [
        (cell, device, artifact) for cell, _, device, artifact in cells
        if cell.status == "ok" and cell.measured and device.is_local and artifact is not None
    ]  # fmt: skip
    if not chosen:
        return []
    progress.stage(f"time {len(chosen)} cells in turn, {timing.rounds} rounds of {timing.seconds_per_round:g} s")
    compiled = {}
    for index, (cell, device, artifact) in enumerate(chosen):
        try:
            compiled[index] = get_backend(cell.backend).compile(artifact_from_path(artifact), settings=device.runtime)
        except Exception as exc:  # it compiled minutes ago in optimize: keep that cell's own timing
            cell.detail["timing"] = f"its own timing loop (it did not compile again: {_bug(exc)})"
    config = ProfileConfig(warmup=timing.warmup, iterations=1_000_000, max_seconds=timing.seconds_per_round)
    timed = time_in_turn(compiled, rounds=timing.rounds, config=config, tolerate_failures=True)
    for index, why in timed.failed.items():  # this cell keeps its own timing from optimize; the others went on
        chosen[index][0].detail["timing"] = f"its own timing loop (timing in turn failed: {why})"
    for index in compiled:
        if index in timed.failed:
            continue
        cell = chosen[index][0]
        pooled = np.asarray(timed.samples_ms[index])
        cell.samples = pooled
        cell.p50_ms, cell.p90_ms = float(np.median(pooled)), float(np.percentile(pooled, 90))
        cell.detail["round_p50_ms"] = [round(value, 6) for value in timed.rounds_ms[index]]
        cell.detail["noisy_rounds"] = timed.noisy_rounds.get(index, 0)
        cell.detail["noisy"] = cell.detail["noisy_rounds"] > 0
        cell.detail["timing"] = (
            f"in turn with the night's other cells: {timing.rounds} rounds of {timing.seconds_per_round:g} s, pooled"
        )
    return [chosen[index][0] for index in range(len(chosen))]


def _artifact_hash(artifact: Path) -> str | None:
    """sha256 of what the artifact computes with: an OpenVINO IR's ``.bin`` (its XML holds names the converter
    generates anew on every export, so hashing it would report a change every night), else the file."""
    weights = artifact.with_suffix(".bin")
    target = weights if artifact.suffix == ".xml" and weights.is_file() else artifact
    return sha256(target) if target.is_file() else None


def _drop_copies(cell_folder: Path) -> None:
    """A night keeps each cell's report and artifacts; the trained weights are in the cache once, and the
    ship bundle repeats the artifact: neither is kept per cell and night."""
    import shutil

    (cell_folder / "model.pt").unlink(missing_ok=True)
    shutil.rmtree(cell_folder / "bundle", ignore_errors=True)


def _slowest_layers(artifact: Path, *, device: DeviceSpec, backend: str, spec: NightlySpec) -> list[dict]:
    """The runtime's own per-layer profile of the artifact (OpenVINO PERF_COUNT, ONNX Runtime profiling)."""
    from edgeflow.artifact import artifact_from_path
    from edgeflow.backends import get_backend

    if spec.pipeline.layer_inferences == 0 or spec.slowest_layers == 0 or backend not in {"openvino", "onnxruntime"}:
        return []
    compiled = get_backend(backend).compile(artifact_from_path(artifact), settings=device.runtime, layer_profile=True)
    profile = compiled.layer_profile(inferences=spec.pipeline.layer_inferences)
    return [
        {"name": layer.name, "type": layer.type, "kernel": layer.kernel, "ms": round(layer.ms, 5)}
        for layer in profile.slowest(spec.slowest_layers)
    ]


def _bug(exc: Exception) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    place = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
    return f"{type(exc).__name__}: {exc}{place}"


def _trends(
    store: History, cells: list[CellRecord], *, run_id: int, label: str, nights: int
) -> dict[str, list[TrendPoint]]:
    """Each cell over its last ``nights`` finished nights and tonight, oldest first."""
    trends = {}
    for cell in cells:
        past = reversed(store.cell_history(cell.key, before=run_id, limit=nights - 1))
        points = [(run.id, run.label, old) for run, old in past] + [(run_id, label, cell)]
        trends["/".join(cell.key)] = [
            TrendPoint(
                run_id=number, label=name, p50_ms=old.p50_ms, top1=old.top1, measured=old.measured, status=old.status
            )  # fmt: skip
            for number, name, old in points
        ]
    return trends
