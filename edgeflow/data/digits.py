"""Built-in data sets from scikit-learn's 8x8 handwritten digits: ``digits`` and the harder ``digits-hard``.

``digits-hard`` renders several variants of every base digit on a 32x32 canvas: random size, rotation,
shear and position, clutter from fragments of other digits of the same split, line strokes, noise and
random contrast. Base digits are split first, so no base digit of the test split is seen in training.
Everything is generated in memory in about a second and depends only on the seed.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from edgeflow.data.preprocess import PreprocessSpec
from edgeflow.data.splits import HALF, DataSplits, ImageDataset, stratified_split

CANVAS = 32
VARIANTS = {"train": 6, "holdout": 2, "test": 3}
_SPLIT_CODES = {"train": 0, "holdout": 1, "test": 2}
_MAX_FRAGMENTS = 4
_MAX_STROKES = 3


@functools.cache
def _base_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 base digits as uint8 (N, 8, 8) in 0..255, and their labels."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return images, bunch.target.astype(np.int64)


def load_digits(*, resolution: int, seed: int = 0, preprocess: PreprocessSpec | None = None) -> DataSplits:
    """The 8x8 digits, split 60/20/20 (stratified by ``seed``), resized to ``resolution`` per item (or as
    ``preprocess`` says: its size, scale, mean/std, channel order and layout; the digits are stretched)."""
    spec = _spec(preprocess, resolution)
    images, labels = _base_digits()
    parts = {}
    for split, indices in zip(VARIANTS, stratified_split(labels, seed=seed), strict=True):
        parts[split] = ImageDataset(
            torch.from_numpy(images[indices]).unsqueeze(1),
            torch.from_numpy(labels[indices]),
            preprocess=spec,
            sources=torch.from_numpy(indices),
        )
    return DataSplits(name="digits", class_names=[str(d) for d in range(10)], seed=seed, **parts)


def load_digits_hard(*, resolution: int, seed: int = 0, preprocess: PreprocessSpec | None = None) -> DataSplits:
    """Cluttered, transformed 32x32 renderings of the digits: train 6, holdout 2, test 3 per base digit."""
    spec = _spec(preprocess, resolution)
    images, labels = _base_digits()
    parts = {}
    for split, indices in zip(VARIANTS, stratified_split(labels, seed=seed), strict=True):
        rng = np.random.default_rng([seed, _SPLIT_CODES[split]])
        owner = np.repeat(np.arange(len(indices)), VARIANTS[split])
        rendered = render_hard(images[indices], owner=owner, rng=rng)
        parts[split] = ImageDataset(
            torch.from_numpy(rendered).unsqueeze(1),
            torch.from_numpy(labels[indices][owner]),
            preprocess=spec,
            sources=torch.from_numpy(indices[owner]),
        )
    return DataSplits(name="digits-hard", class_names=[str(d) for d in range(10)], seed=seed, **parts)


def _spec(preprocess: PreprocessSpec | None, resolution: int) -> PreprocessSpec:
    return (preprocess or PreprocessSpec()).resolved(size=(resolution, resolution), mean=HALF, std=HALF)


def render_hard(base: np.ndarray, *, owner: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Render one hard variant of ``base[owner[i]]`` for every ``i``.

    Args:
        base: uint8 (N, 8, 8) digits of one split; clutter is cut from these too.
        owner: index into ``base`` of the digit each variant shows.
        rng: source of every random choice, drawn in a fixed order.

    Returns:
        uint8 array (len(owner), CANVAS, CANVAS).
    """
    count, n_base = len(owner), len(base)
    source = torch.from_numpy(base).float().div_(255.0).unsqueeze(1)

    digit = _place(
        source[owner],
        **_size(rng, count),
        angle=rng.uniform(-25.0, 25.0, count),
        shear=rng.uniform(-0.3, 0.3, count),
        shift=rng.uniform(-6.0, 6.0, (count, 2)),  # the digit may sit well off-centre
    )
    digit *= torch.from_numpy(rng.uniform(0.75, 1.0, (count, 1, 1))).float()

    # Fragments: a rectangular piece of another base digit of the same split, placed anywhere, dimmer.
    slots = count * _MAX_FRAGMENTS
    other = (np.repeat(owner, _MAX_FRAGMENTS) + rng.integers(1, n_base, slots)) % n_base
    height, width = rng.integers(3, 6, slots), rng.integers(3, 6, slots)
    top, left = rng.integers(0, 9 - height), rng.integers(0, 9 - width)
    grid = np.arange(8)
    rows = (grid >= top[:, None]) & (grid < (top + height)[:, None])
    cols = (grid >= left[:, None]) & (grid < (left + width)[:, None])
    crop = torch.from_numpy(rows[:, :, None] & cols[:, None, :]).unsqueeze(1)
    fragments = _place(
        source[other] * crop,
        **_size(rng, slots),
        angle=rng.uniform(-45.0, 45.0, slots),
        shear=rng.uniform(-0.3, 0.3, slots),
        shift=rng.uniform(-13.0, 13.0, (slots, 2)),
    ).view(count, _MAX_FRAGMENTS, CANVAS, CANVAS)
    used = np.arange(_MAX_FRAGMENTS) < rng.integers(2, _MAX_FRAGMENTS + 1, count)[:, None]
    strength = rng.uniform(0.3, 0.65, (count, _MAX_FRAGMENTS)) * used
    clutter = (fragments * torch.from_numpy(strength).float()[:, :, None, None]).amax(dim=1)

    strokes = _strokes(rng, count)
    canvas = torch.maximum(torch.maximum(digit, clutter), strokes)

    contrast = rng.uniform(0.6, 1.0, (count, 1, 1)).astype(np.float32)
    brightness = rng.uniform(0.0, 0.25, (count, 1, 1)).astype(np.float32)
    sigma = rng.uniform(0.02, 0.1, (count, 1, 1)).astype(np.float32)
    noise = rng.standard_normal((count, CANVAS, CANVAS), dtype=np.float32)
    pixels = canvas.numpy() * contrast + brightness + noise * sigma
    return np.rint(pixels.clip(0.0, 1.0) * 255.0).astype(np.uint8)


def _size(rng: np.random.Generator, count: int) -> dict[str, np.ndarray]:
    """Width and height in pixels of placed digits: 14 to 22 pixels, aspect ratio within 15%."""
    size, aspect = rng.uniform(14.0, 22.0, count), rng.uniform(0.85, 1.15, count)
    return {"width": size * aspect, "height": size / aspect}


def _place(
    images: torch.Tensor,
    *,
    width: np.ndarray,
    height: np.ndarray,
    angle: np.ndarray,
    shear: np.ndarray,
    shift: np.ndarray,
) -> torch.Tensor:
    """Draw each (1, h, w) image on an empty canvas at ``width`` x ``height`` pixels, sheared, rotated by
    ``angle`` degrees and with its centre moved by ``shift`` pixels (x, y) from the canvas centre.

    Returns:
        float tensor (N, CANVAS, CANVAS).
    """
    radians = np.deg2rad(angle)
    cos, sin = np.cos(radians), np.sin(radians)
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    shearing = np.zeros_like(rotation)
    shearing[:, 0, 0] = shearing[:, 1, 1] = 1.0
    shearing[:, 0, 1] = shear
    scaling = np.zeros_like(rotation)
    scaling[:, 0, 0] = width / CANVAS
    scaling[:, 1, 1] = height / CANVAS
    # The image's [-1, 1] frame maps onto the canvas frame by x = M u + t; grid_sample wants u for each x.
    inverse = torch.from_numpy(np.linalg.inv(rotation @ shearing @ scaling)).float()
    origin = torch.from_numpy(shift * (2.0 / CANVAS)).float()
    grid = torch.matmul(_canvas_grid()[None] - origin[:, None, :], inverse.transpose(1, 2))
    grid = grid.view(len(images), CANVAS, CANVAS, 2)
    placed = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return placed.squeeze(1)


@functools.cache
def _canvas_grid() -> torch.Tensor:
    """Normalized (x, y) centres of the canvas pixels, row by row, as (CANVAS * CANVAS, 2)."""
    centres = (torch.arange(CANVAS, dtype=torch.float32) + 0.5) * (2.0 / CANVAS) - 1.0
    return torch.stack(torch.meshgrid(centres, centres, indexing="xy"), -1).view(-1, 2)


def _strokes(rng: np.random.Generator, count: int) -> torch.Tensor:
    """One to three straight line strokes per canvas, as float (count, CANVAS, CANVAS)."""
    slots = count * _MAX_STROKES
    lines = _place(
        torch.ones(1, 1, 1, 4).expand(slots, -1, -1, -1),
        width=rng.uniform(6.0, 20.0, slots),
        height=rng.uniform(1.0, 2.0, slots),
        angle=rng.uniform(0.0, 180.0, slots),
        shear=np.zeros(slots),
        shift=rng.uniform(-14.0, 14.0, (slots, 2)),
    ).view(count, _MAX_STROKES, CANVAS, CANVAS)
    used = np.arange(_MAX_STROKES) < rng.integers(1, _MAX_STROKES + 1, count)[:, None]
    strength = rng.uniform(0.25, 0.55, (count, _MAX_STROKES)) * used
    return (lines * torch.from_numpy(strength).float()[:, :, None, None]).amax(dim=1)
