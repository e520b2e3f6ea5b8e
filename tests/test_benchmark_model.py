"""LiteRT's benchmark_model on a phone: the command edgeflow runs over ADB and the parser of its output, on two
real runs (data/fixtures/litert_benchmark_model: an Android arm64 XNNPACK run of a newer tool that prints
p5/median/p95, and a TensorFlow Lite 2.8-era run on riscv64 with the per-operator tables)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeflow.errors import DeviceError
from edgeflow.targets.benchmark_model import benchmark_model_command, parse_benchmark_model

FIXTURES = Path(__file__).parent / "data" / "fixtures" / "litert_benchmark_model"  # copied from ../shared


def real_run(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_the_android_run_every_figure_as_printed() -> None:
    """ "count=1000 first=52162 curr=49785 min=49088 max=686105 avg=63743.2 std=60716 p5=49620 median=51891
    p95=68628" (us) and the summary lines, in ms."""
    stats = parse_benchmark_model(real_run("android-aarch64-xnnpack-float32.log"))
    assert stats.warmup.model_dump() == dict(
        count=9, first_ms=87.112, min_ms=51.629, max_ms=87.112, mean_ms=58.1474, std_ms=11.478, p5_ms=51.629,
        median_ms=51.962, p95_ms=87.112,
    )  # fmt: skip
    assert stats.runs.model_dump() == dict(
        count=1000, first_ms=52.162, min_ms=49.088, max_ms=686.105, mean_ms=63.7432, std_ms=60.716, p5_ms=49.62,
        median_ms=51.891, p95_ms=68.628,
    )  # fmt: skip
    assert (stats.init_ms, stats.first_inference_ms, stats.warmup_avg_ms, stats.inference_avg_ms) == (
        119.515, 87.112, 58.1474, 63.7432,
    )  # fmt: skip
    assert (stats.memory_init_mb, stats.memory_overall_mb) == (55.4961, 55.4961)
    assert stats.delegate == "XNNPACK" and stats.threads is None and stats.operators == []


def test_the_android_run_as_report_statistics() -> None:
    """The median is the p50; the tool prints no p90/p99, so the p95 and the max stand for them (upper bounds)."""
    latency = parse_benchmark_model(real_run("android-aarch64-xnnpack-float32.log")).latency_stats()
    assert (latency.p50, latency.p90, latency.p99, latency.mean) == (51.891, 68.628, 686.105, 63.7432)
    assert (latency.min, latency.max, latency.std, latency.cold) == (49.088, 686.105, 60.716, 87.112)
    assert (latency.iterations, latency.warmup) == (1000, 9)
    assert latency.throughput_fps == pytest.approx(1e3 / 63.7432)
    memory = parse_benchmark_model(real_run("android-aarch64-xnnpack-float32.log")).memory_stats()
    assert (memory.load_peak_mb, memory.run_peak_mb) == (55.4961, 55.4961) and "approximate" in memory.method


def test_the_riscv_run_with_operator_tables() -> None:
    """The old tool: a warm-up line with only curr=, no percentiles, threads in brackets, and the "Run Order"
    table of the regular runs (31 operators, not the initialization table's AllocateTensors)."""
    stats = parse_benchmark_model(real_run("riscv64-mobilenet_v1-op-profiling.log"))
    assert stats.warmup.count == 1 and stats.warmup.mean_ms is None
    assert (stats.runs.count, stats.runs.mean_ms, stats.runs.min_ms, stats.runs.max_ms) == (50, 2950.34, 2727.568,
                                                                                            3189.954)  # fmt: skip
    assert stats.runs.median_ms is None
    assert (stats.init_ms, stats.first_inference_ms, stats.memory_overall_mb, stats.threads) == (
        17.187, 3512.391, 46.0859, 4,
    )  # fmt: skip
    assert len(stats.operators) == 31
    first, last = stats.operators[0], stats.operators[-1]
    assert first.model_dump() == dict(node_type="CONV_2D", name="[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]:0",
                                      first_ms=87.754, avg_ms=60.957, percent=2.066, times_called=1)  # fmt: skip
    assert (last.node_type, last.avg_ms) == ("SOFTMAX", 0.233)
    assert {op.node_type for op in stats.operators} == {
        "CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "SQUEEZE", "SOFTMAX",
    }  # fmt: skip
    profile = stats.layer_profile()
    assert profile.slowest(1)[0].name == "[MobilenetV1/MobilenetV1/Conv2d_5_pointwise/Relu6]:10"
    assert profile.compute_ms == pytest.approx(sum(op.avg_ms for op in stats.operators))


def test_a_run_without_a_median_cannot_be_a_p50() -> None:
    stats = parse_benchmark_model(real_run("riscv64-mobilenet_v1-op-profiling.log"), device="visionfive")
    with pytest.raises(DeviceError, match="prints no median"):
        stats.latency_stats(device="visionfive")


def test_output_without_a_summary_is_one_clear_error() -> None:
    text = real_run("android-aarch64-xnnpack-float32.log").split("INFO: Inference timings")[0]
    with pytest.raises(DeviceError) as raised:
        parse_benchmark_model(text + "Aborted (core dumped)\n", device="pixel-8")
    assert (
        str(raised.value) == "device pixel-8: read benchmark_model's output: no timing summary: Aborted (core dumped)"
    )


def test_the_command() -> None:
    assert benchmark_model_command(binary="./benchmark_model", model="m.tflite", threads=4, op_profiling=True) == [
        "./benchmark_model", "--graph=m.tflite", "--num_runs=500", "--warmup_runs=20", "--use_xnnpack=true",
        "--num_threads=4", "--enable_op_profiling=true",
    ]  # fmt: skip
