"""ONNX Runtime's perf_test on a phone: the command edgeflow runs over ADB and the parser of its summary.
The log is composed in the layout onnxruntime_perf_test prints (numbers made up here, not a capture)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgeflow.backends.perf_test import parse_perf_test, perf_test_command
from edgeflow.errors import DeviceError

LOG = Path(__file__).parent / "data" / "perf_test" / "composed.log"


def test_summary() -> None:
    summary = parse_perf_test(LOG.read_text())
    assert summary.iterations == 500
    assert summary.mean_ms == pytest.approx(5.9742) and summary.min_ms == pytest.approx(5.511)
    assert summary.max_ms == pytest.approx(9.21)
    assert summary.percentiles_ms == pytest.approx({"50": 5.904, "90": 6.301, "95": 6.512, "99": 7.433, "999": 9.21})


def test_no_summary_is_one_clear_error() -> None:
    with pytest.raises(DeviceError, match="device pixel-8: read onnxruntime_perf_test's output: no latency summary"):
        parse_perf_test("Error: model.ort: No such file or directory\n", device="pixel-8")


def test_command() -> None:
    argv = perf_test_command(binary="/data/local/tmp/onnxruntime_perf_test", model="/data/local/tmp/w/model.ort",
                             iterations=200, threads=4)  # fmt: skip
    assert argv == ["/data/local/tmp/onnxruntime_perf_test", "-e", "cpu", "-m", "times", "-r", "200", "-I", "-x", "4",
                    "/data/local/tmp/w/model.ort"]  # fmt: skip


def test_summary_as_report_statistics() -> None:
    """What the tool printed, and nothing it did not: no spread and no cold start."""
    stats = parse_perf_test(LOG.read_text()).latency_stats()
    assert (stats.p50, stats.p90, stats.p99) == pytest.approx((5.904, 6.301, 7.433))
    assert stats.std is None and stats.cold is None and stats.iterations == 500
    assert stats.throughput_fps == pytest.approx(1e3 / 5.9742)


@pytest.mark.skipif(shutil.which("adb") is None, reason="adb is not installed")
def test_no_phone_attached_is_estimated_and_says_why() -> None:
    """The real adb with no phone on this machine: the plan is an estimate, and adb's own words say why."""
    from edgeflow.device import load_device
    from edgeflow.profiling.run import timing_plan

    plan, why = timing_plan(load_device("pixel-8"), "onnxruntime")
    assert plan == "estimate"
    assert why.startswith("no phone attached (adb get-state:") and why.endswith("latency estimated")
