"""The client that drives the benchmark agent on a device reached through a transport: check the device,
time an artifact there (alone, or several in turn) and compute its logits there.

The agent and the artifact are copied into a fresh folder on the device, run with the device's Python
and runtime, and the folder is removed afterwards whether the run worked, failed or hung.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from edgeflow.artifact import Artifact
from edgeflow.backends import get_backend
from edgeflow.backends.base import RuntimeSettings
from edgeflow.device import DeviceSpec
from edgeflow.errors import DeviceError
from edgeflow.profiling.in_turn import InTurnStats
from edgeflow.profiling.loop import ProfileConfig
from edgeflow.profiling.memory import MemoryStats
from edgeflow.profiling.stats import LatencyStats, TimingStats
from edgeflow.targets import Transport, open_transport
from edgeflow.targets.target import Target, file_names
from edgeflow.targets.transport import TimingRequest

AGENT = Path(__file__).parent / "agent.py"
HOST_STATE = Path(__file__).parents[1] / "profiling" / "host_state.py"


class DeviceCheck(BaseModel):
    """What ``edgeflow devices check`` found on a device."""

    device: str
    transport: str
    address: str
    reachable: bool
    python: str | None = None
    machine: str | None = None
    system: str | None = None
    isa: list[str] = []  # the CPU features its kernels are chosen by (aarch64: hardware capabilities)
    runtimes: dict[str, str | None] = {}
    missing: list[str] = []  # runtimes the descriptor names that the device lacks
    trtexec: str | None = None  # version line, where the device names tensorrt and has trtexec


class AgentStats(BaseModel):
    """An artifact timed on a device by the agent (always measured)."""

    runtime: str
    runtime_version: str
    input_shape: list[int]
    latency_ms: LatencyStats
    samples_ms: list[float]
    memory: MemoryStats
    settings: dict
    address: str


def _put_agent(transport: Transport, folder: str) -> None:
    """Copy the agent into ``folder`` on the device, with the host-state reader it imports."""
    transport.put(AGENT, f"{folder}/agent.py", step="copy the benchmark agent")
    transport.put(HOST_STATE, f"{folder}/host_state.py", step="copy the benchmark agent")


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
        _put_agent(transport, folder)
        done = transport.run([_agent_python(device), agent, "probe"], step="probe the runtimes",
                             timeout=transport.short_timeout, check=False)  # fmt: skip
        if done.returncode == 127 or "not found" in done.stderr:
            raise DeviceError(device.name, "probe the runtimes", f"no Python at {_agent_python(device)!r}")
        probed = _parse_agent(device, "probe the runtimes", done.stdout)
    result.python, result.machine, result.system = probed["python"], probed["machine"], probed["system"]
    result.isa = probed.get("isa", [])
    result.runtimes = {name: probed["runtimes"].get(name) for name in device.runtimes if name in probed["runtimes"]}
    trtexec_runtimes = [name for name in device.runtimes if get_backend(name).remote_timers.get("ssh") == "trtexec"]
    if trtexec_runtimes and device.ssh is not None:
        found = transport.run([device.ssh.trtexec, "--help"], step="look for trtexec", timeout=transport.short_timeout,
                              check=False)  # fmt: skip
        lines = [line for line in (found.stdout + found.stderr).splitlines() if "TensorRT" in line]
        result.trtexec = lines[0].strip() if found.returncode == 0 and lines else None
        if result.trtexec:
            for name in trtexec_runtimes:
                result.runtimes[name] = result.runtimes.get(name) or result.trtexec
    # what this device needs installed: the runtimes something here times on it (the agent, trtexec); the others
    # (torch eager, a runtime no remote timer serves yet) are estimated there whatever it has
    timed = [name for name in device.runtimes if get_backend(name).remote_timers.get("ssh") in ("agent", "trtexec")]
    result.missing = [name for name in timed if not result.runtimes.get(name)]
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
) -> tuple[AgentStats, np.ndarray | None]:
    """Copy ``artifact`` and the agent to ``device``, time it there with ``backend``; with ``inputs``
    (N images) also return the logits the device's runtime computed for them."""
    transport = transport or open_transport(device)
    settings = settings or device.runtime
    if artifact.path is None or get_backend(backend).remote_timers.get("ssh") != "agent":
        raise DeviceError(device.name, "copy the model", f"cannot send a {artifact.format} artifact to a device")
    step = f"time {artifact.path.name} with {backend}"
    with transport.workspace() as folder, tempfile.TemporaryDirectory() as local:
        _put_agent(transport, folder)
        for file in artifact.files:
            transport.put(file, f"{folder}/{file.name}", step=f"copy {file.name}")
        argv = [
            _agent_python(device), f"{folder}/agent.py", "time",
            "--model", f"{folder}/{artifact.path.name}", "--runtime", backend,
            "--warmup", str(config.warmup), "--iterations", str(config.iterations),
            "--min-iterations", str(config.min_iterations), "--max-seconds", str(config.max_seconds),
            "--busy-share", str(config.busy_share), "--busy-retries", str(config.busy_retries),
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
                                        batch=data["input_shape"][0], state=data["state"])  # fmt: skip
    memory = MemoryStats(
        rss_before_mb=data["rss_before_mb"], load_peak_mb=data["load_peak_mb"], run_peak_mb=data["run_peak_mb"],
        method="peak RSS (getrusage) of the agent on the device",
    )  # fmt: skip
    timing = AgentStats(
        runtime=backend, runtime_version=data["version"], input_shape=data["input_shape"], latency_ms=latency,
        samples_ms=[round(value / 1e6, 6) for value in data["samples_ns"]], memory=memory,
        settings=data["settings"], address=transport.address,
    )  # fmt: skip
    return timing, logits


def time_in_turn_on_device(
    files: list[Path], *, device: DeviceSpec, backend: str, rounds: int = 5, max_seconds: float = 0.5,
    warmup: int = 10, transport: Transport | None = None,
) -> tuple[str, InTurnStats]:  # fmt: skip
    """Copy ONNX ``files`` and the agent to ``device`` and time them there one after another, round after
    round; the runtime's version and each file's p50 (ms) per round and noisy rounds, by file name."""
    transport = transport or open_transport(device)
    step = f"time {len(files)} models in turn with {backend}"
    with transport.workspace() as folder:
        _put_agent(transport, folder)
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
    rounds = {Path(name).name: values for name, values in data["p50_ms"].items()}
    noisy = {Path(name).name: count for name, count in data["noisy_rounds"].items()}
    return data["version"], InTurnStats(rounds_ms=rounds, samples_ms={}, noisy_rounds=noisy)


def time_artifact(request: TimingRequest) -> TimingStats:
    """The benchmark agent's timing of ``artifact`` on ``device`` (and the logits of ``inputs``), as a record."""
    timing, logits = time_on_device(
        request.artifact, device=request.device, backend=request.backend, config=request.profile,
        settings=request.settings, inputs=request.inputs,
    )  # fmt: skip
    return TimingStats(
        latency_ms=timing.latency_ms, memory=timing.memory, runtime_version=timing.runtime_version,
        execution_precision=str(timing.settings.get("execution_precision", "unknown")),
        runtime_settings={**timing.settings, "address": timing.address}, logits=logits,
    )  # fmt: skip


class AgentTarget(Target):
    """A device over SSH (or this machine through a subprocess): the benchmark agent times there and computes the
    logits of the evaluation images with the device's own runtime."""

    name = "agent"
    label = "the benchmark agent"
    computes_logits = True

    def time(self, request: TimingRequest) -> TimingStats:
        return time_artifact(request)

    def time_in_turn(
        self, artifacts: dict[str, Artifact], *, device: DeviceSpec, backend: str, profile: ProfileConfig, rounds: int
    ) -> InTurnStats:
        names = file_names(artifacts)
        _version, timed = time_in_turn_on_device(
            [Path(artifact.path) for artifact in artifacts.values()], device=device, backend=backend, rounds=rounds,
            max_seconds=profile.max_seconds, warmup=profile.warmup,
        )  # fmt: skip
        by_file = {file: name for name, file in names.items()}
        return InTurnStats(
            rounds_ms={by_file[file]: values for file, values in timed.rounds_ms.items()}, samples_ms={},
            noisy_rounds={by_file[file]: count for file, count in timed.noisy_rounds.items()},
        )  # fmt: skip
