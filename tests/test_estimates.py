"""Estimates where no device is attached: the roofline counted by hand on a tiny net, and every estimate
labelled ``measured: false``."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeflow.device import DeviceSpec, load_device
from edgeflow.errors import ConfigError
from edgeflow.latency.roofline import estimate_roofline


def _device(**peak: object) -> DeviceSpec:
    figures = {"compute_gops": {"fp32": 1.0, "int8": 4.0}, "memory_bandwidth_gbs": 1.0, "source": "test"}
    figures.update(peak)
    return DeviceSpec(name="toy", runtimes=["onnxruntime"], precisions=["fp32", "int8"], peak=figures)


def test_roofline_by_hand_on_the_tiny_net(tiny_artifacts) -> None:
    # TinyNet at 16 px: conv 3->8 k3 s2 (8x8 out), global average pool, linear 8->10.
    conv_flops = 2 * (8 * 8 * 8) * (3 * 3 * 3)
    conv_bytes = 4 * (3 * 16 * 16 + 8 * 8 * 8 + 8 * 3 * 3 * 3)
    pool_flops, pool_bytes = 8, 4 * (8 * 8 * 8 + 8)
    fc_flops, fc_bytes = 2 * 10 * 8, 4 * (8 + 10 + 10 * 8)
    # 1 GFLOP/s and 1 GB/s: the convolution is compute-bound, the pool and the linear layer memory-bound
    expected_s = max(conv_flops, conv_bytes) / 1e9 + max(pool_flops, pool_bytes) / 1e9 + max(fc_flops, fc_bytes) / 1e9
    estimate = estimate_roofline(tiny_artifacts["onnx"], device=_device(), precision="fp32")
    assert estimate.ms == pytest.approx(expected_s * 1e3, rel=1e-6)
    assert estimate.detail.startswith("3 layers (1 compute-bound, 2 memory-bound)")
    assert estimate.measured is False and estimate.method == "roofline" and estimate.model_dump()["measured"] is False
    # the same graph from the IR gives the same figure; a per-layer cost adds 3 x its value
    assert estimate_roofline(tiny_artifacts["openvino"], device=_device(), precision="fp32").ms == estimate.ms
    slower = estimate_roofline(tiny_artifacts["onnx"], device=_device(layer_overhead_us=100.0), precision="fp32")
    assert slower.ms == pytest.approx(estimate.ms + 0.3)
    # int8: a quarter of the bytes and four times the arithmetic rate
    assert estimate_roofline(tiny_artifacts["onnx"], device=_device(), precision="int8").ms < estimate.ms / 3


def test_roofline_refuses_what_it_cannot_know(tiny_artifacts) -> None:
    with pytest.raises(ConfigError, match="no peak figure for fp16"):
        estimate_roofline(tiny_artifacts["onnx"], device=_device(), precision="fp16")
    bare = DeviceSpec(name="bare", runtimes=["onnxruntime"], precisions=["fp32"])
    with pytest.raises(ConfigError, match="bare has no peak figures"):
        estimate_roofline(tiny_artifacts["onnx"], device=bare, precision="fp32")


@pytest.mark.parametrize("name", ["jetson-orin-nano", "jetson-agx-orin", "raspberry-pi-5", "pixel-8", "nvidia-gpu"])
def test_every_published_device_has_sourced_peaks_for_its_precisions(name: str, tiny_artifacts) -> None:
    device = load_device(name)
    assert device.peak is not None and len(device.peak.source) > 20
    for precision in device.precisions:
        assert estimate_roofline(tiny_artifacts["onnx"], device=device, precision=precision).ms > 0


def test_descriptor_rules(tmp_path: Path) -> None:
    path = tmp_path / "board.yaml"
    path.write_text("name: board\ntransport: local\nssh: {host: x}\nruntimes: [onnxruntime]\nprecisions: [fp32]\n")
    with pytest.raises(ConfigError, match="an ssh section needs transport: ssh"):
        load_device(path)
    path.write_text(
        "name: board\nruntimes: [onnxruntime]\nprecisions: [fp32, int8]\n"
        "peak: {compute_gops: {fp32: 10}, memory_bandwidth_gbs: 5, source: mine}\n"
    )
    with pytest.raises(ConfigError, match="peak.compute_gops lacks the device's precisions: int8"):
        load_device(path)
    assert load_device("jetson").name == "jetson-orin-nano"
