"""Compile an artifact on a device's runtime in this process, time it, count its cost: one path for every caller."""

from __future__ import annotations

from edgeflow.artifact import Artifact
from edgeflow.backends import Compiled, get_backend
from edgeflow.backends.base import RuntimeSettings
from edgeflow.device import DeviceSpec
from edgeflow.profiling.cost import CostStats, artifact_cost
from edgeflow.profiling.loop import ProfileConfig, time_inference
from edgeflow.profiling.memory import MemoryProbe, MemoryStats
from edgeflow.profiling.stats import LatencyStats, MeasuredStats, TimingStats


class ProfileStats(MeasuredStats):
    """What ``edgeflow profile`` reports for one artifact on one device (always measured: never estimated)."""

    artifact: str
    device: str
    backend: str
    runtime_version: str
    precision: str
    input_shape: list[int]
    latency_ms: LatencyStats
    memory: MemoryStats | None  # None where the runtime's tool reports none (trtexec)
    size_bytes: int
    runtime_settings: dict

    @classmethod
    def from_timing(
        cls,
        timing: TimingStats,
        *,
        artifact: Artifact,
        device: DeviceSpec,
        backend: str,
        precision: str,
        cost: CostStats,
    ) -> ProfileStats:
        """The record of ``artifact`` timed on ``device`` (here or remotely): the one constructor."""
        return cls(
            artifact=str(artifact.path) if artifact.path else "(in memory)",
            device=device.name,
            backend=backend,
            runtime_version=timing.runtime_version,
            precision=precision,
            execution_precision=timing.execution_precision,
            input_shape=list(artifact.input_shape or []),
            latency_ms=timing.latency_ms,
            measured=not device.emulated,
            emulated=device.emulated,
            memory=timing.memory,
            size_bytes=artifact.size_bytes,
            params=cost.params,
            macs=cost.macs,
            runtime_settings=timing.runtime_settings,
        )


def compile_and_time(
    artifact: Artifact,
    *,
    device: DeviceSpec,
    backend: str,
    config: ProfileConfig,
    settings: RuntimeSettings | None = None,
) -> tuple[Compiled, TimingStats]:
    """Compile ``artifact`` with ``backend`` in this process and time it, tracking peak memory while it loads
    and while it runs. ``settings`` default to the device's."""
    runtime = get_backend(backend)
    probe = MemoryProbe()
    probe.start()
    with probe.phase("load"):
        compiled = runtime.compile(artifact, settings=settings or device.runtime)
    with probe.phase("run"):
        latency = time_inference(compiled, config=config)
    timing = TimingStats(
        latency_ms=latency,
        memory=probe.stats(),
        runtime_version=runtime.version(),
        execution_precision=str(compiled.settings.get("execution_precision", "unknown")),
        runtime_settings=compiled.settings,
    )
    return compiled, timing


def compile_and_profile(
    artifact: Artifact,
    *,
    device: DeviceSpec,
    backend: str,
    config: ProfileConfig,
    settings: RuntimeSettings | None = None,
    cost_graph: Artifact | None = None,
) -> tuple[Compiled, ProfileStats]:
    """Compile ``artifact`` with ``backend`` on ``device``, time it and count its cost.

    The compiled model is returned so accuracy is measured through the very same runtime object.
    ``cost_graph`` is an exported graph of the same network, for artifacts that have none (torch).
    """
    compiled, timing = compile_and_time(artifact, device=device, backend=backend, config=config, settings=settings)
    result = ProfileStats.from_timing(
        timing, artifact=artifact, device=device, backend=compiled.backend, precision=artifact.precision,
        cost=artifact_cost(cost_graph or artifact),
    )  # fmt: skip
    result.input_shape = list(compiled.input_shape)
    return compiled, result
