"""Latency statistics of one compiled model: the record every timing path (the loop here, the agent on a
device, a benchmark tool on the device) fills in."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field

from edgeflow.profiling.memory import MemoryStats


class HostStateStats(BaseModel):
    """A device's state at one moment (``edgeflow.profiling.host_state.state``); None where it exposes none."""

    load_1m: float | None
    cpus: int
    cpu_mhz: float | None  # mean current frequency over the cores
    governor: str | None
    temperature_c: float | None  # the hottest thermal zone


class DeviceStateStats(BaseModel):
    """The device around one timing (``edgeflow.profiling.host_state.watched``): its state before and after,
    the share of its CPU time other processes took meanwhile, and whether the timing stayed disturbed."""

    before: HostStateStats
    after: HostStateStats
    others_cpu_share: float | None  # None where the device does not expose its CPU counters
    busy_share: float  # the share above which a timing is disturbed (then retried)
    attempts: int  # runs of the timing: more than one when a disturbed run was retried
    noisy: bool  # the kept run was disturbed too: kept, and flagged wherever it is reported


class LatencyStats(BaseModel):
    """Latency of one compiled model at batch size 1, in milliseconds unless named otherwise."""

    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float
    std: float | None  # None where the timing tool does not report it
    cold: float | None  # the first inference after compiling; None where the tool does not report it
    iterations: int
    warmup: int
    seconds: float
    throughput_fps: float
    samples_ms: list[float] | None = Field(
        default=None, exclude=True, repr=False, description="the raw timed samples (kept by the nightly history)"
    )
    state: DeviceStateStats | None = None  # None where the tool that timed it reads no device state (trtexec)

    @property
    def noisy(self) -> bool:
        """Timed while other processes kept the device busy (after the retries): kept, and said."""
        return self.state is not None and self.state.noisy

    @classmethod
    def from_samples(
        cls, samples_ns: np.ndarray, *, cold_ns: int, warmup: int, batch: int, state: dict | None = None
    ) -> LatencyStats:
        ms = samples_ns.astype(np.float64) / 1e6
        return cls(
            p50=float(np.percentile(ms, 50)),
            p90=float(np.percentile(ms, 90)),
            p99=float(np.percentile(ms, 99)),
            mean=float(ms.mean()),
            min=float(ms.min()),
            max=float(ms.max()),
            std=float(ms.std()),
            cold=cold_ns / 1e6,
            iterations=int(ms.size),
            warmup=warmup,
            seconds=float(ms.sum() / 1e3),
            throughput_fps=float(batch * 1e3 / ms.mean()),
            samples_ms=ms.tolist(),
            state=DeviceStateStats.model_validate(state) if state is not None else None,
        )


@dataclass
class TimingStats:
    """A latency timed on the device's runtime, with what that runtime reported about the run: every timing
    path fills one in (this process, the agent on a device, a benchmark tool on the device)."""

    latency_ms: LatencyStats
    memory: MemoryStats | None  # None where the tool reports none
    runtime_version: str
    execution_precision: str
    runtime_settings: dict
    logits: np.ndarray | None = None  # what the device's runtime computed for the images sent (the agent)


class MeasuredStats(BaseModel):
    """The measured-result core every record of a timed artifact shares (``edgeflow profile``'s, a report's
    variant, a search's point): its latency, whether that was timed on the device's runtime, the precision the
    runtime executed, and the network's size in parameters and multiply-accumulates."""

    latency_ms: LatencyStats | None = Field(description="timed on the device's runtime; None when estimated")
    measured: bool = Field(description="true when the latency was timed on the device's runtime")
    emulated: bool = Field(
        default=False,
        description="timed on the device's runtime under an emulator (qemu-user): neither the device's latency "
        "nor a prediction; ``measured`` is then false",
    )
    execution_precision: str  # what the runtime actually executed float layers in (f32, bf16, ...)
    params: int
    macs: int

    @property
    def latency_kind(self) -> str:
        """How the latency was had, as every report and JSON says it: ``measured`` (timed on the device's runtime),
        ``emulated`` (timed under an emulator of the device) or ``estimated`` (predicted)."""
        return "emulated" if self.emulated else "measured" if self.measured else "estimated"
