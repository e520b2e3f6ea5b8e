"""What a run ran on: library versions and the CPU, recorded in every report."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path

_PACKAGES = ("edgeflow", "torch", "torchvision", "onnx", "onnxruntime", "openvino", "nncf", "numpy")


def cpu_description() -> dict[str, object]:
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = sorted(
        flag
        for flag in flags
        if flag in {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni"}
    )
    return {"name": name, "logical_cores": usable_cores(), "isa": isa}


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the OS has one): a runtime's one thread per core."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def host_int8_saturates() -> bool:
    """Whether this is an x86 CPU whose int8 dot products saturate (AVX2 without VNNI: uint8 x int8 pairs are
    summed into int16), where ONNX Runtime advises 7-bit weights (reduce_range)."""
    import platform

    if platform.machine().lower() not in {"x86_64", "amd64", "i686", "x86"}:
        return False
    return not ({"avx512_vnni", "avx_vnni", "amx_int8"} & set(cpu_description()["isa"]))


def host_has_bf16() -> bool:
    """Whether this CPU executes bf16 natively (OpenVINO's bf16 needs AVX512-BF16 or AMX)."""
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_description()["isa"]))


def environment() -> dict[str, object]:
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_description(),
        "gpu": gpu_name(),
        "threads": _threads(),
        "versions": versions,
    }


def gpu_name() -> str | None:
    """The first CUDA GPU's name, or None (never initialises CUDA where torch has none)."""
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # a broken driver is not this report's business
        return None


def _threads() -> dict[str, object]:
    import torch

    variables = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    return {"torch": torch.get_num_threads(), **{name: os.environ[name] for name in variables if name in os.environ}}
