"""The model registry: one entry per architecture, holding its metadata and its builder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial

from torch import nn

from edgeflow.errors import ConfigError
from edgeflow.models import mobilenet_v1, torchvision_models
from edgeflow.models.multipliers import MIN_RESOLUTION, validate_resolution, validate_width
from edgeflow.registry import Registry

#: ``builder(*, num_classes, width) -> nn.Module`` with random weights.
ModelBuilder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelInfo:
    """What edgeflow knows about an architecture before building it.

    Attributes:
        name: Canonical name, e.g. ``mobilenet_v3_large``.
        family: Architecture family, e.g. ``mobilenet_v3``, ``resnet``, ``efficientnet``.
        aliases: Other accepted names, e.g. ``("mobilenetv3",)``.
        supports_width: The family defines a width multiplier.
        global_pool: The head pools globally, so the input resolution may change.
        default_resolution: Input side of the reference recipe (torchvision's crop size).
        source: ``"torchvision"`` or ``"edgeflow"``.
        min_resolution: Smallest input side the network's downsampling allows.
    """

    name: str
    family: str
    aliases: tuple[str, ...]
    supports_width: bool
    global_pool: bool
    default_resolution: int
    source: str
    min_resolution: int = MIN_RESOLUTION


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its metadata and the builder that creates it."""

    info: ModelInfo
    build: ModelBuilder


@cache
def model_registry() -> Registry[ModelEntry]:
    """The registry of all models, filled on first use (listing torchvision's models imports them)."""
    registry: Registry[ModelEntry] = Registry("model")
    for spec in torchvision_models.iter_specs():
        info = ModelInfo(**spec)  # type: ignore[arg-type]
        registry.register(
            info.name, ModelEntry(info, partial(torchvision_models.build, info.name)), aliases=info.aliases
        )
    v1 = ModelInfo(
        name="mobilenet_v1",
        family="mobilenet_v1",
        aliases=("mobilenetv1",),
        supports_width=True,
        global_pool=True,
        default_resolution=224,
        source="edgeflow",
    )
    registry.register(v1.name, ModelEntry(v1, mobilenet_v1.mobilenet_v1), aliases=v1.aliases)
    return registry


def register_model(info: ModelInfo, build: ModelBuilder) -> None:
    """Add a model. ``build(*, num_classes, width)`` must return a randomly initialised ``nn.Module``.

    Raises:
        ValueError: ``info.name`` or one of its aliases is already registered.
    """
    model_registry().register(info.name, ModelEntry(info, build), aliases=info.aliases)


def list_models() -> list[ModelInfo]:
    """Every registered model, sorted by name."""
    registry = model_registry()
    return [registry.get(name).info for name in registry.names()]


def model_info(name: str) -> ModelInfo:
    """Metadata of model ``name`` (or an alias).

    Raises:
        UnknownNameError: no such model; the message lists close matches.
    """
    return _entry(name).info


def _entry(name: str) -> ModelEntry:
    """A registered model, or a timm architecture named ``timm:<name>`` (its entry made on first use)."""
    from edgeflow.models.timm_models import is_timm_name

    return _timm_entry(name.strip()) if is_timm_name(name) else model_registry().get(name)


@cache
def _timm_entry(name: str) -> ModelEntry:
    from edgeflow.models.timm_models import timm_spec

    fields, build = timm_spec(name)
    return ModelEntry(ModelInfo(**fields), build)


def create_model(name: str, *, num_classes: int, width: float = 1.0) -> nn.Module:
    """Build model ``name`` with random weights, in train mode. Never downloads anything.

    Args:
        name: Model name or alias (see ``list_models``).
        num_classes: Size of the classifier output.
        width: Width multiplier; only families with ``supports_width`` accept a value other than 1.0.

    Raises:
        UnknownNameError: no such model.
        ConfigError: bad ``num_classes`` or ``width``.

    Example:
        >>> create_model("mobilenetv3", num_classes=10, width=0.5).classifier[-1].out_features
        10
    """
    entry = _entry(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    validate_width(entry.info, width)
    return entry.build(num_classes=num_classes, width=float(width))


def check_resolution(name: str, resolution: int) -> None:
    """Raise ShapeError unless model ``name`` can take square inputs of side ``resolution``.

    Models whose head does not pool globally (VGG, AlexNet, the vision transformers) take only their
    default resolution; the others take any side from their ``min_resolution`` up to 2048.
    """
    validate_resolution(model_info(name), resolution)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model`` (shared parameters counted once)."""
    return sum(parameter.numel() for parameter in model.parameters())
