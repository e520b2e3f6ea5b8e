"""The ``search:`` section of a recipe: NetAdapt's schedule, oracle, fine-tuning and baselines."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edgeflow.config import StrictModel
from edgeflow.data.augment import AugmentConfig
from edgeflow.profiling.loop import ProfileConfig


class FineTuneConfig(StrictModel):
    """A fixed number of AdamW steps on the train split, then batch-norm statistics recomputed."""

    steps: int = Field(default=20, ge=0)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    bn_batches: int = Field(default=8, ge=1, description="train batches averaged into batch-norm statistics")
    distill: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="weight of knowledge distillation from the starting model (0 = labels only)",
    )
    temperature: float = Field(default=2.0, gt=0, description="distillation temperature")
    augment: AugmentConfig | None = Field(
        default=None, description="random-resized crop and flip while fine-tuning (photos); none by default"
    )
    channels_last: bool = Field(default=False, description="fine-tune in channels-last memory format")


class BaselineConfig(StrictModel):
    """Models fine-tuned with the same steps as the search's final model, timed in turn with it, for the same
    table and plot: multipliers, and Torch-Pruning's uniform magnitude pruning."""

    widths: list[float] = Field(default=[], description="width multipliers alpha (channels kept by L2 norm)")
    resolutions: list[float] = Field(default=[], description="resolution multipliers rho of the input side")
    magnitude: list[float] = Field(
        default=[],
        description="Torch-Pruning's MagnitudePruner (L2 importance): this fraction of every group's channels "
        "removed in one step",
    )

    @model_validator(mode="after")
    def _in_range(self) -> BaselineConfig:
        for value in (*self.widths, *self.resolutions):
            if not 0 < value <= 1:
                raise ValueError(f"multipliers are in (0, 1], got {value}")
        for value in self.magnitude:
            if not 0 < value < 1:
                raise ValueError(f"pruning ratios are in (0, 1), got {value}")
        return self


class SearchConfig(StrictModel):
    """NetAdapt (Yang et al., ECCV 2018) with block removal, against latency measured on the device."""

    latency_budget_ms: float | None = Field(default=None, gt=0, description="stop once latency is at most this")
    latency_ratio: float | None = Field(
        default=None, gt=0, lt=1, description="... or at most this fraction of the starting model's latency"
    )
    oracle: Literal["lookup-table", "measured"] = Field(
        default="lookup-table", description="what proposals are sized with: per-block table or whole-model timing"
    )
    recalibrate: bool = Field(
        default=True,
        description="with the lookup table: scale its figures by the median of measured / table over every "
        "model measured whole on the device so far (the start among them), and judge the budget on them",
    )
    initial_step: float = Field(
        default=0.06, gt=0, lt=1, description="first iteration's latency cut, as a fraction of the start latency"
    )
    step_decay: float = Field(default=0.9, gt=0, le=1, description="each iteration's cut = previous x decay")
    selection: Literal["accuracy", "accuracy-per-latency"] = Field(
        default="accuracy",
        description="keep the proposal with the best holdout accuracy (NetAdapt), or the least accuracy lost "
        "per millisecond saved (the MobileNetV3 rule)",
    )
    channel_divisor: int = Field(default=8, ge=1, description="kept channel counts are multiples of this")
    min_channels: int = Field(default=8, ge=1)
    remove_blocks: bool = Field(default=True, description="also propose removing a residual block whole")
    screen_top_k: int | None = Field(
        default=4,
        ge=1,
        description="short-term fine-tune only the k proposals with the best holdout accuracy right after "
        "pruning (batch-norm recomputed); None = fine-tune every proposal",
    )
    holdout_samples: int | None = Field(
        default=None, ge=1, description="screen proposals on the first N holdout images (fine-tuned ones: all)"
    )
    short_term: FineTuneConfig = FineTuneConfig()
    long_term: FineTuneConfig = FineTuneConfig(steps=400, batch_size=64)
    measure: Literal["proposals", "screened", "chosen"] = Field(
        default="proposals",
        description="which candidates are also timed whole on the device (the table's error is reported on "
        "them): every proposal that reaches the target, the short-term fine-tuned ones, or the chosen one",
    )
    measure_rounds: int = Field(
        default=5,
        ge=1,
        description="a candidate timed whole is timed in turn with the starting model this many "
        "rounds (medians kept), so the table's error is judged without the host's drift between timings",
    )
    compare_rounds: int = Field(
        default=5, ge=1, description="rounds in which the start, adapted and baseline models are timed in turn"
    )
    max_iterations: int = Field(default=40, ge=1)
    profile: ProfileConfig = ProfileConfig(warmup=10, iterations=400, max_seconds=0.6, min_iterations=30)
    baselines: BaselineConfig = BaselineConfig()

    @model_validator(mode="after")
    def _one_budget(self) -> SearchConfig:
        if self.latency_budget_ms is not None and self.latency_ratio is not None:
            raise ValueError("give latency_budget_ms or latency_ratio, not both")
        return self

    def budget(self, start_ms: float) -> float:
        if self.latency_budget_ms is not None:
            return self.latency_budget_ms
        if self.latency_ratio is not None:
            return self.latency_ratio * start_ms
        raise ValueError("the search needs a latency budget: latency_budget_ms or latency_ratio")
