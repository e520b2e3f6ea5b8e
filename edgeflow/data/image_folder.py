"""Image classification data from a directory, in the layouts published sets use.

* ``DIR/<class>/<image>``: each class split 70/15/15 (train/holdout/test) by sorted file name and seed;
* ``DIR/train/<class>/`` + ``DIR/val/<class>/`` (ImageNet's layout, Imagenette's): ``val`` is the test split,
  and the holdout is 15% of each training class, carved deterministically by seed;
* ``DIR/train/`` + ``DIR/val/`` + ``DIR/test/``: ``val`` is the holdout (``DIR/holdout/`` is accepted for it);
* ``DIR/train/`` + ``DIR/test/``: the holdout is 15% of each training class.

Classes are the sorted folder names (as torchvision's ImageFolder orders them), the same in every split, unless
a class map or labels file orders them (:mod:`edgeflow.data.classes`). An image is any file PIL reads, whatever
its extension (a GIF gives its first frame); hidden files and the ones file managers leave beside photos
(``.DS_Store``, ``._*``, ``Thumbs.db``, ``desktop.ini``) are skipped. Images are read as RGB and brought to the
model's input size by the preprocessing's resize policy (:mod:`edgeflow.data.preprocess`; by default the shorter
side resized to the resolution and centre-cropped to a square, ImageNet's mean and std), and kept in memory as
uint8. An empty class, or a file PIL cannot read, is one error naming it.

Only the images of the splits asked for are read (``split``): scoring ``val/`` of ``train/`` + ``val/`` opens no
image of ``train/`` (it only checks that ``train/`` has the same class folders).
"""

from __future__ import annotations

import difflib
import functools
from pathlib import Path

import numpy as np
import torch

from edgeflow.data.classes import ClassMap
from edgeflow.data.preprocess import PreprocessSpec, read_image
from edgeflow.data.splits import IMAGENET_MEAN, IMAGENET_STD, DataSplits, ImageDataset, split_each_class
from edgeflow.errors import DataError

SPLITS = ("train", "holdout", "test")
SPLIT_READS = {"train": ("train",), "holdout": ("holdout",), "test": ("test",), "all": SPLITS}
HOLDOUT_FOLDERS = ("holdout", "val")
# what file managers and archivers leave beside photos (hidden files, starting with ".", are skipped too)
LEFT_BESIDE_PHOTOS = frozenset({"thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini", "__macosx", "icon\r"})

LabelledPaths = list[tuple[Path, int]]


def load_image_folder(
    directory: str | Path,
    *,
    resolution: int,
    seed: int = 0,
    class_map: dict[str, int] | None = None,
    preprocess: PreprocessSpec | None = None,
    split: str = "all",
) -> DataSplits:
    """Load ``directory`` as train/holdout/test splits, read by ``preprocess`` (its size, else ``resolution``
    x ``resolution``; its mean/std, else ImageNet's).

    ``class_map`` (folder name -> model output, from :mod:`edgeflow.data.classes`) orders the classes by
    output where it names exactly the folders, and records each folder's output where it names others too.
    ``split`` (``train``, ``holdout``, ``test`` or ``all``) says which splits' images are read; the others come
    back empty, and their images are neither opened nor checked.

    Raises:
        DataError: the directory is missing, has no class folders or an empty class, a class is too small
            to split, a file cannot be read as an image, a class folder is not in the class map, or the
            splits' class folders differ.
    """
    if split not in SPLIT_READS:
        raise DataError(f"unknown split {split!r}; choose {', '.join(SPLIT_READS)}")
    reads = SPLIT_READS[split]
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
        class_names, paths = _split_layout(folders, reads=reads, seed=seed, class_map=class_map)
    else:
        class_folders = _class_folders(root)
        class_names = sorted(folder.name for folder in class_folders)
        _check_mapped(class_map, class_names, root=root)  # before a single file is opened
        whole = _labelled(_list_images(class_folders), class_names)
        parts = split_each_class(_labels(whole), fractions=(0.7, 0.15, 0.15), seed=seed, names=class_names)
        paths = {name: [whole[index] for index in part] for name, part in zip(SPLITS, parts, strict=True)}
    data = {name: _read_images(paths[name] if name in reads else [], spec=spec) for name in SPLITS}

    output_indices = None
    if class_map is not None:
        class_names, data, output_indices = _apply_class_map(class_map, class_names, data)
    datasets = {
        name: ImageDataset(images, labels, preprocess=spec, boxes=boxes)
        for name, (images, labels, boxes) in data.items()
    }
    return DataSplits(
        name=str(directory), class_names=class_names, seed=seed, output_indices=output_indices, **datasets
    )


def _split_layout(
    folders: dict[str, Path], *, reads: tuple[str, ...], seed: int, class_map: dict[str, int] | None
) -> tuple[list[str], dict[str, LabelledPaths]]:
    """The class names and the labelled image paths of the splits in ``reads``, from ``train/`` + ``test/``
    (+ holdout) folders; the class folders of every split are compared (by name only) all the same."""
    class_folders = {name: _class_folders(folder) for name, folder in folders.items()}
    class_names = sorted(folder.name for folder in class_folders["train"])
    for name, found in class_folders.items():
        names = sorted(folder.name for folder in found)
        if names != class_names:
            raise DataError(_class_mismatch(folders["train"], folders[name], class_names, names))
    shown = next((folders[name] for name in SPLITS if name in reads and name in folders), folders["train"])
    _check_mapped(class_map, class_names, root=shown)  # before a single file is opened
    paths: dict[str, LabelledPaths] = {}
    for name in ("holdout", "test"):
        if name in reads and name in folders:
            paths[name] = _labelled(_list_images(class_folders[name]), class_names)
    carved = "holdout" not in folders  # the holdout is 15% of each training class
    if "train" in reads or (carved and "holdout" in reads):
        whole = _labelled(_list_images(class_folders["train"]), class_names)
        paths["train"] = whole
        if carved:
            train, holdout = split_each_class(_labels(whole), fractions=(0.85, 0.15), seed=seed, names=class_names)
            paths["train"], paths["holdout"] = [whole[i] for i in train], [whole[i] for i in holdout]
    return class_names, paths


def _check_mapped(class_map: dict[str, int] | None, class_names: list[str], *, root: Path) -> None:
    """Every class folder has an output in the map (checked before the images are read)."""
    unmapped = [name for name in class_names if class_map is not None and name not in class_map]
    if not unmapped:
        return
    more = f" (and {len(unmapped) - 1} more)" if len(unmapped) > 1 else ""
    folder = f"class folder {root / unmapped[0]}{more}"
    if not isinstance(class_map, ClassMap):
        raise DataError(f"{folder} is not in the class map, the labels file or the labels the model carries")
    close = difflib.get_close_matches(unmapped[0], list(class_map), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise DataError(f"{folder} is not in {class_map.source} (which names: {class_map.describe_names()}){hint}")


def _apply_class_map(class_map: dict[str, int], class_names: list[str], data: dict):
    """(class names, data, output indices): relabelled by output where the map names exactly the folders, as
    outputs 0 to n-1; else (it names outputs without a folder) the folders stay the classes and each one's
    output is recorded."""
    indices = [class_map[name] for name in class_names]
    if len(class_map) != len(class_names) or sorted(indices) != list(range(len(class_names))):
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


def _skipped(name: str) -> bool:
    """Hidden entries and what file managers leave beside photos: never images, never classes."""
    return name.startswith(".") or name.lower() in LEFT_BESIDE_PHOTOS


def _class_folders(folder: Path) -> list[Path]:
    """The class subfolders of ``folder``, sorted by name (no file in them is opened)."""
    classes = sorted(path for path in folder.iterdir() if path.is_dir() and not _skipped(path.name))
    if not classes:
        raise DataError(f"{folder} has no class subfolders; expected one folder of images per class")
    return classes


@functools.cache
def _image_suffixes() -> frozenset[str]:
    """Extensions of the formats PIL opens: files with them are listed without being opened."""
    from PIL import Image

    return frozenset(suffix for suffix, kind in Image.registered_extensions().items() if kind in Image.OPEN)


def _is_image(path: Path) -> bool:
    """An image extension, or else a file whose header PIL recognizes (a photo saved without one)."""
    if path.suffix.lower() in _image_suffixes():
        return True
    from PIL import Image

    try:
        with Image.open(path):
            return True
    except Image.DecompressionBombError:
        return True  # an image: reading it says what is wrong with it
    except (OSError, ValueError, SyntaxError, EOFError):  # UnidentifiedImageError is an OSError
        return False


def _list_images(class_folders: list[Path]) -> dict[str, list[Path]]:
    """Image files of each class folder (searched recursively), sorted by path; hidden entries skipped."""
    listing = {}
    for class_folder in class_folders:
        files = sorted(
            path
            for path in class_folder.rglob("*")
            if path.is_file() and not any(_skipped(part) for part in path.relative_to(class_folder).parts)
        )
        strangers = [path for path in files if not _is_image(path)]
        if strangers:
            more = f" (and {len(strangers) - 1} more)" if len(strangers) > 1 else ""
            raise DataError(f"{strangers[0]} is not an image{more}: PIL cannot read it, and class folders hold images")
        if not files:
            raise DataError(f"class folder {class_folder} has no images")
        listing[class_folder.name] = files
    return listing


def _labelled(listing: dict[str, list[Path]], class_names: list[str]) -> LabelledPaths:
    """Every path with its class index, class by class."""
    return [(path, label) for label, name in enumerate(class_names) for path in listing[name]]


def _labels(paths: LabelledPaths) -> np.ndarray:
    return np.asarray([label for _, label in paths], dtype=np.int64)


def _read_images(
    paths: LabelledPaths, *, spec: PreprocessSpec
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The images at ``paths`` as uint8 (N, 3, H, W), their int64 labels and, when the resize pads, the box
    each image fills."""
    images = np.empty((len(paths), spec.height, spec.width, 3), dtype=np.uint8)
    boxes = np.zeros((len(paths), 4), dtype=np.int64)
    for row, (path, _) in enumerate(paths):
        images[row], box = read_image(path, spec)
        boxes[row] = box or (0, 0, spec.height, spec.width)
    labels = torch.from_numpy(_labels(paths))
    padded = torch.from_numpy(boxes) if spec.resize == "keep_ratio_pad" else None
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels, padded


def _class_mismatch(reference: Path, other: Path, expected: list[str], found: list[str]) -> str:
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    details = [
        f"missing {', '.join(missing)}" if missing else "",
        f"extra {', '.join(extra)}" if extra else "",
    ]
    return f"class folders of {other} differ from {reference}: {'; '.join(d for d in details if d)}"
