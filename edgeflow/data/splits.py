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
from torch.utils.data import DataLoader, Dataset, Subset

from edgeflow.data.preprocess import PreprocessSpec, Triple
from edgeflow.errors import DataError

HALF: Triple = (0.5, 0.5, 0.5)
IMAGENET_MEAN: Triple = (0.485, 0.456, 0.406)
IMAGENET_STD: Triple = (0.229, 0.224, 0.225)


class ImageDataset(Dataset):
    """Images kept compactly as uint8 at their base size, resized and normalized per item.

    Args:
        images: uint8 tensor N x C x H x W with C = 1 (grey) or 3 (RGB).
        labels: int64 tensor of N class indices.
        preprocess: the resolved :class:`~edgeflow.data.preprocess.PreprocessSpec` the items follow (size,
            scale, mean/std, channel order, layout, pad value); or give ``resolution``, ``mean`` and ``std``
            for a square RGB NCHW input scaled by 1/255.
        sources: optional int64 tensor of N ids of the base image each item was made from, so callers can
            check that splits never share a base image.
        boxes: optional int64 tensor N x 4 (top, left, height, width) of the region each stored image fills
            (keep-ratio-and-pad): the rest becomes ``pad_value`` after normalization.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        preprocess: PreprocessSpec | None = None,
        resolution: int | None = None,
        mean: Triple | None = None,
        std: Triple | None = None,
        sources: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"images must be uint8 N x C x H x W with C in (1, 3), got {images.dtype} {tuple(images.shape)}"
            )
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if sources is not None and sources.shape != labels.shape:
            raise ValueError(f"sources must have shape {tuple(labels.shape)}, got {tuple(sources.shape)}")
        if boxes is not None and boxes.shape != (images.shape[0], 4):
            raise ValueError(f"boxes must have shape ({images.shape[0]}, 4), got {tuple(boxes.shape)}")
        if preprocess is None:
            if resolution is None or mean is None or std is None:
                raise ValueError("give preprocess, or resolution, mean and std")
            if resolution < 1:
                raise ValueError(f"resolution must be positive, got {resolution}")
            preprocess = PreprocessSpec(size=(resolution, resolution), mean=mean, std=std)
        elif preprocess.size is None or preprocess.mean is None or preprocess.std is None:
            raise ValueError("the preprocessing must be resolved (size, mean and std set)")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.sources = sources
        self.boxes = boxes
        self.preprocess = preprocess
        # Normalize the stored values directly: (x * scale - mean) / std = (x - mean / scale) / (std / scale).
        # (1 / scale) first, in float64: exactly 255.0 for the default scale, so the tensors equal 255 x mean
        self._offset = (1.0 / preprocess.scale) * torch.tensor(preprocess.mean).view(3, 1, 1)
        self._divisor = (1.0 / preprocess.scale) * torch.tensor(preprocess.std).view(3, 1, 1)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        box = self.boxes[index] if self.boxes is not None else None
        return self.prepare(self.images[index], box=box), int(self.labels[index])

    def prepare(self, stored: torch.Tensor, *, box: torch.Tensor | None = None) -> torch.Tensor:
        """One stored uint8 image (C x h x w, any size: a training crop too) as the model's input: resized to the
        input size, channels ordered, normalized, padded outside ``box``, laid out."""
        spec = self.preprocess
        image = stored.float()
        size = (spec.height, spec.width)
        shape = tuple(image.shape[1:])
        if shape != size:
            image = F.interpolate(
                image.unsqueeze(0), size=size, mode="bilinear", align_corners=False, antialias=True
            ).squeeze(0)
        if image.shape[0] == 1:
            image = image.expand(3, -1, -1)
        if spec.channels == "bgr":
            image = image.flip(0)
        image = (image - self._offset).div_(self._divisor)
        if box is not None:
            image = self._pad(image, box, stored=shape, size=size)
        if spec.layout == "nhwc":
            image = image.permute(1, 2, 0).contiguous()
        return image

    def _pad(self, image: torch.Tensor, box: torch.Tensor, *, stored: tuple, size: tuple) -> torch.Tensor:
        """``pad_value`` outside the box the image fills (scaled when the items are resized)."""
        top, left, height, width = (int(v) for v in box)
        y, x = size[0] / stored[0], size[1] / stored[1]
        top, left = round(top * y), round(left * x)
        bottom, right = top + round(height * y), left + round(width * x)
        padded = torch.full_like(image, self.preprocess.pad_value)
        padded[:, top:bottom, left:right] = image[:, top:bottom, left:right]
        return padded

    def with_size(self, size: tuple[int, int]) -> ImageDataset:
        """The same images and labels (shared, not copied), returned at another input size."""
        return ImageDataset(
            self.images,
            self.labels,
            preprocess=self.preprocess.model_copy(update={"size": tuple(size)}),
            sources=self.sources,
            boxes=self.boxes,
        )

    def with_resolution(self, resolution: int) -> ImageDataset:
        """The same images at input height ``resolution`` (the width scaled alike: square stays square)."""
        return self.with_size(scaled_size(self.size, resolution))

    @property
    def size(self) -> tuple[int, int]:
        """Height and width of the items."""
        return self.preprocess.height, self.preprocess.width

    @property
    def resolution(self) -> int:
        """The input height (the side, for a square input)."""
        return self.preprocess.height

    @property
    def mean(self) -> Triple:
        return self.preprocess.mean  # type: ignore[return-value]

    @property
    def std(self) -> Triple:
        return self.preprocess.std  # type: ignore[return-value]

    @property
    def base_size(self) -> tuple[int, int]:
        """Height and width of the stored images."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    def __repr__(self) -> str:
        return (
            f"ImageDataset(n={len(self)}, base={self.base_size[0]}x{self.base_size[1]}, "
            f"channels={self.images.shape[1]}, size={self.size[0]}x{self.size[1]})"
        )


def scaled_size(size: tuple[int, int], height: int) -> tuple[int, int]:
    """``size`` scaled to ``height``, keeping its aspect ratio."""
    if size[0] == size[1]:
        return (height, height)
    return (height, max(1, round(size[1] * height / size[0])))


@dataclass
class DataSplits:
    """Train, holdout and test splits of one data set.

    ``train`` is for training, fine-tuning and calibration; ``holdout`` for choices made during compression
    (never reported as accuracy); ``test`` is the only split whose accuracy is reported. Data loaded for one split
    (``load_data(..., split="test")``) has the others empty.
    """

    name: str
    train: ImageDataset
    holdout: ImageDataset
    test: ImageDataset
    class_names: list[str]
    seed: int = 0
    output_indices: list[int] | None = None  # each class's model output, where a class map names other outputs too

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

    @property
    def size(self) -> tuple[int, int]:
        """Height and width of the model input the splits give."""
        return self.train.size

    @property
    def preprocess(self) -> PreprocessSpec:
        """The resolved preprocessing every split follows."""
        return self.train.preprocess

    def with_size(self, size: tuple[int, int]) -> DataSplits:
        """The same splits, returned at another input size."""
        return DataSplits(
            name=self.name,
            train=self.train.with_size(size),
            holdout=self.holdout.with_size(size),
            test=self.test.with_size(size),
            class_names=list(self.class_names),
            seed=self.seed,
            output_indices=self.output_indices,
        )

    def with_resolution(self, resolution: int) -> DataSplits:
        """The same splits at input height ``resolution`` (the width scaled alike)."""
        return self.with_size(scaled_size(self.size, resolution))

    def labelled_by_output(self) -> DataSplits:
        """Where a sparse class map says which output each class is (10 folders of a 1,000-output model): the
        same images labelled by output index, so training learns those outputs and top-1 is over every output.
        Unchanged otherwise."""
        if self.output_indices is None:
            return self
        outputs = torch.tensor(self.output_indices, dtype=torch.int64)

        def relabel(part: ImageDataset) -> ImageDataset:
            return ImageDataset(
                part.images, outputs[part.labels], preprocess=part.preprocess, sources=part.sources, boxes=part.boxes
            )

        return DataSplits(
            name=self.name, train=relabel(self.train), holdout=relabel(self.holdout), test=relabel(self.test),
            class_names=list(self.class_names), seed=self.seed, output_indices=self.output_indices,
        )  # fmt: skip

    def every_image(self) -> ImageDataset:
        """Train, holdout and test together, in that order: a whole folder scored as it is."""
        parts = (self.train, self.holdout, self.test)
        sources = None if any(part.sources is None for part in parts) else torch.cat([part.sources for part in parts])
        boxes = None if any(part.boxes is None for part in parts) else torch.cat([part.boxes for part in parts])
        return ImageDataset(
            torch.cat([part.images for part in parts]),
            torch.cat([part.labels for part in parts]),
            preprocess=self.preprocess,
            sources=sources,
            boxes=boxes,
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary: name, split sizes, the classes in output order, resolution, normalization, the
        whole preprocessing and the seed."""
        return {
            "name": self.name,
            "train": len(self.train),
            "holdout": len(self.holdout),
            "test": len(self.test),
            "num_classes": self.num_classes,
            "classes": list(self.class_names),
            "output_indices": self.output_indices,
            "resolution": self.resolution,
            "mean": list(self.mean),
            "std": list(self.std),
            "preprocess": self.preprocess.describe(),
            "seed": self.seed,
        }


def stratified_split(labels: np.ndarray, *, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a stratified 60/20/20 train/holdout/test split, each sorted, deterministic by ``seed``."""
    indices = np.arange(len(labels))
    from sklearn.model_selection import train_test_split  # 3 s to import: only where a split is made

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


class SyntheticInputs(Dataset):
    """``count`` standard-normal tensors of ``shape`` (one item, no batch dimension), each labelled 0: what an
    artifact built to be *timed* is calibrated on. An INT8 graph's operators, layouts and kernels do not depend
    on its scales, only its accuracy does, and a block cut from the middle of a network takes no images."""

    def __init__(self, shape: tuple[int, ...], *, count: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.items = torch.randn((count, *shape), generator=generator)

    def __len__(self) -> int:
        return int(self.items.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.items[index], 0


def synthetic_splits(input_shape: tuple[int, ...], *, count: int, seed: int = 0) -> DataSplits:
    """Splits whose train part is ``count`` synthetic inputs of ``input_shape`` (batch dimension first) and whose
    holdout and test parts are empty: the calibration of artifacts built for timing (:class:`SyntheticInputs`)."""
    train = SyntheticInputs(tuple(input_shape[1:]), count=count, seed=seed)
    empty = SyntheticInputs(tuple(input_shape[1:]), count=0)
    return DataSplits(name="synthetic", train=train, holdout=empty, test=empty, class_names=[], seed=seed)  # type: ignore[arg-type]


def calibration_subset(dataset: ImageDataset, *, size: int, seed: int = 0) -> Subset:
    """A deterministic random subset of ``size`` items (all of them if the data set is smaller)."""
    if size < 1:
        raise DataError(f"calibration size must be at least 1, got {size}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=generator)[: min(size, len(dataset))]
    return Subset(dataset, sorted(order.tolist()))


def spread_indices(dataset: Dataset, size: int | None) -> list[int]:
    """The indices of ``size`` items of ``dataset`` that keep its classes' shares, in the set's order: each class's
    items in their own order, interleaved by their position within the class. A folder's split is sorted by
    class, so its first 300 images are two or three classes (Imagenette's holdout: 144, 143, 13 of 10 classes);
    a budget, a screening or an accuracy on them would be about those classes alone. Every index where ``size``
    is None or covers the set."""
    count = len(dataset)
    if size is None or size >= count:
        return list(range(count))
    labels = _labels(dataset)
    rank = np.empty(count)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rank[members] = (np.arange(len(members)) + 0.5) / len(members)
    return sorted(np.lexsort((np.arange(count), rank))[:size].tolist())


def _labels(dataset: Dataset) -> np.ndarray:
    """The class index of every item (a Subset's through its parent, without loading images where it can)."""
    if isinstance(dataset, Subset):
        return _labels(dataset.dataset)[np.asarray(dataset.indices, dtype=np.int64)]
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        return np.asarray(labels, dtype=np.int64)
    return np.asarray([int(dataset[index][1]) for index in range(len(dataset))], dtype=np.int64)


def make_loader(dataset: Dataset, *, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """A single-process DataLoader whose shuffling order depends only on ``seed``."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=0, generator=generator)


def image_stacks(items: Dataset, *, input_shape: tuple[int, ...], what: str) -> list[np.ndarray]:
    """``items``' images as float32 arrays of ``input_shape`` (the model's batch: 1, or a fixed size above 1),
    the last incomplete batch left out.

    Raises:
        ShapeError: the images do not fit the model's input, or there are fewer than one batch.
    """
    from edgeflow.errors import ShapeError

    batch = int(input_shape[0])
    sample_shape = (batch, *tuple(items[0][0].shape))
    if sample_shape != tuple(input_shape):
        raise ShapeError(f"{what} images have shape {sample_shape} but the model takes {tuple(input_shape)}")
    if len(items) < batch:
        raise ShapeError(f"the model takes batches of {batch} but only {len(items)} {what} images were given")
    return [
        np.stack([items[index][0].numpy() for index in range(start, start + batch)]).astype(np.float32)
        for start in range(0, len(items) - batch + 1, batch)
    ]
