"""report.json: one record per run, one entry per variant. Every latency says whether it was measured."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from edgeflow.accuracy import AccuracyStats
from edgeflow.compress.summary import QuantizationSummary
from edgeflow.exporter import ParityStats
from edgeflow.latency import LatencyEstimate
from edgeflow.profiling import LatencyStats, MemoryStats
from edgeflow.train import TrainStats

SCHEMA_VERSION = 2  # 2: latency_ms may be None, with an estimate instead


class ModelRecord(BaseModel):
    name: str
    source: str  # "registry", "checkpoint" or "onnx"
    arch: str | None
    width: float
    resolution: int
    num_classes: int
    trained_here: bool


class VariantRecord(BaseModel):
    """One artifact built, timed and evaluated on the device."""

    name: str
    backend: str
    precision: str  # of the artifact's weights and activations: fp32, int8
    execution_precision: str  # what the runtime actually executed float layers in (f32, bf16, ...)
    artifact: str  # path relative to the report folder
    lineage: list[str]
    accuracy: AccuracyStats  # on the test split: the reported figure
    holdout_top1: float  # on the holdout split: what the recommendation is chosen on
    latency_ms: LatencyStats | None = Field(description="timed on the device's runtime; None when estimated")
    estimate: LatencyEstimate | None = Field(default=None, description="predicted latency when not measured")
    measured: bool = Field(description="true when the latency was timed on the device's runtime")
    latency_source: str = ""  # where it was timed, or why it is estimated
    memory: MemoryStats | None
    size_bytes: int
    params: int
    macs: int
    runtime_settings: dict[str, Any]
    runtime_version: str
    agreement: ParityStats | None = None  # against the float (fp32) artifact, on the same test images
    quantization: QuantizationSummary | None = None
    speedup_vs_baseline: float | None = None  # p50 of the first variant / this p50 (both measured or both estimated)
    recommended: bool = False

    def p50(self) -> float:
        """The measured p50, or the estimate where nothing was measured (never a mix of the two)."""
        if self.latency_ms is not None:
            return self.latency_ms.p50
        assert self.estimate is not None, "a variant has a measured latency or an estimate"
        return self.estimate.ms


class Report(BaseModel):
    schema_version: int = SCHEMA_VERSION
    created: str
    model: ModelRecord
    device: dict[str, Any]
    data: dict[str, Any]
    recipe: dict[str, Any]
    environment: dict[str, Any]
    training: TrainStats | None
    parity: list[ParityStats]
    variants: list[VariantRecord]
    notes: list[str] = []
    search: dict | None = None  # the NetAdapt step, when the recipe has one (iterations, budget, stop reason)
    max_accuracy_drop: float = 0.01  # the budget used to recommend a variant (fraction of top-1)
    seconds: float
