"""MobileNet v1 (Howard et al. 2017, arXiv:1704.04861), which torchvision does not ship.

Layout from the paper's Table 1: a 3x3 stride-2 convolution with 32 channels, 13 depthwise-separable blocks,
global average pooling, dropout and a linear classifier. Width multiplier alpha scales every layer's
channels, rounded to multiples of 8. At alpha 1.0 with 1000 classes it has 4.2M parameters, as in Table 8.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation

from edgeflow.models.multipliers import make_divisible

STEM_CHANNELS = 32
# (output channels of the pointwise conv, stride of the depthwise conv) for the 13 blocks of Table 1.
# Table 1 prints the 13th depthwise conv as stride 2 on a 7x7 map; like every reference implementation we
# read that as stride 1, which keeps the 7x7 map for the final pooling (output stride 32).
BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)


class DepthwiseSeparable(nn.Sequential):
    """A 3x3 depthwise conv + BN + ReLU, then a 1x1 pointwise conv + BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int) -> None:
        super().__init__(
            Conv2dNormActivation(
                in_channels, in_channels, kernel_size=3, stride=stride, groups=in_channels, bias=False
            ),
            Conv2dNormActivation(in_channels, out_channels, kernel_size=1, bias=False),
        )


class MobileNetV1(nn.Module):
    """MobileNet v1 classifier.

    Args:
        num_classes: Size of the classifier output.
        width: Width multiplier alpha; channels become ``make_divisible(channels * width)``.
        dropout: Dropout probability before the classifier.

    Example:
        >>> model = MobileNetV1(num_classes=10, width=0.25)
        >>> model(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 10])
    """

    def __init__(self, *, num_classes: int = 1000, width: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width should be greater than 0, got {width}")
        in_channels = make_divisible(STEM_CHANNELS * width)
        layers: list[nn.Module] = [Conv2dNormActivation(3, in_channels, kernel_size=3, stride=2, bias=False)]
        for channels, stride in BLOCKS:
            out_channels = make_divisible(channels * width)
            layers.append(DepthwiseSeparable(in_channels, out_channels, stride=stride))
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(in_channels, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier(x)


def mobilenet_v1(*, num_classes: int = 1000, width: float = 1.0) -> MobileNetV1:
    """Build a randomly initialised MobileNet v1 with width multiplier ``width``."""
    return MobileNetV1(num_classes=num_classes, width=width)
