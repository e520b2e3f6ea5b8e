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
* ``benchmark_model``: a LiteRT model on an attached phone: LiteRT's ``benchmark_model`` times it there
  (with its per-operator table); accuracy from LiteRT's interpreter on this host (the same runtime);
* ``estimate``: no device attached (an SSH device without a host, a phone, a local runtime that is not
  installed): latency from the device's lookup table or roofline, ``measured: false``.
"""

from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edgeflow.accuracy import AccuracyStats, HostBuildStats, accuracy_from_logits, collect_logits, image_batches
from edgeflow.artifact import Artifact
from edgeflow.backends import get_backend, host_runtime
from edgeflow.backends.base import RuntimeSettings
from edgeflow.data import ImageDataset
from edgeflow.device import DeviceSpec
from edgeflow.errors import DeviceError
from edgeflow.latency import LatencyEstimate
from edgeflow.profiling.cost import artifact_cost
from edgeflow.profiling.loop import ProfileConfig
from edgeflow.profiling.memory import MemoryStats
from edgeflow.profiling.profile import ProfileStats, compile_and_profile, compile_and_time
from edgeflow.profiling.stats import LatencyStats, TimingStats
from edgeflow.targets.target import get_target
from edgeflow.targets.transport import TimingRequest

Plan = Literal["local", "agent", "trtexec", "perf_test", "benchmark_model", "estimate"]


@dataclass
class DeviceStats:
    """What one artifact gave on the device: a measured latency (``timing``) or an estimate, never both, and
    its accuracy on the test and holdout splits."""

    plan: Plan
    why: str  # why the latency is estimated, or where it was measured
    timing: TimingStats | None
    estimate: LatencyEstimate | None
    precision: str
    test: AccuracyStats
    test_logits: np.ndarray
    holdout: AccuracyStats
    size_bytes: int
    params: int
    macs: int
    emulated: bool = False  # timed under an emulator of the device (DeviceSpec.emulated): not measured
    host_build: HostBuildStats | None = None  # where the device computed the logits: the same file on this host

    @property
    def measured(self) -> bool:
        return self.timing is not None and not self.emulated

    @property
    def latency_ms(self) -> LatencyStats | None:
        return self.timing.latency_ms if self.timing is not None else None

    @property
    def memory(self) -> MemoryStats | None:
        return self.timing.memory if self.timing is not None else None

    @property
    def runtime_version(self) -> str:
        return self.timing.runtime_version if self.timing is not None else "(not run: estimated)"

    @property
    def execution_precision(self) -> str:
        return self.timing.execution_precision if self.timing is not None else self.precision

    @property
    def runtime_settings(self) -> dict:
        return self.timing.runtime_settings if self.timing is not None else {}


def timing_plan(device: DeviceSpec, backend: str) -> tuple[Plan, str]:
    """How ``backend`` on ``device`` is timed here, and a sentence saying why: what times it on a device of that
    transport is the backend's own declaration (:attr:`~edgeflow.backends.Backend.remote_timers`)."""
    runtime = get_backend(backend)
    if device.transport == "local":
        missing = runtime.unavailable()
        if missing is not None:
            return "estimate", f"{missing}: latency estimated"
        return "local", "timed in this process"
    timer = runtime.remote_timers.get(device.transport)
    if device.transport == "ssh":
        if device.ssh is None or not device.ssh.host:
            return "estimate", (
                f"no host given for {device.name} (--host user@host, EDGEFLOW_SSH_HOST or ssh.host): latency estimated"
            )
        if timer is None:
            return "estimate", f"nothing here times {backend} on a device over SSH: latency estimated"
        emulated = ", emulated (an emulator of the device: neither its latency nor a prediction)"
        return timer, f"{get_target(timer).label} on {device.ssh.host}" + (emulated if device.emulated else "")
    if shutil.which("adb") is None:
        return "estimate", "adb is not installed here, so no phone is attached: latency estimated"
    from edgeflow.targets.adb import AdbTransport

    state = AdbTransport(device).state()
    if state != "device":
        return "estimate", f"no phone attached (adb get-state: {state}): latency estimated"
    serial = device.adb.serial if device.adb is not None and device.adb.serial else "the attached phone"
    if timer is None:
        return "estimate", f"nothing here times {backend} on a phone: latency estimated"
    return timer, f"{get_target(timer).label} on {serial}"


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
) -> TimingStats:
    """Time ``artifact`` on a remote device by ``plan`` (``agent``, ``trtexec``, ``perf_test``, ``benchmark_model``);
    with ``inputs`` the agent also returns the logits the device's runtime computed for them. Serves ``optimize``
    and ``profile``."""
    request = TimingRequest(artifact, device, backend, precision, profile, settings=settings, inputs=inputs)
    return get_target(plan).time(request)


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
    holdout_samples: int | None,
    cost_graph: Artifact | None = None,
    float_graph: Artifact | None = None,
    module=None,
) -> DeviceStats:
    """Time ``artifact`` on ``device`` (or estimate it) and compute its accuracy on ``max_samples`` test and
    ``holdout_samples`` holdout images (None: all; a subset keeps each class's share)."""
    plan, why = timing_plan(device, backend)
    estimate = None
    remote_logits = plan not in ("local", "estimate") and get_target(plan).computes_logits
    if plan == "local":
        compiled, timing = compile_and_time(artifact, device=device, settings=settings, backend=backend, config=profile)
        runtime = compiled.backend
    elif remote_logits:  # the device's own runtime computes the evaluation images' logits with its timing
        images, labels = _images(test, max_samples)
        held_images, held_labels = _images(holdout, holdout_samples)
        timing = time_remotely(
            artifact, plan=plan, device=device, backend=backend, precision=precision, profile=profile,
            settings=settings, inputs=np.concatenate([images, held_images]),
        )  # fmt: skip
        logits, held_logits = timing.logits[: len(images)], timing.logits[len(images) :]
        runtime = f"{backend} on {device.name}"
    else:  # trtexec, perf_test, benchmark_model, estimate: the accuracy from a runtime here reading the same file
        host_backend = host_runtime(artifact)
        compiled = get_backend(host_backend).compile(artifact, settings=RuntimeSettings(execution_precision="f32"))
        runtime = f"{host_backend} on this host ({backend} is on {device.name})"
        if plan == "estimate":
            timing = None
            estimate = _estimate(artifact, device=device, backend=backend, precision=precision, module=module,
                                 graph=float_graph or cost_graph or artifact)  # fmt: skip
        else:
            timing = time_remotely(
                artifact, plan=plan, device=device, backend=backend, precision=precision, profile=profile
            )
    host_build = None
    if not remote_logits:  # the compiled model here computes them (else the device did, above)
        logits, labels = collect_logits(compiled, test, max_samples=max_samples)
        held_logits, held_labels = collect_logits(compiled, holdout, max_samples=holdout_samples)
    else:
        host_build = _on_this_host(artifact, backend=backend, settings=settings, test=test,
                                   max_samples=max_samples, device_logits=logits, labels=labels)  # fmt: skip
    cost = artifact_cost(cost_graph or artifact)  # after the timing: its graph reading stays out of the memory peaks
    return DeviceStats(
        plan=plan, why=why, timing=timing, estimate=estimate, precision=precision,
        test=accuracy_from_logits(logits, labels, split="test", runtime=runtime), test_logits=logits,
        holdout=accuracy_from_logits(held_logits, held_labels, split="holdout", runtime=runtime),
        size_bytes=artifact.size_bytes, params=cost.params, macs=cost.macs,
        emulated=device.emulated and timing is not None, host_build=host_build,
    )  # fmt: skip


def _on_this_host(
    artifact: Artifact,
    *,
    backend: str,
    settings: RuntimeSettings,
    test: ImageDataset,
    max_samples: int | None,
    device_logits: np.ndarray,
    labels: np.ndarray,
) -> HostBuildStats | None:
    """The artifact scored on the test images by this host's build of the device's runtime (None where this host
    lacks it): the same settings the device ran, so what differs is the build."""
    runtime = get_backend(backend)
    if runtime.unavailable() is not None:
        return None
    compiled = runtime.compile(artifact, settings=settings)
    logits, host_labels = collect_logits(compiled, test, max_samples=max_samples)
    assert np.array_equal(host_labels, labels), "the device and this host scored the same images"
    return HostBuildStats(
        runtime=f"{backend} {runtime.version()} on this host ({platform.machine()})",
        top1=float(np.mean(logits.argmax(1) == labels)), device_top1=float(np.mean(device_logits.argmax(1) == labels)),
        agreement=float(np.mean(logits.argmax(1) == device_logits.argmax(1))), images=len(labels),
    )  # fmt: skip


def _estimate(artifact: Artifact, *, device: DeviceSpec, backend: str, precision: str, module, graph: Artifact):
    """The device's lookup table where it was calibrated for this input size and the variant runs in float
    on the table's runtime, else the roofline from the descriptor's peak figures, counted on the float
    graph (``graph``): a QDQ graph's quantize/dequantize pairs are not layers the device runs."""
    from edgeflow.latency.roofline import estimate_roofline
    from edgeflow.targets.calibration import estimate_from_table

    if module is not None and precision == "fp32" and get_backend(backend).searchable and artifact.input_shape:
        estimate = estimate_from_table(
            device, module, tuple(artifact.input_shape), precision=precision, backend=backend
        )
        if estimate is not None:
            return estimate
    return estimate_roofline(graph, device=device, precision=precision)


def _images(dataset: ImageDataset, max_samples: int | None) -> tuple[np.ndarray, np.ndarray]:
    batches = list(image_batches(dataset, max_samples=max_samples))
    return np.concatenate([images for images, _ in batches]), np.concatenate([labels for _, labels in batches])


def profile_on_device(artifact: Artifact, *, device: DeviceSpec, backend: str, config: ProfileConfig) -> ProfileStats:
    """Time ``artifact`` on ``device``'s runtime: in this process for a local device, through the benchmark
    agent, trtexec or onnxruntime_perf_test where the device is remote. Never estimated: a device that cannot
    be reached is an error (``edgeflow profile`` measures, or says why it cannot)."""
    plan, why = timing_plan(device, backend)
    if plan == "local":
        _compiled, result = compile_and_profile(artifact, device=device, backend=backend, config=config)
        return result
    if plan == "estimate":
        raise DeviceError(device.name, "profile", why.replace(": latency estimated", ""))
    precision = artifact.precision
    if plan == "trtexec":
        precision = "int8" if artifact.precision == "int8" else "fp16"
    timing = time_remotely(artifact, plan=plan, device=device, backend=backend, precision=precision, profile=config)
    return ProfileStats.from_timing(
        timing, artifact=artifact, device=device, backend=backend, precision=precision, cost=artifact_cost(artifact)
    )
