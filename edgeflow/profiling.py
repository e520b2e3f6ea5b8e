"""Latency statistics, peak memory and model cost (MACs, params): the timing loop lives here.

The loop binds the input once and calls the runtime's own inference entry point between two
``perf_counter_ns`` reads, so what it adds per iteration is a list append and a clock read.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from edgeflow.backends.base import Compiled
from edgeflow.recipe import ProfileConfig


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


def time_runner(run_once: Callable[[], object], *, config: ProfileConfig) -> tuple[np.ndarray, int]:
    """Time ``run_once``: the first (cold) call, warm-up, then a loop bounded by count and time.

    Returns the per-iteration samples in nanoseconds and the cold latency in nanoseconds.
    """
    clock = time.perf_counter_ns
    start = clock()
    run_once()
    cold_ns = clock() - start
    for _ in range(config.warmup):
        run_once()
    budget_ns = int(config.max_seconds * 1e9)
    minimum = min(config.min_iterations, config.iterations)
    samples = np.empty(config.iterations, dtype=np.int64)
    count = 0
    loop_start = clock()
    while count < config.iterations:
        before = clock()
        run_once()
        after = clock()
        samples[count] = after - before
        count += 1
        if count >= minimum and after - loop_start >= budget_ns:
            break
    return samples[:count], cold_ns


def time_inference(compiled: Compiled, *, config: ProfileConfig, seed: int = 0) -> LatencyStats:
    """Time ``compiled`` on a random input of its shape (values do not change a CNN's latency)."""
    batch = np.random.default_rng(seed).standard_normal(compiled.input_shape).astype(np.float32)
    run_once = compiled.bind(batch)
    samples, cold_ns = time_runner(run_once, config=config)
    return LatencyStats.from_samples(samples, cold_ns=cold_ns, warmup=config.warmup, batch=compiled.input_shape[0])


class MemoryStats(BaseModel):
    """Resident memory of this process, in MiB: before loading, and peaks added by loading and running."""

    rss_before_mb: float
    load_peak_mb: float | None  # peak RSS while reading and compiling, above rss_before
    run_peak_mb: float | None  # peak RSS while running, above rss_before
    method: str


@dataclass
class MemoryProbe:
    """Tracks peak RSS with Linux's resettable high-water mark (``/proc/self/clear_refs``)."""

    rss_before_kb: int = 0
    peaks_kb: dict[str, int] = field(default_factory=dict)
    available: bool = True

    @staticmethod
    def _read(key: str) -> int:
        match = re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text())
        return int(match.group(1)) if match else 0

    def _reset_peak(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.available = False

    def start(self) -> None:
        self._reset_peak()
        self.rss_before_kb = self._read("VmRSS")

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._reset_peak()
        try:
            yield
        finally:
            self.peaks_kb[name] = self._read("VmHWM")

    def stats(self) -> MemoryStats:
        def above(name: str) -> float | None:
            if not self.available or name not in self.peaks_kb:
                return None
            return round(max(0, self.peaks_kb[name] - self.rss_before_kb) / 1024, 2)

        return MemoryStats(
            rss_before_mb=round(self.rss_before_kb / 1024, 2),
            load_peak_mb=above("load"),
            run_peak_mb=above("run"),
            method="linux VmHWM reset per phase" if self.available else "unavailable",
        )


class CostStats(BaseModel):
    """What a model costs, counted from its graph: multiply-accumulates per image and weights."""

    macs: int
    params: int


_CONVOLUTIONS = {"Convolution", "GroupConvolution"}


def output_shape(output) -> list[int]:
    return [dim.get_length() for dim in output.get_partial_shape()]


def constant_elements(node) -> int:
    """Elements of the constant behind a (possibly decompressed or fake-quantized) weight input."""
    while node.get_type_name() in {"Convert", "FakeQuantize", "Multiply", "Subtract", "Reshape"}:
        node = node.input_value(0).get_node()
    if node.get_type_name() != "Constant":
        return 0
    return int(np.prod(output_shape(node.output(0)))) if len(node.output(0).get_partial_shape()) else 1


def count_cost(artifact_model) -> CostStats:
    """MACs and params of an ``openvino.Model`` (read from ONNX or IR), per input image.

    Convolutions count output elements x input channels per group x kernel area; MatMul counts
    M x K x N. Params are the weights of convolutions and MatMuls plus the constant biases added
    to their outputs (batch norm is folded into these by export).
    """
    macs = 0
    params = 0
    batch = (
        max(1, output_shape(artifact_model.inputs[0])[0])
        if artifact_model.inputs[0].get_partial_shape().is_static
        else 1
    )
    for op in artifact_model.get_ordered_ops():
        kind = op.get_type_name()
        if kind in _CONVOLUTIONS:
            out_elements = int(np.prod(output_shape(op.output(0))))
            weights = output_shape(op.input_value(1))
            per_output = int(np.prod(weights[-3:])) if kind == "GroupConvolution" else int(np.prod(weights[1:]))
            macs += out_elements * per_output
        elif kind == "MatMul":
            a_shape = output_shape(op.input_value(0))
            transpose_a = op.get_attributes().get("transpose_a", False)
            inner = a_shape[-2] if transpose_a else a_shape[-1]
            macs += int(np.prod(output_shape(op.output(0)))) * inner
        else:
            continue
        params += constant_elements(op.input_value(1).get_node())
        for target in op.output(0).get_target_inputs():
            consumer = target.get_node()
            if consumer.get_type_name() == "Add":
                other = consumer.input_value(1 - target.get_index()).get_node()
                params += constant_elements(other)
    return CostStats(macs=macs // batch, params=params)
