"""How a photo becomes the model's input: size, resize policy, scale, mean/std, channel order and layout.

Preprocessing is part of the model: a model trained (or shipped by someone else) with one pipeline scores
nothing on another. One :class:`PreprocessSpec` is set in the recipe (``preprocess:``), on the command line
(``--preprocess FILE``) or read from an ONNX's metadata (``edgeflow.preprocess``, which edgeflow writes into
every ONNX it exports), and the same spec reads the images for training, calibration, evaluation, the search
and the on-device agent (which is sent the images already preprocessed); ``report.json`` and the bundle's
manifest record it so an app reproduces it exactly.

Example (PaddleOCR's text-line orientation classifier, ``../shared/models/text-orientation``):

.. code-block:: yaml

    size: [48, 192]          # H, W
    resize: keep_ratio_pad   # the line scaled to height 48 keeping its aspect ratio, width at most 192
    fit: height
    pad: end                 # padded on the right
    mean: [0.5, 0.5, 0.5]
    std: [0.5, 0.5, 0.5]
    channels: bgr
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from edgeflow.config import StrictModel, parse_spec, read_yaml
from edgeflow.errors import ConfigError, DataError

Triple = tuple[float, float, float]
METADATA_KEY = "edgeflow.preprocess"  # the ONNX metadata_props entry that carries a PreprocessSpec as JSON
Resize = Literal["stretch", "shorter_side_crop", "keep_ratio_pad"]


class PreprocessSpec(StrictModel):
    """The declared preprocessing of a model's input. ``None`` fields take the model's or data set's own value
    when resolved (:meth:`resolved`): the size from the model's input, mean/std from the data set.

    ``resize``: ``stretch`` (to H x W, ignoring the aspect ratio), ``shorter_side_crop`` (shorter side to
    ``resize_side``, at least enough to cover H x W, then the centre H x W: torchvision's Resize + CenterCrop),
    ``keep_ratio_pad`` (scaled keeping the aspect ratio, then padded to H x W with ``pad_value``). With
    ``keep_ratio_pad``, ``fit: within`` scales the whole image into H x W (a letterbox) and ``fit: height``
    scales it to height H with the width following up to W (squeezed beyond: text-line recognizers and
    classifiers, PaddleOCR's). Pixels are multiplied by ``scale`` (default 1/255), then ``(x - mean) / std``
    per channel, with ``mean`` and ``std`` listed in the order of ``channels``. ``pad_value`` is in the
    model's input units, after normalization (PaddleOCR pads its normalized lines with 0).
    """

    size: tuple[int, ...] | None = Field(default=None, description="[H, W] of the model's input")
    resize: Resize = "shorter_side_crop"
    resize_side: int | None = Field(default=None, ge=1, le=8192, description="shorter side before the crop")
    fit: Literal["within", "height"] = "within"
    pad: Literal["end", "center"] = "end"
    pad_value: float = 0.0
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    scale: float = Field(default=1 / 255, gt=0)
    mean: Triple | None = None
    std: Triple | None = None
    channels: Literal["rgb", "bgr"] = "rgb"
    layout: Literal["nchw", "nhwc"] = "nchw"

    @field_validator("size")
    @classmethod
    def _positive_size(cls, size: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if size is not None and (len(size) != 2 or not all(1 <= side <= 8192 for side in size)):
            raise ValueError(f"size must be [H, W] with each side from 1 to 8192, got {list(size)}")
        return size

    @field_validator("std")
    @classmethod
    def _positive_std(cls, std: Triple | None) -> Triple | None:
        if std is not None and min(std) <= 0:
            raise ValueError(f"std must be positive, got {list(std)}")
        return std

    @model_validator(mode="after")
    def _keys_that_apply(self) -> PreprocessSpec:
        if self.resize_side is not None and self.resize != "shorter_side_crop":
            raise ValueError("resize_side applies to resize: shorter_side_crop")
        return self

    def resolved(self, *, size: tuple[int, int], mean: Triple, std: Triple) -> PreprocessSpec:
        """Every field concrete: ``size`` (the model's input) and ``mean``/``std`` (the data set's) fill what
        the spec leaves open."""
        return self.model_copy(
            update={
                "size": tuple(self.size or size),
                "mean": tuple(self.mean or mean),
                "std": tuple(self.std or std),
            }
        )

    @property
    def height(self) -> int:
        assert self.size is not None, "resolve the spec first"
        return self.size[0]

    @property
    def width(self) -> int:
        assert self.size is not None, "resolve the spec first"
        return self.size[1]

    def input_shape(self, *, batch: int = 1) -> tuple[int, int, int, int]:
        """The model input this spec produces: N x 3 x H x W, or N x H x W x 3 for ``layout: nhwc``."""
        if self.layout == "nhwc":
            return (batch, self.height, self.width, 3)
        return (batch, 3, self.height, self.width)

    def describe(self) -> dict:
        """The spec as JSON (what report.json and the bundle manifest record)."""
        return self.model_dump(mode="json")


def read_preprocess(path: str | Path) -> PreprocessSpec:
    """A ``--preprocess`` YAML; unknown keys and wrong types name the file and the key."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"preprocess file not found: {path}")
    return parse_spec(PreprocessSpec, read_yaml(path), source=str(path))


def as_preprocess(value: str | Path | dict | PreprocessSpec | None) -> PreprocessSpec | None:
    """A spec from a file path, a mapping (a recipe's ``preprocess:``) or as it is."""
    if value is None or isinstance(value, PreprocessSpec):
        return value
    if isinstance(value, dict):
        return parse_spec(PreprocessSpec, value, source="preprocess")
    return read_preprocess(value)


def parse_input_shape(text: str | tuple | list | None) -> tuple[int, ...] | None:
    """``1x3x48x192`` (or a list of ints) as a shape; every dimension a positive integer."""
    if text is None:
        return None
    parts = text.lower().replace(",", "x").split("x") if isinstance(text, str) else list(text)
    try:
        shape = tuple(int(str(part).strip()) for part in parts)
    except ValueError:
        raise ConfigError(f"input shape {text!r}: expected positive integers joined by x, like 1x3x48x192") from None
    if not shape or min(shape) < 1:
        raise ConfigError(f"input shape {text!r}: expected positive integers joined by x, like 1x3x48x192")
    return shape


def read_image(path: Path, spec: PreprocessSpec) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    """One image read as RGB and brought to ``spec``'s H x W by its resize policy, as uint8 (H, W, 3), with the
    (top, left, height, width) box the image fills when it was padded (``None`` when it fills the input)."""
    from PIL import Image

    try:
        with Image.open(path) as opened:  # the first frame of a GIF, an animated PNG or WebP
            # a palette with transparency goes through RGBA (straight to RGB, PIL warns about it)
            transparent = opened.mode == "P" and "transparency" in opened.info
            image = (opened.convert("RGBA") if transparent else opened).convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise DataError(f"cannot read image {path}: {reason}") from None
    resample = {
        "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC,
        "nearest": Image.Resampling.NEAREST,
    }[spec.interpolation]
    height, width = spec.height, spec.width
    source_width, source_height = image.size
    if spec.resize == "stretch":
        return np.asarray(image.resize((width, height), resample)), None
    if spec.resize == "shorter_side_crop":
        cover = max(height / source_height, width / source_width)
        factor = max(cover, (spec.resize_side or 0) / min(source_width, source_height))
        size = (max(width, round(source_width * factor)), max(height, round(source_height * factor)))
        image = image.resize(size, resample)
        left, top = (size[0] - width) // 2, (size[1] - height) // 2
        return np.asarray(image.crop((left, top, left + width, top + height))), None
    if spec.fit == "height":  # height fills; the width follows the aspect ratio up to W (PaddleOCR's rounding)
        inner = (min(width, math.ceil(height * source_width / source_height)), height)
    else:
        factor = min(height / source_height, width / source_width)
        inner = (min(width, max(1, round(source_width * factor))), min(height, max(1, round(source_height * factor))))
    resized = np.asarray(image.resize(inner, resample))
    top, left = (0, 0) if spec.pad == "end" else ((height - inner[1]) // 2, (width - inner[0]) // 2)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    canvas[top : top + inner[1], left : left + inner[0]] = resized
    return canvas, (top, left, inner[1], inner[0])
