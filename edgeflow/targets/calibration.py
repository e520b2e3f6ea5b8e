"""Lookup-table estimates for a device: the compute time of every block, measured on the device once and
cached (the NetAdapt table, :class:`edgeflow.latency.table.LookupTable`), mapped to a whole-model
latency by a fit over calibration models timed whole on the device (``edgeflow devices calibrate``):

    latency = intercept + compute_scale x (sum of the model's block entries) + per_block x (blocks)

A model whose blocks are all in the table is estimated without the device; a block the table lacks
needs the device (it is measured then, when the device is this machine), else no table estimate is made.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import BaseModel
from torch import nn

from edgeflow.backends import searchable_backends
from edgeflow.device import DeviceSpec
from edgeflow.errors import ConfigError, DeviceError
from edgeflow.io import write_json
from edgeflow.latency.estimate import LatencyEstimate
from edgeflow.latency.table import LookupTable, TableFit, cache_folder, default_table_path, least_squares
from edgeflow.latency.timer import Timer
from edgeflow.profiling.loop import ProfileConfig


class DeviceFit(BaseModel):
    """How block entries add up to whole models on one device, fitted on calibration models."""

    device: str
    context: str  # device, runtime and version, precision, threads (the table's)
    input_shape: list[int]
    models: list[str]
    fit: TableFit


def device_timer(device: DeviceSpec, backend: str | None = None, *, workdir: Path | None = None) -> Timer:
    backend = _table_backend(device, backend)
    profile = ProfileConfig(warmup=20, iterations=2000, max_seconds=1.0)
    folder = workdir or cache_folder()
    folder.mkdir(parents=True, exist_ok=True)
    return Timer(device, backend, settings=device.runtime, profile=profile, workdir=folder)


def _fit_path(timer: Timer, input_shape: tuple[int, ...]) -> Path:
    table = default_table_path(cache_folder(), timer, input_shape)
    return table.with_name(table.stem + ".fit.json")


def calibrate(
    device: DeviceSpec, *, models: dict[str, nn.Module], input_shape: tuple[int, ...], backend: str | None = None,
    rounds: int = 5, seconds: float = 0.5,
) -> tuple[DeviceFit, dict[str, float], dict[str, tuple[float, int]]]:  # fmt: skip
    """Measure the blocks of ``models`` on ``device`` into its table, time the models whole in turn, and fit
    how the blocks add up. Returns the fit (also saved beside the table), the whole-model timings and the
    block features, both in the table's units (the host's speed when the table was begun).

    An SSH device is calibrated there: every block and model is exported to ONNX, copied with the agent and
    timed on the device in turn (whole blocks: the agent has no per-layer profile), and the table is kept
    here (:func:`remote_table_path`); ``seconds``: each file's timing loop per round there."""
    if device.transport == "ssh":
        return _calibrate_remote(
            device, models=models, input_shape=input_shape, backend=backend, rounds=rounds, seconds=seconds
        )
    if not device.is_local:
        raise DeviceError(device.name, "calibrate", "a phone over ADB has no lookup table: only SSH and local devices")
    timer = device_timer(device, backend)
    table = LookupTable(timer, default_table_path(cache_folder(), timer, input_shape))
    features = {name: table.features(module, input_shape) for name, module in models.items()}
    measured = table.in_table_units(models, input_shape, rounds=rounds)
    fitted = DeviceFit(
        device=device.name, context=timer.context(), input_shape=list(input_shape), models=sorted(models),
        fit=least_squares(features, measured),
    )  # fmt: skip
    table.save()
    write_json(_fit_path(timer, input_shape), fitted.model_dump(mode="json"))
    return fitted, measured, features


class RemoteTable(BaseModel):
    """A lookup table measured on a device over SSH: whole-block p50s, and the fit to whole models."""

    device: str
    backend: str
    runtime_version: str
    address: str
    input_shape: list[int]
    created: str
    entries: dict[str, float]  # block key -> p50 ms on the device
    fit: DeviceFit


def remote_table_path(device: DeviceSpec, backend: str, input_shape: tuple[int, ...]) -> Path:
    """Keyed by what its figures depend on that is known here: device, runtime, input shape, threads."""
    shape = "x".join(str(side) for side in input_shape)
    threads = device.runtime.threads or "default"
    return cache_folder() / f"remote-{device.name}-{backend}-{shape}-threads{threads}.json"


def _table_backend(device: DeviceSpec, backend: str | None) -> str:
    timed = searchable_backends()
    chosen = backend or next((name for name in device.runtimes if name in timed), None)
    if chosen not in timed:
        raise ConfigError(f"device {device.name}: a lookup table is measured with {' or '.join(timed)}")
    return chosen


def _calibrate_remote(device: DeviceSpec, *, models: dict[str, nn.Module], input_shape: tuple[int, ...],
                      backend: str | None, rounds: int, seconds: float):  # fmt: skip
    import tempfile
    from datetime import datetime, timezone

    from edgeflow.export.onnx import export_onnx
    from edgeflow.latency.units import split_units
    from edgeflow.targets import open_transport
    from edgeflow.targets.agent_client import time_in_turn_on_device

    backend = _table_backend(device, backend)
    units = {name: split_units(module, input_shape) for name, module in models.items()}
    blocks = {unit.key: unit for model_units in units.values() for unit in model_units}
    transport = open_transport(device)
    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        files = {f"block-{key}.onnx": (unit.module, unit.input_shape) for key, unit in blocks.items()}
        files.update({f"model-{name}.onnx": (module, input_shape) for name, module in models.items()})
        paths = [
            export_onnx(module.eval(), input_shape=tuple(shape), path=Path(folder) / name).path
            for name, (module, shape) in files.items()
        ]
        version, timed = time_in_turn_on_device(paths, device=device, backend=backend, rounds=rounds,
                                                    max_seconds=seconds, transport=transport)  # fmt: skip
    median = timed.medians()
    entries = {key: median[f"block-{key}.onnx"] for key in blocks}
    earlier = load_remote_table(device, input_shape, backend)
    if earlier is not None and earlier.runtime_version == version:  # blocks of earlier calibrations stay
        entries = {**earlier.entries, **entries}
    measured = {name: median[f"model-{name}.onnx"] for name in models}
    features = {name: (sum(entries[unit.key] for unit in model_units), len(model_units))
                for name, model_units in units.items()}  # fmt: skip
    fitted = DeviceFit(
        device=device.name, context=f"{device.name}|{backend}|{version}|{transport.address}",
        input_shape=list(input_shape), models=sorted(models), fit=least_squares(features, measured),
    )  # fmt: skip
    table = RemoteTable(
        device=device.name, backend=backend, runtime_version=version, address=transport.address,
        input_shape=list(input_shape), created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        entries=entries, fit=fitted,
    )  # fmt: skip
    write_json(remote_table_path(device, backend, input_shape), table.model_dump(mode="json"))
    return fitted, measured, features


def load_remote_table(device: DeviceSpec, input_shape: tuple[int, ...], backend: str | None = None):
    """The table calibrated on an SSH device at this input size, or None."""
    path = remote_table_path(device, _table_backend(device, backend), input_shape)
    if not path.exists():
        return None
    try:
        return RemoteTable.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"device table {path} is unreadable ({exc}); run edgeflow devices calibrate again") from None


def load_fit(device: DeviceSpec, input_shape: tuple[int, ...], backend: str | None = None) -> DeviceFit | None:
    if device.transport == "ssh":
        table = load_remote_table(device, input_shape, backend)
        return None if table is None else table.fit
    timer = device_timer(device, backend)
    path = _fit_path(timer, input_shape)
    if not path.exists():
        return None
    try:
        fitted = DeviceFit.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"device fit {path} is unreadable ({exc}); run edgeflow devices calibrate again") from None
    return fitted if fitted.context == timer.context() else None


def estimate_from_table(
    device: DeviceSpec, module: nn.Module, input_shape: tuple[int, ...], *, precision: str, backend: str | None = None
) -> LatencyEstimate | None:
    """The table's estimate for ``module`` on ``device``, or None when the device was never calibrated at
    this input size (or, for a device that is not this machine, when the table lacks one of its blocks)."""
    if device.transport == "ssh":
        return _estimate_from_remote_table(device, module, input_shape, precision=precision, backend=backend)
    fitted = load_fit(device, input_shape, backend)
    if fitted is None:
        return None
    timer = device_timer(device, backend)
    table = LookupTable(timer, default_table_path(cache_folder(), timer, input_shape))
    if not device.is_local:
        from edgeflow.latency.units import split_units

        if any(unit.key not in table.entries for unit in split_units(module, input_shape)):
            return None
    with torch.no_grad():
        blocks_ms, blocks = table.features(module, input_shape)
    return LatencyEstimate(
        ms=fitted.fit.estimate(blocks_ms, blocks), method="lookup-table", device=device.name, precision=precision,
        detail=f"{blocks} blocks summing to {blocks_ms:.3f} ms; fit on {', '.join(fitted.models)}",
        source=str(default_table_path(cache_folder(), timer, input_shape)),
    )  # fmt: skip


def _estimate_from_remote_table(device, module, input_shape, *, precision: str, backend: str | None):
    from edgeflow.latency.units import split_units

    table = load_remote_table(device, input_shape, backend)
    if table is None:
        return None
    units = split_units(module, input_shape)
    if any(unit.key not in table.entries for unit in units):
        return None  # a block never measured there: the device is not here to measure it
    blocks_ms = sum(table.entries[unit.key] for unit in units)
    return LatencyEstimate(
        ms=table.fit.fit.estimate(blocks_ms, len(units)), method="lookup-table", device=device.name,
        precision=precision,
        detail=f"{len(units)} blocks summing to {blocks_ms:.3f} ms, timed whole on {table.address} with "
        f"{table.backend} {table.runtime_version} ({table.created}); fit on {', '.join(table.fit.models)}",
        source=str(remote_table_path(device, table.backend, input_shape)),
    )  # fmt: skip


DEFAULT_CALIBRATION_MODELS = ("mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "mnasnet1_0", "resnet18")


def calibrate_device(
    device: DeviceSpec, *, models: list[str] | tuple[str, ...] = DEFAULT_CALIBRATION_MODELS, resolution: int = 128,
    backend: str | None = None, rounds: int = 5,
) -> DeviceFit:  # fmt: skip
    """``edgeflow devices calibrate``: the registry ``models`` (untrained: weights do not change a CNN's
    latency) at ``resolution`` px, their blocks measured into the device's table and the fit made."""
    from edgeflow.models import create_model

    torch.manual_seed(0)
    modules = {name: create_model(name, num_classes=10).eval() for name in models}
    fitted, _measured, _features = calibrate(
        device, models=modules, input_shape=(1, 3, resolution, resolution), backend=backend, rounds=rounds
    )
    return fitted
