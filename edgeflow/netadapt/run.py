"""``edgeflow search``: NetAdapt on a device, then the final model and the multiplier baselines measured there.

Layout of ``out``: ``state/`` (the resumable search: state.json and weight files), then, when the
search is done, ``model_start.onnx``, ``model_netadapt.onnx`` (+ IR), ``search.json``, ``search.md``
and ``search.png``, each written atomically.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from edgeflow.accuracy import accuracy_from_logits, collect_logits
from edgeflow.backends import Compiled, get_backend
from edgeflow.cluster.session import connected
from edgeflow.data import DataSplits
from edgeflow.data.preprocess import PreprocessSpec, as_preprocess, parse_input_shape
from edgeflow.device import DeviceSpec, as_device
from edgeflow.environment import environment
from edgeflow.errors import ConfigError
from edgeflow.export.onnx import export_onnx
from edgeflow.io import claim_folder, json_digest, mark_folder
from edgeflow.latency.table import LookupTable, cache_folder, default_table_path
from edgeflow.latency.timer import Timer
from edgeflow.models import check_resolution
from edgeflow.netadapt import space
from edgeflow.netadapt.executor import Executor, InProcessExecutor
from edgeflow.netadapt.loop import Search, derived_seed, finetune
from edgeflow.netadapt.oracle import MeasuredOracle
from edgeflow.netadapt.report import PointRecord, SearchReport, table_errors, write_search_report
from edgeflow.netadapt.state import BaselineRecord, Checkpoint, SearchState
from edgeflow.profiling.in_turn import time_in_turn
from edgeflow.profiling.loop import ProfileConfig
from edgeflow.profiling.profile import compile_and_profile
from edgeflow.progress import Progress
from edgeflow.recipe import Recipe, SearchConfig, VariantSpec, as_recipe
from edgeflow.source import ModelSource, load_model_and_data
from edgeflow.train import train_if_needed
from edgeflow.variants import FloatArtifacts, ShippedBuild, build_variant


def search(
    model: str,
    *,
    device: str | Path | DeviceSpec = "cpu",
    recipe: str | Path | Recipe = "search",
    data: str | None = None,
    out: str | Path = "reports/search",
    arch: str | None = None,
    latency_budget_ms: float | None = None,
    latency_ratio: float | None = None,
    target: str | None = None,
    resume: bool = False,
    executor: Executor | None = None,
    ray: str | None = None,
    progress: Progress | None = None,
    preprocess: str | Path | PreprocessSpec | None = None,
    input_shape: str | tuple[int, ...] | None = None,
    class_map: str | Path | None = None,
    labels: str | Path | None = None,
    weights: str | None = None,
) -> SearchReport:
    """Find the most accurate shrunk ``model`` whose latency on ``device`` meets the budget.

    The budget comes from ``latency_budget_ms``/``latency_ratio`` or the recipe's ``search`` section; ``target``
    (else the section's) names the recipe variant whose file every candidate is timed as (INT8 by its method).
    With ``resume`` a search killed at any point goes on from ``out/state``. With ``ray`` (``auto`` or
    ``HEAD:PORT``; else the recipe's ``ray`` key) the proposals are screened and fine-tuned as Ray tasks
    (:class:`edgeflow.cluster.executor.RayExecutor`); the state stays here, checkpointed as in one process.
    """
    recipe_spec = as_recipe(recipe).with_inputs(
        preprocess=as_preprocess(preprocess), input_shape=parse_input_shape(input_shape), class_map=class_map,
        labels=labels, weights=weights,
    )  # fmt: skip
    with proposal_executor(ray or recipe_spec.ray, given=executor) as executor:
        return _search(
            model, device=device, recipe_spec=recipe_spec, data=data, out=out, arch=arch,
            latency_budget_ms=latency_budget_ms, latency_ratio=latency_ratio, target=target, resume=resume,
            executor=executor, progress=progress,
        )  # fmt: skip


@contextmanager
def proposal_executor(ray: str | None, *, given: Executor | None = None) -> Iterator[Executor | None]:
    """``given``, else Ray tasks on the cluster ``ray`` names (connected for the block), else None (this process)."""
    if given is not None and ray is not None:
        raise ConfigError("give an executor or a Ray address, not both")
    with connected(ray) as on_ray:
        if on_ray:
            from edgeflow.cluster.executor import RayExecutor

            yield RayExecutor(label=_task_label)
        else:
            yield given


def _task_label(task: object) -> str:
    """A proposal's Ray task name: what it screens or fine-tunes."""
    return f"proposal {getattr(task, 'name', task)}"


def _search(model, *, device, recipe_spec: Recipe, data, out, arch, latency_budget_ms, latency_ratio, target,
            resume, executor, progress) -> SearchReport:  # fmt: skip
    progress = progress or Progress.silent()
    device_spec = as_device(device)
    config = search_config(recipe_spec, budget_ms=latency_budget_ms, ratio=latency_ratio)
    if target is not None:
        config = config.model_copy(update={"target": target})
        recipe_spec = recipe_spec.model_copy(update={"search": config})
    target_variant = search_target(recipe_spec, device_spec)
    out = Path(out)
    if resume and not Checkpoint(out / "state").exists():
        raise ConfigError(f"nothing to resume: {out / 'state' / 'state.json'} does not exist")
    claim_folder(out, reading=(model, data or recipe_spec.data, recipe_spec.class_map, recipe_spec.labels))
    torch.manual_seed(recipe_spec.seed)  # a registry model's initial weights come from the global generator
    source, splits = load_model_and_data(model, arch=arch, data=data or recipe_spec.data, recipe=recipe_spec)
    engine = adapt(
        source, splits, recipe=recipe_spec, config=config, device=device_spec, folder=out / "state", resume=resume,
        executor=executor, progress=progress,
    )  # fmt: skip
    state, oracle = engine.state, engine.oracle
    search_seconds = state.elapsed_seconds

    progress.stage("export the start and adapted models; time and evaluate them on the device")
    where = _Where(out=out, device=device_spec, variant=target_variant, recipe=recipe_spec)
    evaluated = [
        _evaluate_point(where, "start", model=engine.start, splits=splits, kind="start"),
        _evaluate_point(where, "netadapt", model=engine.final_model(), splits=splits),
    ]
    evaluated += _baselines(engine, where, splits=splits, progress=progress)
    progress.stage(f"time the {len(evaluated)} models in turn ({config.compare_rounds} rounds)")
    points = _time_in_turn(evaluated, rounds=config.compare_rounds, profile=recipe_spec.profile)
    report = SearchReport(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model=source.name,
        arch=source.arch,
        resolution=source.resolution,
        device=device_spec.model_dump(),
        backend=target_variant.backend,
        target={**search_target_record(target_variant, seed=recipe_spec.seed), "searched_on": state.target},
        data=splits.describe(),
        config=config.model_dump(),
        oracle=oracle.name,
        budget_ms=state.budget_ms,
        start_measured_ms=state.start_measured_ms,
        start_estimate_ms=state.start_estimate_ms,
        table_fit=state.table_fit,
        channel_steps=state.channel_steps,
        stop_reason=state.stop_reason or "",
        iterations=state.iterations,
        points=points,
        table=table_errors(state) if isinstance(oracle, LookupTable) else None,
        oracle_measurements=state.oracle_measurements,
        oracle_seconds=round(state.oracle_seconds, 2),
        oracle_noisy=state.oracle_noisy,
        device_measurements=state.device_measurements,
        device_seconds=round(state.device_seconds, 2),
        search_seconds=round(search_seconds, 2),
        environment=environment(),
    )
    write_search_report(report, folder=out)
    mark_folder(out)
    return report


def search_target(recipe: Recipe, device: DeviceSpec) -> VariantSpec:
    """The recipe variant whose file the search times: the search section's ``target``, else the first INT8
    variant the device runs, else the first variant it runs. Its runtime must run in this process (the search
    compiles every candidate here)."""
    named = recipe.search.target if recipe.search is not None else None
    variants = {variant.name: variant for variant in recipe.variants}
    if named is not None:
        if named not in variants:
            raise ConfigError(
                f"search target {named!r} is not a variant of recipe {recipe.name} ({', '.join(variants) or 'none'})"
            )
        target = variants[named]
        if target.backend not in device.runtimes:
            raise ConfigError(f"search target {named}: device {device.name} has no {target.backend} runtime")
    else:
        runs = [variant for variant in recipe.variants if variant.backend in device.runtimes and _timeable(variant)]
        runs = [variant for variant in runs if variant.precision in device.precisions] or runs
        if not runs:
            raise ConfigError(
                f"recipe {recipe.name} has no variant this host can time on a runtime of device {device.name} "
                f"({', '.join(device.runtimes)}) for the search"
            )
        target = next((variant for variant in runs if variant.precision == "int8"), runs[0])
    missing = get_backend(target.backend).unavailable()
    if missing:
        raise ConfigError(f"search target {target.name}: {missing}")
    if not _timeable(target):
        raise ConfigError(f"search target {target.name}: the search builds candidates from the torch model as files; "
                          f"{target.backend} has none")  # fmt: skip
    if device.transport != "local":
        raise ConfigError(f"the search times candidates in this process; device {device.name} is {device.transport}")
    return target


def _timeable(variant: VariantSpec) -> bool:
    """Whether this host can build and time the variant's file for a candidate: its runtime is here, and reads the
    ONNX or has an exporter (torch eager has neither)."""
    backend = get_backend(variant.backend)
    return backend.unavailable() is None and ("onnx" in backend.formats or backend.exporter is not None)


def search_build(target: VariantSpec, *, seed: int) -> ShippedBuild | None:
    """How candidates are built for timing: None (the float ONNX, as it is) where the target is float on a runtime
    that reads ONNX itself, else the target's own file (:class:`ShippedBuild`)."""
    backend = get_backend(target.backend)
    if target.precision in ("fp32", "bf16") and "onnx" in backend.formats:
        return None
    return ShippedBuild(target, seed=seed)


def search_target_record(target: VariantSpec, *, seed: int) -> dict:
    """The target as the report states it: variant, backend, precision, and the method its timings quantize with."""
    build = search_build(target, seed=seed)
    return {
        "variant": target.name,
        "backend": target.backend,
        "precision": target.precision,
        "execution_precision": target.execution_precision,
        "timing_method": build.method if build is not None else None,
        "timing_context": build.context if build is not None else None,  # its settings' digest: what was timed
        "shipped_method": target.quantize.method if target.quantize is not None else None,
    }


def adapt(
    source: ModelSource,
    splits: DataSplits,
    *,
    recipe: Recipe,
    config: SearchConfig,
    device: DeviceSpec,
    folder: Path,
    resume: bool = False,
    train: bool = True,
    executor: Executor | None = None,
    progress: Progress | None = None,
) -> Search:
    """Train ``source`` if it has no weights (with ``train``: ``edgeflow optimize`` trains, or fine-tunes, before
    its search step and passes False), then run (or resume) the search with its state in ``folder``.

    Used by ``edgeflow search`` and by ``edgeflow optimize`` when its recipe has a search section.
    """
    progress = progress or Progress.silent()
    target = search_target(recipe, device)
    backend = target.backend
    if source.module is None:
        raise ConfigError(f"{source.name}: the search prunes a torch model; give a registry name or a checkpoint")
    checkpoint = Checkpoint(folder)
    fingerprint, earlier = _fingerprints(source, splits, recipe=recipe, config=config, device=device)
    state = _open_state(
        checkpoint, fingerprint, resume=resume, earlier=(earlier, config.long_term.model_dump(mode="json"))
    )
    _check_target(state, search_target_record(target, seed=recipe.seed), checkpoint=checkpoint, progress=progress)
    progress.stage(
        f"search {source.name} at {source.resolution} px on {device.name} ({backend} {target.precision}, "
        f"variant {target.name}); data {splits.name}"
        + (f"; resuming after iteration {len(state.iterations)}" if state.iterations else "")
    )
    if train and source.kind == "registry":  # trained once; a resumed search loads the same weights
        if (checkpoint.folder / "start.pt").exists():
            checkpoint.load_weights("start.pt", source.module)
            source.trained = True
        else:
            torch.manual_seed(recipe.seed)
            train_if_needed(source, splits, train_config=recipe.train, finetune_config=recipe.finetune,
                            seed=recipe.seed, progress=progress)  # fmt: skip
            checkpoint.save_weights("start.pt", source.module, folder="")

    build = search_build(target, seed=recipe.seed)

    def timer() -> Timer:
        return Timer(device, backend, settings=target.runtime_settings(device.runtime), profile=config.profile,
                     workdir=checkpoint.folder, build=build)  # fmt: skip

    if config.oracle == "measured":
        oracle = MeasuredOracle(timer())
    else:
        table_timer = timer()
        oracle = LookupTable(table_timer, default_table_path(cache_folder(), table_timer, source.input_shape))
    engine = Search(
        start=source.module.eval(),
        input_shape=source.input_shape,
        splits=splits,
        config=config,
        oracle=oracle,
        timer=timer(),
        checkpoint=checkpoint,
        state=state,
        seed=recipe.seed,
        arch=source.arch,
        executor=executor or InProcessExecutor(),
        progress=progress,
    )
    engine.run()
    return engine


def search_config(recipe: Recipe, *, budget_ms: float | None = None, ratio: float | None = None) -> SearchConfig:
    """The recipe's search section with the budget given on the command line (ms or a ratio), checked."""
    if recipe.search is None:
        raise ConfigError(f"recipe {recipe.name} has no search section; use the 'search' recipe or add one")
    if budget_ms is not None and ratio is not None:
        raise ConfigError("give --latency-budget or --latency-ratio, not both")
    config = recipe.search
    if budget_ms is not None:
        config = config.model_copy(update={"latency_budget_ms": budget_ms, "latency_ratio": None})
    if ratio is not None:
        if not 0 < ratio < 1:
            raise ConfigError(f"--latency-ratio must be between 0 and 1 (a fraction of today's latency), got {ratio}")
        config = config.model_copy(update={"latency_ratio": ratio, "latency_budget_ms": None})
    if budget_ms is not None and budget_ms <= 0:
        raise ConfigError(f"--latency-budget must be a positive number of milliseconds, got {budget_ms}")
    if config.latency_budget_ms is None and config.latency_ratio is None:
        raise ConfigError("the search needs a budget: --latency-budget MS or --latency-ratio R")
    return config


def _fingerprints(
    source: ModelSource,
    splits: DataSplits,
    *,
    recipe: Recipe,
    config: SearchConfig,
    device: DeviceSpec,
) -> tuple[str, str]:
    """What must not change between a search and its resumption (the target is checked on its own: a finished
    search may be evaluated as another variant, :func:`_check_target`), and the same with the long-term
    fine-tuning in it: states written before that left the fingerprint hold it."""
    weights = hashlib.sha256()
    for name, tensor in sorted(source.module.state_dict().items()):
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().numpy().tobytes())
    described = {
        "model": source.name,
        "arch": source.arch,
        "resolution": source.resolution,
        "weights": weights.hexdigest() if source.trained else "train-here",
        "data": splits.describe(),
        "recipe_train": recipe.train.model_dump(),
        "seed": recipe.seed,
        # the baselines are compared after the search and do not change it: a finished search can be
        # resumed to compare it with other multipliers
        "search": config.model_dump(exclude={"baselines", "target"}),
        "device": device.model_dump(),
    }
    earlier = json_digest(described)
    # nor does the long-term fine-tuning of its chosen model, which a resumed search redoes when it changed
    # (Search.run)
    described["search"].pop("long_term")
    return json_digest(described), earlier


def _check_target(state: SearchState, target: dict, *, checkpoint: Checkpoint, progress: Progress) -> None:
    """Record the search's target; an unfinished search resumes only on the target it was searching for, a
    finished one may be compared as another variant (the search judged on float, its models quantized: what
    judging on INT8 changes)."""
    if state.target is None:
        state.target = target
        checkpoint.save(state)
    elif state.target != target:
        searched = f"{state.target['variant']} ({state.target['backend']} {state.target['precision']})"
        if state.phase != "done":
            raise ConfigError(
                f"cannot resume: {checkpoint.folder} is a search on {searched}; resume it with that target, "
                "or start a new search in another folder"
            )
        progress.stage(f"the search ran on {searched}; its models are built, timed and scored as {target['variant']}")


def _open_state(
    checkpoint: Checkpoint, fingerprint: str, *, resume: bool, earlier: tuple[str, dict] | None = None
) -> SearchState:
    if resume:
        if not checkpoint.exists():
            raise ConfigError(f"nothing to resume: {checkpoint.path} does not exist")
        return checkpoint.load(fingerprint, earlier=earlier)
    if checkpoint.exists():
        previous = json.loads(checkpoint.path.read_text() or "{}")
        if previous.get("phase") != "done":
            raise ConfigError(
                f"{checkpoint.folder} holds an unfinished search; add --resume to go on, or choose another --out"
            )
        shutil.rmtree(checkpoint.folder)
    checkpoint.folder.mkdir(parents=True, exist_ok=True)
    state = SearchState(fingerprint=fingerprint)
    checkpoint.save(state)
    return state


@dataclass
class _Where:
    """Where the search's final models are written (``out``), timed and evaluated (device, the target variant,
    recipe)."""

    out: Path
    device: DeviceSpec
    variant: VariantSpec
    recipe: Recipe


def _evaluate_point(
    where: _Where,
    name: str,
    *,
    model: nn.Module,
    splits: DataSplits,
    kind: str = "netadapt",
    detail: str = "",
) -> tuple[PointRecord, Compiled]:
    """Build ``model``'s file as the target variant's method builds it (INT8 calibrated on the train split; a
    ``mixed_precision`` section is applied by ``optimize`` after the search, not to the search's comparison),
    time it on the device and measure test top-1 through the runtime."""
    resolution = splits.resolution
    shape = (1, 3, *splits.size)
    out, variant, recipe = where.out, where.variant, where.recipe
    backend = variant.backend
    runtime = get_backend(backend)
    scratch = out / f".build-{name}"  # the files are made aside, then the one that ships is named for the candidate
    scratch.mkdir(exist_ok=True)
    try:
        onnx = export_onnx(model.eval(), input_shape=shape, path=scratch / "model.onnx")
        artifact = onnx
        if runtime.exporter is not None or variant.precision not in ("fp32", "bf16"):
            floats = FloatArtifacts.of(onnx, module=model, input_shape=shape, folder=scratch)
            artifact, _ = build_variant(variant, floats=floats, splits=splits, folder=scratch, seed=recipe.seed,
                                        settings=variant.runtime_settings(where.device.runtime))  # fmt: skip
        artifact = artifact.move_to(out / f"model_{name}{Path(artifact.path).suffix}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    compiled, profiled = compile_and_profile(
        artifact, device=where.device, backend=backend, config=recipe.profile,
        settings=variant.runtime_settings(where.device.runtime),
    )  # fmt: skip
    logits, labels = collect_logits(compiled, splits.test, max_samples=recipe.evaluate.max_samples)
    stats = accuracy_from_logits(logits, labels, split="test", runtime=backend)
    record = PointRecord(
        name=name,
        kind=kind,
        detail=detail,
        resolution=resolution,
        artifact=str(Path(artifact.path).relative_to(out)),
        latency_ms=profiled.latency_ms,
        measured=profiled.measured,
        execution_precision=profiled.execution_precision,
        test_top1=stats.top1,
        params=profiled.params,
        macs=profiled.macs,
    )
    return record, compiled


def _time_in_turn(
    evaluated: list[tuple[PointRecord, Compiled]], *, rounds: int, profile: ProfileConfig
) -> list[PointRecord]:
    """Time every model one after another, round after round; each gets the median of its per-round p50s.

    Models timed minutes apart meet a host whose speed has drifted; timed in turn, they meet the same.
    """
    per_round = profile.model_copy(update={"max_seconds": min(profile.max_seconds, 1.0)})
    rounds_ms = time_in_turn(
        {record.name: compiled for record, compiled in evaluated}, rounds=rounds, config=per_round
    ).rounds_ms
    return [
        record.model_copy(
            update={"p50_in_turn_ms": statistics.median(rounds_ms[record.name]), "rounds_ms": rounds_ms[record.name]}
        )
        for record, _ in evaluated
    ]


def _baselines(
    engine: Search, where: _Where, *, splits: DataSplits, progress: Progress
) -> list[tuple[PointRecord, Compiled]]:
    """Width (alpha) and resolution (rho) multiplier models and Torch-Pruning's uniform magnitude pruning,
    fine-tuned with the final model's steps."""
    config = engine.config
    points = []
    pruned = [
        ("width", width, space.uniform_width, f"alpha={width:g}", f"keep {width:g} of every group's channels")
        for width in config.baselines.widths
    ] + [
        ("magnitude", ratio, space.magnitude_pruned, f"Torch-Pruning ratio={ratio:g}",
         f"Torch-Pruning's magnitude pruner removes {ratio:g} of every group")
        for ratio in config.baselines.magnitude
    ]  # fmt: skip
    for kind, value, prune, detail, what in pruned:
        progress.stage(f"baseline {kind} {value:g}: {what}, fine-tune")
        model = prune(engine.start, engine.example, value)
        _finetune_baseline(engine, model, name=f"{kind}-{value:g}", splits=splits,
                           seed=derived_seed(engine.seed, kind, value), teacher=engine.start)  # fmt: skip
        points.append(_evaluate_point(where, f"{kind}-{value:g}", model=model, splits=splits, kind=kind, detail=detail))
    for rho in config.baselines.resolutions:
        side = round(splits.resolution * rho)
        if engine.arch is not None:
            check_resolution(engine.arch, side)
        progress.stage(f"baseline resolution {rho:g}: {side} px, fine-tune")
        scaled = splits.with_resolution(side)
        model = copy.deepcopy(engine.start)
        # no distillation here: the teacher would see the same smaller images as the student it started as
        _finetune_baseline(
            engine, model, name=f"resolution-{rho:g}", splits=scaled, seed=derived_seed(engine.seed, "resolution", rho)
        )
        points.append(
            _evaluate_point(
                where,
                f"resolution-{rho:g}",
                model=model,
                splits=scaled,
                kind="resolution",
                detail=f"rho={rho:g} ({side} px)",
            )  # fmt: skip
        )
    return points


def _finetune_baseline(
    engine: Search, model: nn.Module, *, name: str, splits: DataSplits, seed: int, teacher: nn.Module | None = None
) -> None:
    """Fine-tune a baseline ``model`` in place with the long-term steps, or load the weights an earlier run of
    this search kept for it with the same steps (an evaluation killed or resumed does not fine-tune it again).
    Each file is named by the steps that made it, so the one the saved state names is never overwritten."""
    long_term = engine.config.long_term.model_dump(mode="json")
    kept = engine.state.baselines.get(name)
    if kept is not None and kept.long_term == long_term and (engine.checkpoint.folder / kept.weights).exists():
        try:
            engine.checkpoint.load_weights(kept.weights, model)
            model.eval()
            return
        except RuntimeError:  # another shape (a pruner that now keeps other channel counts): fine-tune it again
            pass
    finetune(model, splits, engine.config.long_term, seed=seed, teacher=teacher)
    weights = engine.checkpoint.save_weights(f"baseline-{name}-{json_digest(long_term)}.pt", model)
    engine.state.baselines[name] = BaselineRecord(weights=weights, long_term=long_term)
    engine.checkpoint.save(engine.state)
    if kept is not None and kept.weights != weights:
        engine.checkpoint.remove(kept.weights)


__all__ = ["search"]
