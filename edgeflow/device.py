"""Device descriptors: where a model runs, which runtimes it has, how to time it there."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from edgeflow.config import StrictModel, find_named_file, list_named_files, parse_spec, read_yaml

Precision = Literal["fp32", "fp16", "bf16", "int8"]


class RuntimeSettings(StrictModel):
    """Settings passed to a runtime when it compiles a model for timing. ``None`` = the runtime's default."""

    threads: int | None = Field(default=None, ge=1, description="inference threads; None = runtime default")
    performance_hint: Literal["latency", "throughput"] = "latency"
    execution_precision: Literal["default", "f32", "bf16", "f16"] = Field(
        default="default",
        description="what OpenVINO executes float layers in; 'default' lets it choose (bf16 on AMX CPUs)",
    )


class DeviceSpec(StrictModel):
    """A device descriptor, loaded from ``devices/<name>.yaml`` or the user's own file."""

    name: str
    description: str = ""
    transport: Literal["local"] = "local"
    runtimes: list[Literal["openvino", "onnxruntime", "torch"]] = Field(min_length=1)
    precisions: list[Precision] = Field(min_length=1)
    memory_limit_mb: int | None = Field(default=None, ge=1)
    runtime: RuntimeSettings = RuntimeSettings()

    def preferred_runtime(self) -> str:
        return self.runtimes[0]


def load_device(name_or_path: str | Path) -> DeviceSpec:
    """Load a built-in device by name (``cpu``) or a device YAML file by path."""
    path = find_named_file(str(name_or_path), folder="devices", kind="device")
    return parse_spec(DeviceSpec, read_yaml(path), source=str(path))


def as_device(device: str | Path | DeviceSpec) -> DeviceSpec:
    """A device given by name, file or as a loaded spec (what every API call accepts)."""
    return device if isinstance(device, DeviceSpec) else load_device(device)


def list_devices() -> list[DeviceSpec]:
    return [load_device(name) for name in list_named_files("devices")]
