"""Run a nightly matrix: every (model, device, precision) cell through ``optimize``, carrying on past a
failing cell; record the night in the history; compare each cell with its recent nights; write the
night's folder (JSON, Markdown, HTML) atomically."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import torch

from edgeflow.backends import format_owner
from edgeflow.cluster.session import connected
from edgeflow.device import DeviceSpec, load_device
from edgeflow.environment import environment
from edgeflow.errors import ConfigError, EdgeflowError
from edgeflow.io import claim_folder, ensure_writable_dir, json_digest, mark_folder, sha256, staged_dir, unused_path
from edgeflow.nightly.cells import CellJob, CellResult, bug, cell_recipe, run_cells_here, time_cells_in_turn
from edgeflow.nightly.config import NightlySpec, load_nightly
from edgeflow.nightly.history import CellRecord, History
from edgeflow.nightly.regression import compare_run
from edgeflow.nightly.report import NightCellRecord, NightReport, TrendPoint, finding_record, write_night
from edgeflow.progress import Progress


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
    out = claim_folder(out, reading=[*spec.matrix.models, spec.pipeline.data])
    started = datetime.now(timezone.utc)
    label = _free_label(out, label or started.strftime("%Y-%m-%d"))
    with History.open(history or out / "history.sqlite") as store:
        run_id = store.start_run(
            label=label, started=started.isoformat(timespec="seconds"), recipe_name=spec.name,
            recipe_hash=spec.fingerprint(), recipe=spec.model_dump(mode="json"), environment=environment(),
        )  # fmt: skip
        mark_folder(out)  # the night has begun: what it leaves in out (cache/, the night) is edgeflow's
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
    from edgeflow.source import looks_like_file

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
    return unused_path(out / label).name


def _trained_model(model: str, spec: NightlySpec, *, cache: Path, progress: Progress):
    """(file, sha256, error): a file model as it is; a registry model trained once with the pipeline's
    training and cached across nights (keyed by everything that decides its weights)."""
    from edgeflow.source import load_model_and_data, looks_like_file
    from edgeflow.train import train_if_needed

    if looks_like_file(model):
        return Path(model), sha256(Path(model)), None
    pipeline = spec.pipeline
    described = {
        "model": model, "data": pipeline.data, "seed": pipeline.seed, "scale": pipeline.model.model_dump(),
        "train": pipeline.train.model_dump(), "torch": torch.__version__,
    }  # fmt: skip
    key = json_digest(described)
    checkpoint = cache / f"{model}-{key}.pt"
    try:
        if not checkpoint.exists():
            torch.manual_seed(pipeline.seed)
            recipe = cell_recipe(spec, backend=format_owner("onnx").name, precision="fp32")  # any runtime: it trains
            source, splits = load_model_and_data(model, arch=None, data=pipeline.data, recipe=recipe)
            train_if_needed(source, splits, train_config=recipe.train, finetune_config=recipe.finetune,
                            seed=recipe.seed, progress=progress)  # fmt: skip
            ensure_writable_dir(cache)
            temporary = checkpoint.with_name(f".{checkpoint.name}.tmp")
            torch.save(source.module.state_dict(), temporary)
            temporary.replace(checkpoint)
        return checkpoint, sha256(checkpoint), None
    except EdgeflowError as exc:
        return None, None, str(exc)
    except Exception as exc:  # carry on: every cell of this model records the failure
        return None, None, bug(exc)


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
