"""The nightly recipe (``kind: nightly``): the matrix of models, devices and precisions, the pipeline each
cell runs, and how regressions are judged."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edgeflow.backends.base import RuntimeSettings
from edgeflow.config import StrictModel, find_named_file, parse_spec, read_yaml
from edgeflow.errors import ConfigError
from edgeflow.profiling.loop import ProfileConfig
from edgeflow.recipe import EvaluateConfig, ExportConfig, ModelConfig, QuantizeConfig, TrainConfig


class PipelineConfig(StrictModel):
    """What every cell runs: train once per model (cached across nights), export, quantize, time, evaluate."""

    data: str = "digits"
    seed: int = 0
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    export: ExportConfig = ExportConfig()
    quantize: QuantizeConfig | None = Field(default=None, description="int8 cells; None = the backend's default")
    profile: ProfileConfig = ProfileConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    runtime: RuntimeSettings | None = Field(
        default=None, description="runtime settings for every device (threads, ...); None = each device's own"
    )
    layer_inferences: int = Field(default=20, ge=0, description="inferences profiled per layer; 0 = no layer profile")


class MatrixConfig(StrictModel):
    models: list[str] = Field(min_length=1, description="registry names or checkpoint/ONNX files")
    devices: list[str] = Field(default=["cpu"], min_length=1)
    precisions: list[Literal["fp32", "fp16", "int8"]] = Field(default=["fp32", "int8"], min_length=1)
    backend: str | None = Field(default=None, description="runtime for every cell; None = each device's first")
    arch: str | None = Field(default=None, description="architecture of checkpoint files in models")

    @field_validator("models", "devices", "precisions")
    @classmethod
    def _no_duplicates(cls, values: list[str]) -> list[str]:
        repeated = sorted({value for value in values if values.count(value) > 1})
        if repeated:
            raise ValueError(f"listed twice: {', '.join(repeated)}")
        return values


class TimingConfig(StrictModel):
    """How a night times its cells for the history: every measured cell in turn, round after round, so the
    host's drift over the night falls on all cells alike and each round is one sample of it."""

    rounds: int = Field(default=5, ge=2, description="rounds; a cell's rounds are the units regressions resample")
    seconds_per_round: float = Field(default=0.6, gt=0, description="timing loop of each cell in each round")
    warmup: int = Field(default=10, ge=0, description="untimed runs before each cell's loop")


class RegressionConfig(StrictModel):
    """A cell regresses when it is worse than its recent history by more than noise and the thresholds."""

    window: int = Field(default=7, ge=1, description="earlier finished nights a cell is compared with")
    min_history: int = Field(
        default=3, ge=1, description="latency is judged once this many nights are in the window (their spread is "
        "the noise between nights)",
    )  # fmt: skip
    latency_threshold: float = Field(default=0.10, gt=0, description="flag a p50 slowdown above this fraction ...")
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="... when the bootstrap interval clears it")
    bootstrap: int = Field(default=2000, ge=200, description="bootstrap resamples")
    rank_test_alpha: float = Field(default=0.01, gt=0, lt=1, description="and the rank test rejects at this level")
    accuracy_drop: float = Field(default=0.01, ge=0, le=1, description="flag a top-1 drop above this (fraction)")
    size_growth: float = Field(default=0.05, ge=0, description="flag artifact growth above this fraction")

    @model_validator(mode="after")
    def _history_fits_the_window(self) -> RegressionConfig:
        if self.min_history > self.window:
            raise ValueError(
                f"min_history ({self.min_history}) exceeds window ({self.window}): latency would never be judged"
            )
        return self


class NightlySpec(StrictModel):
    kind: Literal["nightly"]
    name: str
    description: str = ""
    pipeline: PipelineConfig = PipelineConfig()
    matrix: MatrixConfig
    timing: TimingConfig = TimingConfig()
    regression: RegressionConfig = RegressionConfig()
    slowest_layers: int = Field(default=8, ge=0, description="slowest layers shown per cell")
    trend_nights: int = Field(default=30, ge=2, description="past nights drawn in the trend plots")
    ray: str | None = Field(
        default=None,
        description="run the cells on a Ray cluster: auto or HEAD:PORT (a device farm, edgeflow farm join); "
        "None = one after another in this process",
    )

    def fingerprint(self) -> str:
        """A short hash of everything that decides what a night measures (not where it runs: ``ray``)."""
        text = json.dumps(self.model_dump(mode="json", exclude={"ray"}), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_nightly(name_or_path: str | Path) -> NightlySpec:
    """Load a nightly recipe by name (``nightly``) or path."""
    path = find_named_file(str(name_or_path), folder="recipes", kind="recipe")
    data = read_yaml(path)
    if data.get("kind") != "nightly":
        raise ConfigError(f"{path}: not a nightly recipe (it needs 'kind: nightly' and a 'matrix')")
    return parse_spec(NightlySpec, data, source=str(path))
