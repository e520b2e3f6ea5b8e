"""OpenVINO's ``benchmark_app``: its statistics report parsed (the last step of a run, ``[Step 11/11]``).

The report reads, in the Python and C++ tools alike::

    [ INFO ] Count:            183924 iterations
    [ INFO ] Duration:         15000.75 ms
    [ INFO ] Latency:
    [ INFO ]    Median:        0.92 ms
    [ INFO ]    Average:       0.94 ms
    [ INFO ]    Min:           0.64 ms
    [ INFO ]    Max:           3.03 ms
    [ INFO ] Throughput:   12260.99 FPS

Newer releases (2026.4 does, 2023.0 does not) print the latencies in "us" where the average is under 1 ms. With
dynamic shapes, per-group latencies follow under "Latency for each data shape group:"; only the overall block is
read.
"""

from __future__ import annotations

import re
from decimal import Decimal

from pydantic import BaseModel

from edgeflow.errors import DeviceError

_PREFIX = r"^\[\s*INFO\s*\]\s*"
_COUNT = re.compile(_PREFIX + r"Count:\s*(\d+) iterations", re.MULTILINE)
_DURATION = re.compile(_PREFIX + r"Duration:\s*([0-9.]+) ms", re.MULTILINE)
_THROUGHPUT = re.compile(_PREFIX + r"Throughput:\s*([0-9.]+) FPS", re.MULTILINE)
_LATENCY = re.compile(
    _PREFIX + r"Latency:\s*\n"
    + "".join(rf"{_PREFIX}{name}:\s*(?P<{name.lower()}>[0-9.]+) (?P<{name.lower()}_unit>ms|us)\s*\n"
              for name in ("Median", "Average", "Min", "Max")),
    re.MULTILINE,
)  # fmt: skip
_FIRST = re.compile(_PREFIX + r"First inference took ([0-9.]+) ms", re.MULTILINE)
_BUILD = re.compile(_PREFIX + r"Build \.+ (\S+)", re.MULTILINE)
_DEVICES = re.compile(_PREFIX + r"Execution Devices:\s*(.+)$", re.MULTILINE)


class BenchmarkAppStats(BaseModel):
    """benchmark_app's statistics report (times in ms), with the OpenVINO build and devices it names."""

    count: int
    duration_ms: float
    median_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    throughput_fps: float
    first_inference_ms: float | None = None
    openvino_build: str | None = None
    execution_devices: list[str] = []


def _ms(match: re.Match[str], name: str) -> float:
    """A latency of the report in ms: newer benchmark_apps print "us" where the average is under 1 ms."""
    value = Decimal(match[name])
    return float(value / 1000 if match[f"{name}_unit"] == "us" else value)


def parse_benchmark_app(text: str, *, device: str = "benchmark_app") -> BenchmarkAppStats:
    """The statistics report of a benchmark_app run; raises DeviceError when the output has none."""
    text = text.replace("\r\n", "\n")
    count, duration, throughput = _COUNT.search(text), _DURATION.search(text), _THROUGHPUT.search(text)
    latency = _LATENCY.search(text)
    if count is None or duration is None or throughput is None or latency is None:
        lines = text.strip().splitlines()
        why = next((line for line in lines if "ERROR" in line), None) or (lines or ["no output"])[-1]
        raise DeviceError(device, "read benchmark_app's output", f"no statistics report: {why.strip()[:300]}")
    first, build, devices = _FIRST.search(text), _BUILD.search(text), _DEVICES.search(text)
    return BenchmarkAppStats(
        count=int(count.group(1)), duration_ms=float(duration.group(1)), median_ms=_ms(latency, "median"),
        mean_ms=_ms(latency, "average"), min_ms=_ms(latency, "min"), max_ms=_ms(latency, "max"),
        throughput_fps=float(throughput.group(1)), first_inference_ms=float(first.group(1)) if first else None,
        openvino_build=build.group(1) if build else None,
        execution_devices=re.findall(r"[\w.:-]+", devices.group(1)) if devices else [],
    )  # fmt: skip
