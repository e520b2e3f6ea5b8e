"""Device descriptors: where a model runs, which runtimes it has, how to reach it, what it can do at peak.

A descriptor is ``devices/<name>.yaml`` or the user's own file (see ``devices/README.md``). Connection
details of an SSH device can be overridden without editing the file: ``EDGEFLOW_SSH_HOST``,
``EDGEFLOW_SSH_USER``, ``EDGEFLOW_SSH_PORT``, ``EDGEFLOW_SSH_KEY``, ``EDGEFLOW_SSH_KNOWN_HOSTS`` (or the
CLI's ``--host user@host:port`` and ``--key``); an ADB device's serial with ``ANDROID_SERIAL``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edgeflow.artifact import Artifact
from edgeflow.backends import BACKENDS, get_backend
from edgeflow.backends.base import RuntimeSettings
from edgeflow.config import StrictModel, find_named_file, list_named_files, parse_spec, read_yaml
from edgeflow.errors import ConfigError, UnknownNameError

Precision = Literal["fp32", "fp16", "bf16", "int8"]


class SshSpec(StrictModel):
    """How to reach a device over SSH. The host key must already be known (no silent auto-accept)."""

    host: str | None = Field(default=None, description="host name or address; None = set it per run")
    user: str | None = None
    port: int = Field(default=22, ge=1, le=65535)
    key: str | None = Field(default=None, description="private key file; None = the SSH agent and ~/.ssh")
    known_hosts: str | None = Field(default=None, description="known_hosts file; None = ~/.ssh/known_hosts")
    python: str = Field(default="python3", description="the device's Python that runs the benchmark agent")
    trtexec: str = Field(default="/usr/src/tensorrt/bin/trtexec", description="TensorRT's trtexec on the device")
    workdir: str = Field(default="/tmp", description="where a per-run folder is made (and removed) on the device")
    connect_timeout_s: int = Field(default=10, ge=1)
    command_timeout_s: int = Field(default=600, ge=1)


class AdbSpec(StrictModel):
    """How to reach an Android phone over ADB."""

    serial: str | None = Field(default=None, description="adb serial; None = the only attached device")
    workdir: str = "/data/local/tmp"
    benchmark_binary: str = Field(
        default="onnxruntime_perf_test", description="ONNX Runtime's perf_test built for Android, pushed once"
    )
    litert_benchmark_binary: str = Field(
        default="benchmark_model", description="LiteRT's benchmark_model built for Android, pushed once"
    )
    command_timeout_s: int = Field(default=600, ge=1)


class PeakSpec(StrictModel):
    """Published peak figures of the device, for roofline estimates when it is not attached."""

    compute_gops: dict[Precision, float] = Field(
        min_length=1, description="dense peak per precision, in GFLOP/s (float) or GOP/s (int8)"
    )
    memory_bandwidth_gbs: float = Field(gt=0, description="DRAM bandwidth in GB/s")
    layer_overhead_us: float = Field(
        default=0.0, ge=0, description="fixed cost per layer (kernel launch, dispatch) added to the roofline"
    )
    source: str = Field(min_length=1, description="where the figures come from (datasheet, measurement)")

    @model_validator(mode="after")
    def _positive(self) -> PeakSpec:
        for precision, value in self.compute_gops.items():
            if value <= 0:
                raise ValueError(f"compute_gops.{precision} must be positive")
        return self


class DeviceSpec(StrictModel):
    """A device descriptor, loaded from ``devices/<name>.yaml`` or the user's own file."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    aliases: list[str] = []
    kind: Literal["cpu", "gpu", "soc", "phone"] = "cpu"
    transport: Literal["local", "ssh", "adb"] = "local"
    ssh: SshSpec | None = None
    adb: AdbSpec | None = None
    runtimes: list[str] = Field(min_length=1, description="registered backends, in order of preference")

    @field_validator("runtimes")
    @classmethod
    def _known_runtimes(cls, names: list[str]) -> list[str]:
        try:
            return [BACKENDS.resolve(name) for name in names]
        except UnknownNameError as exc:
            raise ValueError(str(exc)) from None

    precisions: list[Precision] = Field(min_length=1)
    memory_limit_mb: int | None = Field(default=None, ge=1)
    peak: PeakSpec | None = None
    recipe: str | None = Field(default=None, description="the recipe `optimize` uses when none is given")
    runtime: RuntimeSettings = RuntimeSettings()
    emulated: bool = Field(
        default=False,
        description="an emulator runs the device's userland (qemu-user: an ARM root on this host): its runtimes "
        "compute accuracy as the device's builds do, but its timings are emulated, neither the device's nor a "
        "prediction, and never used for a budget, a recommendation or a regression",
    )

    @model_validator(mode="after")
    def _transport_details(self) -> DeviceSpec:
        if self.transport == "ssh" and self.ssh is None:
            self.ssh = SshSpec()
        if self.transport == "adb" and self.adb is None:
            self.adb = AdbSpec()
        if self.transport != "ssh" and self.ssh is not None:
            raise ValueError(f"an ssh section needs transport: ssh (this device's is {self.transport})")
        if self.transport != "adb" and self.adb is not None:
            raise ValueError(f"an adb section needs transport: adb (this device's is {self.transport})")
        if self.peak is not None:
            missing = [p for p in self.precisions if p not in self.peak.compute_gops and p != "bf16"]
            if missing:
                raise ValueError(f"peak.compute_gops lacks the device's precisions: {', '.join(missing)}")
        return self

    def preferred_runtime(self) -> str:
        return self.runtimes[0]

    @property
    def is_local(self) -> bool:
        return self.transport == "local"

    def with_connection(self, *, host: str | None = None, key: str | None = None) -> DeviceSpec:
        """This device with its SSH connection overridden by the environment, then by ``host``
        (``[user@]host[:port]``) and ``key`` (from the CLI)."""
        if self.transport != "ssh":
            if host or key:
                raise ConfigError(f"--host/--key apply to ssh devices; {self.name} uses {self.transport}")
            if self.transport == "adb" and os.environ.get("ANDROID_SERIAL"):
                adb = self.adb.model_copy(update={"serial": os.environ["ANDROID_SERIAL"]})
                return self.model_copy(update={"adb": adb})
            return self
        update: dict[str, object] = {}
        for field, variable in (("host", "HOST"), ("user", "USER"), ("key", "KEY"), ("known_hosts", "KNOWN_HOSTS")):
            if os.environ.get(f"EDGEFLOW_SSH_{variable}"):
                update[field] = os.environ[f"EDGEFLOW_SSH_{variable}"]
        if os.environ.get("EDGEFLOW_SSH_PORT"):
            update["port"] = _port(os.environ["EDGEFLOW_SSH_PORT"], "EDGEFLOW_SSH_PORT")
        if host:
            match = re.fullmatch(r"(?:([^@:\s]+)@)?([^@:\s]+)(?::(\S+))?", host)
            if match is None:
                raise ConfigError(f"--host {host!r}: expected [user@]host[:port]")
            user, name, port = match.groups()
            update["host"] = name
            if user:
                update["user"] = user
            if port:
                update["port"] = _port(port, "--host")
        if key:
            update["key"] = key
        ssh = parse_spec(SshSpec, {**self.ssh.model_dump(), **update}, source=f"device {self.name} ssh settings")
        return self.model_copy(update={"ssh": ssh})


def _port(text: str, where: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ConfigError(f"{where}: port must be a number from 1 to 65535, got {text!r}")
    return int(text)


def load_device(name_or_path: str | Path) -> DeviceSpec:
    """Load a built-in device by name or alias (``cpu``, ``jetson``) or a device YAML file by path."""
    try:
        path = find_named_file(str(name_or_path), folder="devices", kind="device")
    except UnknownNameError:
        for spec in list_devices():
            if str(name_or_path) in spec.aliases:
                return spec
        raise
    return parse_spec(DeviceSpec, read_yaml(path), source=str(path))


def as_device(device: str | Path | DeviceSpec) -> DeviceSpec:
    """A device given by name, file or as a loaded spec (what every API call accepts)."""
    return device if isinstance(device, DeviceSpec) else load_device(device)


def list_devices() -> list[DeviceSpec]:
    return [
        parse_spec(DeviceSpec, read_yaml(find_named_file(name, folder="devices", kind="device")), source=name)
        for name in list_named_files("devices")
    ]


def choose_backend(artifact: Artifact, device: DeviceSpec, *, backend: str | None = None) -> str:
    """The requested backend, or the device's most preferred runtime that reads this file (an ONNX already
    quantized with QLinear* operators goes to ONNX Runtime where OpenVINO cannot read it)."""
    readable = [name for name in device.runtimes if artifact.format in get_backend(name).formats]
    refusals = {}
    if backend is not None:
        name = get_backend(backend).name
        if name not in device.runtimes:
            raise ConfigError(f"device {device.name} has no {name} runtime (it has: {', '.join(device.runtimes)})")
        if artifact.format not in get_backend(name).formats:
            raise ConfigError(f"the {name} backend cannot run {artifact.format} artifacts")
        readable = [name]
    for name in readable:
        why = get_backend(name).cannot_read(artifact)
        if why is None:
            return name
        refusals[name] = why
    if not refusals:
        raise ConfigError(f"device {device.name} has no runtime for {artifact.format} artifacts")
    others = [name for name in device.runtimes if name not in refusals and artifact.format in get_backend(name).formats]
    hint = f"; try --backend {others[0]}" if backend is not None and others else ""
    reasons = "; ".join(f"{name}: {why}" for name, why in refusals.items())
    raise ConfigError(f"no runtime of {device.name} that was tried can read {artifact.path}: {reasons}{hint}")
