"""report.json: one record per run, one entry per variant. Every latency says whether it was measured."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from edgeflow.accuracy import AccuracyStats, HostBuildStats, ParityStats
from edgeflow.compress.stats import QuantizationStats
from edgeflow.latency import LatencyEstimate
from edgeflow.profiling.memory import MemoryStats
from edgeflow.profiling.stats import MeasuredStats
from edgeflow.train import TrainStats

if TYPE_CHECKING:
    from edgeflow.artifact import Artifact
    from edgeflow.recipe import VariantSpec
    from edgeflow.targets.run import DeviceStats

SCHEMA_VERSION = 2  # 2: latency_ms may be None, with an estimate instead


class ModelRecord(BaseModel):
    name: str
    source: str  # "registry", "checkpoint" or "onnx"
    arch: str | None
    width: float
    resolution: int
    num_classes: int
    trained_here: bool
    input_shape: list[int] = []  # the shape the model runs at (N x C x H x W, or N x H x W x C)
    outputs: str = "logits"  # or "probabilities": the model ends in a softmax
    weights: str | None = None  # the weights it started from: a checkpoint's file, torchvision's or timm's weights
    new_head: bool = False  # their classifier was replaced for the data's classes (and fine-tuned: training)
    weights_notes: list[str] = []  # how a checkpoint's tensors were found and matched


class VariantRecord(MeasuredStats):
    """One artifact built, timed and evaluated on the device (its latency, precision executed, params and MACs
    are the :class:`MeasuredStats` core)."""

    name: str
    backend: str
    precision: str  # of the artifact's weights and activations: fp32, int8
    artifact: str  # path relative to the report folder
    lineage: list[str]
    accuracy: AccuracyStats  # on the test split: the reported figure
    holdout_top1: float  # on the holdout split: what the recommendation is chosen on
    holdout_samples: int | None = None  # the holdout images it was scored on (None: a report from before)
    estimate: LatencyEstimate | None = Field(default=None, description="predicted latency when not measured")
    latency_source: str = ""  # where it was timed, or why it is estimated
    memory: MemoryStats | None
    size_bytes: int
    runtime_settings: dict[str, Any]
    runtime_version: str
    agreement: ParityStats | None = None  # against the float (fp32) artifact, on the same test images
    quantization: QuantizationStats | None = None
    speedup_vs_baseline: float | None = None  # p50 of the first variant / this p50 (both measured or both estimated)
    recommended: bool = False
    host_build: HostBuildStats | None = None  # the device computed the accuracy: the same file on this host

    @classmethod
    def from_measurement(
        cls,
        variant: VariantSpec,
        measured: DeviceStats,
        *,
        artifact: Artifact,
        folder: Path,
        agreement: ParityStats | None,
        quantization: QuantizationStats | None,
    ) -> VariantRecord:
        """The record of ``variant``'s ``artifact`` (in ``folder``) as timed and evaluated on the device."""
        return cls(
            name=variant.name,
            backend=variant.backend,
            precision=variant.precision,
            execution_precision=measured.execution_precision,
            artifact=str(artifact.path.relative_to(folder)) if artifact.path else "",
            lineage=artifact.lineage,
            accuracy=measured.test,
            holdout_top1=measured.holdout.top1,
            holdout_samples=measured.holdout.samples,
            agreement=agreement,
            latency_ms=measured.latency_ms,
            estimate=measured.estimate,
            measured=measured.measured,
            emulated=measured.emulated,
            host_build=measured.host_build,
            latency_source=measured.why,
            memory=measured.memory,
            size_bytes=measured.size_bytes,
            params=measured.params,
            macs=measured.macs,
            runtime_settings=measured.runtime_settings,
            runtime_version=measured.runtime_version,
            quantization=quantization,
        )

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
