"""ONNX Runtime's perf_test on a phone: the command edgeflow runs over ADB and the parser of its summary.
The log is composed in the layout onnxruntime_perf_test prints (numbers made up here, not a capture)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeflow.errors import DeviceError
from edgeflow.remote import parse_perf_test, perf_test_command

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
