"""ONNX Runtime's ``onnxruntime_perf_test`` on a phone: the command edgeflow runs over ADB, its summary parsed,
and the run itself (push the model, time it there)."""

from __future__ import annotations

import re
from decimal import Decimal

from pydantic import BaseModel

from edgeflow.artifact import Artifact
from edgeflow.device import DeviceSpec
from edgeflow.errors import DeviceError
from edgeflow.profiling.stats import LatencyStats, TimingStats
from edgeflow.targets.target import Target
from edgeflow.targets.transport import TimingRequest


class PerfTestStats(BaseModel):
    """What ONNX Runtime's ``onnxruntime_perf_test`` prints at the end of a run (latencies in ms)."""

    iterations: int | None
    mean_ms: float
    min_ms: float
    max_ms: float
    percentiles_ms: dict[str, float]  # "50", "90", "95", "99", "999"

    def latency_stats(self) -> LatencyStats:
        """As the report's statistics: what the tool printed (it reports no spread or cold start)."""
        percentiles = self.percentiles_ms
        iterations = self.iterations or 0
        return LatencyStats(
            p50=percentiles["50"], p90=percentiles.get("90", self.max_ms), p99=percentiles.get("99", self.max_ms),
            mean=self.mean_ms, min=self.min_ms, max=self.max_ms, std=None, cold=None, iterations=iterations,
            warmup=0, seconds=iterations * self.mean_ms / 1e3, throughput_fps=1e3 / self.mean_ms,
        )  # fmt: skip


_MEAN = re.compile(r"Average (?:inference )?time cost(?: total)?:\s*([0-9.eE+-]+)\s*ms")
_ITERATIONS = re.compile(r"Total (?:iterations|inference requests):\s*(\d+)|^Runs:\s*(\d+)", re.MULTILINE)


def parse_perf_test(text: str, *, device: str = "phone") -> PerfTestStats:
    """Parse ``onnxruntime_perf_test``'s summary: the mean ("Average inference time cost total: X ms" in 1.23,
    "Average inference time cost: X ms" in older releases) and, with ``-s``, "Min/Max/P50/.../P999 Latency: X s"
    (older: "P50 Latency is Xsec")."""

    def seconds(label: str) -> float | None:
        match = re.search(rf"\b{label} Latency(?::| is)\s*([0-9.eE+-]+)\s*s(?:ec)?\b", text)
        return float(Decimal(match.group(1)) * 1000) if match else None  # ms as printed, no float noise

    mean = _MEAN.search(text)
    low, high = seconds("Min"), seconds("Max")
    percentiles = {
        name[1:]: value for name in ("P50", "P90", "P95", "P99", "P999") if (value := seconds(name)) is not None
    }
    if mean is not None and low is None and "50" not in percentiles:
        raise DeviceError(device, "read onnxruntime_perf_test's output",
                          "no latency percentiles (onnxruntime_perf_test prints them with -s)")  # fmt: skip
    if mean is None or low is None or high is None or "50" not in percentiles:
        last = (text.strip().splitlines() or ["no output"])[-1][:300]
        raise DeviceError(device, "read onnxruntime_perf_test's output", f"no latency summary: {last}")
    iterations = _ITERATIONS.search(text)
    return PerfTestStats(
        iterations=int(iterations.group(1) or iterations.group(2)) if iterations else None,
        mean_ms=float(mean.group(1)), min_ms=low, max_ms=high, percentiles_ms=percentiles,
    )  # fmt: skip


def perf_test_command(*, binary: str, model: str, iterations: int = 500, threads: int | None = None) -> list[str]:
    """``onnxruntime_perf_test`` on the CPU execution provider, timing ``iterations`` runs on random inputs."""
    argv = [
        binary,
        "-e",
        "cpu",
        "-m",
        "times",
        "-r",
        str(iterations),
        "-s",
        "-I",
    ]  # -s: the Min/P50/... lines (1.23 prints them only then)
    if threads:
        argv += ["-x", str(threads)]
    return [*argv, model]


def time_with_perf_test(artifact: Artifact, *, device: DeviceSpec, iterations: int = 500) -> PerfTestStats:
    """Push the ``.ort`` (or ``.onnx``) model to the phone, run ``onnxruntime_perf_test`` there, parse it."""
    from edgeflow.targets.adb import run_tool_on_phone

    binary = device.adb.benchmark_binary if device.adb is not None else "onnxruntime_perf_test"
    (output,) = run_tool_on_phone(
        artifact.path, device=device, tool="onnxruntime_perf_test", setting="benchmark_binary",
        commands=lambda model: [perf_test_command(binary=binary, model=model, iterations=iterations,
                                                  threads=device.runtime.threads)],
    )  # fmt: skip
    return parse_perf_test(output, device=device.name)


def time_artifact(request: TimingRequest) -> TimingStats:
    """``onnxruntime_perf_test``'s timing of ``artifact`` on the attached phone, as a record."""
    summary = time_with_perf_test(request.artifact, device=request.device)
    return TimingStats(
        latency_ms=summary.latency_stats(), memory=None, runtime_version="onnxruntime (onnxruntime_perf_test)",
        execution_precision=request.precision,
        runtime_settings={"tool": "onnxruntime_perf_test", "iterations": summary.iterations},
    )  # fmt: skip


class PerfTestTarget(Target):
    """ONNX Runtime's onnxruntime_perf_test on an attached phone; accuracy from ONNX Runtime on this host."""

    name = "perf_test"
    label = "onnxruntime_perf_test"

    def time(self, request: TimingRequest) -> TimingStats:
        return time_artifact(request)
