"""One nightly cell: what it runs (:class:`CellJob`), running it through ``optimize`` (:func:`run_cell`), the
cells one after another in this process, and every measured cell timed again in turn with the others."""

from __future__ import annotations

import hashlib
import re
import socket
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeflow.backends import get_backend
from edgeflow.compress import AUTO, methods_for, settings_keys
from edgeflow.device import DeviceSpec
from edgeflow.errors import EdgeflowError
from edgeflow.io import sha256
from edgeflow.nightly.config import NightlySpec
from edgeflow.nightly.history import CellRecord
from edgeflow.progress import Progress
from edgeflow.recipe import QuantizeConfig, Recipe, VariantSpec


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
    name: str = field(init=False)  # its folder: named where the job is made (a file model's path resolves there)

    def __post_init__(self) -> None:
        self.name = f"{_model_folder(self.model)}-{self.device.name}-{self.precision}"


# (the cell's record, its seconds, its device, its artifact in the night's folder)
CellResult = tuple[CellRecord, float, DeviceSpec, Path | None]


def cell_recipe(spec: NightlySpec, *, backend: str, precision: str) -> Recipe:
    pipeline = spec.pipeline
    quantize = None
    if precision == "int8" and pipeline.quantize is not None:  # shared by every backend: each cell keeps its keys
        runtime = get_backend(backend)
        given = pipeline.quantize.model_fields_set
        method = pipeline.quantize.method if "method" in given else runtime.default_int8
        keys = (
            settings_keys(method, runtime.name, default=runtime.default_int8)
            if method in (AUTO, *methods_for(runtime.name))
            else given
        )  # a method that does not serve it: refused by VariantSpec
        quantize = QuantizeConfig(**{key: getattr(pipeline.quantize, key) for key in given & keys})
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
    from edgeflow.workflow import run_optimize

    model, device, backend, precision = job.model, job.device, job.backend, job.precision
    device_name, name = device.name, job.name
    cell = CellRecord(model=model, device=device_name, precision=precision, backend=backend, status="failed")
    artifact: Path | None = None
    started = time.perf_counter()
    progress.stage(f"cell {model} on {device_name}, {precision} ({backend})")
    try:
        if job.model_error is not None:
            raise EdgeflowError(f"the model could not be prepared: {job.model_error}")
        recipe = cell_recipe(spec, backend=backend, precision=precision)
        report = run_optimize(str(job.checkpoint), arch=job.arch, device=device, recipe=recipe, data=None,
                              out=folder / name, progress=Progress.silent())  # fmt: skip
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
            "emulated": variant.emulated,
            "slowest_layers": _slowest_layers(artifact, device=device, backend=backend, spec=spec)
            if variant.measured
            else [],
        }
    except EdgeflowError as exc:
        cell.error = str(exc)
    except Exception as exc:  # a bug in one cell must not lose the night: recorded, the run goes on
        cell.error = bug(exc)
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
    from edgeflow.backends import artifact_from_path, get_backend
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
            cell.detail["timing"] = f"its own timing loop (it did not compile again: {bug(exc)})"
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
    from edgeflow.backends import artifact_from_path, get_backend

    profiled = get_backend(backend).supports_layer_profile
    if spec.pipeline.layer_inferences == 0 or spec.slowest_layers == 0 or not profiled:
        return []
    compiled = get_backend(backend).compile(artifact_from_path(artifact), settings=device.runtime, layer_profile=True)
    profile = compiled.layer_profile(inferences=spec.pipeline.layer_inferences)
    return [
        {"name": layer.name, "type": layer.type, "kernel": layer.kernel, "ms": round(layer.ms, 5)}
        for layer in profile.slowest(spec.slowest_layers)
    ]


def bug(exc: Exception) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    place = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
    return f"{type(exc).__name__}: {exc}{place}"
