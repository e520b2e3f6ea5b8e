"""Latency statistics of one compiled model: the record every timing path (the loop here, the agent on a
device, trtexec, onnxruntime_perf_test) fills in."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field

from edgeflow.profiling.memory import MemoryStats


class LatencyStats(BaseModel):
    """Latency of one compiled model at batch size 1, in milliseconds unless named otherwise."""

    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float
    std: float | None  # None where the timing tool does not report it (onnxruntime_perf_test)
    cold: float | None  # the first inference after compiling; None where the tool does not report it
    iterations: int
    warmup: int
    seconds: float
    throughput_fps: float
    samples_ms: list[float] | None = Field(
        default=None, exclude=True, repr=False, description="the raw timed samples (kept by the nightly history)"
    )

    @classmethod
    def from_samples(cls, samples_ns: np.ndarray, *, cold_ns: int, warmup: int, batch: int) -> LatencyStats:
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
        )


@dataclass
class TimingStats:
    """A latency timed on the device's runtime, with what that runtime reported about the run: every timing
    path fills one in (this process, the agent on a device, trtexec, onnxruntime_perf_test)."""

    latency_ms: LatencyStats
    memory: MemoryStats | None  # None where the tool reports none (trtexec, onnxruntime_perf_test)
    runtime_version: str
    execution_precision: str
    runtime_settings: dict
    logits: np.ndarray | None = None  # what the device's runtime computed for the images sent (the agent)
