"""Image classification data from a directory, in the layouts published sets use.

* ``DIR/<class>/<image>``: each class split 70/15/15 (train/holdout/test) by sorted file name and seed;
* ``DIR/train/<class>/`` + ``DIR/val/<class>/`` (ImageNet's layout, Imagenette's): ``val`` is the test split,
  and the holdout is 15% of each training class, carved deterministically by seed;
* ``DIR/train/`` + ``DIR/val/`` + ``DIR/test/``: ``val`` is the holdout (``DIR/holdout/`` is accepted for it);
* ``DIR/train/`` + ``DIR/test/``: the holdout is 15% of each training class.

Classes are the sorted folder names (as torchvision's ImageFolder orders them), the same in every split, unless
a class map or labels file orders them (:mod:`edgeflow.data.classes`). Images are read with PIL as RGB and
brought to the model's input size by the preprocessing's resize policy (:mod:`edgeflow.data.preprocess`; by
default the shorter side resized to the resolution and centre-cropped to a square, ImageNet's mean and std),
and kept in memory as uint8. An empty class, an unreadable image or a file that is not an image is one error
naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgeflow.data.preprocess import PreprocessSpec, read_image
from edgeflow.data.splits import IMAGENET_MEAN, IMAGENET_STD, DataSplits, ImageDataset, split_each_class
from edgeflow.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
HOLDOUT_FOLDERS = ("holdout", "val")


def load_image_folder(
    directory: str | Path,
    *,
    resolution: int,
    seed: int = 0,
    class_map: dict[str, int] | None = None,
    preprocess: PreprocessSpec | None = None,
) -> DataSplits:
    """Load ``directory`` as train/holdout/test splits, read by ``preprocess`` (its size, else ``resolution``
    x ``resolution``; its mean/std, else ImageNet's).

    ``class_map`` (folder name -> model output, from :mod:`edgeflow.data.classes`) orders the classes by
    output where it is a reordering, and records each folder's output where it is sparse.

    Raises:
        DataError: the directory is missing, has no class folders or an empty class, a class is too small
            to split, an image cannot be read, or the splits' class folders differ.
    """
    root = Path(directory).expanduser()
    if not root.exists():
        raise DataError(f"data directory not found: {directory}")
    if not root.is_dir():
        raise DataError(f"data source is not a directory: {root}")
    spec = (preprocess or PreprocessSpec()).resolved(
        size=(resolution, resolution), mean=IMAGENET_MEAN, std=IMAGENET_STD
    )
    folders = _split_folders(root)
    if folders is not None:
        listings = {split: _list_images(folder) for split, folder in folders.items()}
        class_names = sorted(listings["train"])
        for split, listing in listings.items():
            if sorted(listing) != class_names:
                raise DataError(_class_mismatch(folders["train"], folders[split], class_names, sorted(listing)))
        _check_mapped(class_map, class_names, root=folders["train"])  # before a single image is read
        data = {split: _read_split(listing, class_names, spec=spec) for split, listing in listings.items()}
        if "holdout" not in data:
            whole = data["train"]
            train, holdout = split_each_class(whole[1].numpy(), fractions=(0.85, 0.15), seed=seed, names=class_names)
            data["train"], data["holdout"] = _take(whole, train), _take(whole, holdout)
    else:
        listing = _list_images(root)
        class_names = sorted(listing)
        _check_mapped(class_map, class_names, root=root)
        whole = _read_split(listing, class_names, spec=spec)
        parts = split_each_class(whole[1].numpy(), fractions=(0.7, 0.15, 0.15), seed=seed, names=class_names)
        data = {split: _take(whole, part) for split, part in zip(("train", "holdout", "test"), parts, strict=True)}

    output_indices = None
    if class_map is not None:
        class_names, data, output_indices = _apply_class_map(class_map, class_names, data, root=root)
    datasets = {
        split: ImageDataset(images, labels, preprocess=spec, boxes=boxes)
        for split, (images, labels, boxes) in data.items()
    }
    return DataSplits(
        name=str(directory), class_names=class_names, seed=seed, output_indices=output_indices, **datasets
    )


def _check_mapped(class_map: dict[str, int] | None, class_names: list[str], *, root: Path) -> None:
    """Every class folder has an output in the map (checked before the images are read)."""
    unmapped = [name for name in class_names if class_map is not None and name not in class_map]
    if unmapped:
        more = f" (and {len(unmapped) - 1} more)" if len(unmapped) > 1 else ""
        raise DataError(
            f"class folder {root / unmapped[0]}{more} is not in the class map, the labels file or the labels "
            "the model carries"
        )


def _apply_class_map(class_map: dict[str, int], class_names: list[str], data: dict, *, root: Path):
    """(class names, data, output indices): relabelled by output where the map is a reordering of as many
    outputs as folders; else the folders stay the classes and each one's output is recorded."""
    _check_mapped(class_map, class_names, root=root)
    indices = [class_map[name] for name in class_names]
    if sorted(indices) != list(range(len(class_names))):
        return class_names, data, indices
    relabel = torch.tensor(indices, dtype=torch.int64)
    ordered = sorted(class_names, key=class_map.__getitem__)
    relabelled = {split: (images, relabel[labels], boxes) for split, (images, labels, boxes) in data.items()}
    return ordered, relabelled, None


def _split_folders(root: Path) -> dict[str, Path] | None:
    """The split folders of ``root`` (``train`` and ``test`` always, ``holdout`` when given), or None when
    ``root`` holds one folder per class."""
    present = {name: root / name for name in ("train", "val", "holdout", "test") if (root / name).is_dir()}
    if not present:
        return None
    if "train" not in present:
        raise DataError(
            f"{root} has {'/, '.join(sorted(present))}/ but no train/ folder; give train/, or one folder per class"
        )
    if "test" in present:
        holdout = present.get("holdout", present.get("val"))
        return {"train": present["train"], "test": present["test"], **({"holdout": holdout} if holdout else {})}
    if "val" in present:  # ImageNet's layout: val is what accuracy is reported on
        return {"train": present["train"], "test": present["val"]}
    raise DataError(f"{root} has a train/ folder but no val/ or test/ folder to evaluate on; give one of them")


def _list_images(folder: Path) -> dict[str, list[Path]]:
    """Image files of each class subfolder (searched recursively), sorted by path; hidden entries skipped."""
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{folder} has no class subfolders; expected one folder of images per class")
    listing = {}
    for class_folder in classes:
        entries = sorted(
            path
            for path in class_folder.rglob("*")
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(class_folder).parts)
        )
        strangers = [path for path in entries if path.suffix.lower() not in IMAGE_SUFFIXES]
        if strangers:
            more = f" (and {len(strangers) - 1} more)" if len(strangers) > 1 else ""
            raise DataError(
                f"{strangers[0]} is not an image{more}: class folders hold images only ({', '.join(IMAGE_SUFFIXES)})"
            )
        files = entries
        if not files:
            raise DataError(f"class folder {class_folder} has no images (looked for {', '.join(IMAGE_SUFFIXES)})")
        listing[class_folder.name] = files
    return listing


def _take(split: tuple, indices) -> tuple:
    images, labels, boxes = split
    return images[indices], labels[indices], None if boxes is None else boxes[indices]


def _read_split(
    listing: dict[str, list[Path]], class_names: list[str], *, spec: PreprocessSpec
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """All images of a split as uint8 (N, 3, H, W), their int64 labels (class by class) and, when the resize
    pads, the box each image fills."""
    paths = [(path, label) for label, name in enumerate(class_names) for path in listing[name]]
    images = np.empty((len(paths), spec.height, spec.width, 3), dtype=np.uint8)
    boxes = np.zeros((len(paths), 4), dtype=np.int64)
    for row, (path, _) in enumerate(paths):
        images[row], box = read_image(path, spec)
        boxes[row] = box or (0, 0, spec.height, spec.width)
    labels = torch.tensor([label for _, label in paths], dtype=torch.int64)
    padded = torch.from_numpy(boxes) if spec.resize == "keep_ratio_pad" else None
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels, padded


def _class_mismatch(reference: Path, other: Path, expected: list[str], found: list[str]) -> str:
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    details = [
        f"missing {', '.join(missing)}" if missing else "",
        f"extra {', '.join(extra)}" if extra else "",
    ]
    return f"class folders of {other} differ from {reference}: {'; '.join(d for d in details if d)}"
