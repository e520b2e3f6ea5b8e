"""The device lookup table: block latencies measured on the device once, summed into a model estimate.

:class:`LookupTable` times each block configuration once (per device, runtime, version and execution
  precision), keeps the table on disk, and estimates a network as
  ``intercept + compute_scale x (sum of its blocks) + per_block x (number of blocks)``. Where the
  runtime has a per-layer profiler (OpenVINO, ONNX Runtime) a block's entry is its *compute time*:
  its layers less the layout conversions the runtime adds at a lone block's borders, which a fused
  whole model does not pay. Timed plainly, a 64x64x16 block's output conversion alone cost 5x its
  convolutions, and pruning the stem was predicted to save 15% where it saved nothing. The three
  figures are fitted by least squares on calibration models derived from the starting model (itself,
  uniformly thinner copies, copies with residual blocks removed), timed whole in turn on the device.
  One scale fitted on the starting model alone was 10-15% optimistic for thinner or shallower models:
  a runtime's per-layer costs do not shrink with the channels, and fusion across block borders is
  not in any block's own timing. Every entry is timed in turn with a fixed reference workload and
  kept at the host's speed when the table was begun, because a shared host drifts by tens of percent
  over the minutes a table takes to fill (entries timed plainly were off by up to 20% between them).

Both count how many timings they made and how long those took, for the search report.

The table is what the NetAdapt search estimates candidates with (``edgeflow.netadapt`` imports it from
here, never the reverse) and what ``optimize`` estimates a device with when it is not attached
(:mod:`edgeflow.targets.calibration`).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import BaseModel
from torch import nn

from edgeflow.backends import Compiled
from edgeflow.errors import ConfigError
from edgeflow.io import write_json
from edgeflow.latency.timer import Timer, TimerStats
from edgeflow.latency.units import split_units
from edgeflow.profiling.loop import time_inference

TABLE_VERSION = 4


class CalibrationPoint(BaseModel):
    name: str
    blocks_ms: float  # sum of the model's block timings (less the per-call overhead)
    blocks: int
    measured_ms: float  # median over rounds, timed in turn with the other calibration models
    estimate_ms: float  # what the fit gives for it


class TableFit(BaseModel):
    """How block timings add up to a whole model on this device (fitted once per starting model)."""

    intercept_ms: float
    compute_scale: float
    per_block_ms: float
    calibration: list[CalibrationPoint]

    def estimate(self, blocks_ms: float, blocks: int) -> float:
        return self.intercept_ms + self.compute_scale * blocks_ms + self.per_block_ms * blocks


class LookupTable:
    """Per-block latencies measured on the device, cached in a JSON file, summed into a model estimate."""

    name = "lookup-table"
    measured = False

    def __init__(self, timer: Timer, path: Path) -> None:
        self.timer = timer
        self.path = Path(path)
        self.context = timer.context()
        self.entries: dict[str, dict] = {}
        self.fits: dict[str, dict] = {}
        self.overhead_ms: float | None = None
        self.reference_ms: float | None = None  # the reference workload when the table was begun
        self.fitted: TableFit | None = None
        self._reference: Compiled | None = None
        if self.path.exists():
            self._load()

    @property
    def cost(self) -> TimerStats:
        return self.timer.cost

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"latency table {self.path} is unreadable ({exc}); delete it to measure again") from None
        if data.get("version") != TABLE_VERSION:
            return  # a table of an older layout is a cache: measured again and overwritten
        if data.get("context") != self.context:
            raise ConfigError(
                f"latency table {self.path} was measured for {data.get('context')!r}, not {self.context!r}"
            )
        self.entries = data["entries"]
        self.fits = data.get("fits", {})
        self.overhead_ms = data.get("overhead_ms")
        self.reference_ms = data.get("reference_ms")

    def save(self) -> None:
        data = {
            "version": TABLE_VERSION,
            "context": self.context,
            "overhead_ms": self.overhead_ms,
            "reference_ms": self.reference_ms,
            "entries": self.entries,
            "fits": self.fits,
        }
        write_json(self.path, data)

    def in_table_units(self, modules: dict[str, nn.Module | Compiled], input_shape, *, rounds: int, profile=None):
        """Time ``modules`` in turn with the reference workload; their latencies (ms) at the host's speed
        when the table was begun: measured x (reference then / reference now).

        A shared host's speed drifts by tens of percent over minutes; entries timed minutes apart are
        only comparable through a reference timed beside each of them.
        """
        medians, to_table = self.time_with_reference(modules, input_shape, rounds=rounds, profile=profile)
        return {name: ms * to_table for name, ms in medians.items()}

    def time_with_reference(
        self, modules: dict[str, nn.Module | Compiled], input_shape, *, rounds: int, profile=None
    ) -> tuple[dict[str, float], float]:
        """``modules`` timed in turn with the reference workload: their medians (ms, at the host's speed
        now) and the factor that brings a figure of now to the table's units."""
        medians = self.timer.time_in_turn(
            {**modules, _REFERENCE_NAME: self._reference_workload()}, input_shape, rounds=rounds, profile=profile
        )
        return medians, self._to_table_units(medians.pop(_REFERENCE_NAME))

    def _reference_workload(self) -> Compiled:
        if self._reference is None:
            self._reference = self.timer.compile_module(_Reference(), _REFERENCE_SHAPE)
        return self._reference

    def _to_table_units(self, reference_now_ms: float) -> float:
        """The factor from the host's speed now (the reference workload timed now) to its speed when the
        table was begun (the first such timing)."""
        if self.reference_ms is None:
            self.reference_ms = reference_now_ms
        return self.reference_ms / reference_now_ms

    def _entry_ms(self, module: nn.Module, input_shape: tuple[int, ...]) -> float:
        quick = self.timer.profile.model_copy(update={"max_seconds": min(self.timer.profile.max_seconds, 0.2)})
        if not self.timer.layer_profiles:
            return self.in_table_units({"block": module}, input_shape, rounds=ENTRY_ROUNDS, profile=quick)["block"]
        return self._compute_in_table_units(module, input_shape, profile=quick)

    def _compute_in_table_units(self, module: nn.Module, input_shape: tuple[int, ...], *, profile) -> float:
        """The block's compute time (the runtime's per-layer profile less layout conversions), profiled in
        turn with the reference workload and brought to the host's speed when the table was begun."""
        started = time.perf_counter()
        compiled = self.timer.compile_module(module, input_shape, layer_profile=True)
        reference = self._reference_workload()
        references, computes = [], []
        for _ in range(ENTRY_ROUNDS):
            references.append(time_inference(reference, config=profile).p50)
            computes.append(compiled.layer_profile(inferences=ENTRY_INFERENCES).compute_ms)
        self.timer.cost.add(time.perf_counter() - started)
        return statistics.median(computes) * self._to_table_units(statistics.median(references))

    def overhead(self) -> float:
        """What one inference call costs with (almost) nothing to compute: every block timed alone pays it
        once, the whole model pays it once, so it is taken off each block and added back once. Compute
        times from a per-layer profile hold no such cost: 0."""
        if self.timer.layer_profiles:
            return 0.0
        if self.overhead_ms is None:
            self.overhead_ms = self._entry_ms(_NearlyEmpty(), (1, 1, 1, 1))
            self.save()
        return self.overhead_ms

    def block_latency(self, unit) -> float:
        entry = self.entries.get(unit.key)
        if entry is None:
            ms = self._entry_ms(unit.module, unit.input_shape)
            entry = {"ms": ms, "unit": unit.name, "input_shape": list(unit.input_shape)}
            self.entries[unit.key] = entry
            self.save()
        return entry["ms"]

    def features(self, model: nn.Module, input_shape: tuple[int, ...]) -> tuple[float, int]:
        """What the fit takes: (sum of block latencies less the per-call overhead, number of blocks).
        The model is split into blocks once (a traced forward pass), for both."""
        overhead = self.overhead()
        units = split_units(model, input_shape)
        return sum(max(0.0, self.block_latency(unit) - overhead) for unit in units), len(units)

    def fit(
        self,
        model: nn.Module,
        input_shape: tuple[int, ...],
        *,
        calibration: Callable[[], dict[str, nn.Module]],
        rounds: int = 5,
    ) -> TableFit:
        """Fit how blocks add up, on calibration models derived from ``model`` (``calibration()`` builds
        them: the search derives thinner and shallower copies) timed whole in turn.

        The fit is kept in the table with the blocks, so every search from the same model on the same
        device uses the same figures, and makes the same choices.
        """
        key = hashlib.sha256("|".join(u.key for u in split_units(model, input_shape)).encode()).hexdigest()[:20]
        if key not in self.fits:
            models = calibration()
            measured = self.in_table_units(models, input_shape, rounds=rounds)
            features = {name: self.features(candidate, input_shape) for name, candidate in models.items()}
            fitted = least_squares(features, measured)
            self.fits[key] = fitted.model_dump()
            self.save()
        self.fitted = TableFit.model_validate(self.fits[key])
        return self.fitted

    def latency(self, model: nn.Module, input_shape: tuple[int, ...]) -> float:
        if self.fitted is None:
            raise RuntimeError("fit the lookup table on the starting model before estimating")
        return self.fitted.estimate(*self.features(model, input_shape))


def least_squares(features: dict[str, tuple[float, int]], measured: dict[str, float]) -> TableFit:
    """``measured = intercept + compute_scale x blocks_ms + per_block x blocks`` by least squares; without
    depth changes among the models (no removable blocks) the per-block term is left out."""
    import numpy as np

    names = list(features)
    depths = {features[name][1] for name in names}
    columns = [[1.0, features[name][0]] + ([float(features[name][1])] if len(depths) > 1 else []) for name in names]
    coefficients = np.linalg.lstsq(np.array(columns), np.array([measured[name] for name in names]), rcond=None)[0]
    intercept, scale = float(coefficients[0]), float(coefficients[1])
    per_block = float(coefficients[2]) if len(depths) > 1 else 0.0
    fitted = TableFit(intercept_ms=intercept, compute_scale=scale, per_block_ms=per_block, calibration=[])
    fitted.calibration = [
        CalibrationPoint(
            name=name,
            blocks_ms=features[name][0],
            blocks=features[name][1],
            measured_ms=measured[name],
            estimate_ms=fitted.estimate(*features[name]),
        )  # fmt: skip
        for name in names
    ]
    return fitted


class _Reference(nn.Sequential):
    """A fixed inverted-residual workload timed beside every entry: the yardstick for the host's speed."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        super().__init__(
            nn.Conv2d(16, 64, 1), nn.BatchNorm2d(64), nn.Hardswish(),
            nn.Conv2d(64, 64, 3, padding=1, groups=64), nn.BatchNorm2d(64), nn.Hardswish(),
            nn.Conv2d(64, 16, 1), nn.BatchNorm2d(16),
        )  # fmt: skip
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
        self.eval()


_REFERENCE_NAME = "__reference__"
_REFERENCE_SHAPE = (1, 16, 32, 32)
ENTRY_ROUNDS = 3
ENTRY_INFERENCES = 60  # per round, for a block's per-layer profile


class _NearlyEmpty(nn.Module):
    """A graph a runtime cannot optimize away, with one element in and out: the cost of a call."""

    def forward(self, x):
        return x * 2.0 + 1.0


def default_table_path(cache: Path, timer: Timer, input_shape: tuple[int, ...]) -> Path:
    """One table file per device, runtime, version, precision of the files and of execution, quantization
    method, threads (and input size, for tidiness)."""
    digest = hashlib.sha256(timer.context().encode()).hexdigest()[:12]
    side = "x".join(str(side) for side in input_shape[1:])
    return Path(cache) / f"{timer.device.name}-{timer.backend}-{timer.precision}-{side}-{digest}.json"


def cache_folder() -> Path:
    """Where latency tables live: $EDGEFLOW_CACHE, else ~/.cache/edgeflow."""

    return Path(os.environ.get("EDGEFLOW_CACHE", Path.home() / ".cache" / "edgeflow")) / "latency-tables"
