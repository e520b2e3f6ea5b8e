"""trtexec: the command edgeflow runs on a Jetson, and the parser of its performance summary (on real TensorRT
10.16.1 logs in data/fixtures/trtexec, and on composed logs for what those do not show)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeflow.errors import DeviceError
from edgeflow.targets.trtexec import parse_summary, trtexec_command

LOGS = Path(__file__).parent / "data" / "trtexec"
FIXTURES = Path(__file__).parent / "data" / "fixtures" / "trtexec"  # copied from ../shared/fixtures


def real_log(name: str) -> str:
    """A real trtexec log of data/fixtures/trtexec (TensorRT 10.16.1)."""
    return (FIXTURES / name).read_text()


def metric(figures: tuple[float, ...]) -> dict[str, object]:
    """A summary line's figures in the order trtexec prints them: min, max, mean, median, 90%, 95%, 99%."""
    low, high, mean, median, p90, p95, p99 = figures
    return dict(min=low, max=high, mean=mean, median=median, percentiles={"90": p90, "95": p95, "99": p99})


# The figures of each log's "=== Performance summary ===", as printed. The logs name an "NVIDIA H100 PCIe" on their
# "Selected Device:" line. 05 ran with --dumpProfile (no --separateProfileRun): no summary, only a profile table.
REAL_RUNS = {
    "trt-samples-cookbook-result-01.log": dict(
        throughput_qps=15374.3,
        latency=(0.0410156, 0.14917, 0.0441053, 0.0440674, 0.0450439, 0.0458984, 0.0512695),
        enqueue=(0.0247803, 0.137939, 0.0271685, 0.0267334, 0.0283203, 0.0299072, 0.0357666),
        h2d=(0.00341797, 0.108398, 0.00395853, 0.00378418, 0.00439453, 0.00488281, 0.00537109),
        gpu_compute=(0.0331421, 0.140381, 0.0359588, 0.0361328, 0.0368652, 0.0371094, 0.041748),
        d2h=(0.00390625, 0.0341797, 0.00418773, 0.00415039, 0.00421143, 0.00427246, 0.00512695),
        total_walltime_s=3.00013, total_gpu_compute_s=1.6586,
    ),
    # --useCudaGraph --noDataTransfers --verbose: H2D and D2H are all 0, Latency equals GPU Compute Time, and the
    # "[V] GPU Compute Time: the GPU latency to ..." explanations that follow the summary are not figures.
    "trt-samples-cookbook-result-03.log": dict(
        throughput_qps=24896.9,
        latency=(0.0383301, 0.0651855, 0.0387646, 0.0388184, 0.0388489, 0.0389404, 0.0390625),
        enqueue=(0.00158691, 0.0428467, 0.00197413, 0.00195312, 0.00219727, 0.00219727, 0.00244141),
        h2d=(0, 0, 0, 0, 0, 0, 0),
        gpu_compute=(0.0383301, 0.0651855, 0.0387646, 0.0388184, 0.0388489, 0.0389404, 0.0390625),
        d2h=(0, 0, 0, 0, 0, 0, 0),
        total_walltime_s=3.00005, total_gpu_compute_s=2.89541,
    ),
    "trt-samples-cookbook-result-05.log": dict(
        error="device trtexec: read trtexec's output: no performance summary: [I] The e2e network timing is not "
        "reported since it is inaccurate due to the extra synchronizations when the profiler is enabled.",
    ),
    "trt-samples-cookbook-result-06.log": dict(
        throughput_qps=12827.1,
        latency=(0.0551758, 0.193146, 0.0606122, 0.0616455, 0.0628662, 0.064209, 0.0704346),
        enqueue=(0.0380859, 0.161926, 0.0412251, 0.0406494, 0.0426025, 0.0466309, 0.0515137),
        h2d=(0.00341797, 0.108643, 0.00396193, 0.00390625, 0.00427246, 0.00439453, 0.00488281),
        gpu_compute=(0.0473633, 0.167191, 0.0525201, 0.0537109, 0.0549316, 0.0560913, 0.0620117),
        d2h=(0.00390625, 0.038147, 0.00413043, 0.00415039, 0.00415039, 0.00415039, 0.00439453),
        total_walltime_s=3.00013, total_gpu_compute_s=2.02113,
    ),
    "trt-samples-cookbook-result-08.log": dict(
        throughput_qps=27315.5,
        latency=(0.0109863, 0.122803, 0.0130058, 0.0128174, 0.013916, 0.0144653, 0.0178223),
        enqueue=(0.00415039, 0.114258, 0.00474599, 0.00463867, 0.00500488, 0.00524902, 0.00604248),
        h2d=(0.00341797, 0.108276, 0.00421466, 0.00415039, 0.00463867, 0.00488281, 0.00537109),
        gpu_compute=(0.00415039, 0.114502, 0.00536421, 0.00512695, 0.00610352, 0.00634766, 0.00775146),
        d2h=(0.00292969, 0.0279541, 0.00342699, 0.00341797, 0.00366211, 0.0038147, 0.00415039),
        total_walltime_s=3.00006, total_gpu_compute_s=0.439586,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(REAL_RUNS), ids=lambda name: name.removeprefix("trt-samples-cookbook-"))
def test_summary_of_real_runs(name: str) -> None:
    """Every figure of a real log's performance summary, as printed; a log without one is one clear error."""
    text, expected = real_log(name), REAL_RUNS[name]
    if "error" in expected:
        with pytest.raises(DeviceError) as raised:
            parse_summary(text)
        assert str(raised.value) == expected["error"]
        return
    summary = parse_summary(text)
    assert summary.tensorrt_version == "10.16.1" and summary.device == "NVIDIA H100 PCIe"
    assert summary.throughput_qps == expected["throughput_qps"]
    for key in ("latency", "enqueue", "h2d", "gpu_compute", "d2h"):
        assert getattr(summary, key).model_dump() == metric(expected[key]), key
    assert summary.total_walltime_s == expected["total_walltime_s"]
    assert summary.total_gpu_compute_s == expected["total_gpu_compute_s"]


def test_version_of_a_real_run_from_its_banner_alone() -> None:
    """Without its "TensorRT version: 10.16.1" line, a real log still says 10.16.1 by its [TensorRT v101601]."""
    text = real_log("trt-samples-cookbook-result-01.log")
    text = "\n".join(line for line in text.splitlines() if "TensorRT version:" not in line)
    assert "[TensorRT v101601]" in text and parse_summary(text).tensorrt_version == "10.16.1"


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
        ("[TensorRT v101601]", "10.16.1"),  # the real logs' banner
    ],  # fmt: skip
)
def test_version_from_the_banner(banner: str, version: str) -> None:
    """trtexec's banner numbers its version as major x 1000 + minor x 100 + patch up to 8.x, and
    major x 10000 + minor x 100 + patch from 10.0 (8.6.1's banner broke the first parser)."""
    from edgeflow.targets.trtexec import _tensorrt_version

    assert _tensorrt_version(f"&&&& RUNNING TensorRT.trtexec {banner} # trtexec --onnx=m.onnx") == version
    assert _tensorrt_version(f"{banner}\n[I] TensorRT version: 9.9.9\n") == "9.9.9"  # the spelled-out line wins
