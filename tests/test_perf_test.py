"""ONNX Runtime's perf_test on a phone: the command edgeflow runs over ADB and the parser of its summary, on real
ONNX Runtime 1.23.2 runs (data/fixtures/onnxruntime_perf_test) and on a log composed in the layout older
releases print ("Average inference time cost:", "P50 Latency is Xsec"; numbers made up here, not a capture)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgeflow.errors import DeviceError
from edgeflow.targets.perf_test import parse_perf_test, perf_test_command

LOG = Path(__file__).parent / "data" / "perf_test" / "composed.log"
FIXTURES = Path(__file__).parent / "data" / "fixtures" / "onnxruntime_perf_test"  # copied from ../shared


def real_run(name: str) -> str:
    """A real onnxruntime_perf_test run of data/fixtures (ORT 1.23.2, Android arm64, resnet50v2, 5 runs, -s)."""
    return (FIXTURES / name).read_text()


# As printed: "Total inference requests: 5", "Average inference time cost total: 339.381120 ms", "Min Latency:
# 0.333323 s", ...; the latencies in seconds there, in ms here.
REAL_RUNS = {
    "arm-learning-paths_resnet50v2_no_sme2.txt": dict(
        iterations=5, mean_ms=339.38112, min_ms=333.323, max_ms=346.82,
        percentiles_ms={"50": 336.476, "90": 346.82, "95": 346.82, "99": 346.82, "999": 346.82},
    ),
    "arm-learning-paths_resnet50v2_sme2_kleidiai.txt": dict(
        iterations=5, mean_ms=98.961997, min_ms=95.8204, max_ms=101.519,
        percentiles_ms={"50": 99.5086, "90": 101.519, "95": 101.519, "99": 101.519, "999": 101.519},
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(REAL_RUNS), ids=lambda name: name.removeprefix("arm-learning-paths_"))
def test_summary_of_real_runs(name: str) -> None:
    """ORT 1.23.2 prints "Average inference time cost total:" and "P50 Latency: X s": every figure, as printed."""
    assert parse_perf_test(real_run(name)).model_dump() == REAL_RUNS[name]


def test_real_run_as_report_statistics() -> None:
    stats = parse_perf_test(real_run("arm-learning-paths_resnet50v2_sme2_kleidiai.txt")).latency_stats()
    assert (stats.p50, stats.p90, stats.p99, stats.mean) == (99.5086, 101.519, 101.519, 98.961997)
    assert (stats.min, stats.max, stats.iterations) == (95.8204, 101.519, 5)
    assert stats.throughput_fps == pytest.approx(1e3 / 98.961997) and stats.std is None and stats.cold is None


def test_a_real_run_without_statistics_is_one_clear_error() -> None:
    """Without -s, onnxruntime_perf_test prints the mean and no Min/Max/P50 lines."""
    text = real_run("arm-learning-paths_resnet50v2_no_sme2.txt").split("Min Latency:")[0]
    with pytest.raises(DeviceError) as raised:
        parse_perf_test(text, device="vivo-x300")
    assert str(raised.value) == (
        "device vivo-x300: read onnxruntime_perf_test's output: no latency percentiles "
        "(onnxruntime_perf_test prints them with -s)"
    )


def test_summary_in_the_older_layout() -> None:
    """Older releases: "Average inference time cost: X ms" (no "total") and "P50 Latency is Xsec"."""
    summary = parse_perf_test(LOG.read_text())
    assert summary.iterations == 500
    assert (summary.mean_ms, summary.min_ms, summary.max_ms) == (5.9742, 5.511, 9.21)
    assert summary.percentiles_ms == {"50": 5.904, "90": 6.301, "95": 6.512, "99": 7.433, "999": 9.21}


def test_summary_in_the_oldest_layout() -> None:
    """The sample output of ONNX Runtime's early perftest README: "Average time cost:X ms", "Total iterations:N"."""
    text = "\n".join([
        "Total time cost:58.8053", "Total iterations:1000", "Average time cost:58.8053 ms", "Total run time:58.8102 s",
        "Min Latency is 0.0559777sec", "Max Latency is 0.0623472sec", "P50 Latency is 0.0587108sec",
        "P90 Latency is 0.0599845sec", "P95 Latency is 0.0605676sec", "P99 Latency is 0.0619517sec",
        "P999 Latency is 0.0623472sec",
    ])  # fmt: skip
    summary = parse_perf_test(text)
    assert (summary.iterations, summary.mean_ms, summary.min_ms, summary.max_ms) == (1000, 58.8053, 55.9777, 62.3472)
    assert summary.percentiles_ms == {"50": 58.7108, "90": 59.9845, "95": 60.5676, "99": 61.9517, "999": 62.3472}


def test_no_summary_is_one_clear_error() -> None:
    with pytest.raises(DeviceError, match="device pixel-8: read onnxruntime_perf_test's output: no latency summary"):
        parse_perf_test("Error: model.ort: No such file or directory\n", device="pixel-8")


def test_command() -> None:
    argv = perf_test_command(binary="/data/local/tmp/onnxruntime_perf_test", model="/data/local/tmp/w/model.ort",
                             iterations=200, threads=4)  # fmt: skip
    assert argv == ["/data/local/tmp/onnxruntime_perf_test", "-e", "cpu", "-m", "times", "-r", "200", "-s", "-I",
                    "-x", "4", "/data/local/tmp/w/model.ort"]  # fmt: skip


def test_summary_as_report_statistics() -> None:
    """What the tool printed, and nothing it did not: no spread and no cold start."""
    stats = parse_perf_test(LOG.read_text()).latency_stats()
    assert (stats.p50, stats.p90, stats.p99) == (5.904, 6.301, 7.433)
    assert stats.std is None and stats.cold is None and stats.iterations == 500
    assert stats.throughput_fps == pytest.approx(1e3 / 5.9742)


@pytest.mark.skipif(shutil.which("adb") is None, reason="adb is not installed")
def test_no_phone_attached_is_estimated_and_says_why() -> None:
    """The real adb with no phone on this machine: the plan is an estimate, and adb's own words say why."""
    from edgeflow.device import load_device
    from edgeflow.targets.run import timing_plan

    plan, why = timing_plan(load_device("pixel-8"), "onnxruntime")
    assert plan == "estimate"
    assert why.startswith("no phone attached (adb get-state:") and why.endswith("latency estimated")
