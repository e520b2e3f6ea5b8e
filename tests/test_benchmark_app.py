"""OpenVINO's benchmark_app: the parser of its statistics report, on a real OpenVINO 2023.0 run
(data/fixtures/benchmark_app) and on output of the 2026.4.1 benchmark_app installed here; and the bench that
compares ``edgeflow profile`` with it reads its median through that parser."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

from edgeflow.errors import DeviceError, EdgeflowError
from edgeflow.targets.benchmark_app import parse_benchmark_app

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "data" / "fixtures" / "benchmark_app"  # copied from ../shared/fixtures
INT8_ASYNC = "openvino-nb113_cifar10_mobilenetv2_int8_cpu_async.txt"

# The end of `benchmark_app -m tiny.xml -d CPU -hint latency -t 1` (OpenVINO 2026.4.1, the package in .venv, one
# 3x3 convolution at 32 px), captured on this project's machine: under 1 ms on average, it prints microseconds.
MICROSECONDS = """\
[ INFO ] Build ................................. 2026.4.1-22982-e213a147257-releases/2026/4
[Step 10/11] Measuring performance (Start inference synchronously, limits: 1000 ms duration)
[ INFO ] Benchmarking in inference only mode (inputs filling are not included in measurement loop).
[ INFO ] First inference took 9.53 ms
[Step 11/11] Dumping statistics report
[ INFO ] Execution Devices:['CPU']
[ INFO ] Count:            5640 iterations
[ INFO ] Duration:         1002.33 ms
[ INFO ] Latency:
[ INFO ]    Median:        38.13 us
[ INFO ]    Average:       161.19 us
[ INFO ]    Min:           20.32 us
[ INFO ]    Max:           4406.58 us
[ INFO ] Throughput:   5626.91 FPS
"""

# The same benchmark_app given -nthreads with -hint latency (its stdout, captured here): no report.
REFUSED = """\
[Step 1/11] Parsing and validating input arguments
[ INFO ] Parsing input parameters
[ ERROR ] -nstreams, -nthreads and -pin options are fine tune options. To use them you should explicitely set -hint \
option to none. This is not OpenVINO limitation (those options can be used in OpenVINO together), but a benchmark_app \
UI rule.
"""


def real_run(name: str = INT8_ASYNC) -> str:
    """A real benchmark_app run of data/fixtures/benchmark_app."""
    return (FIXTURES / name).read_text()


def test_report_of_a_real_run() -> None:
    """OpenVINO 2023.0, INT8 MobileNetV2 on CPU, async, 15 s: every figure of its report, as printed."""
    stats = parse_benchmark_app(real_run())
    assert stats.model_dump() == dict(
        count=183924, duration_ms=15000.75, median_ms=0.92, mean_ms=0.94, min_ms=0.64, max_ms=3.03,
        throughput_fps=12260.99, first_inference_ms=1.68, openvino_build="2023.0.0-10926-b4452d56304-releases/2023/0",
        execution_devices=["CPU"],
    )  # fmt: skip


def test_report_with_windows_line_ends() -> None:
    assert parse_benchmark_app(real_run().replace("\n", "\r\n")).median_ms == 0.92


def test_report_in_microseconds() -> None:
    """Newer benchmark_apps print "us" where the average is under 1 ms: the model keeps ms."""
    stats = parse_benchmark_app(MICROSECONDS)
    assert (stats.median_ms, stats.mean_ms, stats.min_ms, stats.max_ms) == (0.03813, 0.16119, 0.02032, 4.40658)
    assert (stats.count, stats.duration_ms, stats.throughput_fps) == (5640, 1002.33, 5626.91)
    assert stats.openvino_build == "2026.4.1-22982-e213a147257-releases/2026/4" and stats.first_inference_ms == 9.53


def test_only_the_overall_latency_is_read() -> None:
    """With dynamic shapes, per-group latencies follow the overall ones: they do not replace them."""
    groups = "[ INFO ] Latency for each data shape group:\n[ INFO ] 1.x: [1,3,64,64]\n[ INFO ]    Median:     7.77 ms\n"
    text = real_run().replace("[ INFO ] Throughput:", groups + "[ INFO ] Throughput:")
    assert parse_benchmark_app(text).median_ms == 0.92


def test_a_refused_run_is_one_clear_error() -> None:
    with pytest.raises(DeviceError) as raised:
        parse_benchmark_app(REFUSED, device="cpu")
    message = str(raised.value)
    assert isinstance(raised.value, EdgeflowError) and "\n" not in message
    assert message.startswith("device cpu: read benchmark_app's output: no statistics report: [ ERROR ] -nstreams, ")


def test_a_run_cut_before_its_report_is_one_clear_error() -> None:
    text = real_run().split("[Step 11/11]")[0]
    with pytest.raises(DeviceError) as raised:
        parse_benchmark_app(text)
    assert str(raised.value) == (
        "device benchmark_app: read benchmark_app's output: no statistics report: [ INFO ] First inference took 1.68 ms"
    )


def test_the_bench_reads_the_median_through_the_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/profile_vs_benchmark_app.py imports, and reads a benchmark_app run's median with the parser."""
    spec = importlib.util.spec_from_file_location(
        "profile_vs_benchmark_app", ROOT / "bench" / "profile_vs_benchmark_app.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    output = real_run()
    monkeypatch.setattr(subprocess, "run", lambda argv, **_: subprocess.CompletedProcess(argv, 0, stdout=output))
    assert bench.benchmark_app_median(Path("model.xml"), 15) == 0.92
