"""Tests for edgeflow.data: built-in digit sets, ImageFolder directories, splits and loaders."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgeflow.data import (
    DataSplits,
    ImageDataset,
    calibration_subset,
    list_datasets,
    load_data,
    make_loader,
)
from edgeflow.errors import DataError, UnknownNameError

SPLITS = ("train", "holdout", "test")


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_data("digits", resolution=16)


@pytest.fixture(scope="module")
def hard() -> DataSplits:
    return load_data("digits-hard", resolution=32)


def _sources(splits: DataSplits) -> dict[str, set[int]]:
    return {split: set(getattr(splits, split).sources.tolist()) for split in SPLITS}


def test_list_datasets() -> None:
    assert list_datasets() == ["digits", "digits-hard"]


def test_digits_sizes_classes_and_disjoint_splits(digits: DataSplits) -> None:
    assert (len(digits.train), len(digits.holdout), len(digits.test)) == (1077, 360, 360)
    sources = _sources(digits)
    assert sum(len(s) for s in sources.values()) == 1797
    assert not (sources["train"] & sources["test"] or sources["train"] & sources["holdout"])
    assert not sources["holdout"] & sources["test"]
    for split in SPLITS:
        assert set(getattr(digits, split).labels.tolist()) == set(range(10))
    assert digits.num_classes == 10
    assert digits.class_names == [str(d) for d in range(10)]
    assert digits.mean == digits.std == (0.5, 0.5, 0.5)


def test_digits_hard_sizes_and_base_digits_never_shared(digits: DataSplits, hard: DataSplits) -> None:
    assert (len(hard.train), len(hard.holdout), len(hard.test)) == (6 * 1077, 2 * 360, 3 * 360)
    base, variants = _sources(digits), _sources(hard)
    assert variants == base  # same base split as digits, every base digit used
    assert not variants["train"] & variants["test"]
    assert not variants["train"] & variants["holdout"]
    assert not variants["holdout"] & variants["test"]
    for split in SPLITS:
        assert set(getattr(hard, split).labels.tolist()) == set(range(10))
    assert hard.train.base_size == (32, 32)


def test_digits_hard_is_deterministic_by_seed(hard: DataSplits) -> None:
    again = load_data("digits-hard", resolution=32, seed=0)
    other = load_data("digits-hard", resolution=32, seed=1)
    for split in SPLITS:
        assert torch.equal(getattr(again, split).images, getattr(hard, split).images)
        assert torch.equal(getattr(again, split).labels, getattr(hard, split).labels)
    assert not torch.equal(other.test.images, hard.test.images)
    assert not torch.equal(other.train.sources, hard.train.sources)


def test_digits_deterministic_and_seed_changes_split(digits: DataSplits) -> None:
    again = load_data("digits", resolution=16, seed=0)
    other = load_data("digits", resolution=16, seed=1)
    assert torch.equal(again.test.sources, digits.test.sources)
    assert not torch.equal(other.test.sources, digits.test.sources)


def test_getitem_shape_range_and_grey_to_rgb(digits: DataSplits, hard: DataSplits) -> None:
    for dataset, size in ((digits.train, 16), (hard.test, 32)):
        image, label = dataset[0]
        assert image.shape == (3, size, size) and image.dtype == torch.float32
        assert isinstance(label, int) and 0 <= label < 10
        assert image.min() >= -1.0 and image.max() <= 1.0
        assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    black = ImageDataset(
        torch.zeros(1, 1, 8, 8, dtype=torch.uint8),
        torch.zeros(1, dtype=torch.int64),
        resolution=8,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    )
    assert torch.all(black[0][0] == -1.0)


def test_with_resolution_shares_data(hard: DataSplits) -> None:
    small = hard.test.with_resolution(20)
    image, label = small[3]
    assert image.shape == (3, 20, 20) and label == hard.test[3][1]
    assert small.images is hard.test.images and small.resolution == 20
    assert hard.test.resolution == 32
    assert hard.with_resolution(24).describe()["resolution"] == 24


def test_describe(digits: DataSplits) -> None:
    assert digits.describe() == {
        "name": "digits",
        "train": 1077,
        "holdout": 360,
        "test": 360,
        "num_classes": 10,
        "classes": [str(digit) for digit in range(10)],
        "output_indices": None,
        "resolution": 16,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "preprocess": {
            "size": [16, 16],
            "resize": "shorter_side_crop",
            "resize_side": None,
            "fit": "within",
            "pad": "end",
            "pad_value": 0.0,
            "interpolation": "bilinear",
            "scale": 1 / 255,
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
            "channels": "rgb",
            "layout": "nchw",
        },
        "seed": 0,
    }


def test_calibration_subset_deterministic_and_capped(digits: DataSplits) -> None:
    first = calibration_subset(digits.train, size=64, seed=3)
    assert len(first) == 64
    assert first.indices == calibration_subset(digits.train, size=64, seed=3).indices
    assert first.indices != calibration_subset(digits.train, size=64, seed=4).indices
    assert len(calibration_subset(digits.test, size=10_000)) == len(digits.test)
    with pytest.raises(DataError):
        calibration_subset(digits.test, size=0)


def test_make_loader_shuffle_is_deterministic(digits: DataSplits) -> None:
    def first_labels(seed: int) -> torch.Tensor:
        return next(iter(make_loader(digits.train, batch_size=32, shuffle=True, seed=seed)))[1]

    assert torch.equal(first_labels(0), first_labels(0))
    assert not torch.equal(first_labels(0), first_labels(1))
    images, labels = next(iter(make_loader(digits.test, batch_size=8, shuffle=False)))
    assert images.shape == (8, 3, 16, 16) and torch.equal(labels, digits.test.labels[:8])


def test_unknown_name_names_the_built_ins() -> None:
    with pytest.raises(UnknownNameError, match="digits-hard"):
        load_data("mnist", resolution=16)


def test_bad_resolution_or_seed() -> None:
    with pytest.raises(DataError, match="resolution"):
        load_data("digits", resolution=0)
    with pytest.raises(DataError, match="seed"):
        load_data("digits", resolution=16, seed=-1)


# ImageFolder -----------------------------------------------------------------------------------------------


def _write_images(folder: Path, *, count: int, color: tuple[int, int, int], size=(20, 14)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(sum(color))
    for i in range(count):
        pixels = (np.array(color) + rng.integers(0, 20, (size[1], size[0], 3))).clip(0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"img{i:02d}.png")


COLORS = {"cat": (200, 0, 0), "dog": (0, 200, 0), "emu": (0, 0, 200)}


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    for name, color in COLORS.items():
        _write_images(tmp_path / "pets" / name, count=6, color=color)
    return tmp_path / "pets"


def test_image_folder_loads_and_splits_each_class(folder: Path) -> None:
    splits = load_data(str(folder), resolution=12, seed=0)
    assert splits.class_names == ["cat", "dog", "emu"]
    assert (len(splits.train), len(splits.holdout), len(splits.test)) == (12, 3, 3)
    for split in SPLITS:
        assert getattr(splits, split).labels.bincount().tolist() in ([4, 4, 4], [1, 1, 1])
    assert splits.mean == (0.485, 0.456, 0.406)
    image, label = splits.test[0]
    assert image.shape == (3, 12, 12) and image.dtype == torch.float32
    assert splits.test.images.shape[1:] == (3, 12, 12)
    red = splits.test.images[splits.test.labels == 0].float()
    assert red[:, 0].mean() > 150 and red[:, 2].mean() < 50  # RGB order kept, labels match folders
    again = load_data(str(folder), resolution=12, seed=0)
    assert torch.equal(again.train.images, splits.train.images)
    assert splits.describe()["num_classes"] == 3


def test_image_folder_with_train_and_test_folders(tmp_path: Path) -> None:
    for split, count in (("train", 7), ("test", 2)):
        for name, color in COLORS.items():
            _write_images(tmp_path / split / name, count=count, color=color)
    splits = load_data(str(tmp_path), resolution=8)
    assert (len(splits.train), len(splits.holdout), len(splits.test)) == (18, 3, 6)
    for name, color in COLORS.items():
        _write_images(tmp_path / "val" / name, count=1, color=color)
    splits = load_data(str(tmp_path), resolution=8)
    assert (len(splits.train), len(splits.holdout), len(splits.test)) == (21, 3, 6)


def _layout(root: Path, counts: dict[str, int]) -> Path:
    """``root/<split>/<class>/`` with ``counts[split]`` images of each class; a split's images are told apart
    by their green channel (split index x 60) so a test can see which folder became which split."""
    for index, (split, count) in enumerate(counts.items()):
        for name, color in COLORS.items():
            _write_images(root / split / name, count=count, color=(color[0], 60 * index, color[2]))
    return root


def _green(dataset) -> set[int]:
    """The split folders (by their green level, see _layout) a dataset's images came from."""
    return {int(round(float(image[1].float().mean()) / 60)) for image in dataset.images}


def test_imagenet_layout_train_and_val(tmp_path: Path) -> None:
    """train/ + val/ (ImageNet's layout): val is the test split, every image of it; the holdout is carved
    from train, stratified, the same for the same seed."""
    root = _layout(tmp_path / "imagenet", {"train": 20, "val": 3})
    splits = load_data(str(root), resolution=8, seed=0)
    assert (len(splits.train), len(splits.holdout), len(splits.test)) == (51, 9, 9)
    assert _green(splits.test) == {1} and _green(splits.train) == _green(splits.holdout) == {0}
    assert splits.holdout.labels.bincount().tolist() == [3, 3, 3]  # 15% of each class
    again = load_data(str(root), resolution=8, seed=0)
    assert torch.equal(again.holdout.images, splits.holdout.images)
    other = load_data(str(root), resolution=8, seed=1)
    assert not torch.equal(other.holdout.images, splits.holdout.images)


def test_train_val_test_layout_uses_val_as_the_holdout(tmp_path: Path) -> None:
    root = _layout(tmp_path / "three", {"train": 5, "val": 2, "test": 4})
    splits = load_data(str(root), resolution=8)
    assert (len(splits.train), len(splits.holdout), len(splits.test)) == (15, 6, 12)
    assert (_green(splits.train), _green(splits.holdout), _green(splits.test)) == ({0}, {1}, {2})


def test_split_layouts_that_cannot_be_used_are_one_clear_error(tmp_path: Path) -> None:
    only_train = _layout(tmp_path / "only-train", {"train": 4})
    with pytest.raises(DataError, match="has a train/ folder but no val/ or test/ folder"):
        load_data(str(only_train), resolution=8)
    no_train = _layout(tmp_path / "no-train", {"val": 2, "test": 2})
    with pytest.raises(DataError, match="has test/, val/ but no train/ folder"):
        load_data(str(no_train), resolution=8)


def test_a_file_that_is_not_an_image_is_named(folder: Path) -> None:
    (folder / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"dog/notes\.txt is not an image"):
        load_data(str(folder), resolution=8)
    (folder / "dog" / "notes.txt").unlink()
    (folder / "dog" / ".DS_Store").write_bytes(b"hidden files are not images and are left alone")
    assert load_data(str(folder), resolution=8).num_classes == 3


def test_image_folder_class_sets_must_match(tmp_path: Path) -> None:
    for name, color in COLORS.items():
        _write_images(tmp_path / "train" / name, count=4, color=color)
    _write_images(tmp_path / "test" / "cat", count=2, color=(1, 2, 3))
    with pytest.raises(DataError, match="missing dog, emu"):
        load_data(str(tmp_path), resolution=8)


def test_corrupt_image_is_named(folder: Path) -> None:
    (folder / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(DataError, match="broken.png"):
        load_data(str(folder), resolution=8)


def test_folder_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no class subfolders"):
        load_data(str(empty), resolution=8)
    with pytest.raises(DataError, match="not found"):
        load_data(str(tmp_path / "missing"), resolution=8)
    (empty / "cat").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_data(str(empty), resolution=8)
    _write_images(empty / "cat", count=2, color=(9, 9, 9))
    with pytest.raises(DataError, match="'cat' has 2 image"):
        load_data(str(empty), resolution=8)


IMAGENETTE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenette2-128"


@pytest.mark.slow  # reads 13,394 photos (~7 s)
def test_imagenette_loads_in_its_own_layout() -> None:
    """Imagenette 2 (../shared), ImageNet's train/ + val/ layout as published: val is the test split, whole."""
    if not IMAGENETTE.is_dir():
        pytest.skip(f"the shared Imagenette folder is missing: {IMAGENETTE}")
    splits = load_data(str(IMAGENETTE), resolution=16, seed=0)
    assert splits.num_classes == 10 and splits.class_names[0] == "n01440764"  # sorted wnids, as ImageFolder
    assert len(splits.train) + len(splits.holdout) == 9469 and len(splits.test) == 3925
    assert len(splits.holdout) == 1420 and splits.holdout.labels.bincount().min() > 100


def test_labels_file_and_class_map_are_read_with_their_errors(tmp_path: Path) -> None:
    from edgeflow.data.classes import read_class_map, read_labels

    labels = tmp_path / "labels.txt"
    labels.write_text("0\n90\n180\n270\n\n")
    assert read_labels(labels) == {"0": 0, "90": 1, "180": 2, "270": 3}  # line order, not string order
    tsv = tmp_path / "classes.tsv"
    tsv.write_text("wnid\timagenet1k_index\tname\nn01440764\t0\ttench\nn02102040\t217\tEnglish springer\n")
    assert read_class_map(tsv) == {"n01440764": 0, "n02102040": 217}
    cases = {
        "a\nb\na\n": (read_labels, r"line 3: 'a' is already on line 1"),
        "a\n\nb\n": (read_labels, r"line 2: empty"),
        "x\t1\ny\tone\n": (read_class_map, r"line 2: output index 'one' is not a whole number"),
        "x\t1\ny\t1\n": (read_class_map, r"'x' and 'y' are both output 1"),
        "x 1\n": (read_class_map, r"line 1: expected 'folder<TAB>output index'"),
    }
    for number, (text, (reader, message)) in enumerate(cases.items()):
        bad = tmp_path / f"bad{number}"
        bad.write_text(text)
        with pytest.raises(DataError, match=message):
            reader(bad)
    with pytest.raises(DataError, match="not found"):
        read_labels(tmp_path / "missing.txt")


def test_a_labels_file_orders_numeric_class_folders(tmp_path: Path) -> None:
    """Folders 0, 90, 180, 270 sort as strings (0, 180, 270, 90); a labels file says which output each is."""
    shades = {"0": 10, "90": 70, "180": 130, "270": 190}
    for name, shade in shades.items():
        _write_images(tmp_path / "angles" / name, count=6, color=(shade, shade, shade))
    assert load_data(str(tmp_path / "angles"), resolution=8).class_names == ["0", "180", "270", "90"]
    order = {"0": 0, "90": 1, "180": 2, "270": 3}
    splits = load_data(str(tmp_path / "angles"), resolution=8, class_map=order)
    assert splits.class_names == ["0", "90", "180", "270"] and splits.output_indices is None
    for image, label in zip(splits.train.images, splits.train.labels, strict=True):
        assert abs(float(image.float().mean()) - shades[splits.class_names[int(label)]] - 10) < 12


def test_a_sparse_class_map_keeps_the_folders_and_records_their_outputs(folder: Path) -> None:
    splits = load_data(str(folder), resolution=8, class_map={"cat": 281, "dog": 207, "emu": 9, "eel": 390})
    assert splits.class_names == ["cat", "dog", "emu"] and splits.output_indices == [281, 207, 9]
    assert splits.with_resolution(12).output_indices == [281, 207, 9]
    with pytest.raises(DataError, match=r"pets/emu is not in the class map"):
        load_data(str(folder), resolution=8, class_map={"cat": 1, "dog": 2})
    with pytest.raises(DataError, match="built-in data set"):
        load_data("digits", resolution=8, class_map={"0": 0})


# Photo folders as published sets lay them out -------------------------------------------------------------


def _mean_colors(dataset) -> list[tuple[int, ...]]:
    return [tuple(int(round(float(v))) for v in image.float().mean(dim=(1, 2))) for image in dataset.images]


def test_any_file_pil_reads_is_an_image(folder: Path) -> None:
    """A GIF in a class folder (a published set has one) gives its first frame as RGB; upper-case, unusual or
    missing extensions are read for what the file is."""
    frames = [Image.new("RGB", (8, 8), color) for color in ((0, 0, 250), (0, 250, 0))]
    frames[0].save(folder / "cat" / "animated.gif", save_all=True, append_images=frames[1:])
    red = Image.new("RGB", (8, 8), (240, 10, 10))
    red.save(folder / "cat" / "SHOUTED.JPG", format="JPEG")
    red.save(folder / "cat" / "photo.jfif", format="JPEG")
    red.save(folder / "cat" / "no-extension", format="PNG")
    red.save(folder / "dog" / "saved-as.dat", format="PNG")
    splits = load_data(str(folder), resolution=8)
    every = splits.every_image()
    assert len(every) == 18 + 5 and splits.class_names == ["cat", "dog", "emu"]
    colors = _mean_colors(every)
    assert colors.count((0, 0, 250)) == 1 and (0, 250, 0) not in colors  # the first frame, and only it
    gif = colors.index((0, 0, 250))
    assert every.labels[gif] == 0 and every.images[gif].shape == (3, 8, 8)


def test_files_left_beside_photos_are_skipped(folder: Path) -> None:
    (folder / "cat" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "cat" / "._img00.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (folder / "dog" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504))
    (folder / "dog" / "desktop.ini").write_text("[.ShellClassInfo]\n")
    (folder / "__MACOSX" / "cat").mkdir(parents=True)
    (folder / "__MACOSX" / "cat" / "._img00.png").write_bytes(b"\x00\x05\x16\x07")
    splits = load_data(str(folder), resolution=8)
    assert splits.class_names == ["cat", "dog", "emu"] and len(splits.every_image()) == 18


def test_a_file_pil_cannot_read_is_one_error_naming_it(folder: Path) -> None:
    (folder / "dog" / "broken.gif").write_bytes(b"GIF89a and then nothing an image has")
    with pytest.raises(DataError, match=r"cannot read image .*dog/broken\.gif: ") as caught:
        load_data(str(folder), resolution=8)
    assert "\n" not in str(caught.value)
    (folder / "dog" / "broken.gif").unlink()
    (folder / "dog" / "notes").write_text("a file without an extension that is no image")
    with pytest.raises(DataError, match=r"dog/notes is not an image: PIL cannot read it"):
        load_data(str(folder), resolution=8)


def test_images_of_every_kind_are_read_and_broken_ones_named(folder: Path, monkeypatch) -> None:
    """What was right before stays so: CMYK, 16-bit, palette (with transparency, and no warning), 1-bit and RGBA
    images, a file name that is not UTF-8, a symlink loop; a zero-byte image and a decompression bomb are one
    line each."""
    import os
    import warnings

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    rgb.convert("CMYK").save(folder / "cat" / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 65535, (8, 8), dtype=np.uint16)).save(folder / "cat" / "sixteen.png")
    rgb.convert("P").save(folder / "cat" / "palette.png", transparency=bytes(range(100)))
    rgb.convert("1").save(folder / "dog" / "one-bit.png")
    rgb.convert("RGBA").save(folder / "dog" / "alpha.png")
    rgb.save(folder / "dog" / os.fsdecode(b"caf\xe9.png"))
    os.symlink("loop", folder / "emu" / "loop")
    os.symlink("..", folder / "emu" / "up")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        splits = load_data(str(folder), resolution=8)
    assert len(splits.every_image()) == 18 + 6
    (folder / "emu" / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"cannot read image .*emu/empty\.png: cannot identify image file") as caught:
        load_data(str(folder), resolution=8)
    assert "\n" not in str(caught.value)
    (folder / "emu" / "empty.png").unlink()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)  # every 20x14 image is now a bomb
    with pytest.raises(DataError, match=r"cannot read image .*: Image size \(280 pixels\) exceeds limit") as caught:
        load_data(str(folder), resolution=8)
    assert "\n" not in str(caught.value)


def _counting_reads(monkeypatch) -> list[Path]:
    """The paths of every image read from now on."""
    from edgeflow.data import image_folder

    opened: list[Path] = []
    real = image_folder.read_image

    def read_image(path, spec):
        opened.append(path)
        return real(path, spec)

    monkeypatch.setattr(image_folder, "read_image", read_image)
    return opened


def test_one_split_is_read_alone(tmp_path: Path, monkeypatch) -> None:
    """Scoring val/ of train/ + val/ opens no image of train/ (a corrupt one there stops nothing); the holdout
    carved from train/ reads its own images only; each is what loading every split gives."""
    root = _layout(tmp_path / "imagenet", {"train": 20, "val": 3})
    whole = load_data(str(root), resolution=8)
    opened = _counting_reads(monkeypatch)
    holdout = load_data(str(root), resolution=8, split="holdout")
    assert len(opened) == 9 and len(holdout.train) == len(holdout.test) == 0
    assert torch.equal(holdout.holdout.images, whole.holdout.images)
    assert torch.equal(holdout.holdout.labels, whole.holdout.labels)
    (root / "train" / "dog" / "img07.png").write_bytes(b"\x89PNG\r\n\x1a\ncorrupt")
    opened.clear()
    test = load_data(str(root), resolution=8, split="test")
    assert len(opened) == 9 and all(path.parent.parent.name == "val" for path in opened)
    assert torch.equal(test.test.images, whole.test.images) and torch.equal(test.test.labels, whole.test.labels)
    assert len(test.train) == len(test.holdout) == 0 and test.class_names == whole.class_names
    with pytest.raises(DataError, match=r"cannot read image .*train/dog/img07\.png"):
        load_data(str(root), resolution=8, split="all")
    shutil.rmtree(root / "train" / "emu")  # train/'s class folders are still compared, by name
    with pytest.raises(DataError, match="extra emu"):
        load_data(str(root), resolution=8, split="test")


def test_one_split_of_a_flat_folder_and_of_train_val_test(tmp_path: Path, folder: Path, monkeypatch) -> None:
    whole = load_data(str(folder), resolution=8)
    opened = _counting_reads(monkeypatch)
    test = load_data(str(folder), resolution=8, split="test")
    assert len(opened) == 3 and torch.equal(test.test.images, whole.test.images)
    three = _layout(tmp_path / "three", {"train": 5, "val": 2, "test": 4})
    opened.clear()
    holdout = load_data(str(three), resolution=8, split="holdout")
    assert len(opened) == 6 and _green(holdout.holdout) == {1} and len(holdout.train) == len(holdout.test) == 0
    with pytest.raises(DataError, match="unknown split 'val'"):
        load_data(str(three), resolution=8, split="val")


def test_a_labels_file_naming_outputs_without_a_folder_is_a_map(tmp_path: Path) -> None:
    """Labels naming two outputs, a folder for the first only: the folder is output 0 of two, not a mismatch;
    a folder the labels do not name is an error saying so, with the names they give."""
    from edgeflow.data.classes import read_class_map, read_labels

    _write_images(tmp_path / "photos" / "cat", count=4, color=(200, 0, 0))
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    splits = load_data(str(tmp_path / "photos"), resolution=8, class_map=read_labels(labels))
    assert splits.class_names == ["cat"] and splits.output_indices == [0]
    tsv = tmp_path / "classes.tsv"
    tsv.write_text("folder\toutput\ncat\t0\n")  # names exactly the folders: a reordering, as before
    assert load_data(str(tmp_path / "photos"), resolution=8, class_map=read_class_map(tsv)).output_indices is None
    _write_images(tmp_path / "photos" / "cow", count=4, color=(0, 200, 0))
    message = r"class folder .*photos/cow is not in .*labels\.txt \(which names: cat, dog\)$"
    with pytest.raises(DataError, match=message):
        load_data(str(tmp_path / "photos"), resolution=8, class_map=read_labels(labels))
    _write_images(tmp_path / "photos" / "cats", count=4, color=(0, 0, 200))
    message = r"photos/cats \(and 1 more\) is not in .*classes\.tsv \(which names: cat\); did you mean 'cat'\?"
    with pytest.raises(DataError, match=message):
        load_data(str(tmp_path / "photos"), resolution=8, class_map=read_class_map(tsv))
