"""Recipes and devices: every shipped file loads; bad files fail with the file and key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeflow.config import PROJECT_ROOT
from edgeflow.device import list_devices, load_device
from edgeflow.errors import ConfigError, UnknownNameError
from edgeflow.recipe import list_recipes, load_recipe


@pytest.mark.parametrize("path", sorted((PROJECT_ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_loads(path: Path) -> None:
    if "kind: nightly" in path.read_text():  # a nightly matrix, not a pipeline
        from edgeflow.nightly import load_nightly

        nightly = load_nightly(path.stem)
        assert nightly.name == path.stem and load_nightly(path) == nightly
        return
    recipe = load_recipe(path.stem)
    assert recipe.name == path.stem
    assert load_recipe(path) == recipe  # by path too


@pytest.mark.parametrize("path", sorted((PROJECT_ROOT / "devices").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_device_loads(path: Path) -> None:
    device = load_device(path.stem)
    assert device.name == path.stem and device.runtimes


def test_listings_cover_the_folders() -> None:
    assert {"default", "demo", "quick"} <= {recipe.name for recipe in list_recipes()}
    assert "cpu" in {device.name for device in list_devices()}


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nvariants: [{name: a, backend: openvino}]\ntrain: {epochs: 1, epocs: 2}\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml.*unknown key 'train\.epocs'"):
        load_recipe(path)


def test_wrong_type_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nvariants: [{name: a, backend: openvino}]\nprofile: {iterations: many}\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml.*key 'profile\.iterations'"):
        load_recipe(path)


def test_variant_precision_rules(tmp_path: Path) -> None:
    def load(variant: str):
        path = tmp_path / "mine.yaml"
        path.write_text(f"name: mine\nvariants: [{variant}]\n")
        return load_recipe(path).variants[0]

    assert load("{name: a, backend: onnxruntime, precision: int8}").quantize.method == "ort-static"
    assert load("{name: a, backend: openvino, precision: int8}").quantize.method == "nncf-ptq"
    assert load("{name: a, backend: openvino, precision: bf16}").execution_precision == "bf16"
    tensorrt = load("{name: a, backend: tensorrt, precision: int8}")
    assert tensorrt.quantize.method == "ort-static" and tensorrt.quantize.symmetric
    assert tensorrt.quantize.activation_type == "int8"
    assert load("{name: a, backend: tensorrt, precision: fp16}").execution_precision == "f16"
    with pytest.raises(ConfigError, match="method nncf-ptq does not build tensorrt artifacts"):
        load("{name: a, backend: tensorrt, precision: int8, quantize: {method: nncf-ptq}}")
    with pytest.raises(
        ConfigError, match="int8 variants run on openvino, onnxruntime, litert, tensorrt, executorch, not torch"
    ):
        load("{name: a, backend: torch, precision: int8}")
    with pytest.raises(ConfigError, match="method ort-static does not build openvino artifacts"):
        load("{name: a, backend: openvino, precision: int8, quantize: {method: ort-static}}")
    with pytest.raises(ConfigError, match="quantize applies to int8 variants"):
        load("{name: a, backend: openvino, precision: fp16, quantize: {subset_size: 3}}")
    with pytest.raises(ConfigError, match="bf16 variants run on openvino, not onnxruntime"):
        load("{name: a, backend: onnxruntime, precision: bf16}")
    # a method's own keys: another method's key is refused, naming the key and the method's keys
    with pytest.raises(ConfigError, match=r"key 'variants.0': quantize.calibrate_method does not apply to method "
                       r"nncf-ptq \(its keys: "):  # fmt: skip
        load("{name: a, backend: openvino, precision: int8, quantize: {calibrate_method: minmax}}")
    with pytest.raises(ConfigError, match="quantize.preset does not apply to method litert-static"):
        load("{name: a, backend: litert, precision: int8, quantize: {preset: mixed}}")
    # auto may take the keys of every method it may try for the backend
    assert load("{name: a, backend: onnxruntime, precision: int8, quantize: {method: auto, preset: mixed, "
                "calibrate_method: minmax}}").quantize.preset == "mixed"  # fmt: skip
    with pytest.raises(ConfigError, match="unknown quantization method 'nncf-pqt'"):
        load("{name: a, backend: openvino, precision: int8, quantize: {method: nncf-pqt}}")
    with pytest.raises(ConfigError, match="unknown backend 'openvin'"):
        load("{name: a, backend: openvin}")


def test_duplicate_variant_names(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nvariants: [{name: a, backend: openvino}, {name: a, backend: torch}]\n")
    with pytest.raises(ConfigError, match="duplicate variant names: a"):
        load_recipe(path)


def test_invalid_yaml_and_non_mapping(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_recipe(broken)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_device(scalar)


def test_unknown_names_and_missing_files() -> None:
    with pytest.raises(UnknownNameError, match="unknown recipe 'nope'.*default"):
        load_recipe("nope")
    with pytest.raises(UnknownNameError, match="unknown device 'jetsn'"):
        load_device("jetsn")
    with pytest.raises(ConfigError, match="device file not found"):
        load_device("missing/dev.yaml")


def test_device_unknown_runtime(tmp_path: Path) -> None:
    path = tmp_path / "dev.yaml"
    path.write_text("name: dev\nruntimes: [coreml]\nprecisions: [fp32]\n")
    with pytest.raises(ConfigError, match=r"dev\.yaml: key 'runtimes': unknown backend 'coreml'"):
        load_device(path)
    path.write_text("name: dev\nruntimes: [tflite, ov]\nprecisions: [fp32]\n")  # aliases name the backends
    assert load_device(path).runtimes == ["litert", "openvino"]


def test_resolution_multiplier() -> None:
    from edgeflow.recipe import ModelConfig

    assert ModelConfig(resolution_multiplier=0.5).input_side(224) == 112
    assert ModelConfig(resolution=96).input_side(224) == 96
    assert ModelConfig().input_side(224) is None


def test_execution_precision_only_for_openvino(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nvariants: [{name: a, backend: onnxruntime, execution_precision: f32}]\n")
    with pytest.raises(
        ConfigError, match="does not apply to the onnxruntime backend \\(it applies to: openvino, tensorrt\\)"
    ):
        load_recipe(path)
