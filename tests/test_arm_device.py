"""The device path on an ARM userland: an emulated aarch64 Debian over SSH (tests/arm_device.py), where the agent
runs with the ARM builds of ONNX Runtime and LiteRT. Accuracy comes from those builds and is set beside this host's;
the timings are emulated, and labelled so everywhere, never measured and never chosen by."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import edgeflow
from edgeflow.cli import app
from edgeflow.device import load_device

pytestmark = pytest.mark.slow  # builds (or finds) the ARM root; the agent runs under qemu

RECIPE = """name: arm-quick
data: digits
model: {resolution: 32}
train: {epochs: 1, batch_size: 32, max_steps: 8}
export: {parity_samples: 8}
profile: {warmup: 2, iterations: 10, max_seconds: 1}
evaluate: {max_samples: 48}
variants:
  - {name: onnxruntime-fp32, backend: onnxruntime}
  - {name: onnxruntime-int8, backend: onnxruntime, precision: int8, quantize: {method: ort-static, subset_size: 16}}
  - {name: litert-fp32, backend: litert}
  - {name: litert-int8, backend: litert, precision: int8, quantize: {subset_size: 16}}
"""


@pytest.fixture(scope="module")
def device_file(arm_ssh, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("arm") / "arm-pi.yaml"
    path.write_text(arm_ssh.device_yaml())
    return path


def test_devices_check_finds_aarch64_and_its_runtimes(device_file):
    result = CliRunner().invoke(app, ["devices", "check", str(device_file)])
    assert result.exit_code == 0, result.output
    assert "aarch64" in result.output
    for runtime in ("onnxruntime", "litert"):
        assert runtime in result.output
    assert "missing" not in result.output.lower()
    # qemu emulates a Raspberry Pi 5's core: dot product, no i8mm or SVE (its default CPU has every feature)
    features = next(line for line in result.output.splitlines() if "cpu features:" in line).split(":", 1)[1].split()
    assert "asimddp" in features and not {"i8mm", "sve", "sve2", "sme"} & set(features)


def test_optimize_scores_through_the_arm_builds_and_labels_the_timings_emulated(device_file, tmp_path):
    recipe = tmp_path / "arm-quick.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "out"
    report = edgeflow.optimize("mobilenet_v3_small", device=load_device(device_file), recipe=recipe, out=out)
    assert [variant.name for variant in report.variants] == ["onnxruntime-fp32", "onnxruntime-int8", "litert-fp32",
                                                             "litert-int8"]  # fmt: skip
    for variant in report.variants:
        # timed on the device's runtime under qemu: emulated, never measured, never a speed-up
        assert variant.emulated and not variant.measured and variant.latency_kind == "emulated"
        assert variant.latency_ms.p50 > 0 and variant.estimate is None and variant.speedup_vs_baseline is None
        assert "emulated" in variant.latency_source
        # the accuracy is what the aarch64 build computed, set beside this host's build of the same file
        assert variant.accuracy.runtime == f"{variant.backend} on arm-pi" and variant.accuracy.samples == 48
        build = variant.host_build
        assert build is not None and build.images == 48 and "on this host (x86_64)" in build.runtime
        assert build.device_top1 == variant.accuracy.top1 and 0.9 <= build.agreement <= 1.0
        if variant.precision == "fp32":  # float kernels of two CPUs agree on a tiny net's top-1
            assert build.agreement >= 0.97
    # chosen by accuracy alone (an emulated latency chooses nothing), and said
    assert sum(variant.recommended for variant in report.variants) == 1
    assert any("latencies are emulated" in note for note in report.notes)
    markdown = (out / "report.md").read_text()
    assert "**emulated** = timed on the device's runtime under an emulator" in markdown
    assert "## The device's runtime builds beside this host's" in markdown
    assert "(emulated)" in markdown
    saved = json.loads((out / "report.json").read_text())
    assert all(v["emulated"] and not v["measured"] for v in saved["variants"])
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["metrics"]["latency"]["kind"] == "emulated" and manifest["metrics"]["latency"]["measured"] is False
    # edgeflow profile on the same device: the INT8 file timed by the aarch64 build, labelled emulated
    int8 = out / "model_onnxruntime-int8.onnx"
    profiled = CliRunner().invoke(app, ["profile", str(int8), "--device", str(device_file)])
    assert profiled.exit_code == 0, profiled.output
    assert "on arm-pi" in profiled.output and "(emulated: an emulator of the device" in profiled.output
