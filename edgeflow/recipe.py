"""Recipes: the validated YAML that says what `edgeflow optimize` does, step by step."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edgeflow.config import StrictModel, find_named_file, list_named_files, parse_spec, read_yaml


class ModelConfig(StrictModel):
    """How the network is scaled before anything else (MobileNet width and resolution multipliers)."""

    width: float = Field(default=1.0, gt=0, le=4, description="width multiplier alpha")
    resolution: int | None = Field(default=None, ge=8, le=2048, description="input side; None = model default")
    resolution_multiplier: float | None = Field(
        default=None, gt=0, le=4, description="rho: input side = model default x rho (instead of resolution)"
    )

    @model_validator(mode="after")
    def _one_way_to_set_resolution(self) -> ModelConfig:
        if self.resolution is not None and self.resolution_multiplier is not None:
            raise ValueError("give resolution or resolution_multiplier, not both")
        return self

    def input_side(self, default_resolution: int) -> int | None:
        """The input side in pixels; ``None`` = the model's own (or a file's fixed) size."""
        if self.resolution_multiplier is not None:
            return max(1, round(default_resolution * self.resolution_multiplier))
        return self.resolution


class TrainConfig(StrictModel):
    """Training of a model without weights, and fine-tuning."""

    epochs: int = Field(default=10, ge=0)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    max_steps: int | None = Field(default=None, ge=1, description="stop early after this many steps")


class ExportConfig(StrictModel):
    opset: int = Field(default=17, ge=11, le=21)
    parity_samples: int = Field(default=32, ge=1, description="test images compared between torch and ONNX")


class QuantizeConfig(StrictModel):
    """NNCF post-training quantization of the OpenVINO artifact."""

    method: Literal["nncf-ptq"] = "nncf-ptq"
    subset_size: int = Field(default=300, ge=1, description="calibration images from the train split")
    preset: Literal["performance", "mixed"] = "performance"
    fast_bias_correction: bool = True


class VariantSpec(StrictModel):
    """One artifact to build, time and evaluate."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    backend: Literal["openvino", "onnxruntime", "torch"]
    precision: Literal["fp32", "int8"] = "fp32"
    execution_precision: Literal["default", "f32", "bf16", "f16"] | None = Field(
        default=None, description="override the device's OpenVINO execution precision for this variant"
    )
    quantize: QuantizeConfig | None = None

    @model_validator(mode="after")
    def _int8_needs_openvino(self) -> VariantSpec:
        if self.precision == "int8" and self.backend != "openvino":
            raise ValueError("int8 variants are built with NNCF for the openvino backend only (for now)")
        if self.execution_precision is not None and self.backend != "openvino":
            raise ValueError("execution_precision applies to the openvino backend only")
        if self.precision == "int8" and self.quantize is None:
            self.quantize = QuantizeConfig()
        return self


class ProfileConfig(StrictModel):
    """The timing loop: warm-up, then iterations bounded by count and by time."""

    warmup: int = Field(default=10, ge=0)
    iterations: int = Field(default=200, ge=1, description="stop after this many timed runs ...")
    max_seconds: float = Field(default=10.0, gt=0, description="... or after this many seconds")
    min_iterations: int = Field(default=10, ge=1, description="time at least this many runs")


class EvaluateConfig(StrictModel):
    max_samples: int | None = Field(default=None, ge=1, description="evaluate on the first N test images")


class Recipe(StrictModel):
    """A whole pipeline: scale, train, export, quantize, profile, evaluate, report."""

    name: str
    description: str = ""
    data: str = "digits"
    seed: int = 0
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    export: ExportConfig = ExportConfig()
    variants: list[VariantSpec] = Field(min_length=1)
    profile: ProfileConfig = ProfileConfig()
    evaluate: EvaluateConfig = EvaluateConfig()

    @model_validator(mode="after")
    def _unique_variant_names(self) -> Recipe:
        names = [variant.name for variant in self.variants]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate variant names: {', '.join(duplicates)}")
        return self


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Load a built-in recipe by name (``default``) or a recipe YAML file by path."""
    path = find_named_file(str(name_or_path), folder="recipes", kind="recipe")
    return parse_spec(Recipe, read_yaml(path), source=str(path))


def list_recipes() -> list[Recipe]:
    return [load_recipe(name) for name in list_named_files("recipes")]
