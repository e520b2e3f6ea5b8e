"""Compile an artifact on a device's runtime, time it, count its cost: one path for every caller."""

from __future__ import annotations

from pydantic import BaseModel

from edgeflow.artifact import Artifact
from edgeflow.backends import Compiled, get_backend
from edgeflow.backends.openvino import read_model
from edgeflow.device import DeviceSpec, RuntimeSettings
from edgeflow.errors import ConfigError
from edgeflow.profiling import CostStats, LatencyStats, MemoryProbe, MemoryStats, count_cost
from edgeflow.recipe import ProfileConfig


class ProfileResult(BaseModel):
    """What ``edgeflow profile`` reports for one artifact on one device."""

    artifact: str
    device: str
    backend: str
    runtime_version: str
    precision: str
    execution_precision: str
    input_shape: list[int]
    latency_ms: LatencyStats
    measured: bool  # timed on the device's runtime (always true here; estimates say false)
    memory: MemoryStats | None  # None where the runtime's tool reports none (trtexec)
    size_bytes: int
    params: int
    macs: int
    runtime_settings: dict


def choose_backend(artifact: Artifact, device: DeviceSpec, backend: str | None) -> str:
    """The requested backend, or the device's most preferred runtime that reads this format."""
    if backend is not None:
        name = get_backend(backend).name
        if name not in device.runtimes:
            raise ConfigError(f"device {device.name} has no {name} runtime (it has: {', '.join(device.runtimes)})")
        if artifact.format not in get_backend(name).formats:
            raise ConfigError(f"the {name} backend cannot run {artifact.format} artifacts")
        return name
    for name in device.runtimes:
        if artifact.format in get_backend(name).formats:
            return name
    raise ConfigError(f"device {device.name} has no runtime for {artifact.format} artifacts")


def compile_and_profile(
    artifact: Artifact,
    *,
    device: DeviceSpec,
    backend: str,
    config: ProfileConfig,
    settings: RuntimeSettings | None = None,
    cost_graph: Artifact | None = None,
) -> tuple[Compiled, ProfileResult]:
    """Compile ``artifact`` with ``backend`` on ``device`` and time it.

    The compiled model is returned so accuracy is measured through the very same runtime object.
    ``settings`` default to the device's; ``cost_graph`` is an exported graph of the same network,
    for artifacts that have none (torch).
    """
    runtime = get_backend(backend)
    probe = MemoryProbe()
    probe.start()
    with probe.phase("load"):
        compiled = runtime.compile(artifact, settings=settings or device.runtime)
    with probe.phase("run"):
        latency = runtime.profile(compiled, config=config)
    cost = artifact_cost(cost_graph or artifact)
    result = ProfileResult(
        artifact=str(artifact.path) if artifact.path else "(in memory)",
        device=device.name,
        backend=runtime.name,
        runtime_version=runtime.version(),
        precision=artifact.precision,
        execution_precision=str(compiled.settings.get("execution_precision", "unknown")),
        input_shape=list(compiled.input_shape),
        latency_ms=latency,
        measured=True,
        memory=probe.stats(),
        size_bytes=artifact.size_bytes,
        params=cost.params,
        macs=cost.macs,
        runtime_settings=compiled.settings,
    )
    return compiled, result


def artifact_cost(artifact: Artifact) -> CostStats:
    """MACs and params counted from an ONNX or IR artifact's graph."""
    if artifact.format not in {"onnx", "openvino"}:
        raise ConfigError(f"cannot count MACs of a {artifact.format} artifact; give its exported graph")
    if artifact.format == "onnx":
        import openvino as ov

        # convert_model normalizes the ONNX frontend's graph (Gemm alpha/beta, bias reshapes) like the IR.
        return count_cost(ov.convert_model(str(artifact.path)))
    return count_cost(read_model(artifact))


def interleaved_p50(compiled: dict[str, Compiled], *, rounds: int, config: ProfileConfig) -> dict[str, list[float]]:
    """Per-round p50 (ms) of several compiled models, timed in turn round after round.

    On a shared, noisy machine the speed of the host drifts over minutes; timing the models one after
    another within each round and quoting the median over rounds compares them under the same drift.
    """
    from edgeflow.profiling import time_inference

    rounds_p50: dict[str, list[float]] = {name: [] for name in compiled}
    for _ in range(rounds):
        for name, model in compiled.items():
            rounds_p50[name].append(time_inference(model, config=config).p50)
    return rounds_p50


def median_in_turn(compiled: dict[str, Compiled], *, rounds: int, config: ProfileConfig) -> dict[str, float]:
    """Each model's median over ``rounds`` of its per-round p50 (ms), the models timed in turn."""
    import statistics

    return {
        name: statistics.median(values)
        for name, values in interleaved_p50(compiled, rounds=rounds, config=config).items()
    }
