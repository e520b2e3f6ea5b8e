"""NNCF INT8 of an OpenVINO artifact: really quantized, smaller, close to float, and refuses bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeflow.backends import get_backend
from edgeflow.backends.base import RuntimeSettings
from edgeflow.backends.openvino import read_model
from edgeflow.compress.nncf_ptq import is_quantized, quantize_nncf
from edgeflow.data import load_data
from edgeflow.errors import ShapeError
from edgeflow.recipe import QuantizeConfig


@pytest.fixture(scope="module")
def digits32():
    return load_data("digits", resolution=32)


@pytest.fixture(scope="module")
def int8_artifact(mobilenet_artifacts, digits32, tmp_path_factory):
    folder = tmp_path_factory.mktemp("int8")
    artifact, _summary = quantize_nncf(
        mobilenet_artifacts["openvino"],
        calibration=digits32.train,
        config=QuantizeConfig(subset_size=16),
        path=folder / "m_int8.xml",
    )
    return artifact


def test_int8_is_quantized_and_smaller(mobilenet_artifacts, int8_artifact) -> None:
    assert int8_artifact.precision == "int8"
    assert is_quantized(read_model(int8_artifact))
    assert not is_quantized(read_model(mobilenet_artifacts["openvino"]))
    assert int8_artifact.size_bytes < 0.5 * mobilenet_artifacts["openvino"].size_bytes
    assert "nncf-ptq" in int8_artifact.lineage[-1]


def test_onnx_in_gives_qdq_onnx_out(mobilenet_artifacts, digits32, tmp_path: Path) -> None:
    artifact, summary = quantize_nncf(
        mobilenet_artifacts["onnx"], calibration=digits32.train, config=QuantizeConfig(subset_size=16),
        path=tmp_path / "m_int8.onnx",
    )  # fmt: skip
    import onnx

    ops = {node.op_type for node in onnx.load(str(artifact.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and artifact.format == "onnx"
    assert summary.quantized_layers > 0 and summary.settings["preset"] == "mixed"  # h-swish network


def test_int8_outputs_track_float(mobilenet_artifacts, int8_artifact, digits32) -> None:
    settings = RuntimeSettings(execution_precision="f32")
    backend = get_backend("openvino")
    float_model = backend.compile(mobilenet_artifacts["openvino"], settings=settings)
    int8_model = backend.compile(int8_artifact, settings=settings)
    images = [digits32.test[i][0].unsqueeze(0).numpy() for i in range(16)]
    a = np.concatenate([float_model.run(x) for x in images]).ravel()
    b = np.concatenate([int8_model.run(x) for x in images]).ravel()
    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert cosine > 0.9


def test_already_quantized_is_refused(int8_artifact, digits32, tmp_path: Path) -> None:
    with pytest.raises(ShapeError, match="already quantized"):
        quantize_nncf(int8_artifact, calibration=digits32.train, config=QuantizeConfig(), path=tmp_path / "x.xml")
    assert not (tmp_path / "x.xml").exists()


def test_calibration_of_wrong_shape_is_refused(mobilenet_artifacts, tmp_path: Path) -> None:
    wrong = load_data("digits", resolution=48)
    with pytest.raises(ShapeError, match=r"calibration images have shape \(1, 3, 48, 48\)"):
        quantize_nncf(
            mobilenet_artifacts["openvino"],
            calibration=wrong.train,
            config=QuantizeConfig(),
            path=tmp_path / "x.xml",
        )
