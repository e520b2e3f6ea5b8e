"""LiteRT's ``benchmark_model`` (tensorflow/lite/tools/benchmark) on a phone: the command edgeflow runs over ADB,
its summary parsed (warm-up and measured runs, init, first inference, memory, the per-operator tables of
``--enable_op_profiling``), and the run itself (push the ``.tflite`` once, time it there)."""

from __future__ import annotations

import re
from decimal import Decimal

from pydantic import BaseModel

from edgeflow.artifact import Artifact
from edgeflow.backends.layers import LayerProfileStats, summarize
from edgeflow.device import DeviceSpec
from edgeflow.errors import DeviceError
from edgeflow.profiling.memory import MemoryStats
from edgeflow.profiling.stats import LatencyStats, TimingStats
from edgeflow.targets.target import Target
from edgeflow.targets.transport import TimingRequest


class RunsStats(BaseModel):
    """One ``count=`` line (microseconds as printed, kept here in ms): the warm-up or the measured runs. Older
    releases print no percentiles (``p5``, ``median``, ``p95`` are then None)."""

    count: int
    first_ms: float | None
    min_ms: float | None
    max_ms: float | None
    mean_ms: float | None
    std_ms: float | None
    p5_ms: float | None = None
    median_ms: float | None = None
    p95_ms: float | None = None


class OperatorStats(BaseModel):
    """One row of the "Run Order" table of ``--enable_op_profiling`` (times in ms)."""

    node_type: str
    name: str
    first_ms: float
    avg_ms: float
    percent: float
    times_called: int


class BenchmarkModelStats(BaseModel):
    """What ``benchmark_model`` printed for one model (times in ms, memory in MB)."""

    warmup: RunsStats | None
    runs: RunsStats
    init_ms: float | None
    first_inference_ms: float | None
    warmup_avg_ms: float | None
    inference_avg_ms: float | None
    memory_init_mb: float | None
    memory_overall_mb: float | None
    threads: int | None
    delegate: str | None  # "XNNPACK" when the tool said it created the XNNPACK delegate
    operators: list[OperatorStats] = []

    def latency_stats(self, *, device: str = "phone") -> LatencyStats:
        """As the report's statistics. The tool prints p5, median and p95: p90 is reported as the p95 and p99 as
        the max (upper bounds, said in the runtime settings); a release without percentiles is an error."""
        runs = self.runs
        if runs.median_ms is None or runs.mean_ms is None or runs.min_ms is None or runs.max_ms is None:
            raise DeviceError(device, "read benchmark_model's output",
                              "this benchmark_model prints no median (an older release): use one that prints "
                              "p5/median/p95 on its count= lines")  # fmt: skip
        return LatencyStats(
            p50=runs.median_ms, p90=runs.p95_ms if runs.p95_ms is not None else runs.max_ms, p99=runs.max_ms,
            mean=runs.mean_ms, min=runs.min_ms, max=runs.max_ms, std=runs.std_ms, cold=self.first_inference_ms,
            iterations=runs.count, warmup=self.warmup.count if self.warmup else 0,
            seconds=runs.count * runs.mean_ms / 1e3, throughput_fps=1e3 / runs.mean_ms,
        )  # fmt: skip

    def memory_stats(self) -> MemoryStats | None:
        """The tool's memory line as the report's memory: deltas from its start (approximate, as it says)."""
        if self.memory_overall_mb is None:
            return None
        return MemoryStats(rss_before_mb=0.0, load_peak_mb=self.memory_init_mb or 0.0,
                           run_peak_mb=self.memory_overall_mb,
                           method="benchmark_model's memory deltas from its start (approximate, as the tool says; "
                                  "no figure before loading)")  # fmt: skip

    def layer_profile(self) -> LayerProfileStats | None:
        """The per-operator table as a layer profile (averages over the runs), None without op profiling."""
        if not self.operators:
            return None
        return summarize([[(op.name, op.node_type, "", op.avg_ms) for op in self.operators]])


_NUMBER = r"[0-9.eE+-]+"
_COUNT = re.compile(r"^(?:INFO: )?count=(\d+)((?: \w+=" + _NUMBER + r")*)\s*$", re.MULTILINE)
_FIELD = re.compile(r"(\w+)=(" + _NUMBER + r")")
_TIMINGS = re.compile(r"Inference timings in us: (.*)$", re.MULTILINE)
_MEMORY = re.compile(r"Memory footprint delta from the start of the tool \(MB\): init=(" + _NUMBER + r") "
                     r"overall=(" + _NUMBER + r")")  # fmt: skip
_THREADS = re.compile(r"(?:Num threads|#threads used for CPU inference): \[(\d+)\]")
_RUN_ORDER = "Operator-wise Profiling Info for Regular Benchmark Runs:"


def _ms(value: str | None) -> float | None:
    return None if value is None else float(Decimal(value) / 1000)  # ms as printed, no float noise


def _runs(line_fields: str, count: int) -> RunsStats:
    fields = dict(_FIELD.findall(line_fields))
    return RunsStats(
        count=count, first_ms=_ms(fields.get("first")), min_ms=_ms(fields.get("min")), max_ms=_ms(fields.get("max")),
        mean_ms=_ms(fields.get("avg")), std_ms=_ms(fields.get("std")), p5_ms=_ms(fields.get("p5")),
        median_ms=_ms(fields.get("median")), p95_ms=_ms(fields.get("p95")),
    )  # fmt: skip


def _operators(text: str) -> list[OperatorStats]:
    """Rows of the "Run Order" table after the regular runs' heading (the initialization table is skipped)."""
    start = text.find(_RUN_ORDER)
    if start < 0:
        return []
    section = text[start:].split("==============================", 3)
    if len(section) < 3:
        return []
    rows = []
    for line in section[2].splitlines():
        cells = [cell.strip() for cell in line.split("\t") if cell.strip()]
        if len(cells) != 9 or cells[0].startswith("["):
            continue
        node_type, _start, first, average, percent, _cdf, _memory, called, name = cells
        rows.append(OperatorStats(
            node_type=node_type, name=name, first_ms=float(first), avg_ms=float(average),
            percent=float(percent.rstrip("%")), times_called=int(called),
        ))  # fmt: skip
    return rows


def parse_benchmark_model(text: str, *, device: str = "phone") -> BenchmarkModelStats:
    """Parse ``benchmark_model``'s output: the two ``count=`` lines of the benchmark (warm-up, then measured;
    the per-operator tables' own ``count=`` lines come after "Inference timings" and are not these), the
    "Inference timings in us" summary, the memory line and, with ``--enable_op_profiling``, the operators."""
    summary_at = _TIMINGS.search(text)
    head = text[: summary_at.start()] if summary_at else text
    counts = [_runs(match.group(2), int(match.group(1))) for match in _COUNT.finditer(head)]
    measured = [runs for runs in counts if runs.mean_ms is not None]
    if summary_at is None or not measured:
        last = (text.strip().splitlines() or ["no output"])[-1][:300]
        raise DeviceError(device, "read benchmark_model's output", f"no timing summary: {last}")
    timings = {key.strip(): _ms(value) for key, value in re.findall(r"([\w ()]+): (" + _NUMBER + r")",
                                                                            summary_at.group(1))}  # fmt: skip
    memory = _MEMORY.search(text)
    threads = _THREADS.search(text)
    return BenchmarkModelStats(
        warmup=counts[0] if len(counts) > 1 else None, runs=counts[-1], init_ms=timings.get("Init"),
        first_inference_ms=timings.get("First inference"), warmup_avg_ms=timings.get("Warmup (avg)"),
        inference_avg_ms=timings.get("Inference (avg)"),
        memory_init_mb=float(memory.group(1)) if memory else None,
        memory_overall_mb=float(memory.group(2)) if memory else None,
        threads=int(threads.group(1)) if threads else None,
        delegate="XNNPACK" if "XNNPACK delegate" in text else None, operators=_operators(text),
    )  # fmt: skip


def benchmark_model_command(
    *, binary: str, model: str, runs: int = 500, warmup: int = 20, threads: int | None = None,
    op_profiling: bool = False,
) -> list[str]:  # fmt: skip
    """``benchmark_model`` on the CPU with XNNPACK (threads explicit when given), ``runs`` timed runs."""
    argv = [binary, f"--graph={model}", f"--num_runs={runs}", f"--warmup_runs={warmup}", "--use_xnnpack=true"]
    if threads:
        argv.append(f"--num_threads={threads}")
    if op_profiling:
        argv.append("--enable_op_profiling=true")
    return argv


def time_with_benchmark_model(
    artifact: Artifact, *, device: DeviceSpec, runs: int = 500, profile_runs: int = 50
) -> BenchmarkModelStats:
    """Push the ``.tflite`` to the phone, time it there with ``benchmark_model`` (the binary pushed once, like
    ``onnxruntime_perf_test``; ``adb.litert_benchmark_binary`` names it), then run it ``profile_runs`` times more
    with the operator profiler for the per-operator table (it costs time per operator: never in the timing)."""
    from edgeflow.targets.adb import run_tool_on_phone

    binary = device.adb.litert_benchmark_binary if device.adb is not None else "benchmark_model"
    timed, profiled = (
        parse_benchmark_model(output, device=device.name)
        for output in run_tool_on_phone(
            artifact.path, device=device, tool="benchmark_model", setting="litert_benchmark_binary",
            commands=lambda model: [
                benchmark_model_command(binary=binary, model=model, runs=count, threads=device.runtime.threads,
                                        op_profiling=profile)
                for count, profile in ((runs, False), (profile_runs, True))
            ],
        )
    )  # fmt: skip
    return timed.model_copy(update={"operators": profiled.operators})


def time_artifact(request: TimingRequest) -> TimingStats:
    """LiteRT's ``benchmark_model`` timing of ``artifact`` on the attached phone, as a record (with its
    per-operator table)."""
    result = time_with_benchmark_model(request.artifact, device=request.device)
    return TimingStats(
        latency_ms=result.latency_stats(device=request.device.name), memory=result.memory_stats(),
        runtime_version="LiteRT (benchmark_model)", execution_precision=request.precision,
        runtime_settings={
            "tool": "benchmark_model", "delegate": result.delegate, "threads": result.threads,
            "iterations": result.runs.count, "init_ms": result.init_ms,
            "percentiles": "p50 is the tool's median; p90 its p95 and p99 its max (upper bounds)",
            "operators": [op.model_dump() for op in result.operators],
        },
    )  # fmt: skip


class BenchmarkModelTarget(Target):
    """LiteRT's benchmark_model on an attached phone, with its per-operator table; accuracy from LiteRT's
    interpreter on this host."""

    name = "benchmark_model"
    label = "LiteRT's benchmark_model"

    def time(self, request: TimingRequest) -> TimingStats:
        return time_artifact(request)
