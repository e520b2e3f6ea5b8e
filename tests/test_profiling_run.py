"""optimize where the device is: a Jetson that is not attached (estimated, with a QDQ ONNX and a bundle),
and a device over SSH (a real sshd on 127.0.0.1) timed by the agent with the logits computed there."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import edgeflow
from edgeflow.device import load_device

QUICK = """
data: digits
model: {resolution: 32}
train: {epochs: 1, batch_size: 32, max_steps: 8}
export: {parity_samples: 8}
profile: {warmup: 2, iterations: 20, max_seconds: 1}
evaluate: {max_samples: 48, holdout_samples: 24}
"""


def _recipe(tmp_path: Path, name: str, variants: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n{QUICK}variants:\n{variants}")
    return path


@pytest.fixture(scope="module")
def jetson_run(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("jetson")
    recipe = _recipe(
        folder, "quick-tensorrt",
        "  - {name: tensorrt-fp16, backend: tensorrt, precision: fp16}\n"
        "  - {name: tensorrt-int8, backend: tensorrt, precision: int8, quantize: {subset_size: 32}}\n",
    )  # fmt: skip
    out = folder / "report"
    report = edgeflow.optimize("mobilenet_v3_small", device="jetson", recipe=recipe, out=out)
    return report, out


@pytest.mark.slow  # a whole optimize run for the jetson (~20 s, the module's jetson_run): with the slow tests
def test_jetson_without_a_host_is_estimated_everywhere(jetson_run) -> None:
    report, out = jetson_run
    data = json.loads((out / "report.json").read_text())
    assert data["device"]["name"] == "jetson-orin-nano"
    for variant in data["variants"]:
        assert variant["measured"] is False and variant["latency_ms"] is None
        assert variant["estimate"]["measured"] is False and variant["estimate"]["method"] == "roofline"
        assert variant["estimate"]["ms"] > 0 and "no host given" in variant["latency_source"]
        assert variant["accuracy"]["samples"] == 48 and variant["holdout_samples"] == 24
        assert variant["accuracy"]["runtime"].startswith("onnxruntime on this host (tensorrt is on jetson-orin-nano)")
    fp16, int8 = report.variants
    assert int8.estimate.ms < fp16.estimate.ms  # a quarter of the bytes, twice the arithmetic rate
    markdown = (out / "report.md").read_text()
    assert "(estimated, roofline)" in markdown and "| measured |" not in markdown
    assert "latencies are estimated, not measured on jetson-orin-nano" in markdown
    html = (out / "report.html").read_text()
    assert '<td class="estimated">estimated</td>' in html and '<td class="measured">' not in html


@pytest.mark.slow  # a whole optimize run for the jetson (~20 s, the module's jetson_run): with the slow tests
def test_jetson_int8_is_a_symmetric_qdq_onnx(jetson_run) -> None:
    report, out = jetson_run
    int8 = next(variant for variant in report.variants if variant.precision == "int8")
    model = onnx.load(str(out / int8.artifact))
    kinds = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= kinds
    initializers = {tensor.name: onnx.numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    zero_points = [initializers[node.input[2]] for node in model.graph.node if node.op_type == "QuantizeLinear"]
    assert zero_points and all(zp.dtype == np.int8 and not zp.any() for zp in zero_points)  # TensorRT reads these


@pytest.mark.slow  # a whole optimize run for the jetson (~20 s, the module's jetson_run): with the slow tests
def test_jetson_bundle_and_the_command_to_build_it(jetson_run) -> None:
    report, out = jetson_run
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    recommended = next(variant for variant in report.variants if variant.recommended)
    assert manifest["variant"] == recommended.name and manifest["runtime"] == "tensorrt"
    assert manifest["input"]["shape"] == [1, 3, 32, 32] and manifest["input"]["layout"] == "NCHW"
    assert manifest["input"]["mean"] == [0.5, 0.5, 0.5] and manifest["labels"] == [str(d) for d in range(10)]
    for entry in manifest["files"]:
        assert hashlib.sha256((out / "bundle" / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
    assert manifest["metrics"]["latency"]["measured"] is False and manifest["metrics"]["latency"]["estimated_ms"] > 0
    build = manifest["build"]["on_device"]
    assert build.startswith("/usr/src/tensorrt/bin/trtexec --onnx=model.onnx --saveEngine=model.engine")
    assert ("--int8 --fp16" in build) == (recommended.precision == "int8")
    assert any(
        note.startswith("build and measure model.onnx on the device (on device): /usr/src/tensorrt")
        for note in report.notes
    )


@pytest.mark.slow  # a whole optimize run over SSH
def test_optimize_over_ssh_measures_on_the_device(loopback_ssh, tmp_path: Path) -> None:
    device_file = tmp_path / "loopback.yaml"
    device_file.write_text(loopback_ssh.device_yaml(python=sys.executable))
    recipe = _recipe(
        tmp_path, "quick-remote",
        "  - {name: onnxruntime-fp32, backend: onnxruntime}\n  - {name: openvino-fp32, backend: openvino}\n",
    )  # fmt: skip
    report = edgeflow.optimize("mobilenet_v3_small", device=load_device(device_file), recipe=recipe,
                               out=tmp_path / "out")  # fmt: skip
    for variant in report.variants:
        assert variant.measured and variant.latency_ms.p50 > 0 and variant.estimate is None
        assert variant.accuracy.runtime == f"{variant.backend} on loopback" and variant.accuracy.samples == 48
        assert variant.holdout_samples == 24  # the agent scored 48 test and 24 holdout images, told apart
        assert variant.runtime_settings["address"].endswith(f"@127.0.0.1:{loopback_ssh.port}")
        assert variant.agreement.top1_agreement >= 0.95  # the device's logits match the reference's
    manifest = json.loads((tmp_path / "out" / "bundle" / "manifest.json").read_text())
    assert manifest["metrics"]["latency"]["measured"] is True and manifest["device"]["transport"] == "ssh"


@pytest.mark.slow  # a whole optimize run for a phone
def test_phone_bundle_has_the_ort_format_and_it_runs(tmp_path: Path) -> None:
    import onnxruntime as ort

    recipe = _recipe(tmp_path, "quick-mobile", "  - {name: onnxruntime-fp32, backend: onnxruntime}\n")
    out = tmp_path / "phone"
    report = edgeflow.optimize("mobilenet_v3_small", device="pixel-8", recipe=recipe, out=out)
    assert not report.variants[0].measured and report.variants[0].estimate.method == "roofline"
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    roles = {entry["role"]: entry["path"] for entry in manifest["files"]}
    assert roles["ort-model"] == "model.ort" and roles["ort-config"] == "required_operators.config"
    assert "ai.onnx;" in (out / "bundle" / "required_operators.config").read_text()
    # the .ort file is what ONNX Runtime mobile loads: same logits as the ONNX it came from
    image = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    outputs = []
    for name in ("model.onnx", "model.ort"):
        session = ort.InferenceSession(str(out / "bundle" / name), providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {manifest["input"]["name"]: image})[0])
    # (the .ort holds the graph after ORT's fixed optimizations: fused kernels round a little differently)
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=2e-3, atol=2e-2)
    assert outputs[0].argmax() == outputs[1].argmax()
    assert manifest["build"]["on_device"].startswith("onnxruntime_perf_test")
    # ExecuTorch (optional extra) ships as a variant of its own (the mobile recipe has them), not beside this one
    assert not any(entry["path"].endswith(".pte") for entry in manifest["files"])


def test_bundle_commands_follow_what_times_each_runtime_on_the_device() -> None:
    """TensorRT's engine is built by trtexec on the device whether it is reached over SSH or is this machine's
    GPU; a runtime nothing times on a phone gets a note, never a command that would fail."""
    from types import SimpleNamespace

    from edgeflow.device import load_device
    from edgeflow.report.bundle import build_commands

    local_gpu = build_commands(SimpleNamespace(backend="tensorrt", precision="fp16"), load_device("nvidia-gpu"),
                               model_file="model.onnx")  # fmt: skip
    assert "trtexec" in local_gpu["on_device"] and "--fp16" in local_gpu["on_device"]
    phone = build_commands(SimpleNamespace(backend="executorch", precision="int8"), load_device("pixel-8"),
                           model_file="model_int8.pte")  # fmt: skip
    assert set(phone) == {"note"} and "estimated" in phone["note"]
    litert = build_commands(SimpleNamespace(backend="litert", precision="int8"), load_device("pixel-8"),
                            model_file="model_int8.tflite")  # fmt: skip
    assert litert["on_device"].startswith("benchmark_model --graph=model_int8.tflite")
