"""ONNX Runtime's ``onnxruntime_perf_test`` on a phone: the command edgeflow runs over ADB, its summary parsed,
and the run itself (push the model, time it there)."""

from __future__ import annotations

import re

from pydantic import BaseModel

from edgeflow.artifact import Artifact
from edgeflow.device import DeviceSpec
from edgeflow.errors import DeviceError
from edgeflow.profiling.stats import LatencyStats


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


def parse_perf_test(text: str, *, device: str = "phone") -> PerfTestStats:
    """Parse ``onnxruntime_perf_test``'s summary: "Average inference time cost: X ms" (or "Average time
    cost"), "Total iterations: N", "Min/Max/P50/.../P999 Latency is X sec"."""

    def seconds(label: str) -> float | None:
        match = re.search(rf"{label} Latency is ([0-9.eE+-]+) sec", text)
        return float(match.group(1)) * 1e3 if match else None

    mean = re.search(r"Average (?:inference )?time cost:\s*([0-9.eE+-]+) ms", text)
    low, high = seconds("Min"), seconds("Max")
    percentiles = {name[1:]: value for name in ("P50", "P90", "P95", "P99", "P999") if (value := seconds(name))}
    if mean is None or low is None or high is None or "50" not in percentiles:
        last = (text.strip().splitlines() or ["no output"])[-1][:300]
        raise DeviceError(device, "read onnxruntime_perf_test's output", f"no latency summary: {last}")
    iterations = re.search(r"Total (?:iterations|inference requests):\s*(\d+)", text)
    return PerfTestStats(
        iterations=int(iterations.group(1)) if iterations else None, mean_ms=float(mean.group(1)), min_ms=low,
        max_ms=high, percentiles_ms=percentiles,
    )  # fmt: skip


def perf_test_command(*, binary: str, model: str, iterations: int = 500, threads: int | None = None) -> list[str]:
    """``onnxruntime_perf_test`` on the CPU execution provider, timing ``iterations`` runs on random inputs."""
    argv = [binary, "-e", "cpu", "-m", "times", "-r", str(iterations), "-I"]
    if threads:
        argv += ["-x", str(threads)]
    return [*argv, model]


def time_with_perf_test(artifact: Artifact, *, device: DeviceSpec, iterations: int = 500) -> PerfTestStats:
    """Push the ``.ort`` (or ``.onnx``) model to the phone, run ``onnxruntime_perf_test`` there, parse it."""
    from edgeflow.transports import open_transport

    transport = open_transport(device)
    binary = device.adb.benchmark_binary if device.adb is not None else "onnxruntime_perf_test"
    if artifact.path is None:
        raise DeviceError(device.name, "push the model", "the artifact has no file")
    with transport.workspace() as folder:
        transport.put(artifact.path, f"{folder}/{artifact.path.name}", step=f"push {artifact.path.name}")
        argv = perf_test_command(binary=binary, model=f"{folder}/{artifact.path.name}", iterations=iterations,
                                 threads=device.runtime.threads)  # fmt: skip
        done = transport.run(argv, step="run onnxruntime_perf_test", timeout=transport.command_timeout, check=False)
        if done.returncode == 127 or "not found" in done.stderr:
            raise DeviceError(device.name, "run onnxruntime_perf_test",
                              f"{binary} is not on the phone (adb push it, or set adb.benchmark_binary)")  # fmt: skip
        return parse_perf_test(done.stdout + done.stderr, device=device.name)
