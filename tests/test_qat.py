"""Quantization-aware training with NNCF: int8 IR that runs, the caller's module untouched, clear errors."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn

from edgeflow.accuracy import evaluate_compiled
from edgeflow.backends import get_backend
from edgeflow.backends.base import RuntimeSettings
from edgeflow.backends.openvino import read_model
from edgeflow.compress.nncf_ptq import is_quantized
from edgeflow.compress.qat import NOT_QUANTIZED, quantization_aware_training
from edgeflow.compress.stats import layer_precisions
from edgeflow.data import load_data
from edgeflow.errors import ConfigError, ShapeError
from edgeflow.models import create_model
from edgeflow.progress import Progress
from edgeflow.recipe import QatConfig, QuantizeConfig, TrainConfig
from edgeflow.train import train

pytestmark = [
    pytest.mark.slow,  # quantization-aware training: a minute of fine-tuning on this CPU
    pytest.mark.usefixtures("one_torch_thread"),
]

SHAPE = (1, 3, 32, 32)


@pytest.fixture(scope="module")
def digits32():
    return load_data("digits", resolution=32)


@pytest.fixture(scope="module")
def trained(digits32) -> nn.Module:
    """mobilenet_v3_small (h-swish, squeeze-excitation) after 30 steps at 32 px."""
    torch.manual_seed(0)
    module = create_model("mobilenet_v3_small", num_classes=10)
    train(module, digits32.train, config=TrainConfig(epochs=1, max_steps=30, batch_size=32))
    return module.eval()


@pytest.fixture(scope="module")
def qat_result(trained, digits32, tmp_path_factory):
    before = {key: value.clone() for key, value in trained.state_dict().items()}
    output = io.StringIO()
    config = QuantizeConfig(method="nncf-qat", subset_size=32, qat=QatConfig(epochs=1, max_steps=10, batch_size=32))
    artifact, summary = quantization_aware_training(
        trained,
        splits=digits32,
        config=config,
        input_shape=SHAPE,
        path=tmp_path_factory.mktemp("qat") / "m_qat.xml",
        progress=Progress(Console(file=output, width=120)),
    )
    return artifact, summary, before, output.getvalue()


def test_qat_ir_is_int8_and_runs(qat_result, trained, digits32) -> None:
    artifact, summary, _, _ = qat_result
    assert artifact.format == "openvino" and artifact.precision == "int8" and artifact.input_shape == SHAPE
    model = read_model(artifact)
    quantized, _ = layer_precisions(model)
    assert is_quantized(model) and len(quantized) == summary.quantized_layers > 0
    # Weights stored as int8: the weights file is far smaller than the fp32 parameters.
    float_bytes = 4 * sum(parameter.numel() for parameter in trained.parameters())
    assert artifact.path.with_suffix(".bin").stat().st_size < 0.7 * float_bytes
    compiled = get_backend("openvino").compile(artifact, settings=RuntimeSettings(execution_precision="f32"))
    stats = evaluate_compiled(compiled, digits32.holdout, split="holdout")
    assert stats.top1 == pytest.approx(summary.holdout_top1_quantized)
    assert stats.top1 > 0.3  # 10 classes: far above chance after 30 + 10 steps


def test_qat_summary(qat_result) -> None:
    artifact, summary, _, progress_output = qat_result
    assert summary.method == "nncf-qat"
    assert summary.settings["preset"] == "mixed"  # h-swish
    assert summary.settings["steps"] == 10 and summary.settings["lr"] == 1e-4 and summary.settings["epochs"] == 1
    assert 0.0 <= summary.holdout_top1_quantized <= 1.0
    assert all(layer.reason == NOT_QUANTIZED for layer in summary.float_layers)
    assert "nncf-qat" in artifact.lineage[-1]
    assert "qat" in progress_output and "10/10" in progress_output


def test_original_module_is_untouched(qat_result, trained) -> None:
    _, _, before, _ = qat_result
    after = trained.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert not trained.training
    assert not any("nncf" in name for name, _ in trained.named_modules())


class TwoInputNet(nn.Module):
    """Needs a mask besides the image: NNCF's calibration feeds images only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (self.conv(x) * mask).mean((2, 3))


def test_model_nncf_cannot_handle_is_a_config_error(digits32, tmp_path: Path) -> None:
    config = QuantizeConfig(method="nncf-qat", subset_size=8, qat=QatConfig(max_steps=1))
    with pytest.raises(ConfigError, match=r"cannot quantize TwoInputNet for QAT: .*mask"):
        quantization_aware_training(
            TwoInputNet(), splits=digits32, config=config, input_shape=SHAPE, path=tmp_path / "x.xml"
        )
    assert not (tmp_path / "x.xml").exists()


def test_wrong_input_shape_is_refused(trained, digits32, tmp_path: Path) -> None:
    with pytest.raises(ShapeError, match=r"\(1, 3, 32, 32\) but QAT was asked for \(1, 3, 64, 64\)"):
        quantization_aware_training(
            trained, splits=digits32, config=QuantizeConfig(), input_shape=(1, 3, 64, 64), path=tmp_path / "x.xml"
        )
