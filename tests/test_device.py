"""On a real device: EDGEFLOW_TEST_DEVICE names it (a device name such as ``raspberry-pi-5`` with its host in
EDGEFLOW_SSH_HOST, or a YAML file); these tests run when it is reachable and are skipped, saying why, when not.

    EDGEFLOW_TEST_DEVICE=raspberry-pi-5 EDGEFLOW_SSH_HOST=pi@raspberrypi.local .venv/bin/pytest -m device
"""

from __future__ import annotations

import pytest

import edgeflow
from edgeflow.profiling.loop import ProfileConfig

pytestmark = pytest.mark.device


def test_profile_is_measured_on_the_device(test_device, tiny_artifacts) -> None:
    profiled = edgeflow.profile(
        tiny_artifacts["onnx"].path, device=test_device, config=ProfileConfig(warmup=2, iterations=30, max_seconds=2)
    )
    assert profiled.measured and profiled.device == test_device.name
    assert 0 < profiled.latency_ms.min <= profiled.latency_ms.p50 <= profiled.latency_ms.max
    assert profiled.latency_ms.iterations >= 10 and profiled.macs > 0


def test_accuracy_is_computed_through_the_device_runtime(test_device, tmp_path) -> None:
    report = edgeflow.optimize("mobilenet_v3_small", device=test_device, recipe="quick", out=tmp_path / "run")
    for variant in report.variants:
        if variant.backend == "torch":
            continue
        assert variant.measured, variant.latency_source
        assert variant.accuracy.samples > 0 and 0 <= variant.accuracy.top1 <= 1
