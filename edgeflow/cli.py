"""The `edgeflow` command: parse arguments, call the API, print. No logic lives here."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table


class _LazyApi:
    """:mod:`edgeflow.api`, the only part of edgeflow the CLI uses, imported when a command first needs it (it
    imports torch and the runtimes: ``edgeflow --help`` stays instant)."""

    def __getattr__(self, name: str) -> Any:
        import edgeflow.api

        return getattr(edgeflow.api, name)


api = _LazyApi()

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Compress, export, measure and report CNNs for edge devices.",
)
console = Console(width=None if sys.stdout.isatty() else 200)
error_console = Console(stderr=True, emoji=False)  # a file named :cat:.png stays so

JsonOption = typer.Option(False, "--json", help="print machine-readable results on stdout")
DeviceOption = typer.Option("cpu", "--device", "-d", help="device name (edgeflow devices) or a device YAML file")
DataSetOption = typer.Option(None, "--data", help="digits, digits-hard, or an ImageFolder directory")
ArchOption = typer.Option(None, "--arch", help="architecture of a checkpoint file")
HostOption = typer.Option(None, "--host", help="ssh devices: [user@]host[:port] (overrides the file and env)")
KeyOption = typer.Option(None, "--key", help="ssh devices: private key file")
PreprocessOption = typer.Option(
    None, "--preprocess", help="YAML: size [H, W], resize, resize_side, scale, mean, std, channels, layout"
)
InputShapeOption = typer.Option(None, "--input-shape", help="shape to run at, e.g. 1x3x48x192 (dynamic dimensions)")
WeightsOption = typer.Option(
    None,
    "--weights",
    help="pretrained weights: torchvision's (IMAGENET1K_V2, DEFAULT), timm's tag (ra_in1k), or "
    "none (random weights); from torchvision's and timm's caches",
)
LabelsOption = typer.Option(None, "--labels", help="one class a line; line number = model output")
RayOption = typer.Option(
    None, "--ray", help="run on a Ray cluster: auto (this machine's, else one for the run) or HEAD:PORT"
)
ClassMapOption = typer.Option(None, "--class-map", help="TSV: class folder, model output index (a header row allowed)")


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Keep stdout clean for --json: libraries that print (NNCF progress) go to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _run(call: Callable[[], Any]) -> Any:
    """Run an API call; user mistakes become one line on stderr and exit code 2."""
    try:
        with warnings.catch_warnings(), _stdout_to_stderr():
            warnings.simplefilter("ignore")
            return call()
    except api.EdgeflowError as error:
        error_console.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
    except OSError as error:  # the system refused (a full disk, a permission, too many open files): not a bug
        error_console.print(f"error: {api.describe_os_error(error)}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt:
        error_console.print("interrupted; nothing was written", markup=False)
        raise typer.Exit(code=130) from None
    except _Stopped as stop:  # said once the run's cleanup (and its progress bars) are done: the last line
        error_console.print(f"error: stopped by {stop.signal_name}; nothing was written", markup=False)
        raise typer.Exit(code=stop.code) from None


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _progress(enabled: bool):
    return api.Progress.to_stderr() if enabled else api.Progress.silent()


@app.command()
def optimize(
    model: str = typer.Argument(
        ..., help="model name (edgeflow models), a .pt checkpoint with --arch, or an .onnx file"
    ),
    device: str = DeviceOption,
    recipe: str | None = typer.Option(
        None, "--recipe", "-r", help="recipe name (edgeflow recipes) or YAML file; default: the device's, else default"
    ),
    data: str | None = DataSetOption,
    out: Path = typer.Option(
        Path("reports/latest"), "--out", "-o", help="report folder: new, or one edgeflow wrote (replaced on success)"
    ),
    arch: str | None = ArchOption,
    weights: str | None = WeightsOption,
    host: str | None = HostOption,
    key: str | None = KeyOption,
    preprocess: Path | None = PreprocessOption,
    input_shape: str | None = InputShapeOption,
    labels: Path | None = LabelsOption,
    class_map: Path | None = ClassMapOption,
    resume: bool = typer.Option(
        False,
        "--resume",
        help="go on from what a stopped run left in <out>.unfinished (the trained model, the "
        "search, the mixed-precision sensitivity)",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Compress, export, time and evaluate MODEL on DEVICE, and write a report."""
    run_optimize = api.optimize

    report = _run(
        lambda: run_optimize(
            model,
            device=api.load_device(device, host=host, key=key),
            recipe=recipe,
            data=data,
            out=out,
            arch=arch,
            progress=_progress(not as_json),
            preprocess=preprocess,
            input_shape=input_shape,
            labels=labels,
            class_map=class_map,
            weights=weights,
            resume=resume,
        )
    )
    if as_json:
        _print_json(report.model_dump(mode="json"))
        return
    table = Table(title=f"{report.model.name} on {report.device['name']} ({report.data['name']} test split)")
    for column in ("variant", "backend", "precision", "top-1 %", "p50 ms", "p90 ms", "size MiB", "latency"):
        table.add_column(column)
    for variant in report.variants:
        table.add_row(
            variant.name + (" *" if variant.recommended else ""),
            variant.backend,
            f"{variant.precision}/{variant.execution_precision}",
            f"{100 * variant.accuracy.top1:.2f}",
            f"{variant.p50():.3f}" + ("" if variant.measured else f" ({variant.latency_kind})"),
            "n/a" if variant.latency_ms is None else f"{variant.latency_ms.p90:.3f}",
            f"{variant.size_bytes / 2**20:.2f}",
            variant.latency_kind,
        )
    console.print(table)
    console.print(f"* recommended. Report: {out / 'report.html'} (also report.md, report.json)")


@app.command()
def search(
    model: str = typer.Argument(..., help="model name (trained here on the recipe's data) or a .pt checkpoint"),
    device: str = DeviceOption,
    latency_budget: float | None = typer.Option(None, "--latency-budget", help="latency budget in ms"),
    latency_ratio: float | None = typer.Option(
        None, "--latency-ratio", help="budget as a fraction of the starting model's measured latency"
    ),
    recipe: str = typer.Option("search", "--recipe", "-r", help="recipe with a search section"),
    target: str | None = typer.Option(
        None,
        "--target",
        help="the recipe variant whose file is timed, e.g. litert-int8 (default: the recipe's "
        "search target, else its first INT8 variant the device runs)",
    ),
    data: str | None = DataSetOption,
    out: Path = typer.Option(Path("reports/search"), "--out", "-o", help="search folder (state/ and reports)"),
    arch: str | None = ArchOption,
    weights: str | None = WeightsOption,
    resume: bool = typer.Option(False, "--resume", help="go on with the unfinished search in --out"),
    preprocess: Path | None = PreprocessOption,
    input_shape: str | None = InputShapeOption,
    labels: Path | None = LabelsOption,
    class_map: Path | None = ClassMapOption,
    ray: str | None = RayOption,
    as_json: bool = JsonOption,
) -> None:
    """NetAdapt: shrink MODEL until its latency measured on DEVICE meets the budget."""
    run_search = api.search

    report = _run(
        lambda: run_search(
            model,
            device=device,
            recipe=recipe,
            data=data,
            out=out,
            arch=arch,
            latency_budget_ms=latency_budget,
            latency_ratio=latency_ratio,
            target=target,
            resume=resume,
            ray=ray,
            progress=_progress(not as_json),
            preprocess=preprocess,
            input_shape=input_shape,
            labels=labels,
            class_map=class_map,
            weights=weights,
        )
    )
    if as_json:
        _print_json(report.model_dump(mode="json"))
        return
    start = report.point("start")
    table = Table(title=f"{report.model} on {report.device['name']}: budget {report.budget_ms:.3f} ms")
    for column in ("model", "p50 ms (measured)", "speed-up", "test top-1 %", "params"):
        table.add_column(column)
    for point in report.points:
        table.add_row(
            f"{point.name} {point.detail}".strip(),
            f"{point.latency_ms.p50:.3f}",
            f"{start.latency_ms.p50 / point.latency_ms.p50:.2f}x",
            f"{100 * point.test_top1:.2f}",
            f"{point.params / 1e6:.2f}M",
        )
    console.print(table)
    console.print(f"{report.stop_reason}. Report: {out / 'search.md'} (also search.json, search.png)")


@app.command()
def export(
    model: str = typer.Argument(..., help="model name, a .pt checkpoint with --arch, or an .onnx file"),
    format: str = typer.Option("onnx", "--format", "-f", help="onnx or openvino"),
    width: float = typer.Option(1.0, "--width", help="width multiplier alpha"),
    resolution: int | None = typer.Option(None, "--resolution", help="input side in pixels"),
    rho: float | None = typer.Option(None, "--rho", help="resolution multiplier: input side = model default x rho"),
    arch: str | None = ArchOption,
    num_classes: int = typer.Option(1000, "--num-classes", help="classes of an untrained model"),
    out: Path = typer.Option(Path("reports/export"), "--out", "-o", help="output folder"),
    as_json: bool = JsonOption,
) -> None:
    """Export MODEL to ONNX or OpenVINO IR."""
    run_export = api.export

    artifact = _run(
        lambda: run_export(
            model,
            format=format,
            out=out,
            width=width,
            resolution=resolution,
            resolution_multiplier=rho,
            arch=arch,
            num_classes=num_classes,
        )
    )
    if as_json:
        _print_json(
            {
                "format": artifact.format,
                "path": str(artifact.path),
                "files": [str(f) for f in artifact.files],
                "input_shape": list(artifact.input_shape or []),
                "size_bytes": artifact.size_bytes,
            }
        )
    else:
        console.print(f"wrote {', '.join(str(f) for f in artifact.files)}")


@app.command()
def profile(
    artifact: Path = typer.Argument(..., help="an exported .onnx, OpenVINO .xml or LiteRT .tflite file"),
    device: str = DeviceOption,
    backend: str | None = typer.Option(
        None,
        "--backend",
        "-b",
        help="a runtime of the device (edgeflow devices show DEVICE; default: its first that reads the file)",
    ),
    iterations: int = typer.Option(1000, "--iterations", "-n", help="stop after this many timed runs"),
    seconds: float = typer.Option(10.0, "--seconds", "-t", help="... or after this many seconds"),
    warmup: int = typer.Option(10, "--warmup", help="untimed runs first"),
    host: str | None = HostOption,
    key: str | None = KeyOption,
    input_shape: str | None = InputShapeOption,
    preprocess: Path | None = PreprocessOption,
    as_json: bool = JsonOption,
) -> None:
    """Time ARTIFACT on DEVICE's runtime: latency percentiles, cold start, memory, size, MACs."""
    run_profile = api.profile

    result = _run(
        lambda: run_profile(
            artifact,
            device=api.load_device(device, host=host, key=key),
            backend=backend,
            config={"iterations": iterations, "max_seconds": seconds, "warmup": warmup},
            options_source="profile options (-n/--iterations, -t/--seconds, --warmup)",
            input_shape=input_shape,
            preprocess=preprocess,
        )
    )
    if as_json:
        _print_json(result.model_dump(mode="json"))
        return
    latency = result.latency_ms
    console.print(
        f"{result.artifact} on {result.device} ({result.backend} {result.runtime_version}, "
        f"{result.precision} executed as {result.execution_precision}, "
        f"{result.runtime_settings.get('threads')} threads): "
        f"p50 {latency.p50:.3f} ms, p90 {latency.p90:.3f}, p99 {latency.p99:.3f}, mean {latency.mean:.3f}, "
        f"min {latency.min:.3f}, max {latency.max:.3f}, std {_ms(latency.std)}; cold {_ms(latency.cold)} ms; "
        f"{latency.throughput_fps:.1f} FPS over {latency.iterations} runs ({result.latency_kind}"
        + (": an emulator of the device, neither its latency nor a prediction)" if result.emulated else ")"),
        highlight=False,
    )
    memory = (
        "memory: n/a"
        if result.memory is None
        else f"memory: load peak +{result.memory.load_peak_mb} MiB, run peak +{result.memory.run_peak_mb} MiB"
    )
    console.print(
        f"size {result.size_bytes / 2**20:.2f} MiB, {result.params / 1e6:.2f}M params, "
        f"{result.macs / 1e6:.1f}M MACs; {memory}",
        highlight=False,
    )


@app.command()
def quantize(
    artifact: Path = typer.Argument(..., help="a float .onnx, OpenVINO .xml or LiteRT .tflite file"),
    device: str = DeviceOption,
    data: str = typer.Option("digits", "--data", help="calibration (train), budget (holdout), evidence (test)"),
    method: str = typer.Option(
        "auto", "--method", "-m", help="auto, or a quantization method that builds the backend's files"
    ),
    max_drop: float = typer.Option(1.0, "--max-drop", help="largest top-1 drop in points on the holdout split"),
    backend: str | None = typer.Option(
        None, "--backend", "-b", help="a runtime of the device (default: its first that reads the file)"
    ),
    subset_size: int = typer.Option(300, "--subset-size", help="calibration images"),
    preset: str = typer.Option(
        "fastest", "--preset", help="fastest (both NNCF presets timed on the device), auto, mixed, performance"
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="output folder (default: beside the artifact)"),
    preprocess: Path | None = PreprocessOption,
    input_shape: str | None = InputShapeOption,
    labels: Path | None = LabelsOption,
    class_map: Path | None = ClassMapOption,
    as_json: bool = JsonOption,
) -> None:
    """Quantize ARTIFACT to INT8 for DEVICE within an accuracy budget, with evidence."""
    run_quantize = api.quantize

    if not 0 <= max_drop <= 100:
        error_console.print("error: --max-drop is in points of top-1, between 0 and 100", markup=False)
        raise typer.Exit(code=2)
    result = _run(
        lambda: run_quantize(
            artifact,
            device=device,
            data=data,
            method=method,
            max_drop=max_drop / 100,
            backend=backend,
            out=out,
            subset_size=subset_size,
            preset=preset,
            progress=_progress(not as_json),
            preprocess=preprocess,
            input_shape=input_shape,
            labels=labels,
            class_map=class_map,
        )
    )
    if not result.budget_met:
        error_console.print(f"warning: {result.message}", markup=False, highlight=False)
    if as_json:
        _print_json(result.model_dump(mode="json"))
        return
    float_layers = result.summary.float_layers
    console.print(
        f"{result.artifact} ({result.method} for {result.backend}): test top-1 {100 * result.accuracy.top1:.2f}% "
        f"(float {100 * result.float_accuracy.top1:.2f}%), "
        f"agreement with float {100 * result.agreement.top1_agreement:.1f}%, "
        f"cosine {result.agreement.cosine_similarity:.4f}; {result.summary.quantized_layers} layers int8, "
        f"{len(float_layers)} in float",
        highlight=False,
    )
    console.print(result.message, highlight=False)
    for layer in float_layers[:20]:
        console.print(f"  float: {layer.name} ({layer.type}): {layer.reason}", highlight=False, markup=False)


@app.command("eval")
def evaluate(
    artifact: Path = typer.Argument(..., help="an exported .onnx, OpenVINO .xml or LiteRT .tflite file"),
    data: str = typer.Option("digits", "--data", help="digits, digits-hard, or an ImageFolder directory"),
    device: str = DeviceOption,
    backend: str | None = typer.Option(None, "--backend", "-b", help="a runtime of the device that reads the file"),
    split: str = typer.Option("test", "--split", help="test (reported accuracy), holdout, or all (every image)"),
    labels: Path | None = LabelsOption,
    class_map: Path | None = ClassMapOption,
    preprocess: Path | None = PreprocessOption,
    input_shape: str | None = InputShapeOption,
    max_samples: int | None = typer.Option(
        None, "--max-samples", help="evaluate N images, each class's share (default: all)"
    ),
    as_json: bool = JsonOption,
) -> None:
    """Top-1/top-5 of ARTIFACT on a data split, through the device's runtime."""
    run_evaluate = api.evaluate

    stats = _run(
        lambda: run_evaluate(
            artifact,
            data=data,
            device=device,
            backend=backend,
            split=split,
            max_samples=max_samples,
            labels=labels,
            class_map=class_map,
            preprocess=preprocess,
            input_shape=input_shape,
        )  # fmt: skip
    )
    if as_json:
        _print_json(stats.model_dump(mode="json"))
    else:
        top5 = "n/a" if stats.top5 is None else f"{100 * stats.top5:.2f}%"
        console.print(
            f"{artifact}: top-1 {100 * stats.top1:.2f}%, top-5 {top5} "
            f"on {stats.samples} {'images (all of the data)' if stats.split == 'all' else stats.split + ' images'} "
            f"({stats.runtime})"
        )
        if hasattr(stats, "top1_all_outputs"):  # scored through a class map
            console.print(
                f"  over the {stats.outputs} outputs (a pick outside the mapped ones counts wrong): "
                f"top-1 {100 * stats.top1_all_outputs:.2f}%"
            )


@app.command()
def models(as_json: bool = JsonOption) -> None:
    """List the architectures edgeflow can build."""
    infos = _run(api.list_models)
    if as_json:
        _print_json(
            [
                {
                    "name": i.name,
                    "family": i.family,
                    "aliases": list(i.aliases),
                    "width_multiplier": i.supports_width,
                    "resolution_multiplier": i.global_pool,
                    "default_resolution": i.default_resolution,
                    "source": i.source,
                }
                for i in infos
            ]
        )
        return
    table = Table(title="models (no weights are downloaded: they are trained here or loaded from your file)")
    for column in ("name", "aliases", "family", "width", "resolution", "default px", "source"):
        table.add_column(column)
    for info in infos:
        table.add_row(
            info.name,
            ", ".join(info.aliases),
            info.family,
            "yes" if info.supports_width else "-",
            "yes" if info.global_pool else "fixed",
            str(info.default_resolution),
            info.source,
        )
    console.print(table)


devices_app = typer.Typer(no_args_is_help=False, help="Devices: list, show, check (reach it, probe runtimes).")
app.add_typer(devices_app, name="devices")


@devices_app.callback(invoke_without_command=True)
def devices(context: typer.Context, as_json: bool = JsonOption) -> None:
    """List the built-in devices (devices/*.yaml); see also show, check."""
    if context.invoked_subcommand is None:
        devices_list(as_json=as_json)


@devices_app.command("list")
def devices_list(as_json: bool = JsonOption) -> None:
    """List the built-in devices (devices/*.yaml)."""
    specs = _run(api.list_devices)
    if as_json:
        _print_json([spec.model_dump() for spec in specs])
        return
    table = Table(title="devices (add your own: devices/README.md)")
    for column in ("name", "aliases", "transport", "runtimes", "precisions", "description"):
        table.add_column(column)
    for spec in specs:
        table.add_row(
            spec.name, ", ".join(spec.aliases), spec.transport, ", ".join(spec.runtimes), ", ".join(spec.precisions),
            spec.description,
        )  # fmt: skip
    console.print(table)


@devices_app.command("show")
def devices_show(device: str = typer.Argument(..., help="device name, alias or YAML file")) -> None:
    """Print DEVICE's descriptor as validated (defaults filled in), as JSON."""

    _print_json(_run(lambda: api.load_device(device)).model_dump())


@devices_app.command("check")
def devices_check(
    device: str = typer.Argument(..., help="device name, alias or YAML file"),
    host: str | None = HostOption,
    key: str | None = KeyOption,
    as_json: bool = JsonOption,
) -> None:
    """Reach DEVICE and list the runtimes (and versions) it has; exit 1 when one it names is missing."""

    found = _run(lambda: api.check_device(api.load_device(device, host=host, key=key)))
    if as_json:
        _print_json(found.model_dump())
    else:
        console.print(f"{found.device}: reachable at {found.address} ({found.transport})", highlight=False)
        if found.python:
            console.print(f"  python {found.python} on {found.machine} ({found.system})", highlight=False)
            if found.isa:
                console.print(f"  cpu features: {' '.join(found.isa)}", highlight=False)
        for name, version in found.runtimes.items():
            console.print(f"  {name}: {version or 'MISSING'}", highlight=False)
    if found.missing:
        error_console.print(f"error: {found.device} lacks {', '.join(found.missing)}", markup=False)
        raise typer.Exit(code=1)


@devices_app.command("calibrate")
def devices_calibrate(
    device: str = typer.Argument(..., help="device name, alias or YAML file (transport: local or ssh)"),
    models: str = typer.Option(
        "mobilenet_v2,mobilenet_v3_large,mobilenet_v3_small,mnasnet1_0,resnet18",
        "--models",
        help="comma-separated registry models whose blocks are measured",
    ),
    resolution: int = typer.Option(128, "--resolution", help="input side in pixels"),
    backend: str | None = typer.Option(
        None, "--backend", "-b", help="a runtime of the device (default: its first that reads the file)"
    ),
    host: str | None = HostOption,
    key: str | None = KeyOption,
    as_json: bool = JsonOption,
) -> None:
    """Measure DEVICE's lookup table (block times) and fit it on whole models timed there (over SSH for ssh devices)."""

    names = [name.strip() for name in models.split(",") if name.strip()]
    fitted = _run(
        lambda: api.calibrate_device(
            api.load_device(device, host=host, key=key),
            models=names,
            resolution=resolution,
            backend=backend,
        )
    )
    if as_json:
        _print_json(fitted.model_dump(mode="json"))
        return
    fit = fitted.fit
    console.print(
        f"{fitted.device} ({fitted.context}): latency = {fit.intercept_ms:.3f} ms + {fit.compute_scale:.3f} x blocks "
        f"+ {fit.per_block_ms:.4f} ms per block",
        highlight=False,
    )
    for point in fit.calibration:
        error = 100 * (point.estimate_ms / point.measured_ms - 1)
        console.print(
            f"  {point.name}: measured {point.measured_ms:.3f} ms, fitted {point.estimate_ms:.3f} ms ({error:+.1f}%)",
            highlight=False,
        )


@app.command()
def nightly(
    recipe: str = typer.Option("nightly", "--recipe", "-r", help="nightly recipe (kind: nightly), name or YAML file"),
    out: Path = typer.Option(Path("reports/nightly"), "--out", "-o", help="folder of the nights (<out>/<date>/)"),
    history: Path | None = typer.Option(None, "--history", help="SQLite history; default <out>/history.sqlite"),
    label: str | None = typer.Option(None, "--label", help="the night's folder name; default today's date (UTC)"),
    fail_on_regression: bool = typer.Option(
        False, "--fail-on-regression", help="exit with code 1 when a cell regressed (for CI)"
    ),
    ray: str | None = RayOption,
    as_json: bool = JsonOption,
) -> None:
    """Run a benchmark matrix, keep it in the history, and flag regressions against recent nights."""

    report = _run(
        lambda: api.run_nightly(recipe, out=out, history=history, label=label, ray=ray, progress=_progress(not as_json))
    )
    if as_json:
        _print_json(report.model_dump(mode="json"))
    else:
        table = Table(title=f"nightly {report.label}: {report.recipe_name}")
        for column in ("model", "device", "precision", "p50 ms", "vs history", "top-1 %", "status"):
            table.add_column(column)
        for cell in report.cells:
            latency = report.finding(cell, "latency")
            change = "new" if latency is None or latency.change is None else f"{100 * latency.change:+.1f}%"
            if latency is not None and latency.flagged:
                change += " REGRESSED"
            p50 = f"{cell.p50_ms:.3f}" if cell.measured else (
                f"~{cell.estimate_ms:.3f} (est.)" if cell.estimate_ms is not None else "n/a"
            )  # fmt: skip
            top1 = "n/a" if cell.top1 is None else f"{100 * cell.top1:.2f}"
            status = cell.status if cell.error is None else f"failed: {cell.error}"
            device = cell.device if cell.node is None else f"{cell.device} on {cell.node.split(' ')[0]}"
            table.add_row(cell.model, device, cell.precision, p50, change, top1, status)
        console.print(table)
        for finding in report.regressions:
            console.print(f"regression: {finding.model} on {finding.device} {finding.precision}: {finding.kind}: "
                          f"{finding.message}", markup=False, highlight=False)  # fmt: skip
        console.print(f"Report: {out / report.label / 'night.html'} (also night.md, night.json)")
    if fail_on_regression and report.regressions:
        raise typer.Exit(code=1)


farm_app = typer.Typer(no_args_is_help=True, help="A device farm on Ray: join it, leave it, see what runs where.")
app.add_typer(farm_app, name="farm")


@farm_app.command("join")
def farm_join(
    devices: str = typer.Option("", "--devices", help="the devices this machine reaches, comma-separated"),
    address: str | None = typer.Option(None, "--address", help="the farm's head HOST:PORT"),
    head: bool = typer.Option(False, "--head", help="start the farm's head here (instead of --address)"),
    port: int = typer.Option(6379, "--port", help="with --head: the head's port"),
    node_ip: str | None = typer.Option(None, "--node-ip", help="the address this node is reached at"),
    cpus: int | None = typer.Option(None, "--cpus", help="CPUs this node lends (default: all)"),
) -> None:
    """Start Ray here as a node of the farm, one resource per device it reaches."""
    names = [name.strip() for name in devices.split(",") if name.strip()]
    joined = _run(lambda: api.farm_join(names, address=address, head=head, port=port, node_ip=node_ip, cpus=cpus))
    console.print(joined, markup=False, highlight=False)


@farm_app.command("leave")
def farm_leave() -> None:
    """Stop Ray on this machine (ray stop): its devices leave the farm."""
    _run(api.farm_leave)
    console.print("left the farm (Ray stopped on this machine)")


@farm_app.command("status")
def farm_status(
    address: str = typer.Option("auto", "--address", help="the farm's head HOST:PORT (default: this machine's)"),
    as_json: bool = JsonOption,
) -> None:
    """The farm's nodes, the devices each declares, and what runs on each."""
    from dataclasses import asdict

    farm = _run(lambda: api.farm_status(address))
    if as_json:
        _print_json(asdict(farm))
        return
    table = Table(title=f"farm at {farm.address}")
    for column in ("node", "address", "alive", "CPUs", "devices", "running"):
        table.add_column(column)
    for node in farm.nodes:
        running = ", ".join(node.running) or ("?" if farm.activity else "idle")
        table.add_row(node.node_id[:8], node.address, "yes" if node.alive else "no", f"{node.cpus:g}",
                      ", ".join(node.devices) or "-", running)  # fmt: skip
    console.print(table)
    if farm.activity:
        console.print(farm.activity, markup=False, highlight=False)


@app.command()
def recipes(as_json: bool = JsonOption) -> None:
    """List the built-in recipes (recipes/*.yaml)."""
    specs = _run(api.list_recipes)
    if as_json:
        _print_json([spec.model_dump() for spec in specs])
        return
    table = Table(title="recipes")
    for column in ("name", "data", "variants", "description"):
        table.add_column(column)
    for spec in specs:
        table.add_row(spec.name, spec.data, ", ".join(v.name for v in spec.variants), spec.description)
    console.print(table)


def main() -> None:
    signal.signal(signal.SIGTERM, _terminated)
    app()


class _Stopped(SystemExit):
    """A signal that stops the command; the exit code is 128 + the signal's number, as shells report it."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signal_name = signal.Signals(signum).name


def _terminated(signum: int, _frame) -> None:
    """SIGTERM (a job scheduler's stop, ``kill``) ends a command like Ctrl-C does: through its cleanup, so an
    ``optimize`` stopped mid-run leaves neither its output folder nor its hidden staging folder."""
    raise _Stopped(signum)


if __name__ == "__main__":
    main()
