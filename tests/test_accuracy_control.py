"""Accuracy-controlled NNCF PTQ: budget on the holdout split, reverted layers named, never raises on a miss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from outlier_net import OutlierNet
from torch import nn

from edgeflow.accuracy import evaluate_compiled
from edgeflow.backends import get_backend
from edgeflow.backends.base import RuntimeSettings
from edgeflow.backends.openvino import read_model
from edgeflow.compress.accuracy_control import NOT_QUANTIZED, REVERTED, quantize_with_accuracy_control
from edgeflow.compress.nncf_ptq import is_quantized, quantize_nncf
from edgeflow.compress.stats import layer_precisions
from edgeflow.data import ImageDataset, load_data
from edgeflow.errors import DataError, ShapeError
from edgeflow.export.onnx import export_onnx
from edgeflow.export.openvino import convert_to_openvino
from edgeflow.recipe import IgnoredScopeConfig, QuantizeConfig, TrainConfig
from edgeflow.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F32 = RuntimeSettings(execution_precision="f32")


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
    config = QuantizeConfig(method="nncf-accuracy-control", subset_size=32, max_drop=1.0)
    return quantize_with_accuracy_control(
        trained_ir, calibration=digits32.train, holdout=digits32.holdout, config=config, path=path
    )


@pytest.fixture(scope="module")
def digits8():
    return load_data("digits", resolution=8)


@pytest.fixture(scope="module")
def outlier_ir(digits8, tmp_path_factory):
    """OutlierNet as IR, checked to be a good float classifier (the plain-PTQ collapse is asserted per test)."""
    folder = tmp_path_factory.mktemp("outlier")
    onnx_artifact = export_onnx(OutlierNet(digits8.train).eval(), input_shape=(1, 3, 8, 8), path=folder / "o.onnx")
    artifact = convert_to_openvino(onnx_artifact, path=folder / "o.xml")
    assert _holdout_top1(artifact, digits8) > 0.9
    return artifact


def _largest_share(holdout: ImageDataset) -> float:
    """Top-1 of a model that gives every image the same class can be at most this."""
    return torch.bincount(holdout.labels).max().item() / len(holdout)


def _readout(artifact) -> str:
    """OutlierNet's readout in the IR: the MatMul that reads the ReLU output."""
    names = [
        op.get_friendly_name()
        for op in read_model(artifact).get_ordered_ops()
        if op.get_type_name() == "MatMul" and op.input_value(0).get_node().get_type_name() == "Relu"
    ]
    assert len(names) == 1, names
    return names[0]


def _holdout_top1(artifact, digits32) -> float:
    compiled = get_backend("openvino").compile(artifact, settings=F32)
    return evaluate_compiled(compiled, digits32.holdout, split="holdout").top1


def test_generous_budget_is_met_and_recorded(generous, digits32) -> None:
    artifact, summary = generous
    assert artifact.precision == "int8" and artifact.path.exists() and artifact.path.with_suffix(".bin").exists()
    assert is_quantized(read_model(artifact))
    assert "nncf-accuracy-control" in artifact.lineage[-1]
    assert summary.method == "nncf-accuracy-control"
    # A 100-point budget cannot be missed: NNCF returns its plain PTQ model and reverts nothing.
    assert summary.max_drop == 1.0 and summary.budget_met is True
    assert 0.0 <= summary.holdout_top1_quantized <= 1.0 and 0.0 <= summary.holdout_top1_float <= 1.0
    assert (
        summary.notes[0]
        == f"plain PTQ (no accuracy control) reached holdout top-1 {summary.holdout_top1_quantized:.4f}"
    )
    assert not any("were reverted back" in note or "budget not met" in note for note in summary.notes)
    assert summary.quantized_layers > 0
    assert summary.settings["preset"] == "mixed"  # h-swish
    assert summary.settings["holdout_samples"] == len(digits32.holdout)
    # Nothing had to be reverted: any float layer is one NNCF's patterns leave in float.
    assert all(layer.reason == NOT_QUANTIZED for layer in summary.float_layers)
    # The summary measured the saved artifact, through the backend reports use.
    assert _holdout_top1(artifact, digits32) == pytest.approx(summary.holdout_top1_quantized)


def test_a_tight_budget_reverts_the_collapsed_layer_to_float(outlier_ir, digits8, tmp_path: Path) -> None:
    """Plain PTQ collapses OutlierNet (drop > 50 points) and PTQ with the readout left in float loses (almost)
    nothing (both measured first: nothing with VNNI, a point on a CPU without it, whose int8 sums differ), so
    with that loss as the budget accuracy control must revert exactly the readout: reverting it recovers
    everything the budget asks, reverting the other layer nothing."""
    config = QuantizeConfig(method="nncf-accuracy-control", subset_size=32, max_drop=0.0)
    readout = _readout(outlier_ir)
    float_top1 = _holdout_top1(outlier_ir, digits8)
    plain, _ = quantize_nncf(outlier_ir, calibration=digits8.train, config=config, path=tmp_path / "plain.xml")
    plain_top1 = _holdout_top1(plain, digits8)
    assert plain_top1 <= _largest_share(digits8.holdout) + 1e-9 and float_top1 - plain_top1 > 0.5  # precondition
    spared = config.model_copy(update={"ignored_scope": IgnoredScopeConfig(names=[readout])})
    without_readout, _ = quantize_nncf(outlier_ir, calibration=digits8.train, config=spared, path=tmp_path / "s.xml")
    spared_top1 = _holdout_top1(without_readout, digits8)
    assert float_top1 - spared_top1 < 0.03  # precondition: the readout is what collapses it
    config = config.model_copy(update={"max_drop": float_top1 - spared_top1 + 1e-6})

    artifact, summary = quantize_with_accuracy_control(
        outlier_ir, calibration=digits8.train, holdout=digits8.holdout, config=config, path=tmp_path / "q.xml"
    )
    assert summary.holdout_top1_float == pytest.approx(float_top1)
    assert summary.notes[0] == f"plain PTQ (no accuracy control) reached holdout top-1 {plain_top1:.4f}"
    assert summary.budget_met is True and summary.holdout_top1_quantized == pytest.approx(spared_top1)
    assert _holdout_top1(artifact, digits8) == pytest.approx(summary.holdout_top1_quantized)
    assert summary.notes[1].startswith("nncf: Algorithm completed: achieved required accuracy drop")
    assert summary.notes[2:] == ["nncf: 1 out of 2 were reverted back to the floating-point precision"]

    # Reasons: float in a plain PTQ with the same arguments = NNCF's patterns; float only here = reverted.
    plain_quantized, plain_floating = layer_precisions(read_model(plain))
    plain_float = {name for name, _ in plain_floating}
    for layer in summary.float_layers:
        assert layer.reason == (NOT_QUANTIZED if layer.name in plain_float else REVERTED)
    assert [layer.name for layer in summary.float_layers if layer.reason == REVERTED] == [readout]
    assert summary.quantized_layers == len(plain_quantized) - 1 and is_quantized(read_model(artifact))


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


def test_missed_budget_keeps_the_model_and_says_so(outlier_ir, digits8, tmp_path: Path, monkeypatch) -> None:
    """When NNCF gives up (simulated: it returns the plain PTQ model), the result is saved, not raised.
    Plain PTQ collapses OutlierNet (drop > 50 points, asserted), so a 50-point budget is certainly missed."""
    import nncf

    def give_up(model, calibration_dataset, validation_dataset, validation_fn, **arguments):
        arguments = {key: value for key, value in arguments.items() if key not in ("max_drop", "drop_type")}
        return nncf.quantize(model, calibration_dataset, **arguments)

    monkeypatch.setattr(nncf, "quantize_with_accuracy_control", give_up)
    config = QuantizeConfig(method="nncf-accuracy-control", subset_size=32, max_drop=0.5)
    artifact, summary = quantize_with_accuracy_control(
        outlier_ir, calibration=digits8.train, holdout=digits8.holdout, config=config, path=tmp_path / "q.xml"
    )
    drop = summary.holdout_top1_float - summary.holdout_top1_quantized
    assert summary.holdout_top1_quantized <= _largest_share(digits8.holdout) + 1e-9 and drop > 0.5  # precondition
    assert summary.budget_met is False
    assert summary.notes[-1] == (
        f"budget not met: holdout top-1 drop {drop:.4f} exceeds max_drop 0.5; kept the best model NNCF returned"
    )
    assert all(layer.reason == NOT_QUANTIZED for layer in summary.float_layers)
    assert artifact.path.exists() and is_quantized(read_model(artifact))
    assert _holdout_top1(artifact, digits8) == pytest.approx(summary.holdout_top1_quantized)
