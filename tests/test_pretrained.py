"""Pretrained weights by name through torchvision's and timm's own loaders, from real files placed in their real
caches (torch hub's and Hugging Face's), moved to temporary folders. No test reaches a network: every request
goes through a proxy on a closed local port, which refuses at once."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import huggingface_hub
import pytest
import safetensors.torch
import timm
import torch
import torchvision.models as tvm

from edgeflow.errors import ConfigError, ModelLoadError
from edgeflow.models.head import output_classes
from edgeflow.models.pretrained import (
    has_pretrained,
    load_pretrained,
    parse_model_name,
    scaled_preprocess,
    weights_preprocess,
)

TV_ARCH, TV_WEIGHTS = "squeezenet1_1", tvm.SqueezeNet1_1_Weights.IMAGENET1K_V1  # 1.2 M parameters
TIMM_ARCH, TIMM_TAG = "mobilenetv3_small_050", "lamb_in1k"  # timm's default tag for it
TIMM_REPO = f"timm/{TIMM_ARCH}.{TIMM_TAG}"
COMMIT = "0123456789abcdef0123456789abcdef01234567"  # any 40-hex commit: refs/main names the snapshot
FAST = 5.0  # seconds a failed load may take without a network


@dataclass
class Caches:
    torch_checkpoints: Path  # $TORCH_HOME/hub/checkpoints
    hub: Path  # HF_HUB_CACHE


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed when the socket is: connecting to it is refused at once


@pytest.fixture
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Caches:
    """torch hub's and Hugging Face's caches in tmp_path, and no network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # torch.hub.get_dir() reads it on each call
    hub = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    # huggingface_hub reads its environment once, at import, into huggingface_hub.constants, which its
    # functions look up on each call: setting the constant is setting HF_HUB_CACHE before the import
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    proxy = f"http://127.0.0.1:{_closed_port()}"
    for variable in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(variable, proxy)
    for variable in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    _reread_proxies()
    yield Caches(torch_checkpoints=tmp_path / "torch" / "hub" / "checkpoints", hub=hub)
    _reread_proxies()  # the next user builds its clients from the restored environment


def _reread_proxies() -> None:
    urllib.request.install_opener(None)  # urllib builds its opener (with the proxies) on its next request
    huggingface_hub.close_session()  # the Hub client is created again, proxies and all, on its next request


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE=1, as huggingface_hub sees it when it was set before the import."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def _place_torchvision(caches: Caches, arch: str = TV_ARCH) -> tuple[Path, dict[str, torch.Tensor]]:
    """Random weights of ``arch``, built by torchvision, saved where torch hub caches TV_WEIGHTS' file."""
    state_dict = tvm.get_model(arch, weights=None).state_dict()
    caches.torch_checkpoints.mkdir(parents=True, exist_ok=True)
    path = caches.torch_checkpoints / os.path.basename(urlparse(TV_WEIGHTS.url).path)
    torch.save(state_dict, path)
    return path, state_dict


def _place_timm(caches: Caches, arch: str = TIMM_ARCH) -> tuple[Path, dict[str, torch.Tensor]]:
    """Random weights of ``arch`` in the Hugging Face cache layout of TIMM_REPO: the snapshot's file and
    refs/main naming the snapshot (timm reads nothing else for a registered architecture)."""
    state_dict = timm.create_model(arch, pretrained=False).state_dict()
    repo = caches.hub / f"models--{TIMM_REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    path = snapshot / "model.safetensors"
    safetensors.torch.save_file(state_dict, str(path))
    return path, state_dict


def _same_tensors(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], *, skip: str = "\0") -> None:
    loaded = module.state_dict()
    kept = [key for key in state_dict if not key.startswith(skip)]
    assert kept and all(torch.equal(loaded[key], state_dict[key]) for key in kept)


def _one_line(error: BaseException) -> str:
    """The error's message, checked to be one line with no chained traceback under it."""
    assert "\n" not in str(error)
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    return str(error)


def test_parse_model_name() -> None:
    assert parse_model_name("timm:efficientnet_b0.ra_in1k") == ("timm:efficientnet_b0", "ra_in1k")
    assert parse_model_name(" timm:efficientnet_b0 ") == ("timm:efficientnet_b0", None)
    assert parse_model_name("mobilenet_v3_large") == ("mobilenet_v3_large", None)
    assert parse_model_name("mobilenetv3") == ("mobilenetv3", None)


def test_has_pretrained() -> None:
    assert has_pretrained("mobilenet_v3_large") and has_pretrained(f"timm:{TIMM_ARCH}")
    assert has_pretrained(f"timm:{TIMM_ARCH}.{TIMM_TAG}") and not has_pretrained(f"timm:{TIMM_ARCH}.nope")
    assert not has_pretrained("mobilenet_v1") and not has_pretrained("mobilenet_v3_large", width=0.5)


def test_torchvision_weights_from_the_torch_hub_cache(caches: Caches) -> None:
    path, state_dict = _place_torchvision(caches)
    loaded = load_pretrained(TV_ARCH, "imagenet1k_v1")  # any case
    _same_tensors(loaded.module, state_dict)
    assert not loaded.module.training
    assert loaded.origin == "torchvision SqueezeNet1_1_Weights.IMAGENET1K_V1"
    assert (loaded.outputs, loaded.new_head) == (1000, False)
    assert loaded.categories[:2] == ["tench", "goldfish"] and len(loaded.categories) == 1000
    assert loaded.notes == [f"read from {path}"]
    assert loaded.preprocess.size == (224, 224) and loaded.preprocess.resize_side == 256
    default = load_pretrained(TV_ARCH, "DEFAULT")
    assert default.origin == loaded.origin
    _same_tensors(default.module, state_dict)


def test_torchvision_new_head(caches: Caches) -> None:
    _, state_dict = _place_torchvision(caches)
    loaded = load_pretrained(TV_ARCH, "IMAGENET1K_V1", num_classes=3)
    assert loaded.new_head and loaded.outputs == 1000 and output_classes(loaded.module) == 3
    _same_tensors(loaded.module, state_dict, skip="classifier.1.")  # SqueezeNet's head is a 1x1 conv
    assert loaded.module(torch.zeros(1, 3, 64, 64)).shape == (1, 3)
    assert not load_pretrained(TV_ARCH, "IMAGENET1K_V1", num_classes=1000).new_head


def test_unknown_or_absent_weights_list_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT"):
        load_pretrained("mobilenet_v3_large", "IMAGENET1K_V3")
    with pytest.raises(ConfigError, match=f"timm's tags are {TIMM_TAG} \\(or DEFAULT\\)"):
        load_pretrained(f"timm:{TIMM_ARCH}", "in22k")
    with pytest.raises(ConfigError, match="mobilenet_v1 has no pretrained weights"):
        load_pretrained("mobilenet_v1", "DEFAULT")
    with pytest.raises(ConfigError, match="give one"):
        load_pretrained(f"timm:{TIMM_ARCH}.{TIMM_TAG}", "DEFAULT")


def test_torchvision_weights_missing_fail_fast_in_one_line(caches: Caches) -> None:
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as raised:
        load_pretrained(TV_ARCH, "DEFAULT")
    assert time.monotonic() - start < FAST
    message = _one_line(raised.value)
    path = caches.torch_checkpoints / os.path.basename(urlparse(TV_WEIGHTS.url).path)
    assert "SqueezeNet1_1_Weights.IMAGENET1K_V1" in message and "not in the torch hub cache" in message
    assert message.endswith(f"put {TV_WEIGHTS.url} at {path}")
    assert list(caches.torch_checkpoints.iterdir()) == []  # no partial file


def test_torchvision_corrupt_or_other_architecture_names_the_file(caches: Caches) -> None:
    path, _ = _place_torchvision(caches, "shufflenet_v2_x0_5")
    with pytest.raises(ModelLoadError, match=f"^{path} is not usable as weights torchvision Squeeze") as raised:
        load_pretrained(TV_ARCH, "IMAGENET1K_V1")
    assert "Missing key(s)" in _one_line(raised.value)
    path.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(ModelLoadError, match=f"^{path} is not usable as weights") as raised:
        load_pretrained(TV_ARCH, "IMAGENET1K_V1")
    _one_line(raised.value)


def test_timm_weights_from_the_hugging_face_cache(caches: Caches, offline: None) -> None:
    path, state_dict = _place_timm(caches)
    loaded = load_pretrained(f"timm:{TIMM_ARCH}", TIMM_TAG)
    _same_tensors(loaded.module, state_dict)
    assert not loaded.module.training
    assert loaded.origin == f"timm {TIMM_ARCH}.{TIMM_TAG}"
    assert (loaded.outputs, loaded.new_head) == (1000, False)
    assert loaded.categories[0].startswith("tench") and len(loaded.categories) == 1000
    assert loaded.notes == [f"read from {path}"]
    assert loaded.preprocess.size == (224, 224) and loaded.preprocess.interpolation == "bicubic"
    tagged = load_pretrained(f"timm:{TIMM_ARCH}.{TIMM_TAG}", TIMM_TAG)  # the tag in the name agrees
    _same_tensors(tagged.module, state_dict)


def test_timm_cached_weights_load_without_a_network(caches: Caches) -> None:
    """Not offline: timm's hub client asks the Hub once, cannot connect, and uses the cached file."""
    _, state_dict = _place_timm(caches)
    start = time.monotonic()
    loaded = load_pretrained(f"timm:{TIMM_ARCH}", "DEFAULT")
    assert time.monotonic() - start < FAST
    _same_tensors(loaded.module, state_dict)


def test_timm_new_head(caches: Caches, offline: None) -> None:
    _, state_dict = _place_timm(caches)
    loaded = load_pretrained(f"timm:{TIMM_ARCH}", "DEFAULT", num_classes=3)
    assert loaded.new_head and loaded.outputs == 1000 and output_classes(loaded.module) == 3
    assert loaded.module.get_classifier().out_features == 3
    _same_tensors(loaded.module, state_dict, skip="classifier.")
    assert loaded.module(torch.zeros(1, 3, 64, 64)).shape == (1, 3)
    assert not load_pretrained(f"timm:{TIMM_ARCH}", "DEFAULT", num_classes=1000).new_head


@pytest.mark.parametrize("offline_mode", [True, False], ids=["HF_HUB_OFFLINE", "no-network"])
def test_timm_weights_missing_fail_fast_in_one_line(
    caches: Caches, monkeypatch: pytest.MonkeyPatch, offline_mode: bool
) -> None:
    if offline_mode:
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as raised:
        load_pretrained(f"timm:{TIMM_ARCH}.{TIMM_TAG}", TIMM_TAG)
    assert time.monotonic() - start < FAST  # the Hub client alone retries for ~45 s
    message = _one_line(raised.value)
    assert f"weights timm {TIMM_ARCH}.{TIMM_TAG} are not in the Hugging Face cache {caches.hub} " in message
    assert f"model.safetensors of the hub repo {TIMM_REPO}" in message
    assert f"https://huggingface.co/{TIMM_REPO}/resolve/main/model.safetensors" in message
    assert ("HF_HUB_OFFLINE=1" in message) == offline_mode
    assert not caches.hub.exists() or not any(caches.hub.rglob("*.safetensors"))


def test_timm_corrupt_or_other_architecture_names_the_file(caches: Caches, offline: None) -> None:
    path, _ = _place_timm(caches, "mobilenetv3_small_075")
    with pytest.raises(ModelLoadError, match=f"^{path} is not usable as weights timm {TIMM_ARCH}") as raised:
        load_pretrained(f"timm:{TIMM_ARCH}", TIMM_TAG, num_classes=3)  # a new head must not hide it
    _one_line(raised.value)
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage" * 4)
    with pytest.raises(ModelLoadError, match=f"^{path} is not usable as weights") as raised:
        load_pretrained(f"timm:{TIMM_ARCH}", TIMM_TAG)
    _one_line(raised.value)


def test_weights_preprocess_from_the_libraries_metadata() -> None:
    v2 = weights_preprocess("mobilenet_v3_large", "IMAGENET1K_V2")
    assert (v2.size, v2.resize, v2.resize_side, v2.interpolation) == ((224, 224), "shorter_side_crop", 232, "bilinear")
    assert v2.mean == (0.485, 0.456, 0.406) and v2.std == (0.229, 0.224, 0.225)
    assert weights_preprocess("mobilenetv3") == v2  # DEFAULT is V2
    assert weights_preprocess("mobilenet_v3_large", "IMAGENET1K_V1").resize_side == 256
    lite = weights_preprocess("timm:tf_efficientnet_lite1")  # timm's default, the in1k port
    assert (lite.size, lite.resize_side, lite.interpolation) == ((240, 240), 272, "bicubic")
    assert lite.mean == lite.std == (0.5, 0.5, 0.5)
    assert (
        weights_preprocess("timm:tf_efficientnet_lite1.in1k")
        == lite
        == weights_preprocess("timm:tf_efficientnet_lite1", "in1k")
    )
    assert weights_preprocess("timm:efficientnet_b0", "ra_in1k").resize_side == 256  # 224 / 0.875
    assert weights_preprocess("mobilenet_v1") is None
    with pytest.raises(ConfigError, match="IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT"):
        weights_preprocess("mobilenet_v3_large", "V2")


def test_scaled_preprocess_keeps_the_crop_fraction() -> None:
    lite = weights_preprocess("timm:tf_efficientnet_lite1")
    scaled = scaled_preprocess(lite, 160)
    assert (scaled.size, scaled.resize_side) == ((160, 160), round(272 * 160 / 240))
    assert (scaled.mean, scaled.interpolation) == (lite.mean, lite.interpolation)


def test_every_torchvision_weights_has_a_pipeline() -> None:
    for name in tvm.list_models(module=tvm):
        for weights in tvm.get_model_weights(name):
            spec = weights_preprocess(name, weights.name)
            assert spec.size[0] <= spec.resize_side, weights


def test_optimize_fine_tunes_weights_named_on_the_command_line(caches: Caches, tmp_path: Path) -> None:
    """The whole path as a user runs it: `edgeflow optimize squeezenet1_1 --weights IMAGENET1K_V1 --data digits`
    reads the cached file, reads the data with the weights' pipeline, gives the model a new head for the data's
    10 classes and fine-tunes it; the report says so."""
    from typer.testing import CliRunner

    from edgeflow.cli import app
    from edgeflow.recipe import load_recipe

    _place_torchvision(caches)
    recipe = load_recipe("quick").model_copy(deep=True)
    recipe.model.resolution = 64
    recipe.finetune = recipe.finetune.model_copy(update={"max_steps": 2, "augment": None, "channels_last": False})
    recipe.variants = [variant for variant in recipe.variants if variant.backend == "onnxruntime"]
    recipe_file = tmp_path / "recipe.yaml"
    import yaml

    recipe_file.write_text(yaml.safe_dump(recipe.model_dump(mode="json")))
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["optimize", TV_ARCH, "--weights", "IMAGENET1K_V1", "--recipe", str(recipe_file), "--out", str(out), "--json"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["weights"] == "torchvision SqueezeNet1_1_Weights.IMAGENET1K_V1 (1000 classes)"
    assert report["model"]["new_head"] and report["model"]["num_classes"] == 10
    assert report["training"]["started_from"].startswith("torchvision SqueezeNet1_1_Weights")
    spec = report["data"]["preprocess"]  # torchvision's pipeline (resize 256, crop 224) at 64 px
    assert (spec["size"], spec["resize_side"], spec["mean"]) == ([64, 64], round(256 * 64 / 224), [0.485, 0.456, 0.406])


def test_optimize_without_cached_weights_is_one_line(caches: Caches, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgeflow.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["optimize", TV_ARCH, "--weights", "DEFAULT", "--recipe", "quick", "--out", str(out)]
    )
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert lines[-1].startswith("error: weights torchvision SqueezeNet1_1_Weights.IMAGENET1K_V1 are not in the torch")
    assert lines[-1].endswith("or train from random weights (--weights none)") and not out.exists()


def test_named_weights_never_fine_tuned_on_other_classes_are_refused(caches: Caches, tmp_path: Path) -> None:
    """Weights kept as they are (finetune.when: never) would score the data's 10 classes with 1,000 ImageNet
    outputs, or with a new head never trained: an error, not a number."""
    import edgeflow
    from edgeflow.errors import DataError
    from edgeflow.recipe import load_recipe

    _place_torchvision(caches)
    recipe = load_recipe("quick").model_copy(deep=True)
    recipe.model.resolution = 64
    recipe.finetune = recipe.finetune.model_copy(update={"when": "never"})
    with pytest.raises(DataError, match="predicts 1000 classes but digits has 10 and finetune.when is never"):
        edgeflow.optimize(TV_ARCH, weights="IMAGENET1K_V1", recipe=recipe, out=tmp_path / "never")
    assert not (tmp_path / "never").exists()
