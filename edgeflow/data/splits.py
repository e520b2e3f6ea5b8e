"""The data types every data source returns, deterministic split helpers, and the ``load_data`` entry point.

Example:
    >>> splits = load_data("digits", resolution=16)
    >>> image, label = splits.train[0]
    >>> tuple(image.shape), splits.num_classes
    ((3, 16, 16), 10)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset, Subset

from edgeflow.errors import DataError

Triple = tuple[float, float, float]

HALF: Triple = (0.5, 0.5, 0.5)
IMAGENET_MEAN: Triple = (0.485, 0.456, 0.406)
IMAGENET_STD: Triple = (0.229, 0.224, 0.225)


class ImageDataset(Dataset):
    """Images kept compactly as uint8 at their base size, resized and normalized per item.

    Args:
        images: uint8 tensor N x C x H x W with C = 1 (grey) or 3 (RGB).
        labels: int64 tensor of N class indices.
        resolution: side R of the square float images ``__getitem__`` returns.
        mean: per-channel mean subtracted after scaling to [0, 1].
        std: per-channel standard deviation divided by after that.
        sources: optional int64 tensor of N ids of the base image each item was made from, so callers can
            check that splits never share a base image.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        resolution: int,
        mean: Triple,
        std: Triple,
        sources: torch.Tensor | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"images must be uint8 N x C x H x W with C in (1, 3), got {images.dtype} {tuple(images.shape)}"
            )
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if sources is not None and sources.shape != labels.shape:
            raise ValueError(f"sources must have shape {tuple(labels.shape)}, got {tuple(sources.shape)}")
        if resolution < 1:
            raise ValueError(f"resolution must be positive, got {resolution}")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.sources = sources
        self.resolution = int(resolution)
        self.mean: Triple = tuple(float(v) for v in mean)  # type: ignore[assignment]
        self.std: Triple = tuple(float(v) for v in std)  # type: ignore[assignment]
        # Normalize the 0..255 values directly: one subtraction and one in-place division per item.
        self._offset = 255.0 * torch.tensor(self.mean).view(3, 1, 1)
        self._divisor = 255.0 * torch.tensor(self.std).view(3, 1, 1)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index].float()
        size = self.resolution
        if tuple(image.shape[1:]) != (size, size):
            image = F.interpolate(
                image.unsqueeze(0), size=(size, size), mode="bilinear", align_corners=False, antialias=True
            ).squeeze(0)
        if image.shape[0] == 1:
            image = image.expand(3, -1, -1)
        return (image - self._offset).div_(self._divisor), int(self.labels[index])

    def with_resolution(self, resolution: int) -> ImageDataset:
        """The same images and labels (shared, not copied), returned at another input size."""
        return ImageDataset(
            self.images,
            self.labels,
            resolution=resolution,
            mean=self.mean,
            std=self.std,
            sources=self.sources,
        )

    @property
    def base_size(self) -> tuple[int, int]:
        """Height and width of the stored images."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    def __repr__(self) -> str:
        return (
            f"ImageDataset(n={len(self)}, base={self.base_size[0]}x{self.base_size[1]}, "
            f"channels={self.images.shape[1]}, resolution={self.resolution})"
        )


@dataclass
class DataSplits:
    """Train, holdout and test splits of one data set.

    ``train`` is for training, fine-tuning and calibration; ``holdout`` for choices made during compression
    (never reported as accuracy); ``test`` is the only split whose accuracy is reported.
    """

    name: str
    train: ImageDataset
    holdout: ImageDataset
    test: ImageDataset
    class_names: list[str]
    seed: int = 0
    output_indices: list[int] | None = None  # the model output of each class, where a sparse class map says

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def mean(self) -> Triple:
        return self.train.mean

    @property
    def std(self) -> Triple:
        return self.train.std

    @property
    def resolution(self) -> int:
        return self.train.resolution

    def with_resolution(self, resolution: int) -> DataSplits:
        """The same splits, returned at another input size."""
        return DataSplits(
            name=self.name,
            train=self.train.with_resolution(resolution),
            holdout=self.holdout.with_resolution(resolution),
            test=self.test.with_resolution(resolution),
            class_names=list(self.class_names),
            seed=self.seed,
            output_indices=self.output_indices,
        )

    def every_image(self) -> ImageDataset:
        """Train, holdout and test together, in that order: a whole folder scored as it is."""
        parts = (self.train, self.holdout, self.test)
        sources = None if any(part.sources is None for part in parts) else torch.cat([part.sources for part in parts])
        return ImageDataset(
            torch.cat([part.images for part in parts]),
            torch.cat([part.labels for part in parts]),
            resolution=self.resolution,
            mean=self.mean,
            std=self.std,
            sources=sources,
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary: name, split sizes, classes, resolution, normalization and seed."""
        return {
            "name": self.name,
            "train": len(self.train),
            "holdout": len(self.holdout),
            "test": len(self.test),
            "num_classes": self.num_classes,
            "resolution": self.resolution,
            "mean": list(self.mean),
            "std": list(self.std),
            "seed": self.seed,
        }


def stratified_split(labels: np.ndarray, *, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a stratified 60/20/20 train/holdout/test split, each sorted, deterministic by ``seed``."""
    indices = np.arange(len(labels))
    rest, test = train_test_split(indices, test_size=0.2, stratify=labels, random_state=seed)
    train, holdout = train_test_split(rest, test_size=0.25, stratify=labels[rest], random_state=seed)
    return np.sort(train), np.sort(holdout), np.sort(test)


def split_each_class(
    labels: np.ndarray, *, fractions: tuple[float, ...], seed: int, names: list[str] | None = None
) -> list[np.ndarray]:
    """Split every class on its own so each part gets at least one item of every class.

    Items of a class are shuffled (deterministically by ``seed``) in the order given, which callers keep
    sorted (e.g. by file name). Every part after the first gets ``max(1, round(fraction * n))`` items of a
    class and the first part takes the rest.

    Returns:
        One sorted index array per fraction.

    Raises:
        DataError: a class has fewer items than parts (``names`` names the classes in the message).
    """
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < len(fractions):
            name = names[int(label)] if names is not None else str(int(label))
            raise DataError(
                f"class {name!r} has {len(members)} image(s); at least {len(fractions)} are "
                f"needed to split it into {len(fractions)} parts"
            )
        # A class's own seed keeps its split unchanged when other classes are added or removed.
        members = members[np.random.default_rng([seed, int(label)]).permutation(len(members))]
        start = 0
        counts = [max(1, round(fraction * len(members))) for fraction in fractions[1:]]
        counts.insert(0, len(members) - sum(counts))
        for part, count in zip(parts, counts, strict=True):
            part.append(members[start : start + count])
            start += count
    return [np.sort(np.concatenate(part)) for part in parts]


def calibration_subset(dataset: ImageDataset, *, size: int, seed: int = 0) -> Subset:
    """A deterministic random subset of ``size`` items (all of them if the data set is smaller)."""
    if size < 1:
        raise DataError(f"calibration size must be at least 1, got {size}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=generator)[: min(size, len(dataset))]
    return Subset(dataset, sorted(order.tolist()))


def make_loader(dataset: Dataset, *, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """A single-process DataLoader whose shuffling order depends only on ``seed``."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=0, generator=generator)
