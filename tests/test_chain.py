"""Quantization choices are evidence: the chosen settings keep accuracy where naive ones lose it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from outlier_net import OutlierNet

from edgeflow.accuracy import collect_logits, holdout_top1, topk_accuracy
from edgeflow.backends import get_backend
from edgeflow.backends.base import RuntimeSettings
from edgeflow.backends.openvino import read_model
from edgeflow.compress import auto_methods
from edgeflow.compress.accuracy_control import REVERTED
from edgeflow.compress.nncf_ptq import SAME_SPEED, choose_preset
from edgeflow.data import load_data
from edgeflow.export.onnx import export_onnx
from edgeflow.export.openvino import convert_to_openvino
from edgeflow.recipe import QuantizeConfig, TrainConfig, VariantSpec
from edgeflow.variants import FloatArtifacts, build_variant, quantize_within_budget

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
    floats = FloatArtifacts.of(onnx_artifact, module=module, input_shape=(1, 3, 32, 32), folder=folder)
    floats.built["openvino"] = convert_to_openvino(onnx_artifact, path=folder / "fp32.xml")
    return floats, splits, folder


@pytest.fixture(scope="module")
def outlier(tmp_path_factory: pytest.TempPathFactory):
    """OutlierNet on digits at 8 px, as ONNX and IR; the float holdout top-1 and the largest holdout class share."""
    splits = load_data("digits", resolution=8)
    module = OutlierNet(splits.train).eval()
    folder = tmp_path_factory.mktemp("outlier")
    onnx_artifact = export_onnx(module, input_shape=(1, 3, 8, 8), path=folder / "outlier.onnx")
    floats = FloatArtifacts.of(onnx_artifact, module=module, input_shape=(1, 3, 8, 8), folder=folder)
    floats.built["openvino"] = convert_to_openvino(onnx_artifact, path=folder / "outlier.xml")
    float_top1 = holdout_top1(floats.onnx, splits.holdout)
    assert float_top1 > 0.9 and holdout_top1(floats.base("openvino"), splits.holdout) == pytest.approx(float_top1)
    largest_share = torch.bincount(splits.holdout.labels).max().item() / len(splits.holdout)
    return floats, splits, float_top1, largest_share


def accuracy_of(artifact, splits) -> float:
    backend = "onnxruntime" if artifact.format == "onnx" else "openvino"
    logits, labels = collect_logits(get_backend(backend).compile(artifact, settings=F32), splits.test)
    return topk_accuracy(logits, labels)[0]


def logits_of(artifact, splits):
    backend = "onnxruntime" if artifact.format == "onnx" else "openvino"
    return collect_logits(get_backend(backend).compile(artifact, settings=F32), splits.test)[0]


def build(name: str, backend: str, quantize: dict, trained, *, artifact_too: bool = False):
    floats, splits, folder = trained
    variant = VariantSpec(
        name=name, backend=backend, precision="int8", quantize=QuantizeConfig(subset_size=64, **quantize)
    )
    artifact, summary = build_variant(variant, floats=floats, splits=splits, folder=folder)
    assert summary is not None and summary.quantized_layers > 0
    return (accuracy_of(artifact, splits), artifact) if artifact_too else accuracy_of(artifact, splits)


@pytest.mark.slow  # trains mobilenet_v3_small for the module's trained (~25 s) and quantizes it: with the slow tests
def test_float_model_is_trained(trained) -> None:
    floats, splits, _ = trained
    assert accuracy_of(floats.onnx, splits) > 0.8


@pytest.mark.slow  # trains mobilenet_v3_small for the module's trained (~25 s) and quantizes it: with the slow tests
def test_per_channel_beats_per_tensor(trained) -> None:
    """Convolutions with folded batch norm have channel ranges far apart: one scale per tensor flattens the
    small channels to zero (here mostly the squeeze-and-excitation gates' 1x1 convolutions: with the gates in
    float both reach the float model's top-1 on digits)."""
    float_top1 = accuracy_of(trained[0].onnx, trained[1])
    chosen, chosen_file = build(
        "qdq-per-channel", "onnxruntime", {"method": "ort-static", "per_channel": True}, trained, artifact_too=True
    )
    naive, naive_file = build(
        "qdq-per-tensor", "onnxruntime", {"method": "ort-static", "per_channel": False}, trained, artifact_too=True
    )
    # top-1 on 360 digits can tie (it did with 7-bit weights, on a CPU without VNNI); the logits cannot hide it
    reference = logits_of(trained[0].onnx, trained[1])
    error = {name: float(((logits_of(path, trained[1]) - reference) ** 2).mean()) for name, path in
             (("chosen", chosen_file), ("naive", naive_file))}  # fmt: skip
    assert error["chosen"] < error["naive"], error
    assert float_top1 - chosen <= float_top1 - naive
    assert float_top1 - chosen <= 0.03


def test_choose_preset_lets_accuracy_decide_between_presets_of_the_same_speed() -> None:
    """The fastest within the budget is kept; one within SAME_SPEED of it that is more accurate wins; a
    faster one beyond that margin wins whatever its accuracy; outside the budget nothing is timed."""
    top1 = {"mixed": 0.790, "performance": 0.795}
    assert choose_preset(top1, {"mixed": 1.00, "performance": 1.03}, float_top1=0.80, max_drop=0.01)[0] == "performance"
    assert choose_preset(top1, {"mixed": 1.00, "performance": 1.20}, float_top1=0.80, max_drop=0.01)[0] == "mixed"
    assert choose_preset(
        {"mixed": 0.795, "performance": 0.795}, {"mixed": 1.00, "performance": 1.01}, float_top1=0.80, max_drop=0.01
    ) == ("mixed", "fastest within the budget")
    assert choose_preset(top1, {}, float_top1=0.80, max_drop=0.007) == (
        "performance",
        "the only preset within the budget",
    )
    assert choose_preset(top1, {}, float_top1=0.90, max_drop=0.01)[0] == "performance"
    assert 0 < SAME_SPEED < 0.1


@pytest.mark.slow  # trains mobilenet_v3_small for the module's trained (~25 s) and quantizes it: with the slow tests
def test_auto_preset_picks_mixed_for_hswish(trained) -> None:
    """MobileNetV3's h-swish goes negative: the auto preset gives asymmetric activations (mixed)."""
    floats, splits, folder = trained
    variant = VariantSpec(name="nncf", backend="openvino", precision="int8", quantize=QuantizeConfig(subset_size=64))
    _artifact, summary = build_variant(variant, floats=floats, splits=splits, folder=folder)
    assert summary.settings["preset"] == "mixed"


@pytest.mark.slow  # quantizes twice and times both
def test_fastest_preset_times_both_and_keeps_the_fastest_within_budget(trained) -> None:
    """``preset: fastest`` builds both NNCF presets, judges them on holdout and times those within the
    budget on the device's runtime; the one kept is the one :func:`choose_preset` names from the recorded
    accuracies and timings, and no candidate file is left. A 100-point budget holds both presets whatever
    their accuracy: both are timed."""
    floats, splits, folder = trained
    variant = VariantSpec(
        name="fastest", backend="openvino", precision="int8",
        quantize=QuantizeConfig(subset_size=64, preset="fastest", max_drop=1.0),
    )  # fmt: skip
    artifact, summary = build_variant(variant, floats=floats, splits=splits, folder=folder, settings=F32)
    choice = summary.settings["preset_choice"]
    assert list(choice) == ["mixed", "performance"]
    assert all(choice[preset]["measured"] and choice[preset]["p50_ms"] > 0 for preset in choice)
    kept = summary.settings["preset"]
    expected, why = choose_preset(
        {preset: choice[preset]["holdout_top1"] for preset in choice},
        {preset: choice[preset]["p50_ms"] for preset in choice},
        float_top1=summary.holdout_top1_float, max_drop=1.0,
    )  # fmt: skip
    assert kept == expected
    assert choice[kept]["holdout_top1"] == pytest.approx(summary.holdout_top1_quantized)
    assert [note for note in summary.notes if "<- kept" in note] == [
        note for note in summary.notes if note.startswith(f"preset {kept}:") and why in note
    ]
    assert artifact.path == folder / "model_fastest.xml" and artifact.path.with_suffix(".bin").exists()
    assert not list(folder.glob("model_fastest.*.xml")) and not list(folder.glob("model_fastest.*.bin"))
    assert holdout_top1(artifact, splits.holdout) == pytest.approx(summary.holdout_top1_quantized)


def test_fastest_preset_keeps_the_most_accurate_when_no_preset_meets_the_budget(outlier, tmp_path: Path) -> None:
    """Both presets collapse OutlierNet (drop > 50 points, asserted), so neither fits a 50-point budget:
    nothing is timed and the most accurate is kept (the first on a tie)."""
    floats, splits, float_top1, largest_share = outlier
    variant = VariantSpec(
        name="fastest", backend="openvino", precision="int8",
        quantize=QuantizeConfig(subset_size=32, preset="fastest", max_drop=0.5),
    )  # fmt: skip
    artifact, summary = build_variant(variant, floats=floats, splits=splits, folder=tmp_path, settings=F32)
    choice = summary.settings["preset_choice"]
    assert list(choice) == ["mixed", "performance"]
    for entry in choice.values():  # the precondition: int8 collapsed the model with both presets
        assert entry["holdout_top1"] <= largest_share + 1e-9 and float_top1 - entry["holdout_top1"] > 0.5
        assert entry["measured"] is False and entry["p50_ms"] is None
    kept = summary.settings["preset"]
    assert kept == max(choice, key=lambda preset: choice[preset]["holdout_top1"])
    assert summary.holdout_top1_quantized == pytest.approx(choice[kept]["holdout_top1"])
    assert any(
        note.startswith(f"preset {kept}:") and note.endswith("<- kept, no preset within the budget: the most accurate")
        for note in summary.notes
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_fastest.bin", "model_fastest.xml"]


@pytest.mark.slow  # trains mobilenet_v3_small for the module's trained (~25 s) and quantizes it: with the slow tests
def test_fp16_variants_track_float(trained) -> None:
    floats, splits, folder = trained
    reference = accuracy_of(floats.onnx, splits)
    for backend in ("openvino", "onnxruntime"):
        variant = VariantSpec(name=f"{backend}-fp16", backend=backend, precision="fp16")
        artifact, summary = build_variant(variant, floats=floats, splits=splits, folder=folder)
        assert summary is None and artifact.precision == "fp16"
        assert (
            artifact.size_bytes < 0.6 * (floats.base("openvino") if backend == "openvino" else floats.onnx).size_bytes
        )
        assert abs(accuracy_of(artifact, splits) - reference) <= 0.01


@pytest.mark.slow  # trains mobilenet_v3_small for the module's trained (~25 s) and quantizes it: with the slow tests
def test_quantize_command_keeps_budget_and_reports_evidence(trained, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgeflow.cli import app

    floats, _, _ = trained
    result = CliRunner().invoke(
        app,
        ["quantize", str(floats.base("openvino").path), "--data", "digits", "--max-drop", "100", "--subset-size", "64",
         "--preset", "performance", "--out", str(tmp_path), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    # A 100-point budget cannot be missed: PTQ is the only attempt, and it is what is kept.
    assert data["attempts"] == ["nncf-ptq"] and data["method"] == "nncf-ptq" and data["budget_met"] is True
    assert "NOT met" not in data["message"]
    assert Path(data["artifact"]).exists() and data["agreement"]["cosine_similarity"] > 0.9
    assert data["accuracy"]["split"] == "test" and data["float_accuracy"]["top1"] > 0.8
    assert np.isclose(data["max_drop"], 1.0)


@pytest.mark.slow  # an NNCF quantization before the refusals (~8 s); test_onnx_quirks and test_cli refuse in make test
def test_quantize_command_refuses_bad_input(trained, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgeflow.cli import app

    floats, _, _ = trained
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["quantize", str(floats.base("openvino").path), "--data", "digits", "--method", "nncf-ptq", "--preset",
         "performance", "--subset-size", "32", "--out", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    quantized = next(tmp_path.glob("*.xml"))
    again = runner.invoke(app, ["quantize", str(quantized), "--data", "digits", "--out", str(tmp_path / "again")])
    assert again.exit_code == 2 and "already quantized" in again.output
    lacking = tmp_path / "fp32only.yaml"
    lacking.write_text("name: fp32only\nruntimes: [openvino]\nprecisions: [fp32]\n")
    refused = runner.invoke(app, ["quantize", str(floats.base("openvino").path), "--device", str(lacking)])
    assert refused.exit_code == 2 and "does not run int8" in refused.output


def _auto(max_drop: float, backend: str = "onnxruntime") -> VariantSpec:
    return VariantSpec(
        name="auto", backend=backend, precision="int8",
        quantize=QuantizeConfig(method="auto", subset_size=32, max_drop=max_drop),
    )  # fmt: skip


def test_budget_search_stops_at_the_first_method_that_meets_the_budget(outlier, tmp_path: Path) -> None:
    """A 100-point budget cannot be missed: the chain stops after its first method, although that method
    collapsed the model (so it stopped on the budget, not on the accuracy)."""
    floats, splits, float_top1, largest_share = outlier
    artifact, summary = quantize_within_budget(
        _auto(1.0), methods=auto_methods("onnxruntime", default="ort-static"), base=floats.onnx, floats=floats,
        splits=splits,
        path=tmp_path / "m_int8.onnx", seed=0, progress=None,
    )  # fmt: skip
    assert auto_methods("onnxruntime", default="ort-static")[0] == "ort-static"
    assert summary.attempts == ["ort-static (minmax)"] and summary.method == "ort-static"
    assert summary.settings["calibrate_method"] == "minmax"
    assert summary.budget_met is True and summary.max_drop == 1.0
    assert summary.holdout_top1_float == pytest.approx(float_top1)
    assert summary.holdout_top1_quantized <= largest_share + 1e-9  # collapsed, and still within 100 points
    assert [note for note in summary.notes if "budget not met" in note] == []
    assert summary.notes[-1].startswith("ort-static (minmax): holdout top-1")
    assert [p.name for p in tmp_path.iterdir()] == ["m_int8.onnx"] and artifact.path == tmp_path / "m_int8.onnx"


def test_budget_search_tries_every_method_and_keeps_the_best_when_the_budget_is_missed(outlier, tmp_path: Path) -> None:
    """Every INT8 method collapses OutlierNet (drop > 50 points, measured first), so a 50-point budget
    is missed: the chain tries all its methods in order (ort-static with each calibration of ``auto``), keeps
    the most accurate (the first on a tie), removes the other attempts and says the budget was not met."""
    floats, splits, float_top1, largest_share = outlier
    methods = auto_methods("onnxruntime", default="ort-static")
    assert methods == ("ort-static", "nncf-ptq")
    labels = ["ort-static (minmax)", "ort-static (minmax-average)", "nncf-ptq"]
    # The precondition, measured with the same seed and subset: each attempt alone drops more than 50 points.
    alone = {}
    updates = [{"calibrate_method": "minmax"}, {"calibrate_method": "minmax-average"}, {}]
    for label, update in zip(labels, updates, strict=True):
        method = label.split()[0]
        config = QuantizeConfig(method=method, subset_size=32, **update)
        variant = VariantSpec(name=method, backend="onnxruntime", precision="int8", quantize=config)
        single, _ = build_variant(variant, floats=floats, splits=splits, folder=tmp_path)
        alone[label] = holdout_top1(single, splits.holdout)
        assert alone[label] <= largest_share + 1e-9 and float_top1 - alone[label] > 0.5, (label, alone[label])
    best = max(labels, key=alone.__getitem__)  # max() keeps the first of equals, as the chain does

    target = tmp_path / "budget"
    target.mkdir()
    artifact, summary = quantize_within_budget(
        _auto(0.5), methods=methods, base=floats.onnx, floats=floats, splits=splits,
        path=target / "m_int8.onnx", seed=0, progress=None,
    )  # fmt: skip
    assert summary.attempts == labels
    assert summary.budget_met is False and summary.max_drop == 0.5
    method = best.split()[0]
    assert summary.method == method and artifact.lineage[-1].startswith(f"{method}(")
    assert summary.holdout_top1_quantized == pytest.approx(alone[best])
    assert holdout_top1(artifact, splits.holdout) == pytest.approx(alone[best])
    assert [p.name for p in target.iterdir()] == ["m_int8.onnx"] and artifact.path == target / "m_int8.onnx"
    assert [note.split(":")[0] for note in summary.notes[-4:-1]] == labels
    assert summary.notes[-1] == (
        f"budget not met: best drop {100 * (float_top1 - alone[best]):.2f} points, kept that artifact"
    )


def test_auto_goes_on_to_accuracy_control_and_stops_when_it_meets_the_budget(outlier, tmp_path: Path) -> None:
    """On OpenVINO, PTQ collapses OutlierNet (drop > 50 points), so a zero budget sends ``auto`` on to
    accuracy control, which meets it by keeping the readout in float (at worst it reverts every layer, which
    is the float model): the chain stops there, before QAT, keeps that artifact and removes PTQ's."""
    floats, splits, float_top1, largest_share = outlier
    assert auto_methods("openvino", default="nncf-ptq") == ("nncf-ptq", "nncf-accuracy-control", "nncf-qat")
    artifact, summary = build_variant(_auto(0.0, "openvino"), floats=floats, splits=splits, folder=tmp_path)
    assert summary.attempts == ["nncf-ptq", "nncf-accuracy-control"]
    assert summary.method == "nncf-accuracy-control" and summary.budget_met is True
    assert summary.holdout_top1_quantized == pytest.approx(summary.holdout_top1_float)
    ptq = [note for note in summary.notes if note.startswith("nncf-ptq: holdout top-1")]
    assert len(ptq) == 1 and float(ptq[0].split()[3].rstrip("%")) / 100 <= largest_share + 1e-9
    readout = [
        op.get_friendly_name()
        for op in read_model(floats.base("openvino")).get_ordered_ops()
        if op.get_type_name() == "MatMul" and op.input_value(0).get_node().get_type_name() == "Relu"
    ]
    assert len(readout) == 1
    assert readout[0] in {layer.name for layer in summary.float_layers if layer.reason == REVERTED}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_auto.bin", "model_auto.xml"]
    assert holdout_top1(artifact, splits.holdout) == pytest.approx(float_top1)
