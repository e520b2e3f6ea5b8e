"""Accuracy-controlled NNCF PTQ: budget on the holdout split, reverted layers named, never raises on a miss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from edgeflow.accuracy import evaluate_compiled
from edgeflow.backends import get_backend
from edgeflow.backends.openvino import read_model
from edgeflow.compress.accuracy_control import NOT_QUANTIZED, REVERTED, quantize_with_accuracy_control
from edgeflow.compress.nncf_ptq import is_quantized, quantize_nncf
from edgeflow.compress.stats import layer_precisions
from edgeflow.data import ImageDataset, load_data
from edgeflow.device import RuntimeSettings
from edgeflow.errors import DataError, ShapeError
from edgeflow.export.onnx import export_onnx
from edgeflow.export.openvino import convert_to_openvino
from edgeflow.recipe import QuantizeConfig, TrainConfig
from edgeflow.train import train

F32 = RuntimeSettings(execution_precision="f32")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # On a small shared CPU, OpenMP threads that wait for a busy core make each tiny op slow.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class SmallNet(nn.Module):
    """Four stride-2 conv + BN + h-swish blocks: few quantizer groups, so NNCF's ranking stays fast."""

    def __init__(self) -> None:
        super().__init__()

        def block(inputs: int, outputs: int) -> list[nn.Module]:
            return [
                nn.Conv2d(inputs, outputs, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(outputs),
                nn.Hardswish(),
            ]

        self.features = nn.Sequential(*block(3, 8), *block(8, 16), *block(16, 32), *block(32, 32))
        self.classifier = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


@pytest.fixture(scope="module")
def digits32():
    return load_data("digits", resolution=32)


@pytest.fixture(scope="module")
def trained_ir(digits32, tmp_path_factory):
    """SmallNet after 20 steps (~0.87 holdout top-1): short enough that int8 costs a little accuracy."""
    torch.manual_seed(0)
    module = SmallNet()
    train(module, digits32.train, config=TrainConfig(epochs=1, max_steps=20, batch_size=32, lr=1e-2))
    folder = tmp_path_factory.mktemp("accuracy_control")
    onnx_artifact = export_onnx(module.eval(), input_shape=(1, 3, 32, 32), path=folder / "small.onnx")
    return convert_to_openvino(onnx_artifact, path=folder / "small.xml")


@pytest.fixture(scope="module")
def generous(trained_ir, digits32, tmp_path_factory):
    path = tmp_path_factory.mktemp("generous") / "small_int8.xml"
    config = QuantizeConfig(method="nncf-accuracy-control", subset_size=32, max_drop=0.5)
    return quantize_with_accuracy_control(
        trained_ir, calibration=digits32.train, holdout=digits32.holdout, config=config, path=path
    )


def _holdout_top1(artifact, digits32) -> float:
    compiled = get_backend("openvino").compile(artifact, settings=F32)
    return evaluate_compiled(compiled, digits32.holdout, split="holdout").top1


def test_generous_budget_is_met_and_recorded(generous, digits32) -> None:
    artifact, summary = generous
    assert artifact.precision == "int8" and artifact.path.exists() and artifact.path.with_suffix(".bin").exists()
    assert is_quantized(read_model(artifact))
    assert "nncf-accuracy-control" in artifact.lineage[-1]
    assert summary.method == "nncf-accuracy-control"
    assert summary.max_drop == 0.5 and summary.budget_met is True
    assert 0.0 <= summary.holdout_top1_quantized <= 1.0 and 0.0 <= summary.holdout_top1_float <= 1.0
    assert summary.holdout_top1_float - summary.holdout_top1_quantized <= 0.5
    assert summary.quantized_layers > 0
    assert summary.settings["preset"] == "mixed"  # h-swish
    assert summary.settings["holdout_samples"] == len(digits32.holdout)
    # Nothing had to be reverted: any float layer is one NNCF's patterns leave in float.
    assert all(layer.reason == NOT_QUANTIZED for layer in summary.float_layers)
    # The summary measured the saved artifact, through the backend reports use.
    assert _holdout_top1(artifact, digits32) == pytest.approx(summary.holdout_top1_quantized)


def test_zero_budget_reverts_or_reports_a_miss(trained_ir, digits32, tmp_path: Path) -> None:
    config = QuantizeConfig(method="nncf-accuracy-control", subset_size=32, max_drop=0.0)
    artifact, summary = quantize_with_accuracy_control(
        trained_ir, calibration=digits32.train, holdout=digits32.holdout, config=config, path=tmp_path / "q.xml"
    )
    drop = summary.holdout_top1_float - summary.holdout_top1_quantized
    assert summary.budget_met == (drop <= 1e-9)
    if not summary.budget_met:
        assert any(note.startswith("budget not met") for note in summary.notes)
    assert _holdout_top1(artifact, digits32) == pytest.approx(summary.holdout_top1_quantized)
    assert _holdout_top1(trained_ir, digits32) == pytest.approx(summary.holdout_top1_float)

    # Reasons: float in a plain PTQ with the same arguments = NNCF's patterns; float only here = reverted.
    plain, _ = quantize_nncf(trained_ir, calibration=digits32.train, config=config, path=tmp_path / "plain.xml")
    plain_float = {name for name, _ in layer_precisions(read_model(plain))[1]}
    for layer in summary.float_layers:
        assert layer.reason == (NOT_QUANTIZED if layer.name in plain_float else REVERTED)
    assert {layer.name for layer in summary.float_layers} >= plain_float
    if _holdout_top1(plain, digits32) < summary.holdout_top1_float:  # PTQ lost accuracy: NNCF had to act
        assert any("were reverted back" in note or "could not achieve" in note for note in summary.notes)


def test_already_quantized_is_refused(generous, digits32, tmp_path: Path) -> None:
    artifact, _ = generous
    with pytest.raises(ShapeError, match="already quantized"):
        quantize_with_accuracy_control(
            artifact,
            calibration=digits32.train,
            holdout=digits32.holdout,
            config=QuantizeConfig(),
            path=tmp_path / "x.xml",
        )
    assert not (tmp_path / "x.xml").exists()


def test_tiny_holdout_is_refused(trained_ir, digits32, tmp_path: Path) -> None:
    holdout = digits32.holdout
    few = ImageDataset(holdout.images[:5], holdout.labels[:5], resolution=32, mean=holdout.mean, std=holdout.std)
    with pytest.raises(DataError, match="at least 10 holdout images"):
        quantize_with_accuracy_control(
            trained_ir, calibration=digits32.train, holdout=few, config=QuantizeConfig(), path=tmp_path / "x.xml"
        )


def test_missed_budget_keeps_the_model_and_says_so(trained_ir, digits32, tmp_path: Path, monkeypatch) -> None:
    """When NNCF gives up (simulated: it returns the plain PTQ model), the result is saved, not raised."""
    import nncf

    def give_up(model, calibration_dataset, validation_dataset, validation_fn, **arguments):
        arguments = {key: value for key, value in arguments.items() if key not in ("max_drop", "drop_type")}
        return nncf.quantize(model, calibration_dataset, **arguments)

    monkeypatch.setattr(nncf, "quantize_with_accuracy_control", give_up)
    config = QuantizeConfig(method="nncf-accuracy-control", subset_size=32, max_drop=0.0)
    artifact, summary = quantize_with_accuracy_control(
        trained_ir, calibration=digits32.train, holdout=digits32.holdout, config=config, path=tmp_path / "q.xml"
    )
    if summary.holdout_top1_quantized >= summary.holdout_top1_float:
        pytest.skip("plain PTQ lost no holdout accuracy on this machine: no miss to report")
    assert summary.budget_met is False
    assert any(note.startswith("budget not met: holdout top-1 drop") for note in summary.notes)
    assert all(layer.reason == NOT_QUANTIZED for layer in summary.float_layers)
    assert artifact.path.exists() and is_quantized(read_model(artifact))
