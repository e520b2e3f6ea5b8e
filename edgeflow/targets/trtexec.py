"""TensorRT's ``trtexec`` on a device: the command that builds and times an engine, its output parsed, and the
run itself (copy the ONNX there, build and time, fetch the times and the engine).

trtexec prints a performance summary at the end of a run; what it calls "GPU Compute Time" is the time
the engine spent on the GPU, "Latency" adds the host-device copies (H2D, D2H). Different TensorRT
releases print different percentiles (7.x: 99%; 8.x: 90/95/99%; 10.x the same): every one is optional
except min, max, mean and median.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel

from edgeflow.artifact import Artifact
from edgeflow.device import DeviceSpec
from edgeflow.errors import DeviceError
from edgeflow.profiling.stats import LatencyStats, TimingStats
from edgeflow.targets.target import Target
from edgeflow.targets.transport import TimingRequest

if TYPE_CHECKING:
    from edgeflow.targets import Transport

_METRICS = {
    "Throughput": "throughput_qps",
    "Latency": "latency",
    "Enqueue Time": "enqueue",
    "H2D Latency": "h2d",
    "GPU Compute Time": "gpu_compute",
    "D2H Latency": "d2h",
}
_LINE = re.compile(
    r"\[I\] (?P<name>Throughput|Latency|Enqueue Time|H2D Latency|GPU Compute Time|D2H Latency): (?P<rest>.*)$"
)
_STAT = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\)) = ([0-9.eE+-]+) ms")
_STAMP = re.compile(r"^\[\d\d/\d\d/\d{4}-\d\d:\d\d:\d\d\] ")  # "[07/07/2026-02:11:43] "
# Why a run printed no summary, most telling first: an error, a failed build, or (--dumpProfile without
# --separateProfileRun) "The e2e network timing is not reported since it is inaccurate due to the extra ...".
_WHY_NO_SUMMARY = ("[E]", "FAILED", "timing is not reported")


class MetricStats(BaseModel):
    """One metric of trtexec's performance summary, in milliseconds."""

    min: float
    max: float
    mean: float
    median: float
    percentiles: dict[str, float] = {}  # "90", "95", "99" -> ms


class TrtexecStats(BaseModel):
    """trtexec's performance summary, with the TensorRT version and device it names."""

    tensorrt_version: str | None
    device: str | None
    throughput_qps: float
    latency: MetricStats
    gpu_compute: MetricStats
    enqueue: MetricStats | None = None
    h2d: MetricStats | None = None
    d2h: MetricStats | None = None
    total_gpu_compute_s: float | None = None
    total_walltime_s: float | None = None


def parse_summary(text: str, *, device: str = "trtexec") -> TrtexecStats:
    """The performance summary of a trtexec run; raises DeviceError when the output has none (a failed
    build prints "&&&& FAILED" and no summary; so does a --dumpProfile run without --separateProfileRun)."""
    found: dict[str, object] = {}
    for line in text.splitlines():
        match = _LINE.search(line)
        if match is None:
            continue
        key, rest = _METRICS[match["name"]], match["rest"]
        if key == "throughput_qps":
            found[key] = float(rest.split()[0])
            continue
        stats = {name if not pct else f"p{pct}": float(value) for name, pct, value in _STAT.findall(rest)}
        if not {"min", "max", "mean", "median"} <= stats.keys():
            continue
        percentiles = {name[1:]: value for name, value in stats.items() if name.startswith("p")}
        found[key] = MetricStats(
            min=stats["min"], max=stats["max"], mean=stats["mean"], median=stats["median"], percentiles=percentiles
        )
    if "gpu_compute" not in found or "latency" not in found:
        lines = text.splitlines()
        why = next((line for marker in _WHY_NO_SUMMARY for line in lines if marker in line), "")
        detail = f": {_STAMP.sub('', why.strip())[:300]}" if why else ""
        raise DeviceError(device, "read trtexec's output", f"no performance summary{detail}")
    version_text = _tensorrt_version(text)
    selected = re.search(r"Selected Device: (.+)", text)
    totals = {
        name: float(match.group(1))
        for name, pattern in (
            ("total_gpu_compute_s", r"Total GPU Compute Time: ([0-9.]+) s"),
            ("total_walltime_s", r"Total Host Walltime: ([0-9.]+) s"),
        )  # fmt: skip
        if (match := re.search(pattern, text))
    }
    return TrtexecStats(
        tensorrt_version=version_text, device=selected.group(1).strip() if selected else None, **found, **totals
    )


def trtexec_command(
    *, trtexec: str, onnx: str, engine: str, precision: str, warmup_ms: int = 500, duration_s: int = 10,
    times_json: str | None = None, profile_json: str | None = None,
) -> list[str]:  # fmt: skip
    """The trtexec argv that builds ``onnx`` into ``engine`` at ``precision`` and times it.

    int8 is explicit quantization: the ONNX carries Q/DQ pairs (no calibrator); ``--fp16`` lets the
    layers left in float run in fp16. ``profile_json`` adds a separate per-layer profiling run, so the
    timing run is not slowed by the profiler.
    """
    argv = [trtexec, f"--onnx={onnx}", f"--saveEngine={engine}", f"--warmUp={warmup_ms}", f"--duration={duration_s}"]
    if precision == "fp16":
        argv.append("--fp16")
    elif precision == "int8":
        argv += ["--int8", "--fp16"]
    elif precision != "fp32":
        raise ValueError(f"trtexec builds fp32, fp16 or int8 engines, not {precision}")
    if times_json:
        argv.append(f"--exportTimes={times_json}")
    if profile_json:
        argv += ["--separateProfileRun", "--dumpProfile", f"--exportProfile={profile_json}"]
    return argv


def _tensorrt_version(text: str) -> str | None:
    """ "TensorRT version: 8.6.1" where trtexec prints it, else its banner's number: ``[TensorRT v8601]``
    (8.x: major x 1000 + minor x 100 + patch) or ``[TensorRT v100200]`` (10.x: major x 10000 + ...)."""
    spelled = re.search(r"TensorRT version: ([0-9.]+)", text)
    if spelled:
        return spelled.group(1)
    banner = re.search(r"\[TensorRT v(\d+)\]", text)
    if banner is None:
        return None
    number = int(banner.group(1))
    if number >= 100000:
        return f"{number // 10000}.{number // 100 % 100}.{number % 100}"
    return f"{number // 1000}.{number // 100 % 10}.{number % 100}"


class TrtexecRunStats(BaseModel):
    """An engine built and timed by trtexec on the device (GPU compute time per inference)."""

    latency_ms: LatencyStats
    samples_ms: list[float]
    h2d_median_ms: float | None
    d2h_median_ms: float | None
    throughput_qps: float
    tensorrt_version: str | None
    gpu: str | None
    engine_cache: str | None
    address: str
    command: str


def time_with_trtexec(
    artifact: Artifact, *, device: DeviceSpec, precision: str, duration_s: int = 10, transport: Transport | None = None
) -> TrtexecRunStats:
    """Copy the ONNX to ``device``, build and time it with trtexec there, fetch the per-inference times and
    the engine (cached here by TensorRT version, GPU, precision and shape: engines do not carry between
    GPUs or TensorRT versions)."""
    from edgeflow.backends.tensorrt import engine_cache_folder, engine_cache_key
    from edgeflow.targets import open_transport

    transport = transport or open_transport(device)
    trtexec = device.ssh.trtexec if device.ssh is not None else "trtexec"
    if artifact.format != "onnx" or artifact.path is None:
        raise DeviceError(device.name, "copy the model", f"trtexec builds engines from ONNX, not {artifact.format}")
    step = f"build and time {artifact.path.name} with trtexec ({precision})"
    with transport.workspace() as folder, tempfile.TemporaryDirectory() as local:
        transport.put(artifact.path, f"{folder}/model.onnx", step=f"copy {artifact.path.name}")
        argv = trtexec_command(
            trtexec=trtexec, onnx=f"{folder}/model.onnx", engine=f"{folder}/model.engine", precision=precision,
            duration_s=duration_s, times_json=f"{folder}/times.json",
        )  # fmt: skip
        done = transport.run(argv, step=step, timeout=transport.command_timeout, check=False)
        if done.returncode == 127:
            raise DeviceError(device.name, step, f"trtexec not found at {trtexec} (set ssh.trtexec in the device file)")
        summary = parse_summary(done.stdout + done.stderr, device=device.name)
        transport.get(f"{folder}/times.json", Path(local) / "times.json", step="fetch trtexec's times")
        times = json.loads((Path(local) / "times.json").read_text())
        transport.get(f"{folder}/model.engine", Path(local) / "model.engine", step="fetch the engine")
        key = engine_cache_key(
            artifact.path.read_bytes(), tensorrt_version=summary.tensorrt_version or "unknown",
            gpu=summary.device or device.name, precision=precision, shape=artifact.input_shape or (),
        )  # fmt: skip
        cached = engine_cache_folder() / f"{key}.engine"
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(local) / "model.engine"), cached)
    samples = np.asarray([entry["computeMs"] for entry in times], dtype=np.float64)
    if samples.size == 0:
        raise DeviceError(device.name, step, "trtexec recorded no inference times")
    latency = LatencyStats.from_samples((samples * 1e6).astype(np.int64), cold_ns=int(samples[0] * 1e6), warmup=0,
                                        batch=1)  # fmt: skip
    return TrtexecRunStats(
        latency_ms=latency, samples_ms=samples.round(6).tolist(),
        h2d_median_ms=summary.h2d.median if summary.h2d else None,
        d2h_median_ms=summary.d2h.median if summary.d2h else None,
        throughput_qps=summary.throughput_qps, tensorrt_version=summary.tensorrt_version, gpu=summary.device,
        engine_cache=str(cached), address=transport.address, command=shlex.join(argv),
    )  # fmt: skip


def time_artifact(request: TimingRequest) -> TimingStats:
    """trtexec's timing of ``artifact`` on the device (the engine built there), as a record."""
    trt = time_with_trtexec(request.artifact, device=request.device, precision=request.precision)
    return TimingStats(
        latency_ms=trt.latency_ms, memory=None, runtime_version=f"TensorRT {trt.tensorrt_version}",
        execution_precision=request.precision,
        runtime_settings={"gpu": trt.gpu, "address": trt.address, "command": trt.command},
    )  # fmt: skip


class TrtexecTarget(Target):
    """TensorRT's trtexec on the device (a Jetson): the engine built there and timed; accuracy from a runtime
    of this host reading the same ONNX."""

    name = "trtexec"
    label = "trtexec"

    def time(self, request: TimingRequest) -> TimingStats:
        return time_artifact(request)
