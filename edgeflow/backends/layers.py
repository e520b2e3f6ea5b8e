"""Per-layer timings from a runtime's own profiler (OpenVINO's PERF_COUNT, ONNX Runtime's session profiling).

Used where whole-model timing hides what matters:

* the lookup table times blocks alone, and a block alone pays layout conversions at its borders that a
  fused whole model does not (on OpenVINO with AMX, a 64x64x16 block's output conversion back to f32
  NCHW took 147 us against 26 us for its two convolutions). Its *compute time*, the layers less the
  conversions, is what adds up across a network;
* reports list the slowest layers of a model.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

# Layout and precision conversions the runtime inserts (at a graph's borders mostly).
LAYOUT_TYPES = frozenset({"Reorder", "ReorderInput", "ReorderOutput", "Convert"})


@dataclass(frozen=True)
class LayerStats:
    """One executed layer: its name in the runtime's graph, its type, the kernel used and its median time."""

    name: str
    type: str
    kernel: str
    ms: float

    @property
    def layout(self) -> bool:
        return self.type in LAYOUT_TYPES


@dataclass(frozen=True)
class LayerProfileStats:
    """Medians over ``inferences`` timed inferences, per layer and for the per-inference sums."""

    layers: list[LayerStats]
    compute_ms: float  # median over inferences of the time in layers other than layout conversions
    layout_ms: float  # median over inferences of the time in layout conversions
    inferences: int

    def slowest(self, count: int = 10) -> list[LayerStats]:
        return sorted(self.layers, key=lambda layer: -layer.ms)[:count]


def summarize(runs: list[list[tuple[str, str, str, float]]]) -> LayerProfileStats:
    """A profile from the layers of each inference: ``runs[i]`` lists (name, type, kernel, ms) of run i."""
    if not runs:
        raise ValueError("no inference was profiled")
    per_layer: dict[tuple[str, str, str], list[float]] = {}
    for run in runs:
        for name, kind, kernel, ms in run:
            per_layer.setdefault((name, kind, kernel), []).append(ms)
    layers = [LayerStats(*key, statistics.median(times)) for key, times in per_layer.items()]
    compute = [sum(ms for _, kind, _, ms in run if kind not in LAYOUT_TYPES) for run in runs]
    layout = [sum(ms for _, kind, _, ms in run if kind in LAYOUT_TYPES) for run in runs]
    return LayerProfileStats(
        layers=layers, compute_ms=statistics.median(compute), layout_ms=statistics.median(layout), inferences=len(runs)
    )


__all__ = ["LAYOUT_TYPES", "LayerProfileStats", "LayerStats", "summarize"]
