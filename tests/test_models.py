"""Tests for edgeflow.models: registry, builders, width and resolution, checkpoint and ONNX loading."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeflow.errors import ConfigError, ModelLoadError, ShapeError, UnknownNameError
from edgeflow.models import (
    ModelInfo,
    check_resolution,
    count_parameters,
    create_model,
    list_models,
    load_checkpoint,
    load_onnx,
    model_info,
    register_model,
)
from edgeflow.models.multipliers import build_scaled_torchvision
from edgeflow.models.torchvision_models import build as build_torchvision

WIDTH_MODELS = ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mnasnet1_0", "efficientnet_b0"]


pytestmark = pytest.mark.usefixtures("no_downloads")  # conftest: anything fetching weights fails loudly


@pytest.fixture
def tiny_v1() -> nn.Module:
    torch.manual_seed(0)
    return create_model("mobilenet_v1", num_classes=10, width=0.25)


def test_list_models_covers_families_sorted() -> None:
    infos = list_models()
    names = [info.name for info in infos]
    assert names == sorted(names)
    families = {info.family for info in infos}
    expected = {
        "mobilenet_v1", "mobilenet_v2", "mobilenet_v3", "mnasnet", "efficientnet", "efficientnet_v2",
        "shufflenet_v2", "squeezenet", "resnet", "resnext", "wide_resnet", "densenet", "googlenet",
        "inception", "vgg", "alexnet", "regnet", "convnext", "vit", "swin", "maxvit",
    }  # fmt: skip
    assert expected <= families
    for name in ("efficientnet_b7", "efficientnet_v2_l", "mnasnet1_3", "shufflenet_v2_x2_0", "squeezenet1_1"):
        assert name in names
    assert not any("quantized" in name or "fcn" in name or "r3d" in name or "raft" in name for name in names)


def test_model_info_metadata() -> None:
    assert model_info("mobilenetv3").name == "mobilenet_v3_large"
    assert model_info("MobileNetV2").name == "mobilenet_v2"
    v1 = model_info("mobilenetv1")
    assert (v1.name, v1.family, v1.source, v1.aliases) == (
        "mobilenet_v1",
        "mobilenet_v1",
        "edgeflow",
        ("mobilenetv1",),
    )
    assert model_info("mobilenet_v3_large").aliases == ("mobilenetv3",)
    assert model_info("efficientnet_b1").default_resolution == 240
    assert model_info("inception_v3").default_resolution == 299
    assert model_info("resnet18").supports_width is False
    assert model_info("efficientnet_b3").supports_width is True
    assert model_info("vit_b_16").global_pool is False
    assert model_info("vgg11").global_pool is False


def test_unknown_model_suggests_close_matches() -> None:
    with pytest.raises(UnknownNameError, match="mobilenet_v2"):
        model_info("mobilenet_v22")


def test_duplicate_registration_raises() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        register_model(model_info("resnet18"), build_torchvision)
    alias_clash = ModelInfo("my_net", "mine", ("mobilenetv3",), False, True, 224, "edgeflow")
    with pytest.raises(ValueError, match="duplicate"):
        register_model(alias_clash, build_torchvision)
    assert "my_net" not in [info.name for info in list_models()]


@pytest.mark.parametrize(
    "name",
    [
        "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mnasnet0_5", "efficientnet_b0",
        "shufflenet_v2_x0_5", "squeezenet1_1", "resnet18",
    ],
)  # fmt: skip
def test_create_model_forward(name: str) -> None:
    model = create_model(name, num_classes=7)
    assert model.training  # returned in train mode, as torchvision does
    with torch.no_grad():
        out = model.eval()(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 7)


def test_create_model_validates_arguments() -> None:
    with pytest.raises(ConfigError, match="has no width multiplier; families with one: mobilenet_v1"):
        create_model("resnet18", num_classes=10, width=0.5)
    for width in (0.0, -1.0, 4.5):
        with pytest.raises(ConfigError, match="width"):
            create_model("mobilenet_v2", num_classes=10, width=width)
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("mobilenet_v2", num_classes=0)


def test_mobilenet_v1_matches_paper_parameter_counts() -> None:
    # Howard et al. 2017, Table 6: 4.2M, 2.6M, 1.3M, 0.5M parameters at alpha 1.0, 0.75, 0.5, 0.25.
    for width, millions in ((1.0, 4.2), (0.75, 2.6), (0.5, 1.3), (0.25, 0.5)):
        params = count_parameters(create_model("mobilenet_v1", num_classes=1000, width=width))
        assert abs(params / 1e6 - millions) <= 0.03 * millions + 0.03, (width, params)


@pytest.mark.parametrize("name", WIDTH_MODELS)
def test_width_multiplier_shrinks_and_rounds_channels(name: str) -> None:
    full = create_model(name, num_classes=10)
    half = create_model(name, num_classes=10, width=0.5)
    ratio = count_parameters(half) / count_parameters(full)
    assert ratio < 0.8
    if name == "mobilenet_v1":
        assert 0.2 <= ratio <= 0.35  # about width**2
    with torch.no_grad():
        assert half.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    for model in (full, half):
        for module_name, conv in model.named_modules():
            if not isinstance(conv, nn.Conv2d) or conv.out_channels == 10:
                continue
            if name.startswith("efficientnet") and module_name.endswith(".fc1"):
                continue  # torchvision's EfficientNet squeezes SE blocks to input_channels // 4, unrounded
            assert conv.out_channels % 8 == 0, (name, module_name, conv.out_channels)


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_large", "mnasnet0_75", "efficientnet_b2"])
def test_scaled_builder_at_width_one_matches_torchvision(name: str) -> None:
    # Pins the torchvision internals the width multiplier relies on (e.g. efficientnet._efficientnet_conf).
    with torch.device("meta"):
        scaled = build_scaled_torchvision(name, family=model_info(name).family, num_classes=10, width=1.0)
        reference = create_model(name, num_classes=10)
    assert str(scaled) == str(reference)
    assert {k: v.shape for k, v in scaled.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }


def test_check_resolution() -> None:
    check_resolution("mobilenet_v3_large", 128)
    check_resolution("mobilenetv3", 32)
    check_resolution("vgg11", 224)
    check_resolution("inception_v3", 75)
    with pytest.raises(ShapeError, match="at least 32"):
        check_resolution("mobilenet_v3_large", 16)
    with pytest.raises(ShapeError, match="fixed-size head"):
        check_resolution("vgg11", 128)
    with pytest.raises(ShapeError, match="at least 75"):
        check_resolution("inception_v3", 64)
    with pytest.raises(ShapeError, match="2048"):
        check_resolution("resnet18", 4096)
    with pytest.raises(ShapeError):
        check_resolution("resnet18", 128.0)  # type: ignore[arg-type]


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_load_checkpoint_round_trip(tmp_path: Path, tiny_v1: nn.Module) -> None:
    path = tmp_path / "v1.pt"
    torch.save(tiny_v1.state_dict(), path)
    loaded = load_checkpoint(path, arch="mobilenet_v1", width=0.25, num_classes=10)
    assert not loaded.training
    assert _same_weights(loaded, tiny_v1)


def test_load_checkpoint_nested_prefixed_and_inferred_classes(tmp_path: Path, tiny_v1: nn.Module) -> None:
    for key in ("state_dict", "model", "model_state_dict"):
        path = tmp_path / f"{key}.pth"
        state = {f"module.{k}": v for k, v in tiny_v1.state_dict().items()}  # as saved from DataParallel
        torch.save({key: state, "epoch": 3, "best_acc": 0.5}, path)
        loaded = load_checkpoint(path, arch="mobilenetv1", width=0.25)  # num_classes inferred
        assert loaded.classifier[-1].out_features == 10
        assert _same_weights(loaded, tiny_v1)


def test_load_checkpoint_infers_classes_for_other_heads(tmp_path: Path) -> None:
    model = create_model("squeezenet1_1", num_classes=5)  # its classifier is a Conv2d
    path = tmp_path / "squeeze.pt"
    torch.save(model.state_dict(), path)
    assert _same_weights(load_checkpoint(path, arch="squeezenet1_1"), model)


def test_load_checkpoint_accepts_old_densenet_keys(tmp_path: Path) -> None:
    model = create_model("densenet121", num_classes=3)
    # torchvision's published DenseNet weights name "norm1" as "norm.1" (pre-0.4 module names).
    old = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))(\d)", r"\1.\2", k): v for k, v in model.state_dict().items()}
    assert any(".norm.1." in key for key in old)
    path = tmp_path / "densenet.pth"
    torch.save(old, path)
    assert _same_weights(load_checkpoint(path, arch="densenet121"), model)


def test_load_checkpoint_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt", arch="mobilenet_v1")


def test_load_checkpoint_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "random.pt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(ModelLoadError, match="random.pt is not a readable PyTorch checkpoint"):
        load_checkpoint(path, arch="mobilenet_v1")


def test_load_checkpoint_truncated(tmp_path: Path, tiny_v1: nn.Module) -> None:
    path = tmp_path / "trunc.pt"
    torch.save(tiny_v1.state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="trunc.pt is not a readable PyTorch checkpoint"):
        load_checkpoint(path, arch="mobilenet_v1", width=0.25)


class _Exploit:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"echo pwned > {self.target}",))


def test_load_checkpoint_refuses_code(tmp_path: Path, tiny_v1: nn.Module) -> None:
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": tiny_v1.state_dict(), "payload": _Exploit(target)}, path)
    with pytest.raises(ModelLoadError, match="not a weights-only checkpoint.*refusing to unpickle code"):
        load_checkpoint(path, arch="mobilenet_v1", width=0.25)
    assert not target.exists()


def test_load_checkpoint_wrong_arch_or_width(tmp_path: Path, tiny_v1: nn.Module) -> None:
    path = tmp_path / "v1.pt"
    torch.save(tiny_v1.state_dict(), path)
    with pytest.raises(ModelLoadError, match=r"keys missing.*unexpected.*--arch"):
        load_checkpoint(path, arch="resnet18", num_classes=10)
    with pytest.raises(ModelLoadError, match=r"0 keys missing, 0 unexpected, first shape mismatch .*--width"):
        load_checkpoint(path, arch="mobilenet_v1", width=0.5, num_classes=10)


def test_load_checkpoint_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ModelLoadError, match="not a state_dict"):
        load_checkpoint(path, arch="mobilenet_v1")
    path = tmp_path / "meta.pt"
    torch.save({"epoch": 1}, path)
    with pytest.raises(ModelLoadError, match="holds no state_dict"):
        load_checkpoint(path, arch="mobilenet_v1")


def _export_onnx(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is deprecated, not gone
        try:
            torch.onnx.export(module.eval(), args, str(path), dynamo=False)
        except TypeError:  # torch without the dynamo switch
            torch.onnx.export(module.eval(), args, str(path))


class _TwoInputs(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


def test_load_onnx(tmp_path: Path) -> None:
    path = tmp_path / "tiny.onnx"
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    _export_onnx(net, (torch.randn(1, 3, 16, 16),), path)
    proto = load_onnx(path)
    assert len(proto.graph.input) == 1

    fake = tmp_path / "notes.onnx"
    fake.write_text("this is a text file, not a model\n")
    with pytest.raises(ModelLoadError, match="notes.onnx is not a valid ONNX model"):
        load_onnx(fake)

    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ModelLoadError, match="cut.onnx is not a valid ONNX model"):
        load_onnx(truncated)

    with pytest.raises(ModelLoadError, match="not found"):
        load_onnx(tmp_path / "missing.onnx")

    two = tmp_path / "two.onnx"
    _export_onnx(_TwoInputs(), (torch.randn(1, 2), torch.randn(1, 2)), two)
    with pytest.raises(ModelLoadError, match="has 2 inputs"):
        load_onnx(two)


def test_timm_architectures_by_name(tmp_path) -> None:
    """timm:<name> builds timm's model with random weights (nothing downloaded), exports like the others, and
    its checkpoint loads with weights_only; an unknown name suggests the close ones."""
    pytest.importorskip("timm", reason="timm is not installed (pip install -e .)")
    import numpy as np
    import onnxruntime as ort

    from edgeflow.errors import UnknownNameError
    from edgeflow.export.onnx import export_onnx
    from edgeflow.models import create_model, load_checkpoint, model_info

    info = model_info("timm:mobilenetv4_conv_small")
    assert (info.source, info.default_resolution, info.global_pool, info.supports_width) == ("timm", 224, True, False)
    model = create_model("timm:mobilenetv4_conv_small", num_classes=10).eval()
    assert type(model).__name__ == "MobileNetV3"  # timm builds MobileNetV4 with its MobileNetV3 class
    images = torch.randn(1, 3, 64, 64)
    artifact = export_onnx(model, input_shape=(1, 3, 64, 64), path=tmp_path / "v4.onnx")
    session = ort.InferenceSession(str(artifact.path))
    exported = session.run(None, {"input": images.numpy()})[0]
    with torch.no_grad():
        assert np.allclose(exported, model(images).numpy(), atol=1e-4)
    torch.save(model.state_dict(), tmp_path / "v4.pt")
    loaded = load_checkpoint(tmp_path / "v4.pt", arch="timm:mobilenetv4_conv_small", num_classes=10).eval()
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))
    with pytest.raises(UnknownNameError, match="did you mean timm:mobilenetv4_conv_small"):
        model_info("timm:mobilenetv4_conv_smal")
