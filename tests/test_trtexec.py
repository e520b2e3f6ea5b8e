"""trtexec: the command edgeflow runs on a Jetson, and the parser of its performance summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeflow.backends.trtexec import parse_summary, trtexec_command
from edgeflow.errors import DeviceError

LOGS = Path(__file__).parent / "data" / "trtexec"


def test_summary_of_a_tensorrt_10_run() -> None:
    summary = parse_summary((LOGS / "composed-trt10.log").read_text())
    assert summary.tensorrt_version == "10.3.0" and summary.device == "Orin"
    assert summary.throughput_qps == 812.5
    assert summary.gpu_compute.median == 1.14 and summary.gpu_compute.percentiles == {"90": 1.2, "95": 1.24, "99": 1.55}
    assert summary.latency.mean == 1.2 and summary.h2d.median == 0.011 and summary.d2h.max == 0.02
    assert summary.total_gpu_compute_s == 9.35 and summary.total_walltime_s == 10.0012


@pytest.mark.parametrize("path", sorted(LOGS.glob("captured-*.log")), ids=lambda p: p.stem)
def test_summary_of_captured_runs(path: Path) -> None:
    summary = parse_summary(path.read_text())
    assert 0 < summary.gpu_compute.min <= summary.gpu_compute.median <= summary.gpu_compute.max
    assert summary.latency.median >= summary.gpu_compute.median and summary.tensorrt_version


def test_a_failed_build_is_one_clear_error() -> None:
    with pytest.raises(
        DeviceError,
        match=r"device jetson: read trtexec's output: no performance summary: .*could not find any implementation",
    ):
        parse_summary((LOGS / "composed-trt8-failed.log").read_text(), device="jetson")


def test_version_from_the_banner_alone() -> None:
    text = (LOGS / "composed-trt10.log").read_text().replace("[I] TensorRT version: 10.3.0\n", "")
    assert "TensorRT version" not in text.split("===")[1]
    assert parse_summary(text).tensorrt_version == "10.3.0"


def test_commands_for_each_precision() -> None:
    common = dict(trtexec="/usr/src/tensorrt/bin/trtexec", onnx="/tmp/w/m.onnx", engine="/tmp/w/m.engine")
    fp16 = trtexec_command(**common, precision="fp16", times_json="/tmp/w/t.json")
    assert fp16[:3] == ["/usr/src/tensorrt/bin/trtexec", "--onnx=/tmp/w/m.onnx", "--saveEngine=/tmp/w/m.engine"]
    assert "--fp16" in fp16 and "--int8" not in fp16 and "--exportTimes=/tmp/w/t.json" in fp16
    int8 = trtexec_command(**common, precision="int8", profile_json="/tmp/w/p.json")
    assert {"--int8", "--fp16", "--separateProfileRun", "--dumpProfile", "--exportProfile=/tmp/w/p.json"} <= set(int8)
    assert not {"--fp16", "--int8"} & set(trtexec_command(**common, precision="fp32"))
    with pytest.raises(ValueError, match="not bf16"):
        trtexec_command(**common, precision="bf16")


@pytest.mark.parametrize(
    "banner, version",
    [
        ("[TensorRT v8601]", "8.6.1"),
        ("[TensorRT v8205]", "8.2.5"),
        ("[TensorRT v100200]", "10.2.0"),
        ("[TensorRT v101300]", "10.13.0"),
    ],  # fmt: skip
)
def test_version_from_the_banner(banner: str, version: str) -> None:
    """trtexec's banner numbers its version as major x 1000 + minor x 100 + patch up to 8.x, and
    major x 10000 + minor x 100 + patch from 10.0 (8.6.1's banner broke the first parser)."""
    from edgeflow.backends.trtexec import _tensorrt_version

    assert _tensorrt_version(f"&&&& RUNNING TensorRT.trtexec {banner} # trtexec --onnx=m.onnx") == version
    assert _tensorrt_version(f"{banner}\n[I] TensorRT version: 9.9.9\n") == "9.9.9"  # the spelled-out line wins
