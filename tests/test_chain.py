"""Quantization choices are evidence: the chosen settings keep accuracy where naive ones lose it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeflow.accuracy import collect_logits, topk_accuracy
from edgeflow.backends import get_backend
from edgeflow.compress.chain import FloatArtifacts, build_variant
from edgeflow.data import load_data
from edgeflow.device import RuntimeSettings
from edgeflow.export.onnx import export_onnx
from edgeflow.export.openvino import convert_to_openvino
from edgeflow.recipe import QuantizeConfig, TrainConfig, VariantSpec

F32 = RuntimeSettings(execution_precision="f32")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """mobilenet_v3_small trained on digits at 32 px to well above chance, exported to ONNX and IR."""
    from edgeflow.models import create_model
    from edgeflow.train import train

    torch.manual_seed(0)
    splits = load_data("digits", resolution=32)
    module = create_model("mobilenet_v3_small", num_classes=10)
    train(module, splits.train, config=TrainConfig(epochs=4, batch_size=32, lr=0.005), seed=0)
    folder = tmp_path_factory.mktemp("trained")
    onnx_artifact = export_onnx(module, input_shape=(1, 3, 32, 32), path=folder / "fp32.onnx")
    floats = FloatArtifacts(
        onnx=onnx_artifact,
        openvino=convert_to_openvino(onnx_artifact, path=folder / "fp32.xml"),
        module=module,
        input_shape=(1, 3, 32, 32),
    )
    return floats, splits, folder


def accuracy_of(artifact, splits) -> float:
    backend = "onnxruntime" if artifact.format == "onnx" else "openvino"
    logits, labels = collect_logits(get_backend(backend).compile(artifact, settings=F32), splits.test)
    return topk_accuracy(logits, labels)[0]


def build(name: str, backend: str, quantize: dict, trained) -> float:
    floats, splits, folder = trained
    variant = VariantSpec(
        name=name, backend=backend, precision="int8", quantize=QuantizeConfig(subset_size=64, **quantize)
    )
    artifact, summary = build_variant(variant, floats=floats, splits=splits, folder=folder)
    assert summary is not None and summary.quantized_layers > 0
    return accuracy_of(artifact, splits)


def test_float_model_is_trained(trained) -> None:
    floats, splits, _ = trained
    assert accuracy_of(floats.onnx, splits) > 0.8


def test_per_channel_beats_per_tensor(trained) -> None:
    """Depthwise convolutions with folded batch norm have channel ranges far apart: one scale per tensor
    flattens the small channels to zero."""
    float_top1 = accuracy_of(trained[0].onnx, trained[1])
    chosen = build("qdq-per-channel", "onnxruntime", {"method": "ort-static", "per_channel": True}, trained)
    naive = build("qdq-per-tensor", "onnxruntime", {"method": "ort-static", "per_channel": False}, trained)
    assert float_top1 - chosen < float_top1 - naive
    assert float_top1 - chosen <= 0.03


def test_auto_preset_picks_mixed_for_hswish(trained) -> None:
    """MobileNetV3's h-swish goes negative: the auto preset gives asymmetric activations (mixed)."""
    floats, splits, folder = trained
    variant = VariantSpec(name="nncf", backend="openvino", precision="int8", quantize=QuantizeConfig(subset_size=64))
    _artifact, summary = build_variant(variant, floats=floats, splits=splits, folder=folder)
    assert summary.settings["preset"] == "mixed"


def test_fastest_preset_times_both_and_keeps_the_fastest_within_budget(trained) -> None:
    """``preset: fastest`` builds both NNCF presets, judges them on holdout and times those within the
    budget on the device's runtime; the one kept is the fastest of those, and no candidate file is left."""
    floats, splits, folder = trained
    variant = VariantSpec(
        name="fastest", backend="openvino", precision="int8",
        quantize=QuantizeConfig(subset_size=64, preset="fastest", max_drop=0.05),
    )  # fmt: skip
    artifact, summary = build_variant(variant, floats=floats, splits=splits, folder=folder, settings=F32)
    choice = summary.settings["preset_choice"]
    assert set(choice) == {"mixed", "performance"}
    float_top1 = summary.holdout_top1_float
    within = [preset for preset, entry in choice.items() if float_top1 - entry["holdout_top1"] <= 0.05 + 1e-9]
    assert within, "a 5-point budget is met by int8 on this trained model"
    kept = summary.settings["preset"]
    assert choice[kept]["holdout_top1"] == pytest.approx(summary.holdout_top1_quantized)
    if len(within) == 2:
        assert all(choice[preset]["measured"] and choice[preset]["p50_ms"] > 0 for preset in within)
        assert kept == min(within, key=lambda preset: choice[preset]["p50_ms"])
    else:
        assert kept == within[0]
    assert any("<- kept" in note for note in summary.notes)
    assert artifact.path == folder / "model_fastest.xml" and artifact.path.with_suffix(".bin").exists()
    assert not list(folder.glob("model_fastest.*.xml")) and not list(folder.glob("model_fastest.*.bin"))
    assert accuracy_of(artifact, splits) > 0.8


def test_fp16_variants_track_float(trained) -> None:
    floats, splits, folder = trained
    reference = accuracy_of(floats.onnx, splits)
    for backend in ("openvino", "onnxruntime"):
        variant = VariantSpec(name=f"{backend}-fp16", backend=backend, precision="fp16")
        artifact, summary = build_variant(variant, floats=floats, splits=splits, folder=folder)
        assert summary is None and artifact.precision == "fp16"
        assert artifact.size_bytes < 0.6 * (floats.openvino if backend == "openvino" else floats.onnx).size_bytes
        assert abs(accuracy_of(artifact, splits) - reference) <= 0.01


def test_quantize_command_keeps_budget_and_reports_evidence(trained, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgeflow.cli import app

    floats, _, _ = trained
    result = CliRunner().invoke(
        app,
        ["quantize", str(floats.openvino.path), "--data", "digits", "--max-drop", "5", "--subset-size", "64",
         "--out", str(tmp_path), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["attempts"][0] == "nncf-ptq" and data["budget_met"] is True
    assert Path(data["artifact"]).exists() and data["agreement"]["cosine_similarity"] > 0.9
    assert data["accuracy"]["split"] == "test" and data["float_accuracy"]["top1"] > 0.8
    assert np.isclose(data["max_drop"], 0.05)


def test_quantize_command_refuses_bad_input(trained, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgeflow.cli import app

    floats, _, _ = trained
    runner = CliRunner()
    result = runner.invoke(app, ["quantize", str(floats.openvino.path), "--data", "digits", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    quantized = next(tmp_path.glob("*.xml"))
    again = runner.invoke(app, ["quantize", str(quantized), "--data", "digits", "--out", str(tmp_path / "again")])
    assert again.exit_code == 2 and "already quantized" in again.output
    lacking = tmp_path / "fp32only.yaml"
    lacking.write_text("name: fp32only\nruntimes: [openvino]\nprecisions: [fp32]\n")
    refused = runner.invoke(app, ["quantize", str(floats.openvino.path), "--device", str(lacking)])
    assert refused.exit_code == 2 and "does not run int8" in refused.output


def test_budget_search_keeps_the_best_and_cleans_up(trained) -> None:
    from edgeflow.compress.chain import quantize_within_budget

    floats, splits, folder = trained
    target = folder / "budget"
    target.mkdir()
    variant = VariantSpec(
        name="auto", backend="onnxruntime", precision="int8", quantize=QuantizeConfig(subset_size=64, max_drop=0.0)
    )
    artifact, summary = quantize_within_budget(
        variant, methods=("ort-static", "nncf-ptq"), base=floats.onnx, floats=floats, splits=splits,
        path=target / "m_int8.onnx", seed=0, progress=None,
    )  # fmt: skip
    assert summary.attempts in (["ort-static"], ["ort-static", "nncf-ptq"])
    assert summary.method in summary.attempts
    assert [p.name for p in target.iterdir()] == ["m_int8.onnx"] and artifact.path == target / "m_int8.onnx"
    drop = summary.holdout_top1_float - summary.holdout_top1_quantized
    assert summary.budget_met == (drop <= 0.0 + 1e-9)
    if not summary.budget_met:
        assert summary.attempts == ["ort-static", "nncf-ptq"] and "budget not met" in summary.notes[-1]
