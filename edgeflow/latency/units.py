"""A network cut into the units a latency lookup table is keyed by: the stem, each block, the head.

Per-layer tables fit a fused runtime badly (OpenVINO fuses convolution, normalization, activation and
the SE multiply), so the table is kept per block: the block's structure and input shape are its key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn

from edgeflow.errors import ConfigError


class Head(nn.Module):
    """Global average pooling, flatten and the classifier: the end of MobileNet/EfficientNet/MNASNet/ResNet
    (SqueezeNet's convolutional classifier pools after its convolution)."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(isinstance(layer, nn.Conv2d) for layer in self.layers.modules()):
            return torch.flatten(self.layers(x), 1)  # a convolutional classifier pools itself (SqueezeNet)
        return self.layers(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@dataclass
class Unit:
    """One block of the network with the input shape it sees and a key naming its configuration."""

    name: str
    module: nn.Module
    input_shape: tuple[int, ...]

    @property
    def key(self) -> str:
        text = f"{self.input_shape}|{_structure(self.module)}"
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def split_units(model: nn.Module, input_shape: tuple[int, ...]) -> list[Unit]:
    """The units of ``model`` in execution order, each with its input shape (identity blocks left out)."""
    modules = _unit_modules(model)
    shapes: dict[str, tuple[int, ...]] = {}
    previous_output: list[tuple[int, ...]] = []

    def record(name: str):
        def hook(_module, args, output) -> None:
            shapes.setdefault(name, tuple(args[0].shape))
            previous_output.append(tuple(output.shape))

        return hook

    hooks = [module.register_forward_hook(record(name)) for name, module in modules if name != "head"]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(input_shape))
    finally:
        for hook in hooks:
            hook.remove()
    shapes["head"] = previous_output[-1]  # the head (built here, not called by the model) takes the last output
    shapes.setdefault("stem", tuple(input_shape))  # a ResNet's stem, likewise built here, takes the input
    return [
        Unit(name=name, module=module, input_shape=shapes[name])
        for name, module in modules
        if not isinstance(module, nn.Identity)
    ]


# timm's families by class: the layers of their stem and head in the order their forward calls them (a layer
# an older or newer timm lacks is left out). MobileNetV3 (also MobileNetV4, LCNet) pools before its 1x1 head
# convolution; EfficientNet (also MNASNet, MixNet, FBNet, TinyNet) convolves, then pools.
_TIMM_STEM = ("conv_stem", "bn1", "act1")
_TIMM_HEADS = {
    "MobileNetV3": ("global_pool", "conv_head", "norm_head", "act2", "flatten", "classifier"),
    "EfficientNet": ("conv_head", "bn2", "act2", "global_pool", "classifier"),
}


def _timm_family(model: nn.Module) -> str | None:
    """``MobileNetV3`` or ``EfficientNet`` for timm's classes (and their subclasses), else None: torchvision
    has classes of the same names, so the defining module tells them apart."""
    for cls in type(model).__mro__:
        if cls.__module__.startswith("timm.") and cls.__name__ in _TIMM_HEADS:
            return cls.__name__
    return None


def _timm_units(model: nn.Module, family: str) -> list[tuple[str, nn.Module]]:
    """The stem, each block of each stage (``blocks.S.B``) and the head of a timm MobileNetV3/V4 or EfficientNet.

    The head chains the model's own layers in the order of its ``forward_head``, so the units run in turn
    give the model's logits (in eval mode: the head's dropout is left out, as the model leaves it out).
    """
    stem = nn.Sequential(*(getattr(model, name) for name in _TIMM_STEM if hasattr(model, name)))
    units = [("stem", stem)]
    for stage_index, stage in enumerate(model.blocks):
        units += [(f"blocks.{stage_index}.{index}", block) for index, block in enumerate(stage)]
    head = nn.Sequential(*(getattr(model, name) for name in _TIMM_HEADS[family] if hasattr(model, name)))
    return [*units, ("head", head)]


def _unit_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    family = _timm_family(model)
    if family is not None and isinstance(getattr(model, "blocks", None), nn.Sequential):
        return _timm_units(model, family)
    features = getattr(model, "features", None) or getattr(model, "layers", None)
    classifier = getattr(model, "classifier", None)
    if isinstance(features, nn.Sequential) and classifier is not None:
        prefix = "features" if getattr(model, "features", None) is features else "layers"
        units = [(f"{prefix}.{index}", child) for index, child in enumerate(features)]
        return [*units, ("head", Head(classifier))]
    if all(hasattr(model, name) for name in ("conv1", "bn1", "layer1", "layer4", "fc")):  # torchvision ResNet
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
        units = [("stem", stem)]
        for stage in ("layer1", "layer2", "layer3", "layer4"):
            units += [(f"{stage}.{index}", block) for index, block in enumerate(getattr(model, stage))]
        return [*units, ("head", Head(model.fc))]
    raise ConfigError(
        f"{type(model).__name__} is not split into blocks for the lookup table "
        "(supported: models with features + classifier, ResNets, and timm's MobileNetV3/V4 and EfficientNet "
        "families); use the measured oracle"
    )


def _structure(module: nn.Module) -> str:
    """Layer types and shapes (not weights): two blocks with equal structure and input time the same."""
    parts = []
    for name, layer in module.named_modules():
        if isinstance(layer, nn.Conv2d):
            parts.append(
                f"{name}:conv{layer.in_channels}>{layer.out_channels}k{layer.kernel_size}s{layer.stride}"
                f"g{layer.groups}b{layer.bias is not None}"
            )
        elif isinstance(layer, nn.Linear):
            parts.append(f"{name}:fc{layer.in_features}>{layer.out_features}")
        elif len(list(layer.children())) == 0:
            parts.append(f"{name}:{type(layer).__name__}")
    for attribute in ("use_res_connect", "apply_residual", "has_skip"):  # has_skip: timm's blocks
        if hasattr(module, attribute):
            parts.append(f"{attribute}={getattr(module, attribute)}")
    return ";".join(parts)
