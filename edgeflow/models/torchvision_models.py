"""torchvision's classification models: their metadata and a builder that never downloads weights."""

from __future__ import annotations

from collections.abc import Iterator

import torchvision.models as tvm
from torch import nn

from edgeflow.models.multipliers import MIN_RESOLUTION, WIDTH_FAMILIES, build_scaled_torchvision

# (name prefix, family), most specific first.
_FAMILIES: tuple[tuple[str, str], ...] = (
    ("mobilenet_v2", "mobilenet_v2"),
    ("mobilenet_v3", "mobilenet_v3"),
    ("efficientnet_v2", "efficientnet_v2"),
    ("efficientnet_b", "efficientnet"),
    ("mnasnet", "mnasnet"),
    ("shufflenet_v2", "shufflenet_v2"),
    ("squeezenet", "squeezenet"),
    ("wide_resnet", "wide_resnet"),
    ("resnext", "resnext"),
    ("resnet", "resnet"),
    ("densenet", "densenet"),
    ("googlenet", "googlenet"),
    ("inception", "inception"),
    ("vgg", "vgg"),
    ("alexnet", "alexnet"),
    ("regnet", "regnet"),
    ("convnext", "convnext"),
    ("vit", "vit"),
    ("swin", "swin"),
    ("maxvit", "maxvit"),
)

# Heads that do not pool globally: VGG and AlexNet pool to a fixed grid feeding fixed-size linear layers;
# the transformers are built for one input size (position embeddings, window partitions).
_FIXED_RESOLUTION_FAMILIES = frozenset({"vgg", "alexnet", "vit", "swin", "maxvit"})

# Smallest input side where downsampling still leaves a valid feature map, where it exceeds MIN_RESOLUTION.
_MIN_RESOLUTION = {"inception": 75}

# Builders whose defaults would add auxiliary heads or warn about weight init.
_EXTRA_KWARGS: dict[str, dict[str, bool]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}

_ALIASES = {"mobilenet_v2": ("mobilenetv2",), "mobilenet_v3_large": ("mobilenetv3",)}


def classification_names() -> list[str]:
    """Names of torchvision's classification builders (no quantized, detection, segmentation, video, flow)."""
    return sorted(tvm.list_models(module=tvm))


def family_of(name: str) -> str:
    """The family of torchvision model ``name`` (e.g. ``efficientnet`` for ``efficientnet_b3``)."""
    for prefix, family in _FAMILIES:
        if name.startswith(prefix):
            return family
    return name.rstrip("0123456789_")


def default_resolution(name: str) -> int:
    """The crop side of torchvision's ImageNet-1k recipe for ``name``: its first weights, else the smallest.

    The first weights (IMAGENET1K_V1) give the resolution the architecture was designed for; later SWAG
    weights were fine-tuned at larger sides (e.g. 518 for vit_h_14) that a randomly initialised model does
    not use.
    """
    weights = list(tvm.get_model_weights(name))
    sides = {w.name: _crop_side(w) for w in weights}
    if sides.get("IMAGENET1K_V1"):
        return sides["IMAGENET1K_V1"]
    known = [side for side in sides.values() if side]
    return min(known) if known else 224


def _crop_side(weights: tvm.Weights) -> int | None:
    crop = getattr(weights.transforms(), "crop_size", None)
    if isinstance(crop, (list, tuple)) and crop:
        return int(crop[0])
    return int(crop) if isinstance(crop, int) else None


def build(name: str, *, num_classes: int, width: float = 1.0) -> nn.Module:
    """Build torchvision model ``name`` with random weights (``weights=None``; nothing is downloaded)."""
    family = family_of(name)
    if width != 1.0:
        return build_scaled_torchvision(name, family=family, num_classes=num_classes, width=width)
    return tvm.get_model(name, weights=None, num_classes=num_classes, **_EXTRA_KWARGS.get(name, {}))


def iter_specs() -> Iterator[dict[str, object]]:
    """Keyword arguments for ``ModelInfo`` of every torchvision classification model."""
    for name in classification_names():
        family = family_of(name)
        resolution = default_resolution(name)
        global_pool = family not in _FIXED_RESOLUTION_FAMILIES
        yield {
            "name": name,
            "family": family,
            "aliases": _ALIASES.get(name, ()),
            "supports_width": family in WIDTH_FAMILIES,
            "global_pool": global_pool,
            "default_resolution": resolution,
            "min_resolution": _MIN_RESOLUTION.get(family, MIN_RESOLUTION) if global_pool else resolution,
            "source": "torchvision",
        }
