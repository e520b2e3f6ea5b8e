"""The public verbs behind the CLI, notebooks and tests: the CLI imports nothing else of edgeflow. Each checks its
inputs and calls the code that does the work (``optimize``'s steps are in :mod:`edgeflow.workflow`; ``search``
is NetAdapt's, ``run_nightly`` the nightly's, ``quantize`` works on a file).

Verbs: optimize, search, export, profile, evaluate, quantize, run_nightly; the devices (list_devices,
load_device, check_device, calibrate_device), the registries (list_models, list_recipes) and the farm (farm_join,
farm_leave, farm_status).

Example:
    >>> import edgeflow
    >>> report = edgeflow.optimize("mobilenetv3", recipe="demo", out="reports/demo")  # doctest: +SKIP
    >>> [(v.name, v.latency_ms.p50, v.accuracy.top1) for v in report.variants]  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from edgeflow.accuracy import AccuracyStats, evaluate_compiled
from edgeflow.artifact import Artifact
from edgeflow.backends import artifact_from_path, get_backend
from edgeflow.cluster.farm import farm_status
from edgeflow.cluster.farm import join as farm_join
from edgeflow.cluster.farm import leave as farm_leave
from edgeflow.config import parse_spec
from edgeflow.data.classes import ClassMap, read_class_order
from edgeflow.data.load import is_builtin, load_data_for_input
from edgeflow.data.preprocess import PreprocessSpec, as_preprocess, parse_input_shape
from edgeflow.device import DeviceSpec, as_device, choose_backend, list_devices
from edgeflow.device import load_device as _load_device
from edgeflow.errors import ConfigError, EdgeflowError
from edgeflow.export.onnx import export_onnx
from edgeflow.export.openvino import convert_to_openvino
from edgeflow.io import describe_os_error, staged_entries
from edgeflow.models import list_models, model_info
from edgeflow.models.onnx_input import prepare_artifact
from edgeflow.models.pretrained import has_pretrained
from edgeflow.netadapt.run import search
from edgeflow.nightly.run import run_nightly
from edgeflow.profiling.loop import ProfileConfig
from edgeflow.profiling.profile import ProfileStats
from edgeflow.progress import Progress
from edgeflow.quantize_file import quantize_artifact as quantize
from edgeflow.recipe import ModelConfig, Recipe, as_recipe, list_recipes
from edgeflow.report.schema import Report
from edgeflow.source import looks_like_file, resolve_model
from edgeflow.targets.agent_client import check as check_device
from edgeflow.targets.calibration import calibrate_device

__all__ = [
    "EdgeflowError",
    "Progress",
    "calibrate_device",
    "check_device",
    "describe_os_error",
    "evaluate",
    "export",
    "farm_join",
    "farm_leave",
    "farm_status",
    "list_devices",
    "list_models",
    "list_recipes",
    "load_device",
    "optimize",
    "profile",
    "quantize",
    "run_nightly",
    "search",
]


def load_device(name_or_path: str | Path, *, host: str | None = None, key: str | None = None) -> DeviceSpec:
    """A device by name or file, with its SSH connection overridden by ``host`` (``user@host:port``) and ``key``
    where given (the CLI's ``--host`` and ``--key``)."""
    device = _load_device(name_or_path)
    return device.with_connection(host=host, key=key) if host is not None or key is not None else device


def optimize(
    model: str,
    *,
    device: str | Path | DeviceSpec = "cpu",
    recipe: str | Path | Recipe | None = None,
    data: str | None = None,
    out: str | Path = "reports/latest",
    arch: str | None = None,
    progress: Progress | None = None,
    preprocess: str | Path | PreprocessSpec | None = None,
    input_shape: str | tuple[int, ...] | None = None,
    class_map: str | Path | None = None,
    labels: str | Path | None = None,
    weights: str | None = None,
    resume: bool = False,
) -> Report:
    """Scale, train (if needed), export, quantize, then time and evaluate every variant on ``device``.

    ``recipe`` defaults to the device's own (``recipe:`` in its file: ``tensorrt`` for Jetsons), else
    ``default``. Where the device is not attached, latencies are estimated and labelled so. ``preprocess``,
    ``input_shape``, ``class_map``, ``labels`` and ``weights`` override the recipe's keys of the same names.
    With ``data`` a folder of photos and no recipe, the run trains as photos want (:meth:`Recipe.for_photos`):
    from the architecture's pretrained weights where it has them (``weights="none"``: from random weights).

    Writes ``out/report.{json,md,html}``, the accuracy-latency plot and the artifacts; the folder
    appears only when the whole run succeeded. A recipe with a search or a mixed-precision variant keeps what it
    measured in ``<out>.unfinished`` while it runs; ``resume`` goes on from there after a kill.
    """
    from edgeflow.workflow import run_optimize

    device_spec = as_device(device)
    recipe_spec = as_recipe(recipe if recipe is not None else device_spec.recipe or "default")
    if recipe is None and data is not None and not is_builtin(data):  # the user's photos, and no recipe given
        pretrained = not looks_like_file(model) and has_pretrained(model, width=recipe_spec.model.width)
        recipe_spec = recipe_spec.for_photos(pretrained=pretrained)
    recipe_spec = recipe_spec.with_inputs(
        preprocess=as_preprocess(preprocess), input_shape=parse_input_shape(input_shape), class_map=class_map,
        labels=labels, weights=weights,
    )  # fmt: skip
    return run_optimize(
        model, device=device_spec, recipe=recipe_spec, data=data, out=Path(out), arch=arch,
        progress=progress or Progress.silent(), resume=resume,
    )  # fmt: skip


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
    options = {"width": width, "resolution": resolution, "resolution_multiplier": resolution_multiplier}
    scale = parse_spec(ModelConfig, options, source="export options")  # --resolution 0 is refused, not "default"
    if resolution_multiplier is not None:
        if looks_like_file(model) and arch is None:
            raise ConfigError("the resolution multiplier needs the model's default size: give --arch or --resolution")
        resolution = scale.input_side(model_info(arch or model).default_resolution)
    source = resolve_model(model, arch=arch, width=width, resolution=resolution, num_classes=num_classes)
    if source.onnx_path is not None and format == "onnx":
        raise ConfigError(f"{model} is already an ONNX file")
    out = Path(out)
    names = [f"{source.name}.onnx"] if format == "onnx" else [f"{source.name}.xml", f"{source.name}.bin"]
    with staged_entries(out, names=names) as stage:  # a file edgeflow did not write there is never overwritten
        if source.onnx_path is not None:
            onnx_artifact = Artifact(format="onnx", path=source.onnx_path, input_shape=source.input_shape)
        else:
            onnx_artifact = export_onnx(
                source.module, input_shape=source.input_shape, path=stage / f"{source.name}.onnx", opset=opset
            )
        if format == "onnx":
            artifact = onnx_artifact
        else:
            artifact = convert_to_openvino(onnx_artifact, path=stage / f"{source.name}.xml")
            if source.onnx_path is None:
                onnx_artifact.path.unlink()
    artifact.path = out / artifact.path.name
    return artifact


def profile(
    artifact: str | Path,
    *,
    device: str | Path | DeviceSpec = "cpu",
    backend: str | None = None,
    config: ProfileConfig | dict | None = None,
    input_shape: str | tuple[int, ...] | None = None,
    preprocess: str | Path | PreprocessSpec | None = None,
    options_source: str = "profile options",
) -> ProfileStats:
    """Time an exported artifact (.onnx or .xml) on ``device``'s runtime: in this process for a local
    device, through the benchmark agent or trtexec for an SSH device (never estimated: a device that
    cannot be reached is an error). ``input_shape`` (or the size of ``preprocess``) fixes dynamic dimensions."""
    from edgeflow.targets.run import profile_on_device

    if isinstance(config, dict):  # options as given (the CLI's): checked like a recipe's profile section
        config = parse_spec(ProfileConfig, config, source=options_source)
    device_spec = as_device(device)
    loaded = artifact_from_path(artifact)
    prepare_artifact(loaded, input_shape=parse_input_shape(input_shape), preprocess=as_preprocess(preprocess))
    _infer_precision(loaded)
    chosen = choose_backend(loaded, device_spec, backend=backend)
    return profile_on_device(loaded, device=device_spec, backend=chosen, config=config or ProfileConfig())


def evaluate(
    artifact: str | Path,
    *,
    data: str = "digits",
    device: str | Path | DeviceSpec = "cpu",
    backend: str | None = None,
    split: str = "test",
    max_samples: int | None = None,
    seed: int = 0,
    labels: str | Path | None = None,
    class_map: str | Path | None = None,
    preprocess: str | Path | PreprocessSpec | None = None,
    input_shape: str | tuple[int, ...] | None = None,
) -> AccuracyStats:
    """Top-1/top-5 of an exported artifact on a data split (``test``, ``holdout``) or on every image of the data
    (``all``: a finished model scored on a whole folder), computed through the device's runtime.

    ``labels`` (one class a line, line = output) or ``class_map`` (TSV: folder, output) say which output each
    class folder is (else the labels an ONNX's metadata carries, else the sorted folder names); a model with
    more outputs than folders (ImageNet's 1,000 on Imagenette's 10, or a labels file's two on one folder) is then
    scored over the outputs its classes map to, with the top-1 over every output beside it. Only the images of
    ``split`` are read. ``preprocess`` (a YAML file or spec; else the ONNX's metadata, else the data set's
    default) reads the images; ``input_shape`` fixes dynamic dimensions."""
    if split not in {"test", "holdout", "all"}:
        raise ConfigError(f"unknown split {split!r}; choose test, holdout or all")
    mapping = read_class_order(labels=labels, class_map=class_map)
    device_spec = as_device(device)
    loaded = artifact_from_path(artifact)
    spec, own_order = prepare_artifact(
        loaded, input_shape=parse_input_shape(input_shape), preprocess=as_preprocess(preprocess)
    )
    if mapping is None and own_order is not None:
        mapping = ClassMap(own_order, source=f"the labels {loaded.path.name} carries")
    chosen = choose_backend(loaded, device_spec, backend=backend)
    compiled = get_backend(chosen).compile(loaded, settings=device_spec.runtime)
    splits = load_data_for_input(
        data, input_shape=compiled.input_shape, preprocess=spec, seed=seed, class_map=mapping, split=split
    )  # only the images of the split scored are read
    dataset = splits.every_image() if split == "all" else getattr(splits, split)
    output_indices = splits.output_indices
    if output_indices is None and mapping is not None:  # the map made the classes outputs 0 to n-1
        output_indices = list(range(splits.num_classes))
    return evaluate_compiled(
        compiled, dataset, split=split, max_samples=max_samples, num_classes=splits.num_classes, data=str(data),
        output_indices=output_indices, class_names=splits.class_names,
        mapped_by=mapping.source if mapping is not None else "the class map",
    )  # fmt: skip


def _infer_precision(artifact: Artifact) -> None:
    """Mark an artifact int8 when its graph carries quantization ("unknown" where the file cannot tell)."""
    from edgeflow.backends import is_quantized_artifact

    quantized = is_quantized_artifact(artifact)
    if quantized is None:
        artifact.precision = "unknown"
    elif quantized:
        artifact.precision = "int8"
