"""Width and resolution multipliers: which families support them, how to build a scaled model, limits.

The width multiplier (MobileNet paper's alpha) scales every layer's channels, rounded to multiples of 8.
The resolution multiplier only changes the input side, which a model can take when its head pools globally.
"""

from __future__ import annotations

import numbers
from functools import partial
from typing import TYPE_CHECKING

import torchvision.models as tvm
from torch import nn

from edgeflow.errors import ConfigError, ShapeError

if TYPE_CHECKING:
    from edgeflow.models._registry import ModelInfo

#: Families with a width multiplier, in the order the MobileNet line of papers introduced them.
WIDTH_FAMILIES = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3", "mnasnet", "efficientnet")
MAX_WIDTH = 4.0
MIN_RESOLUTION = 32
MAX_RESOLUTION = 2048
CHANNEL_DIVISOR = 8

# torchvision's compound-scaling coefficients for EfficientNet-B0..B7 (efficientnet.py builders):
# (width_mult, depth_mult, dropout, BatchNorm eps/momentum override for B5..B7).
_EFFICIENTNET_COEFFICIENTS: dict[str, tuple[float, float, float, bool]] = {
    "efficientnet_b0": (1.0, 1.0, 0.2, False),
    "efficientnet_b1": (1.0, 1.1, 0.2, False),
    "efficientnet_b2": (1.1, 1.2, 0.3, False),
    "efficientnet_b3": (1.2, 1.4, 0.3, False),
    "efficientnet_b4": (1.4, 1.8, 0.4, False),
    "efficientnet_b5": (1.6, 2.2, 0.4, True),
    "efficientnet_b6": (1.8, 2.6, 0.5, True),
    "efficientnet_b7": (2.0, 3.1, 0.5, True),
}

# torchvision's MNASNet builders are MNASNet(alpha) with these alphas.
_MNASNET_ALPHA = {"mnasnet0_5": 0.5, "mnasnet0_75": 0.75, "mnasnet1_0": 1.0, "mnasnet1_3": 1.3}


def make_divisible(value: float, divisor: int = CHANNEL_DIVISOR) -> int:
    """Round a channel count to the nearest multiple of ``divisor`` (at least ``divisor``), never down >10%.

    This is the rounding of the reference MobileNet code, also used by torchvision.

    Example:
        >>> make_divisible(32 * 0.75)
        24
        >>> make_divisible(3)
        8
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def validate_width(info: ModelInfo, width: float) -> None:
    """Raise ConfigError unless ``width`` is a usable width multiplier for the model ``info`` describes."""
    if isinstance(width, bool) or not isinstance(width, numbers.Real):
        raise ConfigError(f"width multiplier must be a number, got {width!r}")
    if not 0.0 < width <= MAX_WIDTH:
        raise ConfigError(f"width multiplier must be in (0, {MAX_WIDTH:g}], got {width:g}")
    if width != 1.0 and not info.supports_width:
        raise ConfigError(f"{info.name} has no width multiplier; families with one: {', '.join(WIDTH_FAMILIES)}")


def validate_resolution(info: ModelInfo, resolution: int) -> None:
    """Raise ShapeError unless the model ``info`` describes can take square inputs of side ``resolution``."""
    if isinstance(resolution, bool) or not isinstance(resolution, numbers.Integral):
        raise ShapeError(f"resolution must be a whole number of pixels, got {resolution!r}")
    if not info.global_pool:
        if resolution != info.default_resolution:
            raise ShapeError(
                f"{info.name} has a fixed-size head and takes only {info.default_resolution}x"
                f"{info.default_resolution} inputs, not {resolution}; use a model that pools globally "
                "to change resolution"
            )
        return
    if resolution < info.min_resolution:
        raise ShapeError(
            f"{info.name} needs inputs of at least {info.min_resolution}x{info.min_resolution} pixels "
            f"(its downsampling), got {resolution}"
        )
    if resolution > MAX_RESOLUTION:
        raise ShapeError(f"resolution {resolution} is above the {MAX_RESOLUTION}-pixel limit; use a smaller side")


def build_scaled_torchvision(name: str, *, family: str, num_classes: int, width: float) -> nn.Module:
    """Build torchvision model ``name`` with its channels scaled by ``width`` (random init).

    Width 1.0 gives the same architecture as ``torchvision.models.get_model(name)``.
    """
    if family == "mobilenet_v2":
        return tvm.mobilenet_v2(weights=None, num_classes=num_classes, width_mult=width, round_nearest=8)
    if family == "mobilenet_v3":
        # The builders forward width_mult to _mobilenet_v3_conf, which also scales last_channel.
        builder = {"mobilenet_v3_large": tvm.mobilenet_v3_large, "mobilenet_v3_small": tvm.mobilenet_v3_small}
        return builder[name](weights=None, num_classes=num_classes, width_mult=width)
    if family == "mnasnet":
        return tvm.MNASNet(_MNASNET_ALPHA[name] * width, num_classes=num_classes)
    if family == "efficientnet":
        return _efficientnet(name, num_classes=num_classes, width=width)
    raise ConfigError(f"{name} has no width multiplier; families with one: {', '.join(WIDTH_FAMILIES)}")


def _efficientnet(name: str, *, num_classes: int, width: float) -> nn.Module:
    # Private torchvision API (torchvision.models.efficientnet._efficientnet_conf): the public builders fix
    # width_mult, so a scaled EfficientNet needs the config function. tests/test_models.py pins its shape.
    from torchvision.models.efficientnet import _efficientnet_conf

    width_mult, depth_mult, dropout, tf_batchnorm = _EFFICIENTNET_COEFFICIENTS[name]
    setting, last_channel = _efficientnet_conf(name, width_mult=width_mult * width, depth_mult=depth_mult)
    norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01) if tf_batchnorm else None
    return tvm.EfficientNet(setting, dropout, last_channel=last_channel, num_classes=num_classes, norm_layer=norm_layer)


__all__ = [
    "CHANNEL_DIVISOR",
    "MAX_RESOLUTION",
    "MAX_WIDTH",
    "MIN_RESOLUTION",
    "WIDTH_FAMILIES",
    "build_scaled_torchvision",
    "make_divisible",
    "validate_resolution",
    "validate_width",
]
