"""LiteRT for real: torch -> .tflite with litert-torch, run by LiteRT's interpreter (XNNPACK), float16 weights and
INT8 with LiteRT's own quantizer, NCHW and NHWC inputs, the CLI's profile and eval of a .tflite, the agent
timing one over SSH (a real sshd on 127.0.0.1), and every bad input as one clear line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from edgeflow.backends.litert import litert_available

pytestmark = pytest.mark.skipif(
    not litert_available(), reason="LiteRT is not installed (pip install 'edgeflow[litert]')"
)

from edgeflow.artifact import Artifact  # noqa: E402
from edgeflow.backends import artifact_from_path, get_backend  # noqa: E402
from edgeflow.backends.base import RuntimeSettings  # noqa: E402
from edgeflow.errors import ModelLoadError  # noqa: E402
from edgeflow.profiling.cost import artifact_cost  # noqa: E402


@pytest.fixture(scope="module")
def digits16():
    from edgeflow.data import load_data

    return load_data("digits", resolution=16)


class SmallNet(nn.Module):
    """Two strided convolutions (16, 32 channels) with batch norm and ReLU, pooled, then a linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.classifier = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@pytest.fixture(scope="module")
def tiny():
    """The tiny net of conftest (MACs known by hand), with random weights: for what export keeps exactly."""
    from conftest import TinyNet

    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.fixture(scope="module")
def trained_small(digits16):
    """A small net trained briefly on digits at 16 px: confident enough that INT8 rounding flips few answers."""
    from edgeflow.recipe import TrainConfig
    from edgeflow.train import train

    torch.manual_seed(0)
    module = SmallNet()
    train(module, digits16.train, config=TrainConfig(epochs=4, batch_size=32, lr=1e-2))
    return module.eval()


@pytest.fixture(scope="module")
def tflite(tiny, tmp_path_factory) -> Artifact:
    from edgeflow.export.litert import export_tflite

    folder = tmp_path_factory.mktemp("litert")
    return export_tflite(tiny, input_shape=(1, 3, 16, 16), path=folder / "tiny.tflite")


@pytest.fixture(scope="module")
def small_tflite(trained_small, tmp_path_factory) -> Artifact:
    from edgeflow.export.litert import export_tflite

    folder = tmp_path_factory.mktemp("litert-small")
    return export_tflite(trained_small, input_shape=(1, 3, 16, 16), path=folder / "small.tflite")


def _torch_logits(module: nn.Module, images: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(images)).numpy()


def _images(split, count: int) -> np.ndarray:
    return np.stack([split[index][0].numpy() for index in range(count)])


def test_export_runs_in_the_interpreter_like_torch(tiny, tflite, digits16) -> None:
    compiled = get_backend("litert").compile(tflite, settings=RuntimeSettings(threads=2))
    assert compiled.input_shape == (1, 3, 16, 16)
    assert compiled.settings["threads"] == 2 and compiled.settings["input_layout"] == "NCHW"
    assert compiled.settings["delegate"].startswith("XNNPACK")
    images = _images(digits16.test, 16)
    logits = np.concatenate([compiled.run(image[None]) for image in images])
    np.testing.assert_allclose(logits, _torch_logits(tiny, images), atol=1e-4, rtol=1e-4)


def test_the_cost_of_a_tflite_is_counted_like_the_onnx(tiny, tflite, tmp_path: Path) -> None:
    """TinyNet: conv 3->8 3x3 stride 2 at 16 px (8x8x8 outputs x 27) + fc 8->10; params 8*27+8 + 80+10."""
    from edgeflow.export.onnx import export_onnx

    cost = artifact_cost(tflite)
    assert (cost.macs, cost.params) == (8 * 8 * 8 * 27 + 80, 8 * 27 + 8 + 80 + 10)
    onnx_cost = artifact_cost(export_onnx(tiny, input_shape=(1, 3, 16, 16), path=tmp_path / "t.onnx"))
    assert (cost.macs, cost.params) == (onnx_cost.macs, onnx_cost.params)


def test_a_block_cut_at_three_by_three_is_nchw_and_builds_int8_as_the_search_times_it(tmp_path: Path) -> None:
    """A block from the end of a network at 96 px takes 1 x C x 3 x 3: its last dimension looks like an image's
    3 channels, but the artifact's shape says NCHW (the INT8 search once stopped on MobileNetV3's last blocks)."""
    from edgeflow.recipe import VariantSpec
    from edgeflow.variants import ShippedBuild

    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(16, 32, 1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1, groups=32)).eval()
    build = ShippedBuild(VariantSpec(name="litert-int8", backend="litert", precision="int8"))
    artifact = build(block, (1, 16, 3, 3), folder=tmp_path)
    compiled = get_backend("litert").compile(artifact, settings=RuntimeSettings())
    assert compiled.input_shape == (1, 16, 3, 3) and compiled.settings["input_layout"] == "NCHW"
    images = torch.randn(4, 16, 3, 3).numpy()
    outputs = np.concatenate([compiled.run(image[None]) for image in images])
    expected = _torch_logits(block, images)
    assert outputs.shape == expected.shape and np.corrcoef(outputs.ravel(), expected.ravel())[0, 1] > 0.95


def test_an_nhwc_export_is_fed_transposed(tiny, digits16, tmp_path: Path) -> None:
    from edgeflow.backends.litert import interpreter_class
    from edgeflow.export.litert import export_tflite

    artifact = export_tflite(tiny, input_shape=(1, 3, 16, 16), path=tmp_path / "nhwc.tflite", layout="NHWC")
    assert list(interpreter_class()(model_path=str(artifact.path)).get_input_details()[0]["shape"]) == [1, 16, 16, 3]
    compiled = get_backend("litert").compile(artifact, settings=RuntimeSettings())
    assert compiled.input_shape == (1, 3, 16, 16) and compiled.settings["input_layout"] == "NHWC"
    images = _images(digits16.test, 8)
    logits = np.concatenate([compiled.run(image[None]) for image in images])
    np.testing.assert_allclose(logits, _torch_logits(tiny, images), atol=1e-4, rtol=1e-4)


def test_fp16_weights_halve_the_file_and_keep_the_answers(tflite, digits16, tmp_path: Path) -> None:
    from edgeflow.export.litert import compress_tflite_fp16

    half = compress_tflite_fp16(tflite, path=tmp_path / "tiny_fp16.tflite")
    assert half.precision == "fp16" and half.size_bytes < tflite.size_bytes
    images = _images(digits16.test, 16)
    floats, halves = (get_backend("litert").compile(a, settings=RuntimeSettings()) for a in (tflite, half))
    expected = np.concatenate([floats.run(image[None]) for image in images])
    got = np.concatenate([halves.run(image[None]) for image in images])
    np.testing.assert_allclose(got, expected, atol=2e-2, rtol=2e-2)
    assert not np.array_equal(got, expected), "float16 weights changed nothing: were they converted?"


def test_int8_with_litert_quantizer(small_tflite, digits16, tmp_path: Path) -> None:
    """Every weighted layer int8 (per-channel), float input and output kept, top-1 within 2 points of float."""
    from edgeflow.accuracy import collect_logits
    from edgeflow.compress.litert_quantize import quantize_litert_static, weighted_layers
    from edgeflow.errors import ShapeError
    from edgeflow.recipe import QuantizeConfig

    int8, stats = quantize_litert_static(
        small_tflite, calibration=digits16.train, config=QuantizeConfig(method="litert-static", subset_size=64),
        path=tmp_path / "small_int8.tflite",
    )  # fmt: skip
    assert int8.precision == "int8" and stats.method == "litert-static"
    assert stats.quantized_layers == 3 and stats.float_layers == [] and stats.settings["per_channel"] is True
    assert stats.settings["subset_size"] == 64
    assert [kind for _, kind in weighted_layers(int8.path)[0]] == ["CONV_2D", "CONV_2D", "FULLY_CONNECTED"]
    compiled = get_backend("litert").compile(int8, settings=RuntimeSettings())
    assert compiled.settings["execution_precision"] == "int8" and compiled.settings["input_dtype"] == "float32"
    floats = get_backend("litert").compile(small_tflite, settings=RuntimeSettings())
    float_logits, labels = collect_logits(floats, digits16.test, max_samples=200)
    int8_logits, _ = collect_logits(compiled, digits16.test, max_samples=200)
    float_top1 = (float_logits.argmax(1) == labels).mean()
    int8_top1 = (int8_logits.argmax(1) == labels).mean()
    assert float_top1 > 0.5, f"the small net did not learn (top-1 {float_top1:.2f}): the test would prove nothing"
    assert abs(float_top1 - int8_top1) <= 0.02
    assert not np.allclose(int8_logits, float_logits, atol=1e-4), "the int8 model computes exactly in float?"
    with pytest.raises(ShapeError, match="already quantized"):
        quantize_litert_static(int8, calibration=digits16.train, config=QuantizeConfig(method="litert-static"),
                               path=tmp_path / "twice.tflite")  # fmt: skip
    assert not (tmp_path / "twice.tflite").exists()


def test_int8_keeps_in_float_what_xnnpack_cannot_run_in_int8(digits16, tmp_path: Path) -> None:
    """MobileNetV3's h-swish has no int8 kernel in XNNPACK: all-int8, each use cuts the graph out of the delegate;
    kept in float (wrapped in DEQUANTIZE/QUANTIZE, which XNNPACK runs), the whole graph is one XNNPACK partition."""
    from edgeflow.compress.litert_quantize import quantize_litert_static, xnnpack_partitions
    from edgeflow.export.litert import export_tflite
    from edgeflow.recipe import QuantizeConfig

    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.Hardswish(), nn.Conv2d(16, 16, 3, padding=1), nn.Hardswish(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    ).eval()  # fmt: skip
    float_model = export_tflite(module, input_shape=(1, 3, 16, 16), path=tmp_path / "hswish.tflite")
    int8, stats = quantize_litert_static(
        float_model, calibration=digits16.train, config=QuantizeConfig(method="litert-static", subset_size=16),
        path=tmp_path / "hswish_int8.tflite",
    )  # fmt: skip
    assert stats.settings["float_operators"] == ["HARD_SWISH"]
    assert stats.settings["xnnpack_partitions"]["all_int8"] > 1 and stats.settings["xnnpack_partitions"]["kept"] == 1
    assert xnnpack_partitions(int8.path.read_bytes()) == 1 and stats.quantized_layers == 3
    assert stats.notes[0].startswith("kept in float so that XNNPACK runs the whole graph: HARD_SWISH")


def test_bad_files_are_one_clear_line(tmp_path: Path) -> None:
    text = tmp_path / "notes.tflite"
    text.write_text("this is not a model\n")
    with pytest.raises(ModelLoadError, match=r"notes.tflite: not a LiteRT model \(a .tflite FlatBuffer starts"):
        get_backend("litert").compile(artifact_from_path(text), settings=RuntimeSettings())
    truncated = tmp_path / "cut.tflite"
    truncated.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 24)
    with pytest.raises(ModelLoadError, match=r"LiteRT cannot load \S*cut.tflite: "):
        get_backend("litert").compile(artifact_from_path(truncated), settings=RuntimeSettings())


def test_an_operator_without_a_lowering_names_the_operator_and_the_layer(tmp_path: Path) -> None:
    from edgeflow.export.litert import export_tflite

    class Sorts(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = SortHead()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(x)

    with pytest.raises(ModelLoadError) as raised:
        export_tflite(Sorts().eval(), input_shape=(1, 3, 8, 8), path=tmp_path / "sorts.tflite")
    message = str(raised.value)
    assert message.startswith("LiteRT could not convert the model: operator aten.")
    assert "in layer head (SortHead)" in message and "\n" not in message
    assert not list(tmp_path.iterdir()), "a half-written file was left"


class SortHead(nn.Module):
    """An operator LiteRT has no lowering for (the test above finds which from the converter's message)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.det(x.flatten(2)[..., :3, :3] if x.shape[-1] >= 3 else x)


def test_cli_profile_and_eval_of_a_tflite(tflite, small_tflite, tmp_path: Path) -> None:
    from edgeflow.cli import app

    runner = CliRunner()
    profiled = runner.invoke(app, ["profile", str(tflite.path), "--device", "cpu", "--iterations", "30", "--json"])
    assert profiled.exit_code == 0, profiled.output
    result = json.loads(profiled.stdout)
    assert result["backend"] == "litert" and result["measured"] is True and result["input_shape"] == [1, 3, 16, 16]
    assert result["runtime_settings"]["threads"] >= 1 and 0 < result["latency_ms"]["p50"]
    assert result["macs"] == 8 * 8 * 8 * 27 + 80
    evaluated = runner.invoke(app, ["eval", str(small_tflite.path), "--data", "digits", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    scores = json.loads(evaluated.stdout)
    assert scores["runtime"].startswith("litert") and scores["top1"] > 0.5
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"0123456789abcdef")
    refused = runner.invoke(app, ["profile", str(bad), "--device", "cpu"])
    assert refused.exit_code == 2 and "not a LiteRT model" in refused.output
    assert "Traceback" not in refused.output and len(refused.output.strip().splitlines()) == 1


def test_cli_quantize_of_a_tflite_within_a_budget(small_tflite, tmp_path: Path) -> None:
    """`edgeflow quantize model.tflite`: LiteRT's quantizer chosen for a .tflite, judged on holdout, evidence
    through LiteRT's interpreter, the file written beside the model's copy."""
    import shutil

    from edgeflow.cli import app

    model = tmp_path / "small.tflite"
    shutil.copyfile(small_tflite.path, model)
    result = CliRunner().invoke(
        app, ["quantize", str(model), "--device", "cpu", "--backend", "litert", "--data", "digits", "--max-drop", "2",
              "--subset-size", "64", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert (
        stats["backend"] == "litert" and stats["method"] == "litert-static" and stats["attempts"] == ["litert-static"]
    )
    assert stats["artifact"] == str(tmp_path / "small_int8.tflite") and Path(stats["artifact"]).exists()
    assert stats["accuracy"]["runtime"] == "litert" and stats["agreement"]["top1_agreement"] >= 0.9
    assert stats["summary"]["quantized_layers"] == 3


def test_the_agent_times_a_tflite_over_ssh(loopback_ssh, tflite, digits16, tmp_path: Path) -> None:
    """The agent on the 'device' (this machine through a real sshd) times the .tflite with ai-edge-litert and
    computes its logits there; a device Python without LiteRT is one clear line."""
    from edgeflow.device import load_device
    from edgeflow.errors import DeviceError
    from edgeflow.profiling.loop import ProfileConfig
    from edgeflow.targets.agent_client import check, time_on_device

    path = tmp_path / "board.yaml"
    path.write_text(loopback_ssh.device_yaml(python=sys.executable, runtimes="[litert]"))
    device = load_device(path)
    assert check(device).runtimes["litert"]
    images = _images(digits16.test, 4)
    quick = ProfileConfig(warmup=2, iterations=30, max_seconds=1.0)
    timing, logits = time_on_device(tflite, device=device, backend="litert", config=quick, inputs=images)
    assert timing.runtime == "litert" and timing.input_shape == [1, 3, 16, 16]
    assert timing.settings["input_layout"] == "NCHW" and timing.settings["threads"] >= 1
    assert 0 < timing.latency_ms.p50 and timing.latency_ms.state is not None
    local = get_backend("litert").compile(tflite, settings=RuntimeSettings())
    np.testing.assert_allclose(logits, np.concatenate([local.run(image[None]) for image in images]), atol=1e-4)
    bare = tmp_path / "bare-python"  # a Python without numpy or any runtime
    bare.write_text(f'#!/bin/sh\nexec {sys.base_prefix}/bin/python3 -I -S "$@"\n')
    bare.chmod(0o755)
    path.write_text(loopback_ssh.device_yaml(python=str(bare), runtimes="[litert]"))
    with pytest.raises(DeviceError, match=r"time tiny.tflite with litert: litert is not installed for /"):
        time_on_device(tflite, device=load_device(path), backend="litert", config=quick)


MOBILE_QUICK = """name: mobile-quick
data: digits
model: {resolution: 32}
train: {epochs: 1, batch_size: 32, max_steps: 30}
export: {parity_samples: 8}
profile: {warmup: 2, iterations: 20, max_seconds: 1}
evaluate: {max_samples: 64}
variants:
  - {name: onnxruntime-fp32, backend: onnxruntime, precision: fp32}
  - {name: litert-fp32, backend: litert, precision: fp32}
  - {name: litert-int8, backend: litert, precision: int8, quantize: {subset_size: 32}}
"""


@pytest.mark.slow  # a whole optimize run for a phone, MobileNetV3 (h-swish, SE) through LiteRT
def test_a_phone_bundle_carries_both_tflite_files(tmp_path: Path) -> None:
    """optimize for pixel-8 (no phone here): LiteRT fp32 and int8 estimated, their accuracy from LiteRT's
    interpreter on this host, parity with torch reported, and both .tflite files in the bundle with their
    runtime, version, layout and the benchmark_model command that measures them on the phone."""
    import ai_edge_litert

    import edgeflow

    recipe = tmp_path / "mobile-quick.yaml"
    recipe.write_text(MOBILE_QUICK)
    out = tmp_path / "phone"
    report = edgeflow.optimize("mobilenet_v3_small", device="pixel-8", recipe=recipe, out=out)
    litert = {variant.name: variant for variant in report.variants if variant.backend == "litert"}
    for variant in litert.values():
        assert not variant.measured and variant.latency_ms is None and variant.estimate.ms > 0
        assert variant.accuracy.runtime == "litert on this host (litert is on pixel-8)"
    assert litert["litert-int8"].quantization.method == "litert-static"
    assert litert["litert-int8"].agreement.top1_agreement >= 0.8
    parity = {entry.runtime: entry for entry in report.parity}
    assert parity["litert (f32)"].max_abs_diff < 1e-3 and parity["litert (f32)"].top1_agreement == 1.0
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    deployables = {entry["file"]: entry for entry in manifest["deployables"]}
    assert {"model.tflite", "model_int8.tflite"} <= set(deployables)
    for name, precision in (("model.tflite", "fp32"), ("model_int8.tflite", "int8")):
        entry = deployables[name]
        assert entry["runtime"] == "litert" and entry["precision"] == precision
        assert entry["runtime_version"].startswith(ai_edge_litert.__version__)
        assert entry["input"]["layout"] == "NCHW" and entry["input"]["shape"] == [1, 3, 32, 32]
        assert entry["metrics"]["latency"]["measured"] is False and entry["metrics"]["latency"]["estimated_ms"] > 0
        assert entry["build"]["on_device"].startswith(f"benchmark_model --graph={name} ")
    roles = {entry["role"]: entry["path"] for entry in manifest["files"]}
    assert roles.get("litert-int8") == "model_int8.tflite" or manifest["variant"] == "litert-int8"
    # the shipped files are what the report measured: the same logits as the report's artifacts
    images = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    for name, variant in (("model.tflite", "litert-fp32"), ("model_int8.tflite", "litert-int8")):
        shipped, measured = (
            get_backend("litert").compile(artifact_from_path(path), settings=RuntimeSettings())
            for path in (out / "bundle" / name, out / litert[variant].artifact)
        )
        np.testing.assert_array_equal(
            np.concatenate([shipped.run(image[None]) for image in images]),
            np.concatenate([measured.run(image[None]) for image in images]),
        )


def test_a_tensor_the_calibration_never_moves_still_gives_a_model_xnnpack_runs(digits16, tmp_path: Path) -> None:
    """A ReLU whose inputs all stay negative (a pruned network's head on synthetic timing inputs did this) has an
    empty range; the quantizer made it a zero scale and XNNPACK refused the whole model."""
    from edgeflow.compress.litert_quantize import LiteRTStaticConfig, quantize_litert_static
    from edgeflow.export.litert import export_tflite

    torch.manual_seed(0)
    module = SmallNet().eval()
    with torch.no_grad():
        module.features[4].bias.fill_(-100.0)  # every output of the second block's ReLU is 0
    base = export_tflite(module, input_shape=(1, 3, 16, 16), path=tmp_path / "dead.tflite")
    quantized, stats = quantize_litert_static(
        base, calibration=digits16.train, config=LiteRTStaticConfig(subset_size=16), path=tmp_path / "int8.tflite"
    )
    assert stats.settings["dead_tensors"] >= 1 and stats.quantized_layers == 3
    compiled = get_backend("litert").compile(quantized, settings=RuntimeSettings())
    logits = compiled.run(_images(digits16.test, 1))
    assert np.isfinite(logits).all()
