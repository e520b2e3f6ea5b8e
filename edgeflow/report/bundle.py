"""The ship bundle: what an app or a device build needs, with a manifest that says what each file is.

``bundle/`` in a report folder holds the recommended variant's model file(s), for phones the ONNX Runtime
mobile format (``.ort``) with the operator config a minimal ORT build needs, every variant of a runtime that
ships them all (``Backend.ships_every_variant``: ``model.tflite`` for float32, ``model_int8.tflite``,
``model_int8.pte``, ...), ``labels.txt``, and
``manifest.json``: input name, shape, layout, dtype and normalization (mean/std after scaling to 0..1),
labels, the sha256 and size of every file, precision, runtime and version, the metrics with the device
they were measured on (or ``measured: false`` and how they were estimated), and the exact commands that
build (TensorRT) and measure each model file on the device. ``deployables`` lists every model file the
bundle carries, each with its own runtime, input (LiteRT files say whether they take NCHW or NHWC),
metrics and commands.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from pydantic import BaseModel

from edgeflow.artifact import Artifact
from edgeflow.backends import format_owner, get_backend
from edgeflow.data import DataSplits
from edgeflow.device import DeviceSpec
from edgeflow.errors import ModelLoadError
from edgeflow.io import sha256, write_json, write_text
from edgeflow.report.schema import VariantRecord

MANIFEST_VERSION = 1


class BundleFile(BaseModel):
    path: str
    sha256: str
    bytes: int
    role: str  # model, weights, ort-model, ort-config, labels


class Deployable(BaseModel):
    """One model file of the bundle, as an app or a device build uses it."""

    file: str
    variant: str
    precision: str
    runtime: str
    runtime_version: str
    input: dict
    metrics: dict
    build: dict


class Manifest(BaseModel):
    manifest_version: int = MANIFEST_VERSION
    model: str
    variant: str
    precision: str
    runtime: str
    runtime_version: str
    input: dict
    labels: list[str]  # the classes in output order; with a sparse class map, the classes whose outputs follow
    output_indices: list[int] | None = None  # with a sparse class map: the model output of each class above
    files: list[BundleFile]
    metrics: dict
    device: dict
    build: dict  # commands that build (TensorRT) and measure the bundle on the device
    deployables: list[Deployable] = []  # every model file carried: the recommended one first


def write_bundle(
    *,
    folder: Path,
    record: VariantRecord,
    artifact: Artifact,
    model_name: str,
    splits: DataSplits,
    device: DeviceSpec,
    also: list[tuple[VariantRecord, Artifact]] = (),
) -> Manifest:
    """Write ``folder`` (inside a staged report folder, so it appears whole or not at all). For phones, the
    ``.ort`` form of an ONNX artifact. ``also`` are further variants the bundle carries beside
    the recommended one (the run's other files of a runtime that ships every variant)."""
    folder.mkdir(parents=True, exist_ok=True)
    files: list[tuple[Path, str]] = []
    deployables = []
    for index, (shipped, source_artifact) in enumerate([(record, artifact), *also]):
        main = bundle_file_name(source_artifact, by_precision=get_backend(shipped.backend).ships_every_variant)
        for number, source in enumerate(source_artifact.files):
            target = folder / (main if number == 0 else Path(main).with_suffix(source.suffix).name)
            shutil.copyfile(source, target)
            role = "model" if number == 0 else "weights"
            files.append((target, role if index == 0 else f"{shipped.backend}-{shipped.precision}"))
        deployables.append(Deployable(
            file=main, variant=shipped.name, precision=shipped.precision, runtime=shipped.backend,
            runtime_version=_runtime_version(shipped), input=_input(folder / main, source_artifact, splits),
            metrics=_metrics(shipped, device), build=build_commands(shipped, device, model_file=main),
        ))  # fmt: skip
    if device.kind == "phone" and artifact.format == "onnx":
        files += _ort_format(folder / "model.onnx")
    write_text(folder / "labels.txt", "\n".join(splits.class_names) + "\n")
    files.append((folder / "labels.txt", "labels"))
    first = deployables[0]
    manifest = Manifest(
        model=model_name,
        variant=record.name,
        precision=record.precision,
        runtime=record.backend,
        runtime_version=first.runtime_version,
        input=first.input,
        labels=list(splits.class_names),
        output_indices=splits.output_indices,
        files=[
            BundleFile(path=path.name, sha256=sha256(path), bytes=path.stat().st_size, role=role)
            for path, role in files
        ],
        metrics=first.metrics,
        device={"name": device.name, "description": device.description, "transport": device.transport},
        build=first.build,
        deployables=deployables,
    )
    write_json(folder / "manifest.json", manifest.model_dump(mode="json"))
    return manifest


def _runtime_version(record: VariantRecord) -> str:
    """The runtime's version as run on the device, or, where the latency was estimated, the version of this
    host's runtime that computed the accuracy (said so)."""
    if record.measured or record.emulated:  # it ran on the device's runtime (an emulated device's build)
        return record.runtime_version
    from edgeflow.errors import EdgeflowError

    try:
        return (
            f"{get_backend(record.backend).version()} (this host's, which computed the accuracy; not run on the device)"
        )
    except (EdgeflowError, ImportError):
        return record.runtime_version


def bundle_file_name(artifact: Artifact, *, by_precision: bool = False) -> str:
    """A model file's name in the bundle: ``model.onnx``, ``model.xml``; the files of a runtime that ships every
    variant carry their precision (``model.tflite`` for float32, ``model_int8.tflite``), as a run may ship
    several."""
    suffix = artifact.files[0].suffix
    if by_precision and artifact.precision != "fp32":
        return f"model_{artifact.precision}{suffix}"
    return f"model{suffix}"


def _input(model_file: Path, artifact: Artifact, splits: DataSplits) -> dict:
    """What an app feeds the model: the input's name, shape, layout, type and the whole preprocessing."""
    spec = splits.preprocess
    height, width = spec.size
    fit = f"height to {height}, width at most {width}" if spec.fit == "height" else f"to fit {width}x{height}"
    crop = f"{spec.resize_side} px" if spec.resize_side else f"cover {width}x{height}"
    resize = {
        "stretch": f"resize to {width}x{height} (W x H), ignoring the aspect ratio",
        "shorter_side_crop": f"resize the shorter side to {crop}, then crop the centre {width}x{height}",
        "keep_ratio_pad": f"resize keeping the aspect ratio ({fit}), pad "
        f"{'right and bottom' if spec.pad == 'end' else 'evenly'} with {spec.pad_value} after normalization",
    }[spec.resize]
    name, shape, layout = _model_input(model_file, artifact)
    return {
        "name": name,
        "shape": shape,
        "layout": layout or spec.layout.upper(),
        "dtype": "float32",
        "color": spec.channels.upper(),
        "scale": f"multiply 0..255 pixel values by {spec.scale:.6g}, then subtract mean and divide by std, "
        "per channel (in the channel order above)",
        "mean": list(spec.mean),
        "std": list(spec.std),
        "resize": f"{resize} ({spec.interpolation})",
        "preprocess": spec.describe(),
    }


def _metrics(record: VariantRecord, device: DeviceSpec) -> dict:
    latency: dict = {"measured": record.measured, "kind": record.latency_kind, "device": device.name,
                     "how": record.latency_source}  # fmt: skip
    if record.latency_ms is not None:
        latency.update(p50_ms=record.latency_ms.p50, p90_ms=record.latency_ms.p90, p99_ms=record.latency_ms.p99)
    elif record.estimate is not None:
        latency.update(estimated_ms=record.estimate.ms, method=record.estimate.method, detail=record.estimate.detail)
    return {
        "latency": latency,
        "accuracy": {
            "top1": record.accuracy.top1,
            "top5": record.accuracy.top5,
            "split": record.accuracy.split,
            "samples": record.accuracy.samples,
            "computed_by": record.accuracy.runtime,
        },  # fmt: skip
        "size_bytes": record.size_bytes,
        "params": record.params,
        "macs": record.macs,
    }


def build_commands(record: VariantRecord, device: DeviceSpec, *, model_file: str) -> dict:
    """The commands that build and measure the bundle on the device, exactly as they would be run."""
    measure = ["edgeflow", "profile", model_file, "--device", device.name]
    runtime = get_backend(record.backend)
    timer = runtime.remote_timers.get(device.transport)
    if "trtexec" in runtime.remote_timers.values():  # its engine is built on the device, wherever that is
        from edgeflow.targets.trtexec import trtexec_command

        trtexec = device.ssh.trtexec if device.ssh is not None else "trtexec"
        precision = "fp16" if record.precision == "fp16" else record.precision
        on_device = trtexec_command(
            trtexec=trtexec, onnx=model_file, engine="model.engine", precision=precision, times_json="times.json"
        )
        return {
            "on_device": shlex.join(on_device),
            "note": "run in the bundle folder on the device; the engine is built there (engines do not carry "
            "between GPUs or TensorRT versions) and times.json holds the GPU compute time of every inference",
            "from_this_host": shlex.join([*measure, "--backend", record.backend, "--host", "USER@HOST"]),
        }
    if device.transport != "local" and timer is None:
        return {"note": f"nothing edgeflow runs times {record.backend} on a device reached over "
                        f"{device.transport} yet: its latency here is estimated"}  # fmt: skip
    if device.transport == "ssh":
        return {"from_this_host": shlex.join([*measure, "--backend", record.backend, "--host", "USER@HOST"])}
    if timer == "benchmark_model":
        from edgeflow.targets.benchmark_model import benchmark_model_command

        binary = device.adb.litert_benchmark_binary if device.adb is not None else "benchmark_model"
        return {
            "on_device": shlex.join(
                benchmark_model_command(binary=binary, model=model_file, threads=device.runtime.threads)
            ),  # fmt: skip
            "note": "push the bundle with `adb push bundle /data/local/tmp/edgeflow` and LiteRT's benchmark_model "
            "beside it, then run this in that folder (add --enable_op_profiling=true for the per-operator table)",
            "from_this_host": shlex.join([*measure, "--backend", record.backend]),
        }
    if timer == "perf_test":
        from edgeflow.targets.perf_test import perf_test_command

        binary = device.adb.benchmark_binary if device.adb is not None else "onnxruntime_perf_test"
        return {
            "on_device": shlex.join(perf_test_command(binary=binary, model="model.ort")),
            "note": "push the bundle with `adb push bundle /data/local/tmp/edgeflow`, then run this in that folder",
        }
    return {"from_this_host": shlex.join([*measure, "--backend", record.backend])}


def _model_input(path: Path, artifact: Artifact) -> tuple[str, list[int], str | None]:
    """The model file's input: its name, the shape it is fed at, and its layout where the file fixes one
    (LiteRT files: NCHW as converted from torch, or NHWC; None: the preprocessing's), read by the runtime
    that owns the file's format."""
    return format_owner(artifact.format).model_input(replace(artifact, path=path))


def _ort_format(onnx_path: Path) -> list[tuple[Path, str]]:
    """The ONNX Runtime mobile format of ``onnx_path`` and its required-operators config, made with ORT's
    own converter (``python -m onnxruntime.tools.convert_onnx_models_to_ort``)."""
    with tempfile.TemporaryDirectory(dir=onnx_path.parent) as scratch:
        source = Path(scratch) / onnx_path.name
        shutil.copyfile(onnx_path, source)
        done = subprocess.run(
            [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(source),
             "--optimization_style", "Fixed"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        ort_files = list(Path(scratch).glob("*.ort"))
        configs = list(Path(scratch).glob("*.config"))
        if done.returncode != 0 or not ort_files:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ModelLoadError(f"ONNX Runtime could not convert {onnx_path.name} to the .ort format: {last}")
        ort_target = onnx_path.with_suffix(".ort")
        shutil.move(str(ort_files[0]), ort_target)
        result = [(ort_target, "ort-model")]
        if configs:
            config_target = onnx_path.parent / "required_operators.config"
            shutil.move(str(configs[0]), config_target)
            result.append((config_target, "ort-config"))
    return result
