"""Time torch modules on a device's runtime: export to ONNX, compile, time (alone or in turn), and count the
cost of doing so. The lookup table and the search's measured oracle both time through a :class:`Timer`."""

from __future__ import annotations

import tempfile
import time
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Protocol

from torch import nn

from edgeflow.artifact import Artifact
from edgeflow.backends import Compiled, get_backend
from edgeflow.backends.base import RuntimeSettings
from edgeflow.device import DeviceSpec
from edgeflow.export.onnx import export_onnx
from edgeflow.profiling.in_turn import InTurnStats, time_in_turn
from edgeflow.profiling.loop import ProfileConfig, time_inference


@dataclass
class TimerStats:
    """How many timings a timer made, the wall-clock seconds they cost (export, compile, timing), and how many
    were taken while other processes kept the device busy (kept, and counted: ``noisy``)."""

    measurements: int = 0
    seconds: float = 0.0
    noisy: int = 0

    def add(self, seconds: float, *, noisy: bool = False) -> None:
        self.measurements += 1
        self.seconds += seconds
        self.noisy += noisy


class ArtifactBuild(Protocol):
    """How a torch module becomes the file that is timed (:class:`edgeflow.variants.ShippedBuild`: the file a
    recipe variant ships, INT8 included), and what its timings depend on beyond the device and runtime."""

    precision: str
    context: str

    def __call__(self, module: nn.Module, input_shape: tuple[int, ...], *, folder: Path) -> Artifact: ...


@dataclass
class Timer:
    """Builds a torch module's file (the float ONNX, or ``build``'s), compiles it with the device's runtime and
    returns its p50 in ms."""

    device: DeviceSpec
    backend: str
    _: KW_ONLY
    settings: RuntimeSettings
    profile: ProfileConfig
    workdir: Path
    build: ArtifactBuild | None = None
    cost: TimerStats = field(default_factory=TimerStats)

    @property
    def precision(self) -> str:
        """What the timed files hold: fp32 (the float ONNX), or the build's precision."""
        return self.build.precision if self.build is not None else "fp32"

    def compile_module(
        self, module: nn.Module, input_shape: tuple[int, ...], *, layer_profile: bool = False
    ) -> Compiled:
        """Build ``module``'s file (the float ONNX, or ``build``'s) and compile it with the device's runtime (the
        file is read in and removed)."""
        with tempfile.TemporaryDirectory(dir=self.workdir, prefix=".timing-") as folder:
            if self.build is not None:
                artifact = self.build(module, tuple(input_shape), folder=Path(folder))
            else:
                onnx = export_onnx(module, input_shape=input_shape, path=Path(folder) / "candidate.onnx")
                artifact = Artifact(format="onnx", path=onnx.path, input_shape=input_shape)
            return get_backend(self.backend).compile(artifact, settings=self.settings, layer_profile=layer_profile)

    @property
    def layer_profiles(self) -> bool:
        """Whether the device's runtime has a per-layer profiler (block entries are then compute times)."""
        return get_backend(self.backend).supports_layer_profile

    def time_module(self, module: nn.Module, input_shape: tuple[int, ...]) -> float:
        started = time.perf_counter()
        compiled = self.compile_module(module, input_shape)
        latency = time_inference(compiled, config=self.profile)
        self.cost.add(time.perf_counter() - started, noisy=latency.noisy)
        return latency.p50

    def rounds_in_turn(
        self,
        modules: dict[str, nn.Module | Compiled],
        input_shape: tuple[int, ...] | None,
        *,
        rounds: int,
        profile: ProfileConfig | None = None,
    ) -> dict[str, list[float]]:
        """Time ``modules`` (torch modules taking ``input_shape``, or already compiled) one after another,
        round after round; each one's p50 of every round (ms)."""
        return self._in_turn(modules, input_shape, rounds=rounds, profile=profile).rounds_ms

    def time_in_turn(
        self,
        modules: dict[str, nn.Module | Compiled],
        input_shape: tuple[int, ...] | None,
        *,
        rounds: int,
        profile: ProfileConfig | None = None,
    ) -> dict[str, float]:
        """Like :meth:`rounds_in_turn`: the median of each one's p50s (ms)."""
        return self._in_turn(modules, input_shape, rounds=rounds, profile=profile).medians()

    def _in_turn(self, modules, input_shape, *, rounds: int, profile: ProfileConfig | None) -> InTurnStats:
        started = time.perf_counter()
        compiled = {
            name: module if isinstance(module, Compiled) else self.compile_module(module, input_shape)
            for name, module in modules.items()
        }
        timed = time_in_turn(compiled, rounds=rounds, config=profile or self.profile)
        self.cost.add(time.perf_counter() - started, noisy=timed.noisy)
        return timed

    def context(self) -> str:
        """What a lookup table's figures depend on: device, runtime and version, execution precision, threads, and
        what the timed files hold (the build's precision and quantization method)."""
        threads = self.settings.threads or "default"
        built = f"|{self.build.context}" if self.build is not None else ""
        return (
            f"{self.device.name}|{self.backend}|{get_backend(self.backend).version()}|"
            f"{self.settings.execution_precision}|threads={threads}|hint={self.settings.performance_hint}{built}"
        )
