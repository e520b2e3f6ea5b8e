"""Time (and run) an artifact on a device reached through a transport, with the benchmark agent.

The agent and the artifact are copied into a fresh folder on the device, run with the device's Python
and runtime, and the folder is removed afterwards whether the run worked, failed or hung.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from edgeflow.artifact import Artifact
from edgeflow.device import DeviceSpec, RuntimeSettings
from edgeflow.errors import DeviceError
from edgeflow.profile_config import ProfileConfig
from edgeflow.profiling import LatencyStats, MemoryStats
from edgeflow.transports import Transport, open_transport

AGENT = Path(__file__).parent / "transports" / "agent.py"


class DeviceCheck(BaseModel):
    """What ``edgeflow devices check`` found on a device."""

    device: str
    transport: str
    address: str
    reachable: bool
    python: str | None = None
    machine: str | None = None
    system: str | None = None
    runtimes: dict[str, str | None] = {}
    missing: list[str] = []  # runtimes the descriptor names that the device lacks
    trtexec: str | None = None  # version line, where the device names tensorrt and has trtexec


class RemoteTiming(BaseModel):
    """An artifact timed on a device by the agent (always measured)."""

    runtime: str
    runtime_version: str
    input_shape: list[int]
    latency_ms: LatencyStats
    samples_ms: list[float]
    memory: MemoryStats
    settings: dict
    address: str


def _agent_python(device: DeviceSpec) -> str:
    """The device's Python; for this machine, the one running edgeflow (it has the runtimes)."""
    if device.ssh is not None:
        return device.ssh.python
    return sys.executable if device.transport == "local" else "python3"


def _parse_agent(device: DeviceSpec, step: str, stdout: str) -> dict:
    try:
        data = json.loads(stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise DeviceError(device.name, step, f"the agent printed no result: {stdout.strip()[-200:]!r}") from None
    if "error" in data:
        raise DeviceError(device.name, step, data["error"])
    return data


def check(device: DeviceSpec) -> DeviceCheck:
    """Reach the device, probe its Python and runtimes (and trtexec where it names TensorRT)."""
    transport = open_transport(device)
    result = DeviceCheck(device=device.name, transport=device.transport, address=transport.address, reachable=False)
    if device.transport == "adb":
        transport.run(["getprop", "ro.product.model"], step="reach the phone", timeout=transport.short_timeout)
        result.reachable = True
        return result
    with transport.workspace(step="reach the device") as folder:
        result.reachable = True
        agent = f"{folder}/agent.py"
        transport.put(AGENT, agent, step="copy the benchmark agent")
        done = transport.run([_agent_python(device), agent, "probe"], step="probe the runtimes",
                             timeout=transport.short_timeout, check=False)  # fmt: skip
        if done.returncode == 127 or "not found" in done.stderr:
            raise DeviceError(device.name, "probe the runtimes", f"no Python at {_agent_python(device)!r}")
        probed = _parse_agent(device, "probe the runtimes", done.stdout)
    result.python, result.machine, result.system = probed["python"], probed["machine"], probed["system"]
    result.runtimes = {name: probed["runtimes"].get(name) for name in device.runtimes if name in probed["runtimes"]}
    if "tensorrt" in device.runtimes and device.ssh is not None:
        found = transport.run([device.ssh.trtexec, "--help"], step="look for trtexec", timeout=transport.short_timeout,
                              check=False)  # fmt: skip
        lines = [line for line in (found.stdout + found.stderr).splitlines() if "TensorRT" in line]
        result.trtexec = lines[0].strip() if found.returncode == 0 and lines else None
        if result.trtexec:
            result.runtimes["tensorrt"] = result.runtimes.get("tensorrt") or result.trtexec
    result.missing = [name for name in device.runtimes if not result.runtimes.get(name) and name != "torch"]
    return result


def time_on_device(
    artifact: Artifact,
    *,
    device: DeviceSpec,
    backend: str,
    config: ProfileConfig,
    settings: RuntimeSettings | None = None,
    inputs: np.ndarray | None = None,
    transport: Transport | None = None,
) -> tuple[RemoteTiming, np.ndarray | None]:
    """Copy ``artifact`` and the agent to ``device``, time it there with ``backend``; with ``inputs``
    (N images) also return the logits the device's runtime computed for them."""
    transport = transport or open_transport(device)
    settings = settings or device.runtime
    if artifact.path is None or artifact.format not in {"onnx", "openvino"}:
        raise DeviceError(device.name, "copy the model", f"cannot send a {artifact.format} artifact to a device")
    step = f"time {artifact.path.name} with {backend}"
    with transport.workspace() as folder, tempfile.TemporaryDirectory() as local:
        transport.put(AGENT, f"{folder}/agent.py", step="copy the benchmark agent")
        for file in artifact.files:
            transport.put(file, f"{folder}/{file.name}", step=f"copy {file.name}")
        argv = [
            _agent_python(device), f"{folder}/agent.py", "time",
            "--model", f"{folder}/{artifact.path.name}", "--runtime", backend,
            "--warmup", str(config.warmup), "--iterations", str(config.iterations),
            "--min-iterations", str(config.min_iterations), "--max-seconds", str(config.max_seconds),
        ]  # fmt: skip
        if settings.threads:
            argv += ["--threads", str(settings.threads)]
        if inputs is not None:
            np.save(Path(local) / "inputs.npy", np.ascontiguousarray(inputs, dtype=np.float32), allow_pickle=False)
            transport.put(Path(local) / "inputs.npy", f"{folder}/inputs.npy", step="copy the evaluation images")
            argv += ["--inputs", f"{folder}/inputs.npy", "--outputs", f"{folder}/logits.npy"]
        done = transport.run(argv, step=step, timeout=transport.command_timeout, check=False)
        data = _parse_agent(device, step, done.stdout)
        logits = None
        if inputs is not None:
            transport.get(f"{folder}/logits.npy", Path(local) / "logits.npy", step="fetch the logits")
            logits = np.load(Path(local) / "logits.npy", allow_pickle=False)
    samples = np.asarray(data["samples_ns"], dtype=np.int64)
    latency = LatencyStats.from_samples(samples, cold_ns=data["cold_ns"], warmup=data["warmup"],
                                        batch=data["input_shape"][0])  # fmt: skip
    memory = MemoryStats(
        rss_before_mb=data["rss_before_mb"], load_peak_mb=data["load_peak_mb"], run_peak_mb=data["run_peak_mb"],
        method="peak RSS (getrusage) of the agent on the device",
    )  # fmt: skip
    timing = RemoteTiming(
        runtime=backend, runtime_version=data["version"], input_shape=data["input_shape"], latency_ms=latency,
        samples_ms=[round(value / 1e6, 6) for value in data["samples_ns"]], memory=memory,
        settings=data["settings"], address=transport.address,
    )  # fmt: skip
    return timing, logits


def time_in_turn_on_device(
    files: list[Path], *, device: DeviceSpec, backend: str, rounds: int = 5, max_seconds: float = 0.5,
    warmup: int = 10, transport: Transport | None = None,
) -> tuple[str, dict[str, list[float]]]:  # fmt: skip
    """Copy ONNX ``files`` and the agent to ``device`` and time them there one after another, round after
    round; the runtime's version and each file's p50 (ms) per round, by file name."""
    transport = transport or open_transport(device)
    step = f"time {len(files)} models in turn with {backend}"
    with transport.workspace() as folder:
        transport.put(AGENT, f"{folder}/agent.py", step="copy the benchmark agent")
        for file in files:
            transport.put(file, f"{folder}/{file.name}", step=f"copy {file.name}")
        argv = [
            _agent_python(device), f"{folder}/agent.py", "in-turn", "--runtime", backend, "--rounds", str(rounds),
            "--max-seconds", str(max_seconds), "--warmup", str(warmup),
            *(["--threads", str(device.runtime.threads)] if device.runtime.threads else []),
            "--models", *[f"{folder}/{file.name}" for file in files],
        ]  # fmt: skip
        done = transport.run(argv, step=step, timeout=transport.command_timeout, check=False)
        data = _parse_agent(device, step, done.stdout)
    return data["version"], {Path(name).name: values for name, values in data["p50_ms"].items()}


class TrtexecTiming(BaseModel):
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
) -> TrtexecTiming:
    """Copy the ONNX to ``device``, build and time it with trtexec there, fetch the per-inference times and
    the engine (cached here by TensorRT version, GPU, precision and shape: engines do not carry between
    GPUs or TensorRT versions)."""
    from edgeflow.backends.tensorrt import engine_cache_folder, engine_cache_key
    from edgeflow.backends.trtexec import parse_summary, trtexec_command

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
    return TrtexecTiming(
        latency_ms=latency, samples_ms=samples.round(6).tolist(),
        h2d_median_ms=summary.h2d.median if summary.h2d else None,
        d2h_median_ms=summary.d2h.median if summary.d2h else None,
        throughput_qps=summary.throughput_qps, tensorrt_version=summary.tensorrt_version, gpu=summary.device,
        engine_cache=str(cached), address=transport.address, command=shlex.join(argv),
    )  # fmt: skip


class PerfTestSummary(BaseModel):
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


def parse_perf_test(text: str, *, device: str = "phone") -> PerfTestSummary:
    """Parse ``onnxruntime_perf_test``'s summary: "Average inference time cost: X ms" (or "Average time
    cost"), "Total iterations: N", "Min/Max/P50/.../P999 Latency is X sec"."""
    import re

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
    return PerfTestSummary(
        iterations=int(iterations.group(1)) if iterations else None, mean_ms=float(mean.group(1)), min_ms=low,
        max_ms=high, percentiles_ms=percentiles,
    )  # fmt: skip


def perf_test_command(*, binary: str, model: str, iterations: int = 500, threads: int | None = None) -> list[str]:
    """``onnxruntime_perf_test`` on the CPU execution provider, timing ``iterations`` runs on random inputs."""
    argv = [binary, "-e", "cpu", "-m", "times", "-r", str(iterations), "-I"]
    if threads:
        argv += ["-x", str(threads)]
    return [*argv, model]


def time_with_perf_test(artifact: Artifact, *, device: DeviceSpec, iterations: int = 500) -> PerfTestSummary:
    """Push the ``.ort`` (or ``.onnx``) model to the phone, run ``onnxruntime_perf_test`` there, parse it."""
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
