"""Preprocessing as part of the model: each resize policy, scale, mean/std, channel order, layout and padding, on
small images made here; the --preprocess file's errors; the spec recorded and read back from an exported ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgeflow.data import load_data
from edgeflow.data.preprocess import PreprocessSpec, parse_input_shape, read_image, read_preprocess
from edgeflow.data.splits import ImageDataset
from edgeflow.errors import ConfigError, DataError


def _bands(path: Path, *, width: int, height: int) -> Path:
    """An image whose left half is red and right half blue (RGB), so crops and flips can be told apart."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2, 0] = 200
    pixels[:, width // 2 :, 2] = 100
    Image.fromarray(pixels).save(path)
    return path


def _spec(**keys) -> PreprocessSpec:
    return PreprocessSpec(**keys).resolved(size=(8, 8), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def test_stretch_ignores_the_aspect_ratio(tmp_path: Path) -> None:
    image, box = read_image(_bands(tmp_path / "wide.png", width=40, height=10), _spec(size=(6, 12), resize="stretch"))
    assert image.shape == (6, 12, 3) and box is None
    assert image[:, :5, 0].min() == 200 and image[:, 7:, 2].min() == 100  # both halves kept, squeezed


def test_shorter_side_crop_keeps_the_centre(tmp_path: Path) -> None:
    path = _bands(tmp_path / "wide.png", width=40, height=10)
    image, box = read_image(path, _spec(size=(10, 10), resize="shorter_side_crop"))
    assert image.shape == (10, 10, 3) and box is None
    assert image[:, :4, 0].min() == 200 and image[:, 6:, 2].min() == 100  # the centre: the two halves meet there
    # resize_side 20 first scales the shorter side to 20 (80 x 20), then the centre 10 x 10 is taken: the
    # border of the two halves is still in the middle
    larger, _ = read_image(path, _spec(size=(10, 10), resize="shorter_side_crop", resize_side=20))
    assert larger[:, :4, 0].min() == 200 and larger[:, 6:, 2].min() == 100


def test_keep_ratio_pad_fits_within_and_pads_at_the_end_or_evenly(tmp_path: Path) -> None:
    path = _bands(tmp_path / "wide.png", width=40, height=10)
    image, box = read_image(path, _spec(size=(16, 16), resize="keep_ratio_pad"))
    assert box == (0, 0, 4, 16)  # 40 x 10 scaled by 0.4 into 16 x 16: 16 x 4, at the top left
    assert image[4:].max() == 0
    image, box = read_image(path, _spec(size=(16, 16), resize="keep_ratio_pad", pad="center"))
    assert box == (6, 0, 4, 16)


def test_keep_ratio_pad_fit_height_is_paddleocrs_line_resize(tmp_path: Path) -> None:
    """Height 48, width ceil(48 x ratio) up to 192, squeezed beyond: PaddleOCR's classifier and recognizer."""
    spec = _spec(size=(48, 192), resize="keep_ratio_pad", fit="height")
    _, short = read_image(_bands(tmp_path / "short.png", width=30, height=20), spec)
    assert short == (0, 0, 48, 72)  # ceil(48 * 1.5)
    _, long = read_image(_bands(tmp_path / "long.png", width=400, height=20), spec)
    assert long == (0, 0, 48, 192)  # 960 px wanted, squeezed to 192


def test_scale_mean_std_channels_layout_and_pad_value() -> None:
    """(x * scale - mean) / std per channel in the order of `channels`; padded pixels are pad_value after
    normalization; nhwc puts the channels last."""
    pixels = torch.zeros(1, 3, 2, 4, dtype=torch.uint8)
    pixels[0, 0] = 255  # red
    spec = PreprocessSpec(
        size=(2, 4), scale=1 / 255, mean=(0.5, 0.25, 0.0), std=(0.5, 0.5, 0.25), channels="bgr", pad_value=-7.0
    )
    boxes = torch.tensor([[0, 0, 2, 2]])  # the image fills the left half
    dataset = ImageDataset(pixels, torch.tensor([0]), preprocess=spec, boxes=boxes)
    item, _ = dataset[0]
    assert item.shape == (3, 2, 4)
    # BGR: channel 0 is blue (0 -> (0 - 0.5) / 0.5 = -1), channel 2 is red (1 -> (1 - 0) / 0.25 = 4)
    assert torch.allclose(item[:, :, :2], torch.tensor([-1.0, -0.5, 4.0]).view(3, 1, 1).expand(3, 2, 2))
    assert torch.all(item[:, :, 2:] == -7.0)
    nhwc = ImageDataset(pixels, torch.tensor([0]), preprocess=spec.model_copy(update={"layout": "nhwc"}), boxes=boxes)
    assert torch.equal(nhwc[0][0], item.permute(1, 2, 0))
    # resized items keep the padded region where it was
    half = dataset.with_size((4, 8))[0][0]
    assert torch.all(half[:, :, 4:] == -7.0) and half[:, :, :4].min() > -7.0


def test_a_folder_is_read_with_the_spec(tmp_path: Path) -> None:
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for index in range(4):
            _bands(tmp_path / label / f"{index}.png", width=30 + 10 * index, height=10)
    spec = PreprocessSpec(size=(12, 24), resize="keep_ratio_pad", fit="height", channels="bgr", mean=(0.5,) * 3)
    splits = load_data(str(tmp_path), resolution=99, preprocess=spec)
    assert splits.size == (12, 24) and splits.train[0][0].shape == (3, 12, 24)
    assert splits.preprocess.std == (0.229, 0.224, 0.225)  # unset keys take the folder's default (ImageNet's)
    described = splits.describe()
    assert described["preprocess"]["channels"] == "bgr" and described["classes"] == ["a", "b"]
    every = splits.every_image()
    assert len(every) == 8 and every.boxes is not None


def test_preprocess_file_errors_name_the_file_and_key(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("size: [48, 192]\nresize: keep_ratio_pad\nchannels: bgr\nmean: [0.5, 0.5, 0.5]\n")
    assert read_preprocess(good).size == (48, 192)
    cases = {
        "resise: stretch\n": "unknown key 'resise'",
        "size: [48]\n": r"key 'size': size must be \[H, W\]",
        "channels: gbr\n": "key 'channels'",
        "std: [0.5, 0, 0.5]\n": "std must be positive",
        "resize: stretch\nresize_side: 256\n": "resize_side applies to resize: shorter_side_crop",
    }
    for text, message in cases.items():
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message) as raised:
            read_preprocess(bad)
        assert str(bad) in str(raised.value)
    with pytest.raises(ConfigError, match="preprocess file not found"):
        read_preprocess(tmp_path / "missing.yaml")


def test_input_shape_text() -> None:
    assert parse_input_shape("1x3x48x192") == (1, 3, 48, 192)
    assert parse_input_shape([2, 3, 8, 8]) == (2, 3, 8, 8)
    assert parse_input_shape("1x3x48") == (1, 3, 48)  # the model says how many dimensions it wants
    for bad in ("1x3xHx192", "0x3x8x8", ""):
        with pytest.raises(ConfigError, match="expected positive integers"):
            parse_input_shape(bad)


def test_a_builtin_set_follows_the_spec() -> None:
    splits = load_data("digits", resolution=16, preprocess=PreprocessSpec(size=(8, 24), layout="nhwc"))
    assert splits.train[0][0].shape == (8, 24, 3)
    with pytest.raises(DataError, match="class map"):
        load_data("digits", resolution=16, class_map={"0": 0})


SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ORIENTATION = SHARED / "models" / "text-orientation" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "preprocess" / "text-orientation.yaml"


def test_a_third_party_model_scores_its_own_pipelines_accuracy_with_its_own_preprocessing() -> None:
    """PaddleOCR's text-line orientation classifier ('?' height and width, opset 11, Constant weights, softmax
    output) on its evaluation set through ONNX Runtime: 98.5% (199 of 200 upright, 195 of 200 upside down) as
    its pipeline scores it, with examples/preprocess/text-orientation.yaml; RGB in place of BGR costs accuracy."""
    import edgeflow

    if not ORIENTATION.exists():
        pytest.skip(f"the shared text-orientation model is missing: {ORIENTATION}")
    data = str(SHARED / "data" / "text-orientation")
    stats = edgeflow.evaluate(ORIENTATION, data=data, preprocess=EXAMPLE, split="all", backend="onnxruntime")
    assert (stats.samples, round(stats.top1 * 400)) == (400, 394)
    rgb = read_preprocess(EXAMPLE).model_copy(update={"channels": "rgb", "fit": "within"})
    other = edgeflow.evaluate(ORIENTATION, data=data, preprocess=rgb, split="all", backend="onnxruntime")
    assert other.top1 < stats.top1


def test_recipe_keys_for_inputs_and_the_command_lines_overrides(tmp_path: Path) -> None:
    from edgeflow.recipe import load_recipe

    recipe = tmp_path / "r.yaml"
    base = "name: r\nvariants: [{name: v, backend: onnxruntime}]\n"
    recipe.write_text(base + "preprocess: {size: [48, 192], channels: bgr}\nmodel: {input_shape: [1, 3, 48, 192]}\n")
    loaded = load_recipe(recipe)
    assert loaded.preprocess.channels == "bgr" and loaded.model.input_shape == (1, 3, 48, 192)
    overridden = loaded.with_inputs(preprocess=PreprocessSpec(channels="rgb"), input_shape=(1, 3, 8, 8), labels="l")
    assert overridden.preprocess.channels == "rgb" and overridden.model.input_shape == (1, 3, 8, 8)
    assert overridden.labels == "l" and loaded.labels is None  # the loaded recipe is left as it was
    for text, message in [
        ("preprocess: {chanels: bgr}\n", "unknown key 'preprocess.chanels'"),
        ("model: {input_shape: [1, 3, 48]}\n", "input_shape must be 4 positive integers"),
        ("class_map: a.tsv\nlabels: b.txt\n", "give class_map or labels, not both"),
    ]:
        recipe.write_text(base + text)
        with pytest.raises(ConfigError, match=message):
            load_recipe(recipe)
