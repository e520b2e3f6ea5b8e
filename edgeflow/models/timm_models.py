"""timm's architectures by name, ``timm:<name>`` (``timm:mobilenetv4_conv_small``, ``timm:efficientnet_lite0``,
``timm:mobilenetv3_large_100``): built with random weights and never downloaded, then trained, searched, exported
and shipped like the torchvision ones. timm names its width variants (``mobilenetv3_large_075``), so the width
multiplier is chosen by name rather than by ``--width``."""

from __future__ import annotations

import difflib
from collections.abc import Callable

from edgeflow.errors import ConfigError, UnknownNameError
from edgeflow.models.multipliers import MIN_RESOLUTION

PREFIX = "timm:"
# Families whose heads do not pool globally: they take only the input size they were built for.
_FIXED_SIZE = ("vit", "deit", "swin", "beit", "eva", "cait", "xcit", "levit", "mvitv2", "pit", "tnt")


def is_timm_name(name: str) -> bool:
    return name.strip().lower().startswith(PREFIX)


def _timm():
    try:
        import timm
    except ImportError:
        raise ConfigError("timm models need timm installed (pip install timm)") from None
    return timm


def timm_spec(name: str) -> tuple[dict, Callable[..., object]]:
    """``timm:<arch>``'s metadata (the fields of a ModelInfo; the default input side from timm's config) and
    its builder; the registry wraps them into its entry."""
    timm = _timm()
    arch = name.strip()[len(PREFIX) :]
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        hint = f" (did you mean {', '.join(PREFIX + c for c in close)}?)" if close else ""
        raise UnknownNameError(f"unknown timm model {arch!r}{hint}")
    config = timm.models.get_pretrained_cfg(arch)
    input_size = getattr(config, "input_size", None) or (3, 224, 224)
    info = dict(
        name=PREFIX + arch,
        family=f"timm-{arch.split('_')[0]}",
        aliases=(),
        supports_width=False,
        global_pool=not arch.startswith(_FIXED_SIZE),
        default_resolution=int(input_size[-1]),
        source="timm",
        min_resolution=MIN_RESOLUTION,
    )

    def build(*, num_classes: int, width: float):
        return timm.create_model(arch, pretrained=False, num_classes=num_classes)

    return info, build
