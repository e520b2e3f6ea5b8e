"""Time and evaluate one artifact where the device is: in this process, on a device over SSH, or, when no
device is attached, estimate its latency (labelled so) and evaluate it with a runtime of this host.

Which way is decided by :func:`timing_plan` from the descriptor alone, before anything is built:

* ``local``: the device is this machine and has the runtime: timed and evaluated in this process;
* ``agent``: an SSH device, ONNX Runtime or OpenVINO: the benchmark agent times the artifact on the
  device and computes the logits of the evaluation images there;
* ``trtexec``: an SSH device with TensorRT: trtexec builds and times the engine on the device;
  accuracy comes from ONNX Runtime on this host (the report says so);
* ``perf_test``: an attached phone (``adb get-state`` says ``device``): ONNX Runtime's
  ``onnxruntime_perf_test`` times the model there; accuracy from ONNX Runtime on this host;
* ``estimate``: no device attached (an SSH device without a host, a phone, a local runtime that is not
  installed): latency from the device's lookup table or roofline, ``measured: false``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edgeflow.accuracy import AccuracyStats, accuracy_from_logits, collect_logits, image_batches
from edgeflow.artifact import Artifact
from edgeflow.backends import get_backend
from edgeflow.data import ImageDataset
from edgeflow.device import DeviceSpec, RuntimeSettings
from edgeflow.errors import RuntimeUnavailableError
from edgeflow.latency import LatencyEstimate
from edgeflow.measure import artifact_cost, compile_and_profile
from edgeflow.profile_config import ProfileConfig
from edgeflow.profiling import LatencyStats, MemoryStats

Plan = Literal["local", "agent", "trtexec", "perf_test", "estimate"]


@dataclass
class DeviceResult:
    """What one artifact gave on the device: a measured latency or an estimate, never both."""

    plan: Plan
    latency_ms: LatencyStats | None
    estimate: LatencyEstimate | None
    memory: MemoryStats | None
    runtime_version: str
    execution_precision: str
    runtime_settings: dict
    test: AccuracyStats
    test_logits: np.ndarray
    holdout: AccuracyStats
    size_bytes: int
    params: int
    macs: int
    why: str = ""  # why the latency is estimated, or where it was measured

    @property
    def measured(self) -> bool:
        return self.latency_ms is not None


def timing_plan(device: DeviceSpec, backend: str) -> tuple[Plan, str]:
    """How ``backend`` on ``device`` is timed here, and a sentence saying why."""
    if device.transport == "local":
        if backend == "tensorrt":
            try:
                from edgeflow.backends.tensorrt import _tensorrt

                _tensorrt()
            except RuntimeUnavailableError as exc:
                return "estimate", f"{exc}: latency estimated"
        return "local", "timed in this process"
    if device.transport == "ssh":
        if device.ssh is None or not device.ssh.host:
            return "estimate", (
                f"no host given for {device.name} (--host user@host, EDGEFLOW_SSH_HOST or ssh.host): latency estimated"
            )
        if backend == "tensorrt":
            return "trtexec", f"trtexec on {device.ssh.host}"
        return "agent", f"the benchmark agent on {device.ssh.host}"
    if shutil.which("adb") is None:
        return "estimate", "adb is not installed here, so no phone is attached: latency estimated"
    from edgeflow.transports.adb import AdbTransport

    state = AdbTransport(device).state()
    if state != "device":
        return "estimate", f"no phone attached (adb get-state: {state}): latency estimated"
    serial = device.adb.serial if device.adb is not None and device.adb.serial else "the attached phone"
    return "perf_test", f"onnxruntime_perf_test on {serial}"


@dataclass
class DeviceTiming:
    """A latency timed on a remote device (agent, trtexec or perf_test), with the logits the agent computed."""

    latency_ms: LatencyStats
    memory: MemoryStats | None
    runtime_version: str
    execution_precision: str
    runtime_settings: dict
    logits: np.ndarray | None = None


def time_remotely(
    artifact: Artifact,
    *,
    plan: Plan,
    device: DeviceSpec,
    backend: str,
    precision: str,
    profile: ProfileConfig,
    settings: RuntimeSettings | None = None,
    inputs: np.ndarray | None = None,
) -> DeviceTiming:
    """Time ``artifact`` on a remote device by ``plan`` (``agent``, ``trtexec``, ``perf_test``); with ``inputs``
    the agent also returns the logits the device's runtime computed for them. Serves ``optimize`` and ``profile``."""
    from edgeflow.remote import time_on_device, time_with_perf_test, time_with_trtexec

    if plan == "agent":
        timing, logits = time_on_device(
            artifact, device=device, backend=backend, config=profile, settings=settings, inputs=inputs
        )
        return DeviceTiming(
            latency_ms=timing.latency_ms, memory=timing.memory, runtime_version=timing.runtime_version,
            execution_precision=str(timing.settings.get("execution_precision", "unknown")),
            runtime_settings={**timing.settings, "address": timing.address}, logits=logits,
        )  # fmt: skip
    if plan == "perf_test":
        summary = time_with_perf_test(artifact, device=device)
        return DeviceTiming(
            latency_ms=summary.latency_stats(), memory=None, runtime_version="onnxruntime (onnxruntime_perf_test)",
            execution_precision=precision,
            runtime_settings={"tool": "onnxruntime_perf_test", "iterations": summary.iterations},
        )  # fmt: skip
    if plan != "trtexec":
        raise ValueError(f"{plan!r} is not a remote timing plan")
    trt = time_with_trtexec(artifact, device=device, precision=precision)
    return DeviceTiming(
        latency_ms=trt.latency_ms, memory=None, runtime_version=f"TensorRT {trt.tensorrt_version}",
        execution_precision=precision,
        runtime_settings={"gpu": trt.gpu, "address": trt.address, "command": trt.command},
    )  # fmt: skip


def run_on_device(
    artifact: Artifact,
    *,
    device: DeviceSpec,
    backend: str,
    precision: str,
    settings: RuntimeSettings,
    profile: ProfileConfig,
    test: ImageDataset,
    holdout: ImageDataset,
    max_samples: int | None,
    cost_graph: Artifact | None = None,
    float_graph: Artifact | None = None,
    module=None,
) -> DeviceResult:
    """Time ``artifact`` on ``device`` (or estimate it) and compute its test and holdout accuracy."""
    plan, why = timing_plan(device, backend)
    if plan == "local":
        compiled, profiled = compile_and_profile(
            artifact, device=device, settings=settings, backend=backend, config=profile, cost_graph=cost_graph
        )
        logits, labels = collect_logits(compiled, test, max_samples=max_samples)
        held_logits, held_labels = collect_logits(compiled, holdout, max_samples=max_samples)
        return DeviceResult(
            plan=plan, latency_ms=profiled.latency_ms, estimate=None, memory=profiled.memory,
            runtime_version=profiled.runtime_version, execution_precision=profiled.execution_precision,
            runtime_settings=profiled.runtime_settings,
            test=accuracy_from_logits(logits, labels, split="test", runtime=compiled.backend), test_logits=logits,
            holdout=accuracy_from_logits(held_logits, held_labels, split="holdout", runtime=compiled.backend),
            size_bytes=profiled.size_bytes, params=profiled.params, macs=profiled.macs, why=why,
        )  # fmt: skip
    cost = artifact_cost(cost_graph or artifact)
    if plan == "agent":
        images, labels = _images(test, max_samples)
        held_images, held_labels = _images(holdout, max_samples)
        timing = time_remotely(
            artifact, plan=plan, device=device, backend=backend, precision=precision, profile=profile,
            settings=settings, inputs=np.concatenate([images, held_images]),
        )  # fmt: skip
        runtime = f"{backend} on {device.name}"
        test_logits, held_logits = timing.logits[: len(images)], timing.logits[len(images) :]
        return DeviceResult(
            plan=plan, latency_ms=timing.latency_ms, estimate=None, memory=timing.memory,
            runtime_version=timing.runtime_version, execution_precision=timing.execution_precision,
            runtime_settings=timing.runtime_settings,
            test=accuracy_from_logits(test_logits, labels, split="test", runtime=runtime), test_logits=test_logits,
            holdout=accuracy_from_logits(held_logits, held_labels, split="holdout", runtime=runtime),
            size_bytes=artifact.size_bytes, params=cost.params, macs=cost.macs, why=why,
        )  # fmt: skip
    # trtexec, perf_test and estimate: the accuracy comes from a runtime of this host reading the same file
    host_backend = "openvino" if artifact.format == "openvino" else "onnxruntime"
    compiled = get_backend(host_backend).compile(artifact, settings=RuntimeSettings(execution_precision="f32"))
    label = f"{host_backend} on this host ({backend} is on {device.name})"
    logits, labels = collect_logits(compiled, test, max_samples=max_samples)
    held_logits, held_labels = collect_logits(compiled, holdout, max_samples=max_samples)
    test_stats = accuracy_from_logits(logits, labels, split="test", runtime=label)
    holdout_stats = accuracy_from_logits(held_logits, held_labels, split="holdout", runtime=label)
    if plan in ("trtexec", "perf_test"):
        timing = time_remotely(
            artifact, plan=plan, device=device, backend=backend, precision=precision, profile=profile
        )
        return DeviceResult(
            plan=plan, latency_ms=timing.latency_ms, estimate=None, memory=None,
            runtime_version=timing.runtime_version, execution_precision=timing.execution_precision,
            runtime_settings=timing.runtime_settings, test=test_stats, test_logits=logits, holdout=holdout_stats,
            size_bytes=artifact.size_bytes, params=cost.params, macs=cost.macs, why=why,
        )  # fmt: skip
    estimate = _estimate(artifact, device=device, backend=backend, precision=precision, module=module,
                         graph=float_graph or cost_graph or artifact)  # fmt: skip
    return DeviceResult(
        plan=plan, latency_ms=None, estimate=estimate, memory=None, runtime_version="(not run: estimated)",
        execution_precision=precision, runtime_settings={}, test=test_stats, test_logits=logits,
        holdout=holdout_stats, size_bytes=artifact.size_bytes, params=cost.params, macs=cost.macs, why=why,
    )  # fmt: skip


def _estimate(artifact: Artifact, *, device: DeviceSpec, backend: str, precision: str, module, graph: Artifact):
    """The device's lookup table where it was calibrated for this input size and the variant runs in float
    on the table's runtime, else the roofline from the descriptor's peak figures, counted on the float
    graph (``graph``): a QDQ graph's quantize/dequantize pairs are not layers the device runs."""
    from edgeflow.latency.roofline import estimate_roofline
    from edgeflow.latency.table import TABLE_BACKENDS, estimate_from_table

    if module is not None and precision == "fp32" and backend in TABLE_BACKENDS and artifact.input_shape:
        estimate = estimate_from_table(
            device, module, tuple(artifact.input_shape), precision=precision, backend=backend
        )
        if estimate is not None:
            return estimate
    return estimate_roofline(graph, device=device, precision=precision)


def _images(dataset: ImageDataset, max_samples: int | None) -> tuple[np.ndarray, np.ndarray]:
    batches = list(image_batches(dataset, max_samples=max_samples))
    return np.concatenate([images for images, _ in batches]), np.concatenate([labels for _, labels in batches])
