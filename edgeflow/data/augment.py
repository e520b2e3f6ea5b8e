"""Training-time augmentation the field uses on photos: random-resized crop (Inception's, torchvision's
``RandomResizedCrop``) and horizontal flip, drawn deterministically from the seed, the epoch and the index, on
the stored uint8 images of a split; evaluation never sees it."""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field, model_validator
from torch.utils.data import Dataset

from edgeflow.config import StrictModel
from edgeflow.data.splits import ImageDataset
from edgeflow.errors import ConfigError


class AugmentConfig(StrictModel):
    """Random-resized crop and horizontal flip of the training images (edgeflow.data.augment)."""

    crop_scale: tuple[float, float] = Field(default=(0.35, 1.0), description="area fraction of each crop")
    crop_ratio: tuple[float, float] = Field(default=(3 / 4, 4 / 3), description="aspect ratio of each crop")
    flip: bool = True

    @model_validator(mode="after")
    def _ranges(self) -> AugmentConfig:
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale must be 0 < low <= high <= 1, got {list(self.crop_scale)}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must be 0 < low <= high, got {list(self.crop_ratio)}")
        return self


class AugmentedImages(Dataset):
    """``dataset``'s images, each drawn as a random crop of ``scale`` x its area with an aspect ratio in
    ``ratio`` (log-uniform), resized to the input size, flipped left-right with probability one half.

    ``set_epoch`` changes the draws; the same seed, epoch and index give the same image."""

    def __init__(
        self,
        dataset: ImageDataset,
        *,
        scale: tuple[float, float] = (0.35, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: bool = True,
        seed: int = 0,
    ) -> None:
        if dataset.boxes is not None:
            raise ConfigError(
                "augment: random crops and flips would move a keep_ratio_pad input's padding; train it with augment off"
            )
        self.dataset, self.scale, self.ratio, self.flip, self.seed = dataset, scale, ratio, flip, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        stored = self.dataset.images[index]
        top, left, height, width = crop_box(stored.shape[1], stored.shape[2], rng, scale=self.scale, ratio=self.ratio)
        image = stored[:, top : top + height, left : left + width]
        if self.flip and rng.random() < 0.5:
            image = image.flip(2)
        return self.dataset.prepare(image), int(self.dataset.labels[index])


def crop_box(
    height: int, width: int, rng: np.random.Generator, *, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random-resized crop: ten tries at an area fraction in ``scale`` and a
    log-uniform aspect ratio in ``ratio``, else the centre crop of the nearest allowed ratio (torchvision's)."""
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        crop_width = round(math.sqrt(target * aspect))
        crop_height = round(math.sqrt(target / aspect))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = int(rng.integers(0, height - crop_height + 1))
            left = int(rng.integers(0, width - crop_width + 1))
            return top, left, crop_height, crop_width
    aspect = width / height
    if aspect < ratio[0]:
        crop_width, crop_height = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        crop_height, crop_width = height, round(height * ratio[1])
    else:
        crop_width, crop_height = width, height
    return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width
