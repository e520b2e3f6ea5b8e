"""Lookup-table estimates for a device: blocks measured on it, fitted on calibration models timed whole,
then a model estimated from its blocks (labelled estimated), and nothing where the device was never
calibrated."""

from __future__ import annotations

import pytest

from edgeflow.device import load_device
from edgeflow.errors import DeviceError
from edgeflow.models import create_model
from edgeflow.targets.calibration import calibrate_device, estimate_from_table, load_fit

SHAPE = (1, 3, 32, 32)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFLOW_CACHE", str(tmp_path / "cache"))


@pytest.mark.slow  # times every block of two models
def test_calibrate_then_estimate(isolated_cache) -> None:
    device = load_device("cpu")
    assert load_fit(device, SHAPE) is None
    module = create_model("mobilenet_v3_small", num_classes=10).eval()
    assert estimate_from_table(device, module, SHAPE, precision="fp32") is None  # never calibrated
    fitted = calibrate_device(device, models=["mobilenet_v3_small", "mnasnet0_5", "squeezenet1_1"], resolution=32,
                              rounds=2)  # fmt: skip
    assert fitted.models == ["mnasnet0_5", "mobilenet_v3_small", "squeezenet1_1"] and len(fitted.fit.calibration) == 3
    assert all(point.measured_ms > 0 for point in fitted.fit.calibration)
    assert load_fit(device, SHAPE) == fitted  # kept beside the table
    estimate = estimate_from_table(device, module, SHAPE, precision="fp32")
    assert estimate is not None and estimate.method == "lookup-table" and estimate.measured is False
    assert estimate.ms > 0 and "blocks summing to" in estimate.detail
    assert load_fit(device, (1, 3, 64, 64)) is None  # another input size is another calibration


def test_calibration_needs_the_device_reachable() -> None:
    """An SSH device is calibrated over SSH (tests/test_targets.py); without a host it is one clear error."""
    with pytest.raises(DeviceError, match="device jetson-orin-nano: connect: no host given"):
        calibrate_device(load_device("jetson"), models=["mobilenet_v3_small"], resolution=32)
    with pytest.raises(DeviceError, match="device pixel-8: calibrate: a phone over ADB has no lookup table"):
        calibrate_device(load_device("pixel-8"), models=["mobilenet_v3_small"], resolution=32)
