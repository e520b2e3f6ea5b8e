"""Recipes: the validated YAML that says what `edgeflow optimize` does, step by step."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_serializer, model_validator

from edgeflow.backends import BACKENDS, all_backends, get_backend
from edgeflow.backends.base import RuntimeSettings
from edgeflow.compress import AUTO, METHODS, methods_for, settings_keys
from edgeflow.compress.litert_quantize import LiteRTStaticConfig
from edgeflow.compress.nncf_ptq import IgnoredScopeConfig  # noqa: F401 - a recipe's quantize.ignored_scope
from edgeflow.compress.ort_quantize import OrtStaticConfig
from edgeflow.compress.qat import NncfQatConfig, QatConfig  # noqa: F401 - a recipe's quantize.qat
from edgeflow.config import StrictModel, find_named_file, list_named_files, parse_spec, read_yaml
from edgeflow.data.augment import AugmentConfig
from edgeflow.data.preprocess import PreprocessSpec
from edgeflow.errors import ConfigError, UnknownNameError
from edgeflow.profiling.loop import ProfileConfig

# --- The search step's section (edgeflow.netadapt reads it) ---------------------------------------------


class FineTuneConfig(StrictModel):
    """A fixed number of AdamW steps on the train split, then batch-norm statistics recomputed (or, with
    ``batchnorm: frozen``, kept as the model has them and used while training)."""

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
    batchnorm: Literal["recompute", "frozen"] = Field(
        default="recompute",
        description="recompute: batch-norm statistics recomputed over bn_batches train batches after the steps; "
        "frozen: kept as the start has them and used while training, for a start fine-tuned with its statistics "
        "frozen (edgeflow's `finetune: batchnorm: frozen`), whose weights fit statistics the photos do not give",
    )

    @model_serializer(mode="wrap")
    def _default_batchnorm_unsaid(self, handler):
        """``batchnorm`` at its default is left out: a search's fingerprint and the fine-tuning its state records
        stay what they were before the key existed, so those searches resume as they were."""
        data = handler(self)
        if self.batchnorm == "recompute":
            data.pop("batchnorm", None)
        return data


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
    target: str | None = Field(
        default=None,
        description="the recipe variant whose file the search times (every proposal and the budget judged on it: "
        "its backend, its precision, INT8 by its quantization method); default: the first INT8 variant the "
        "device runs, else the first variant it runs",
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
    channel_step: Literal["measured", "divisor"] = Field(
        default="measured",
        description="measured: time a probe at widths from 4 to 12 x channel_divisor as the target builds its file, "
        "and keep channels in the larger step (16, 32) where the kernels run the widths in between slower per "
        "multiply-add (edgeflow.latency.steps); divisor: channel_divisor as it is",
    )
    min_channels: int = Field(default=8, ge=1)
    remove_blocks: bool = Field(default=True, description="also propose removing a residual block whole")
    screen_top_k: int | None = Field(
        default=4,
        ge=1,
        description="short-term fine-tune only the k proposals with the best holdout accuracy right after "
        "pruning (batch-norm recomputed); None = fine-tune every proposal",
    )
    holdout_samples: int | None = Field(
        default=None,
        ge=1,
        description="screen proposals on N holdout images, each class's share (fine-tuned ones: all)",
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


class ModelConfig(StrictModel):
    """How the network is scaled before anything else (MobileNet width and resolution multipliers)."""

    width: float = Field(default=1.0, gt=0, le=4, description="width multiplier alpha")
    resolution: int | None = Field(default=None, ge=8, le=2048, description="input side; None = model default")
    resolution_multiplier: float | None = Field(
        default=None, gt=0, le=4, description="rho: input side = model default x rho (instead of resolution)"
    )
    input_shape: tuple[int, ...] | None = Field(
        default=None, description="the shape to run at, e.g. [1, 3, 48, 192]: an ONNX's dynamic dimensions"
    )
    num_classes: int | None = Field(
        default=None, ge=1, description="outputs of a model built here; default: the data's classes "
        "(for a sparse class map, one more than its largest output)",
    )  # fmt: skip
    weights: str | None = Field(
        default=None, min_length=1, description="pretrained weights of a model named by its architecture: "
        "torchvision's (IMAGENET1K_V2, DEFAULT) or timm's tag (ra_in1k, DEFAULT; or timm:<arch>.<tag> as the "
        "name), read from torchvision's and timm's caches; None = random weights, trained here",
    )  # fmt: skip

    @model_validator(mode="after")
    def _one_way_to_set_resolution(self) -> ModelConfig:
        if self.resolution is not None and self.resolution_multiplier is not None:
            raise ValueError("give resolution or resolution_multiplier, not both")
        if self.input_shape is not None and (len(self.input_shape) != 4 or min(self.input_shape) < 1):
            raise ValueError(f"input_shape must be 4 positive integers, got {list(self.input_shape)}")
        return self

    def input_side(self, default_resolution: int) -> int | None:
        """The input side in pixels; ``None`` = the model's own (or a file's fixed) size."""
        if self.resolution_multiplier is not None:
            return max(1, round(default_resolution * self.resolution_multiplier))
        return self.resolution


class TrainConfig(StrictModel):
    """Training of a model without weights, and fine-tuning. The defaults are the short digits recipe; real
    photos want ``augment``, ``label_smoothing`` and a ``cosine`` schedule with warm-up (the ``imagenette``
    recipe)."""

    epochs: int = Field(default=10, ge=0)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    max_steps: int | None = Field(default=None, ge=1, description="stop early after this many steps")
    minutes: float | None = Field(
        default=None, gt=0, description="a time budget (cosine schedule): after the first epoch, the epochs are "
        "cut to those that fit in it, and the schedule decays over them",
    )  # fmt: skip
    schedule: Literal["onecycle", "cosine"] = Field(
        default="onecycle", description="one-cycle, or linear warm-up then cosine decay to zero"
    )
    warmup_epochs: float = Field(default=0.0, ge=0, description="cosine: epochs of linear warm-up")
    augment: AugmentConfig | None = Field(default=None, description="random-resized crop and flip; none by default")
    channels_last: bool = Field(default=False, description="train in channels-last memory format (faster convs)")
    bf16: bool = Field(default=False, description="autocast to bfloat16 on CPUs with bf16 instructions")


class FinetuneConfig(StrictModel):
    """Fine-tuning pretrained weights (``--weights``, or a checkpoint) on the data's classes, the way transfer
    learning is done: the new head first with the backbone frozen (``head_epochs`` at ``head_lr``), then the
    whole network at the lower ``lr`` with a warm-up and cosine decay, random-resized crops, flips and label
    smoothing. Batch-norm statistics stay as the weights have them (``batchnorm: frozen``, Keras' advice for
    small data sets: a few thousand photos re-estimate them badly) or are updated (``train``).

    ``when``: ``auto`` fine-tunes when the weights' classes are not the data's (the model gets a new head);
    ``always`` also when they are (a class map or a matching head); ``never`` uses the weights as they are."""

    when: Literal["auto", "always", "never"] = "auto"
    head: Literal["auto", "new"] = Field(
        default="auto", description="auto: a new head when the weights predict another number of classes than the "
        "data has (else their outputs are taken as the data's classes in order); new: always a new head (weights "
        "trained on other classes, as many as the data's)",
    )  # fmt: skip
    head_epochs: int = Field(default=2, ge=0, description="epochs training only the new head")
    head_lr: float = Field(default=3e-3, gt=0)
    epochs: int = Field(default=10, ge=0, description="epochs training the whole network after the head")
    lr: float = Field(default=3e-4, gt=0, description="whole network: peak learning rate (AdamW)")
    batch_size: int = Field(default=32, ge=1)
    weight_decay: float = Field(default=0.01, ge=0)
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    warmup_epochs: float = Field(default=0.5, ge=0)
    augment: AugmentConfig | None = AugmentConfig(crop_scale=(0.25, 1.0))
    batchnorm: Literal["frozen", "train"] = "frozen"
    freeze: list[str] = Field(
        default=[], description="parameter-name prefixes that stay frozen in the whole-network phase too "
        "(e.g. [conv_stem, bn1, blocks.0] for timm's EfficientNets, [features.0, features.1] for torchvision's)",
    )  # fmt: skip
    resolution: int | None = Field(
        default=None, ge=8, le=2048, description="train at this input side (random-resized crops) and ship at "
        "the model's: training at a smaller side than the test's is faster and scores as well or better "
        "(Touvron et al., FixRes, 2019); None = the model's side",
    )  # fmt: skip
    channels_last: bool = Field(default=True, description="channels-last memory format (faster convs on CPUs)")
    max_steps: int | None = Field(default=None, ge=1, description="stop each phase after this many steps")

    def phase(self, which: Literal["head", "all"]) -> TrainConfig:
        """The training of one phase: the head alone, or the whole network."""
        head = which == "head"
        return TrainConfig(
            epochs=self.head_epochs if head else self.epochs,
            batch_size=self.batch_size,
            lr=self.head_lr if head else self.lr,
            weight_decay=self.weight_decay,
            label_smoothing=self.label_smoothing,
            max_steps=self.max_steps,
            schedule="cosine",
            warmup_epochs=0.0 if head else self.warmup_epochs,
            augment=self.augment,
            channels_last=self.channels_last,
        )


#: Training from random weights on photos: recipes/imagenette.yaml's (random-resized crops and flips, label
#: smoothing, AdamW with weight decay, a warm-up then cosine decay, channels-last).
PHOTO_TRAIN = TrainConfig(
    epochs=30, batch_size=64, lr=4e-3, weight_decay=0.05, label_smoothing=0.1, schedule="cosine", warmup_epochs=1,
    augment=AugmentConfig(), channels_last=True,
)  # fmt: skip


class ExportConfig(StrictModel):
    opset: int = Field(default=17, ge=11, le=21)
    parity_samples: int = Field(default=32, ge=1, description="test images compared between torch and ONNX")
    litert_layout: Literal["NCHW", "NHWC"] = Field(
        default="NCHW", description="input layout of LiteRT (.tflite) files: torch's NCHW as converted, or NHWC "
        "(what TensorFlow-era apps feed; litert_torch.to_channel_last_io)",
    )  # fmt: skip


class QuantizeConfig(NncfQatConfig, OrtStaticConfig, LiteRTStaticConfig):
    """How an artifact is quantized: a recipe's ``quantize:``. Defaults are chosen for CNNs; every one can be
    overridden. Each method reads its own config (:mod:`edgeflow.compress`, ``METHODS``); a variant may set only
    the keys of the method it names (``auto``: of the methods auto may try for its backend).

    Methods: ``auto`` (the backend's default method, then, while the holdout drop exceeds ``max_drop``, the other
    methods that serve the backend, cheapest first: accuracy-controlled PTQ, then QAT when a torch model is at
    hand; the best artifact is kept), ``nncf-ptq`` (NNCF post-training, for OpenVINO IR or ONNX),
    ``nncf-accuracy-control`` (NNCF PTQ that keeps the most sensitive layers in float until the holdout drop is
    within ``max_drop``), ``nncf-qat`` (quantization-aware fine-tuning of the torch model), ``ort-static``
    (ONNX Runtime static QDQ, per-channel weights, after ORT's pre-processing), ``ort-dynamic``
    (ONNX Runtime dynamic quantization: the naive baseline, kept to show what it loses), ``litert-static``
    (LiteRT's own quantizer, ai-edge-quantizer's static int8 recipe, on the .tflite), and every other
    registered method.
    """

    method: str = Field(default="nncf-ptq", description="a registered quantization method, or auto")

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        try:
            return value if value == AUTO else METHODS.resolve(value)
        except UnknownNameError as exc:
            raise ValueError(str(exc)) from None


class MixedPrecisionConfig(StrictModel):
    """Keep in float the layers INT8 hurts, chosen from sensitivity measured through the runtime
    (:mod:`edgeflow.mixed_precision`): the float set that meets ``agreement`` at the least measured latency."""

    agreement: float = Field(
        default=0.99, gt=0, le=1, description="top-1 agreement with the float file on the holdout split to reach"
    )
    max_layers: int = Field(
        default=16, ge=1, description="units tried in float in each of the two forward passes of the choice"
    )
    holdout_samples: int | None = Field(
        default=500, ge=1, description="holdout images sensitivity and the choice are measured on (None: all)"
    )
    rounds: int = Field(default=5, ge=1, description="rounds each one-layer-in-float file is timed in turn")
    layers: list[str] | None = Field(
        default=None,
        description="measure only these layers (float ONNX node names or torch module names); None: every "
        "weighted layer",
    )


class VariantSpec(StrictModel):
    """One artifact to build, time and evaluate.

    ``precision`` is what the artifact holds: fp32 weights, fp16 weights (OpenVINO compressed IR or an
    fp16 ONNX), int8 (quantized by ``quantize``), or bf16 (the fp32 artifact executed in bf16 by OpenVINO).
    What each backend allows is its own declaration (:class:`edgeflow.backends.Backend`).
    """

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    backend: str
    precision: Literal["fp32", "fp16", "bf16", "int8"] = "fp32"
    execution_precision: Literal["default", "f32", "bf16", "f16"] | None = Field(
        default=None, description="override the device's runtime execution precision for this variant"
    )
    quantize: QuantizeConfig | None = None
    mixed_precision: MixedPrecisionConfig | None = Field(
        default=None,
        description="INT8 only: keep in float the layers whose sensitivity, measured through the runtime, says so",
    )

    def runtime_settings(self, settings: RuntimeSettings) -> RuntimeSettings:
        """The device's runtime ``settings`` with this variant's execution precision, where it sets one."""
        if self.execution_precision is None:
            return settings
        return settings.model_copy(update={"execution_precision": self.execution_precision})

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        try:
            return BACKENDS.resolve(value)
        except UnknownNameError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _check_combination(self) -> VariantSpec:
        backend = get_backend(self.backend)
        if self.execution_precision is not None and self.execution_precision not in backend.execution_precisions:
            takes = [other.name for other in all_backends() if self.execution_precision in other.execution_precisions]
            raise ValueError(f"execution_precision {self.execution_precision} does not apply to the {backend.name} "
                             f"backend (it applies to: {', '.join(takes)})")  # fmt: skip
        if self.precision not in backend.precisions:
            runs = [other.name for other in all_backends() if self.precision in other.precisions]
            raise ValueError(f"{self.precision} variants run on {', '.join(runs)}, not {backend.name}")
        if backend.fp16_from_float and self.precision == "fp16":
            self.execution_precision = "f16"  # the fp16 engine is built from the float artifact
        if self.precision == "bf16":
            if self.execution_precision not in (None, "bf16"):
                raise ValueError("a bf16 variant executes in bf16")
            self.execution_precision = "bf16"
        if self.precision != "int8":
            if self.quantize is not None:
                raise ValueError(f"quantize applies to int8 variants, not {self.precision}")
            if self.mixed_precision is not None:
                raise ValueError(f"mixed_precision applies to int8 variants, not {self.precision}")
            return self
        if self.quantize is None:
            self.quantize = QuantizeConfig(method=backend.default_int8)
        elif "method" not in self.quantize.model_fields_set:
            self.quantize.method = backend.default_int8
        for key, value in backend.int8_requires.items():
            setattr(self.quantize, key, value)
        method = self.quantize.method
        if method != AUTO and method not in methods_for(backend.name):
            allowed = ", ".join(sorted([AUTO, *methods_for(backend.name)]))
            raise ValueError(f"method {method} does not build {backend.name} artifacts (use {allowed})")
        keys = settings_keys(method, backend.name, default=backend.default_int8)
        stray = sorted(set(self.quantize.model_fields_set) - keys)
        if stray:
            raise ValueError(f"quantize.{stray[0]} does not apply to method {method} (its keys: "
                             f"{', '.join(sorted(keys))})")  # fmt: skip
        chosen = backend.default_int8 if method == AUTO else method
        keeps = sorted(name for name in methods_for(backend.name) if METHODS.get(name).float_units)
        asked = "mixed_precision" if self.mixed_precision is not None else None
        if "float_layers" in self.quantize.model_fields_set and self.quantize.float_layers:
            asked = asked or "quantize.float_layers"
        if asked and not METHODS.get(chosen).float_units:
            raise ValueError(f"{asked}: method {chosen} cannot keep layers in float (use "
                             f"{', '.join(keeps) or 'none on ' + backend.name})")  # fmt: skip
        return self


class EvaluateConfig(StrictModel):
    """How many images each variant is scored on: a subset keeps each class's share of its split."""

    max_samples: int | None = Field(default=None, ge=1, description="score at most N test images (each class's "
                                    "share; default: all)")  # fmt: skip
    holdout_samples: int | None = Field(
        default=None, ge=1, description="score at most N holdout images, which choose the recommendation (each "
        "class's share; default: as max_samples): a slow device (an emulated one) scores the test split whole and "
        "a smaller holdout",
    )  # fmt: skip

    @property
    def holdout_count(self) -> int | None:
        """The holdout images to score (None: all)."""
        return self.holdout_samples if self.holdout_samples is not None else self.max_samples


class Recipe(StrictModel):
    """A whole pipeline: scale, train, export, quantize, profile, evaluate, report."""

    name: str
    description: str = ""
    data: str = "digits"
    seed: int = 0
    max_accuracy_drop: float = Field(
        default=0.01, ge=0, le=1, description="recommend the fastest variant within this top-1 drop (holdout)"
    )
    model: ModelConfig = ModelConfig()
    preprocess: PreprocessSpec | None = Field(
        default=None, description="how images become the model's input (edgeflow.data.preprocess); default: "
        "the data set's, or what an ONNX's metadata says",
    )  # fmt: skip
    class_map: str | None = Field(default=None, description="TSV of class folder and model output index")
    labels: str | None = Field(default=None, description="labels file: the class of each output, one a line")
    train: TrainConfig = TrainConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    export: ExportConfig = ExportConfig()
    variants: list[VariantSpec] = Field(min_length=1)
    profile: ProfileConfig = ProfileConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    search: SearchConfig | None = Field(
        default=None, description="NetAdapt search before export (edgeflow search, or optimize with this step)"
    )
    ray: str | None = Field(
        default=None,
        description="run the search's proposals as Ray tasks: auto or HEAD:PORT (edgeflow farm join); None = "
        "in this process",
    )

    def with_inputs(
        self,
        *,
        preprocess: PreprocessSpec | None = None,
        input_shape: tuple[int, ...] | None = None,
        class_map: str | Path | None = None,
        labels: str | Path | None = None,
        weights: str | None = None,
    ) -> Recipe:
        """A copy whose preprocessing, input shape, class order and pretrained weights are the ones given (the
        command line's options), the recipe's own where none is given. ``weights="none"`` trains from random
        weights where the recipe names some."""
        update: dict = {}
        if preprocess is not None:
            update["preprocess"] = preprocess
        if class_map is not None or labels is not None:
            update.update(class_map=None if class_map is None else str(class_map),
                          labels=None if labels is None else str(labels))  # fmt: skip
        recipe = self.model_copy(update=update)
        if input_shape is not None:
            recipe.model = recipe.model.model_copy(update={"input_shape": tuple(input_shape)})
        if weights is not None:
            recipe.model = recipe.model.model_copy(update={"weights": None if weights.lower() == "none" else weights})
        if recipe.class_map is not None and recipe.labels is not None:
            raise ConfigError("give a class map or a labels file, not both")
        return recipe

    def for_photos(self, *, pretrained: bool) -> Recipe:
        """This recipe for a folder of photos when it was written for a built-in data set (the default and device
        recipes train digits at 64-96 px for a few epochs): the model at its weights' or its own input side,
        pretrained weights (``DEFAULT``) where the architecture has them, fine-tuned with ``finetune``'s
        defaults, and from random weights trained as photos are (:data:`PHOTO_TRAIN`). Variants, profiling and
        the rest stay as they are."""
        from edgeflow.data.load import is_builtin

        if not is_builtin(self.data):
            return self
        model = self.model.model_copy(update={"resolution": None, "resolution_multiplier": None})
        if pretrained and model.weights is None:
            model.weights = "DEFAULT"
        return self.model_copy(update={"model": model, "train": PHOTO_TRAIN, "finetune": FinetuneConfig()})

    @model_validator(mode="after")
    def _one_class_order(self) -> Recipe:
        if self.class_map is not None and self.labels is not None:
            raise ValueError("give class_map or labels, not both")
        return self

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
    data = read_yaml(path)
    if data.get("kind") == "nightly":
        raise ConfigError(f"{path} is a nightly recipe: run it with `edgeflow nightly --recipe {path}`")
    return parse_spec(Recipe, data, source=str(path))


def as_recipe(recipe: str | Path | Recipe) -> Recipe:
    """A recipe given by name, file or as a loaded Recipe (what every API call accepts)."""
    return recipe if isinstance(recipe, Recipe) else load_recipe(recipe)


def list_recipes() -> list[Recipe]:
    """The built-in pipeline recipes (nightly matrices, ``kind: nightly``, are loaded by ``load_nightly``)."""
    return [load_recipe(name) for name in list_named_files("recipes") if not _is_nightly(name)]


def _is_nightly(name: str) -> bool:
    return read_yaml(find_named_file(name, folder="recipes", kind="recipe")).get("kind") == "nightly"
