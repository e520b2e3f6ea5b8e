"""What the search may change in a network: channel groups (pruned with torch-pruning) and whole blocks.

A *group* is torch-pruning's dependency group: every layer whose channels must shrink together (a
depthwise convolution with the expansion that feeds it and the SE block inside; all blocks summed by
residual additions). A group is named by its root layer, which stays stable while other groups shrink,
so a search can be written down as a list of :class:`Action` and replayed on the starting model.

A *block* is a residual block whose skip is an identity (same shape in and out); removing it keeps
the network valid and trades depth instead of width.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from pydantic import BaseModel
from torch import nn

from edgeflow.errors import ConfigError
from edgeflow.models.multipliers import make_divisible

if TYPE_CHECKING:
    import torch_pruning


class Action(BaseModel):
    """One change to a network: prune ``group`` (remove the channels ``remove``) or drop ``block``."""

    kind: str  # "prune" | "remove-block"
    target: str  # group root layer name, or block module name
    remove: list[int] = []  # channel indices removed (prune), in the order of the channels at that moment

    def describe(self) -> str:
        if self.kind == "remove-block":
            return f"remove block {self.target}"
        return f"prune {len(self.remove)} channels of {self.target}"


@dataclass(frozen=True)
class Group:
    """A prunable channel group: its root layer's name and current channel count."""

    name: str
    channels: int


GRAPH_SIDE = 32  # channel dependencies do not depend on the input size; a small input traces fast


def _tp():
    """Torch-Pruning, imported where it is used (with timm it adds a second to ``import edgeflow``)."""
    import torch_pruning

    return torch_pruning


def _small(example: torch.Tensor) -> torch.Tensor:
    """A zero input of ``example``'s batch and channels, at most ``GRAPH_SIDE`` pixels a side, to trace with."""
    side = min(GRAPH_SIDE, example.shape[-1])
    return torch.zeros(*example.shape[:-2], side, side)


def _dependency_graph(model: nn.Module, example: torch.Tensor) -> torch_pruning.DependencyGraph:
    was_training = model.training
    graph = _tp().DependencyGraph().build_dependency(model.eval(), example_inputs=_small(example), verbose=False)
    model.train(was_training)
    return graph


def _classifier_output(model: nn.Module) -> nn.Module:
    """The last Linear (or 1x1 conv) layer: its outputs are the classes and are never pruned."""
    last = None
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            last = module
    if last is None:
        raise ConfigError("the model has no convolution or linear layer to prune")
    return last


def prunable_groups(model: nn.Module, example: torch.Tensor, *, min_channels: int) -> list[Group]:
    """Every channel group of ``model`` that can shrink below its size and stay at least ``min_channels``."""
    graph = _dependency_graph(model, example)
    names = {module: name for name, module in model.named_modules()}
    groups = []
    for group in graph.get_all_groups(ignored_layers=[_classifier_output(model)]):
        root = group[0].dep.target.module
        channels = len(group[0].idxs)
        if root in names and channels > min_channels:
            groups.append(Group(name=names[root], channels=channels))
    return groups


def removable_blocks(model: nn.Module) -> list[str]:
    """Names of residual blocks whose skip is an identity: torchvision's MobileNetV2/V3, EfficientNet and
    MNASNet inverted residuals with ``use_res_connect``/``apply_residual``, timm's blocks with ``has_skip``
    (MobileNetV3/V4, EfficientNet), ResNet blocks without downsample."""
    found = []
    for name, module in model.named_modules():
        identity_skip = (
            getattr(module, "use_res_connect", None)
            or getattr(module, "apply_residual", None)
            or getattr(module, "has_skip", None)
        )
        if identity_skip is None and hasattr(module, "downsample") and hasattr(module, "conv1"):
            identity_skip = module.downsample is None
        if identity_skip is True:
            found.append(name)
    return found


def l2_ranking(model: nn.Module, example: torch.Tensor, group_name: str) -> list[int]:
    """Channels of group ``group_name``, least important first, by L2 norm summed over every coupled layer
    (torch-pruning's group magnitude importance)."""
    graph = _dependency_graph(model, example)
    root = model.get_submodule(group_name)
    channels = out_channels(root)
    group = graph.get_pruning_group(root, _pruning_fn(root), idxs=list(range(channels)))
    importance = _tp().importance.GroupMagnitudeImportance(p=2)(group)
    return [int(index) for index in torch.argsort(importance, stable=True)]


def keep_action(group_name: str, ranking: list[int], keep: int) -> Action:
    """The action that keeps the ``keep`` most important channels of a group ranked by :func:`l2_ranking`."""
    if not 0 < keep < len(ranking):
        raise ConfigError(f"cannot keep {keep} of the {len(ranking)} channels of {group_name}")
    return Action(kind="prune", target=group_name, remove=sorted(ranking[: len(ranking) - keep]))


def l2_prune_action(model: nn.Module, example: torch.Tensor, group_name: str, keep: int) -> Action:
    """The action that keeps the ``keep`` channels of group ``group_name`` with the largest L2 norm."""
    channels = out_channels(model.get_submodule(group_name))
    if not 0 < keep < channels:
        raise ConfigError(f"cannot keep {keep} of the {channels} channels of {group_name}")
    return keep_action(group_name, l2_ranking(model, example, group_name), keep)


def apply(model: nn.Module, action: Action, example: torch.Tensor) -> None:
    """Apply ``action`` to ``model`` in place."""
    if action.kind == "remove-block":
        parent_name, _, child = action.target.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if action.target not in removable_blocks(model):
            raise ConfigError(f"{action.target} is not a block with an identity skip")
        setattr(parent, child, nn.Identity())
        return
    if action.kind != "prune":
        raise ConfigError(f"unknown search action {action.kind!r}")
    graph = _dependency_graph(model, example)
    root = model.get_submodule(action.target)
    group = graph.get_pruning_group(root, _pruning_fn(root), idxs=action.remove)
    if not graph.check_pruning_group(group):
        raise ConfigError(f"pruning {action.describe()} would leave a layer without channels")
    group.prune()


def replay(model: nn.Module, actions: list[Action], example: torch.Tensor) -> nn.Module:
    """Apply ``actions`` in order (the starting model is changed in place and returned)."""
    for action in actions:
        apply(model, action, example)
    return model


def out_channels(module: nn.Module) -> int:
    if isinstance(module, nn.Conv2d):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    raise ConfigError(f"group roots are convolutions or linear layers, not {type(module).__name__}")


def _pruning_fn(module: nn.Module):
    return _tp().prune_linear_out_channels if isinstance(module, nn.Linear) else _tp().prune_conv_out_channels


def channel_counts(model: nn.Module) -> dict[str, int]:
    """Output channels of every convolution and linear layer: the architecture, for reports."""
    return {name: out_channels(m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def uniform_width(start: nn.Module, example: torch.Tensor, width: float) -> nn.Module:
    """The width-multiplier architecture (every group at ``width`` x its channels, rounded to 8), with the
    starting model's channels of largest L2 norm: the multiplier baseline with inherited weights."""
    model = copy.deepcopy(start).eval()
    for group in prunable_groups(model, example, min_channels=1):
        keep = min(group.channels, make_divisible(group.channels * width))
        if keep < group.channels:
            apply(model, l2_prune_action(model, example, group.name, keep), example)
    return model


def magnitude_pruned(start: nn.Module, example: torch.Tensor, ratio: float, *, round_to: int = 8) -> nn.Module:
    """Torch-Pruning's uniform magnitude pruning as its users call it: ``tp.pruner.MagnitudePruner`` with
    L2 magnitude importance, the same ``ratio`` of every group's channels removed in one step (kept counts
    rounded to ``round_to``), the classifier's outputs kept. The starting model is not changed."""
    model = copy.deepcopy(start).eval()
    pruner = _tp().pruner.MagnitudePruner(
        model,
        _small(example),
        importance=_tp().importance.MagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=[_classifier_output(model)],
        round_to=round_to,
    )
    pruner.step()
    return model
