"""Latency oracles for the search: measure the whole candidate on the device, or look its blocks up.

* :class:`MeasuredOracle` exports the candidate, compiles it with the device's runtime and times it.
* :class:`LookupTable` times each block configuration once (per device, runtime, version and execution
  precision), keeps the table on disk, and estimates a network as the sum of its blocks, scaled by a
  factor fitted on the starting model (the per-call overhead each block timing carries, and fusion
  across block borders, are what the factor absorbs).

Both count how many timings they made and how long those took, for the search report.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from edgeflow.artifact import Artifact
from edgeflow.backends import get_backend
from edgeflow.device import DeviceSpec, RuntimeSettings
from edgeflow.errors import ConfigError
from edgeflow.exporter import export_onnx
from edgeflow.io import write_json
from edgeflow.netadapt.units import split_units
from edgeflow.recipe import ProfileConfig

TABLE_VERSION = 1


@dataclass
class OracleCost:
    """How many timings an oracle made and the wall-clock seconds they cost (export, compile, timing)."""

    measurements: int = 0
    seconds: float = 0.0

    def add(self, seconds: float) -> None:
        self.measurements += 1
        self.seconds += seconds


@dataclass
class Timer:
    """Exports a torch module, compiles it with the device's runtime and returns its p50 in ms."""

    device: DeviceSpec
    backend: str
    settings: RuntimeSettings
    profile: ProfileConfig
    workdir: Path
    cost: OracleCost = field(default_factory=OracleCost)

    def time_module(self, module: nn.Module, input_shape: tuple[int, ...]) -> float:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=self.workdir, prefix=".timing-") as folder:
            artifact = export_onnx(module, input_shape=input_shape, path=Path(folder) / "candidate.onnx")
            runtime = get_backend(self.backend)
            compiled = runtime.compile(
                Artifact(format="onnx", path=artifact.path, input_shape=input_shape), settings=self.settings
            )
            latency = runtime.profile(compiled, config=self.profile).p50
        self.cost.add(time.perf_counter() - started)
        return latency

    def context(self) -> str:
        """What a lookup table's figures depend on: device, runtime and version, precision, threads."""
        threads = self.settings.threads or "default"
        return (
            f"{self.device.name}|{self.backend}|{get_backend(self.backend).version()}|"
            f"{self.settings.execution_precision}|threads={threads}|hint={self.settings.performance_hint}"
        )


class MeasuredOracle:
    """Times the whole candidate on the device: exact up to run-to-run noise, and the slowest oracle."""

    name = "measured"
    measured = True

    def __init__(self, timer: Timer) -> None:
        self.timer = timer

    @property
    def cost(self) -> OracleCost:
        return self.timer.cost

    def latency(self, model: nn.Module, input_shape: tuple[int, ...]) -> float:
        return self.timer.time_module(model, input_shape)


class LookupTable:
    """Per-block latencies measured on the device, cached in a JSON file, summed into a model estimate."""

    name = "lookup-table"
    measured = False

    def __init__(self, timer: Timer, path: Path) -> None:
        self.timer = timer
        self.path = Path(path)
        self.context = timer.context()
        self.entries: dict[str, dict] = {}
        self.fits: dict[str, float] = {}
        self.overhead_ms: float | None = None
        self.scale = 1.0
        if self.path.exists():
            self._load()

    @property
    def cost(self) -> OracleCost:
        return self.timer.cost

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"latency table {self.path} is unreadable ({exc}); delete it to measure again") from None
        if data.get("version") != TABLE_VERSION or data.get("context") != self.context:
            raise ConfigError(
                f"latency table {self.path} was measured for {data.get('context')!r}, not {self.context!r}"
            )
        self.entries = data["entries"]
        self.fits = data.get("fits", {})
        self.overhead_ms = data.get("overhead_ms")

    def save(self) -> None:
        data = {
            "version": TABLE_VERSION,
            "context": self.context,
            "overhead_ms": self.overhead_ms,
            "entries": self.entries,
            "fits": self.fits,
        }
        write_json(self.path, data)

    def overhead(self) -> float:
        """What one inference call costs with (almost) nothing to compute: every block timed alone pays it
        once, the whole model pays it once, so it is taken off each block and added back once."""
        if self.overhead_ms is None:
            self.overhead_ms = self.timer.time_module(_NearlyEmpty(), (1, 1, 1, 1))
            self.save()
        return self.overhead_ms

    def block_latency(self, unit) -> float:
        entry = self.entries.get(unit.key)
        if entry is None:
            ms = self.timer.time_module(unit.module, unit.input_shape)
            entry = {"ms": ms, "unit": unit.name, "input_shape": list(unit.input_shape)}
            self.entries[unit.key] = entry
            self.save()
        return entry["ms"]

    def raw(self, model: nn.Module, input_shape: tuple[int, ...]) -> float:
        """The sum of the model's block latencies less the per-call overhead, before the fitted scale."""
        overhead = self.overhead()
        return sum(max(0.0, self.block_latency(unit) - overhead) for unit in split_units(model, input_shape))

    def fit(self, model: nn.Module, input_shape: tuple[int, ...], measure: Callable[[], float]) -> None:
        """Fit the scale so the estimate of ``model`` equals its latency measured whole by ``measure()``.

        The fit is kept in the table with the blocks, so every search from the same model on the same
        device uses the same table and scale, and makes the same choices.
        """
        key = hashlib.sha256("|".join(u.key for u in split_units(model, input_shape)).encode()).hexdigest()[:20]
        if key not in self.fits:
            self.fits[key] = (measure() - self.overhead()) / self.raw(model, input_shape)
            self.save()
        self.scale = self.fits[key]

    def latency(self, model: nn.Module, input_shape: tuple[int, ...]) -> float:
        return self.overhead() + self.scale * self.raw(model, input_shape)


class _NearlyEmpty(nn.Module):
    """A graph a runtime cannot optimize away, with one element in and out: the cost of a call."""

    def forward(self, x):
        return x * 2.0 + 1.0


def default_table_path(cache: Path, timer: Timer, input_shape: tuple[int, ...]) -> Path:
    """One table file per device, runtime, version, precision, threads (and input size, for tidiness)."""
    digest = hashlib.sha256(timer.context().encode()).hexdigest()[:12]
    side = "x".join(str(side) for side in input_shape[1:])
    return Path(cache) / f"{timer.device.name}-{timer.backend}-{side}-{digest}.json"


def cache_folder() -> Path:
    """Where latency tables live: $EDGEFLOW_CACHE, else ~/.cache/edgeflow."""
    import os

    return Path(os.environ.get("EDGEFLOW_CACHE", Path.home() / ".cache" / "edgeflow")) / "latency-tables"
