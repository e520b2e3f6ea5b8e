"""The classifier head of a network: which layer it is, and a fresh one for the user's classes.

Fine-tuning pretrained weights on new classes keeps every layer but the last; the last becomes a new layer of
the same kind and input, initialised the way the architecture initialises it (timm's ``reset_classifier``;
torchvision's normal init with zero bias, as its builders do).
"""

from __future__ import annotations

import torch
from torch import nn

from edgeflow.errors import ModelLoadError


def head_layer_name(module: nn.Module) -> str:
    """The dotted name of the layer that produces the logits: the last Linear or Conv2d of ``module``.

    Raises:
        ModelLoadError: ``module`` has neither.
    """
    last = None
    for name, layer in module.named_modules():
        if isinstance(layer, nn.Linear | nn.Conv2d):
            last = name
    if last is None:
        raise ModelLoadError("cannot tell which layer of the model is its classifier (no Linear or Conv2d)")
    return last


def output_classes(module: nn.Module) -> int:
    """The number of outputs of ``module``'s classifier layer."""
    layer = module.get_submodule(head_layer_name(module))
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def replace_head(module: nn.Module, *, num_classes: int) -> str:
    """Give ``module`` a new, freshly initialised classifier of ``num_classes`` outputs, in place; returns the
    dotted name of the layer replaced (``classifier.3``, ``fc``, ``classifier.1`` for SqueezeNet's 1x1 conv)."""
    if hasattr(module, "reset_classifier") and hasattr(module, "get_classifier"):  # a timm model
        name = head_layer_name(module)
        module.reset_classifier(num_classes)
        return name
    name = head_layer_name(module)
    old = module.get_submodule(name)
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        nn.init.normal_(new.weight, 0, 0.01)
    else:
        new = nn.Conv2d(
            old.in_channels, num_classes, kernel_size=old.kernel_size, stride=old.stride, padding=old.padding,
            bias=old.bias is not None,
        )  # fmt: skip
        nn.init.normal_(new.weight, 0, 0.01)
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    new.to(device=old.weight.device, dtype=old.weight.dtype)
    parent_name, _, child = name.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    setattr(parent, child, new)
    return name


def head_parameters(module: nn.Module) -> list[torch.nn.Parameter]:
    """The parameters of ``module``'s classifier layer (what trains while the backbone is frozen)."""
    return list(module.get_submodule(head_layer_name(module)).parameters())
