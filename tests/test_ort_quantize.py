"""ONNX Runtime static/dynamic INT8 and FP16: really converted, runnable, close to float, refusing bad input."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from edgeflow.artifact import Artifact
from edgeflow.backends import get_backend
from edgeflow.backends.base import RuntimeSettings
from edgeflow.compress.ort_quantize import (
    convert_onnx_fp16,
    is_quantized_onnx,
    quantize_onnx_dynamic,
    quantize_onnx_static,
)
from edgeflow.data import ImageDataset, load_data
from edgeflow.environment import host_int8_saturates
from edgeflow.errors import DataError, OutputError, RuntimeUnavailableError, ShapeError
from edgeflow.export.onnx import export_onnx
from edgeflow.recipe import QuantizeConfig


@pytest.fixture(scope="module")
def digits32():
    return load_data("digits", resolution=32)


@pytest.fixture(scope="module")
def float_onnx(mobilenet_artifacts, digits32, tmp_path_factory) -> Artifact:
    """The shared mobilenet with batch-norm statistics measured on digits, as a trained model has them.

    With the init statistics (mean ~0, var 1) each block shrinks the signal ~10x, so the untrained
    logits vary across images by ~1e-8: any model that outputs the classifier bias would match them.
    """
    module = copy.deepcopy(mobilenet_artifacts["module"])
    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.reset_running_stats()
            layer.momentum = None  # a plain average over the batches seen
    module.train()
    with torch.no_grad():
        module(torch.stack([digits32.train[i][0] for i in range(64)]))
    module.eval()
    folder = tmp_path_factory.mktemp("ort_float")
    return export_onnx(module, input_shape=(1, 3, 32, 32), path=folder / "m.onnx")


@pytest.fixture(scope="module")
def static_per_channel(float_onnx, digits32, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ort_static")
    config = QuantizeConfig(method="ort-static", subset_size=16)
    return quantize_onnx_static(float_onnx, calibration=digits32.train, config=config, path=folder / "m_int8.onnx")


@pytest.fixture(scope="module")
def static_per_tensor(float_onnx, digits32, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ort_static_pt")
    config = QuantizeConfig(
        method="ort-static", subset_size=16, per_channel=False, activation_type="int8", calibrate_method="percentile"
    )
    return quantize_onnx_static(float_onnx, calibration=digits32.train, config=config, path=folder / "m_int8.onnx")


@pytest.fixture(scope="module")
def dynamic(float_onnx, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ort_dynamic")
    config = QuantizeConfig(method="ort-dynamic", per_channel=False)
    return quantize_onnx_dynamic(float_onnx, config=config, path=folder / "m_dyn.onnx")


def _logits(artifact: Artifact, dataset: ImageDataset, count: int = 16) -> np.ndarray:
    compiled = get_backend("onnxruntime").compile(artifact, settings=RuntimeSettings())
    return np.concatenate([compiled.run(dataset[i][0].unsqueeze(0).numpy()) for i in range(count)])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def _conv_weight_scales(path: Path) -> list[np.ndarray]:
    """Scales of the DequantizeLinear nodes that feed a Conv's weight input."""
    graph = onnx.load(str(path)).graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    weights = {node.input[1] for node in graph.node if node.op_type == "Conv"}
    return [
        constants[node.input[1]]
        for node in graph.node
        if node.op_type == "DequantizeLinear" and node.output[0] in weights
    ]


def test_static_is_qdq_smaller_and_summarized(float_onnx, static_per_channel) -> None:
    artifact, summary = static_per_channel
    assert {"QuantizeLinear", "DequantizeLinear"} <= _op_types(artifact.path)
    assert is_quantized_onnx(artifact.path) and not is_quantized_onnx(float_onnx.path)
    assert artifact.size_bytes < 0.4 * float_onnx.size_bytes
    assert (artifact.format, artifact.precision, artifact.input_shape) == ("onnx", "int8", (1, 3, 32, 32))
    weights = ", 7-bit weights" if host_int8_saturates() else ""  # x86 without VNNI: reduce_range (see recipe)
    assert artifact.lineage[-1] == f"ort-static(qdq, per_channel=True, calibrate=minmax{weights})"
    assert summary.settings["reduce_range"] is host_int8_saturates()
    assert summary.method == "ort-static" and summary.quantized_layers > 0
    assert summary.settings["subset_size"] == 16 and summary.settings["activation_type"] == "uint8"
    assert sorted(p.name for p in artifact.path.parent.iterdir()) == ["m_int8.onnx"]  # no temp files left


def test_per_channel_gives_vector_scales(static_per_channel, static_per_tensor) -> None:
    per_channel = _conv_weight_scales(static_per_channel[0].path)
    assert any(scale.ndim == 1 and scale.size > 1 for scale in per_channel)
    per_tensor = _conv_weight_scales(static_per_tensor[0].path)
    assert per_tensor and all(scale.size == 1 for scale in per_tensor)
    assert static_per_tensor[1].settings["calibrate_method"] == "percentile"


def _activation_scales(path: Path) -> dict[str, float]:
    """Scale of each QuantizeLinear (activations: ORT folds the weights' away), by the tensor it quantizes."""
    graph = onnx.load(str(path)).graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    return {node.input[0]: float(constants[node.input[1]]) for node in graph.node if node.op_type == "QuantizeLinear"}


def test_minmax_average_narrows_the_activation_ranges(float_onnx, static_per_channel, digits32, tmp_path) -> None:
    """``calibrate_method: minmax-average`` takes the moving average of each tensor's range over the calibration
    images (ORT's CalibMovingAverage): no range is wider than the plain min-max over all images, some narrower."""
    config = QuantizeConfig(method="ort-static", subset_size=16, calibrate_method="minmax-average")
    artifact, summary = quantize_onnx_static(
        float_onnx, calibration=digits32.train, config=config, path=tmp_path / "m_int8.onnx"
    )
    assert summary.settings["calibrate_method"] == "minmax-average"
    averaged, overall = _activation_scales(artifact.path), _activation_scales(static_per_channel[0].path)
    assert averaged.keys() == overall.keys() and averaged
    assert all(averaged[name] <= overall[name] * (1 + 1e-6) for name in averaged)
    assert sum(averaged[name] < 0.99 * overall[name] for name in averaged) >= len(averaged) // 2


def test_static_logits_track_float(float_onnx, static_per_channel, static_per_tensor, digits32) -> None:
    reference = _logits(float_onnx, digits32.test)
    assert np.ptp(reference, axis=0).max() > 0.01  # the logits depend on the image, so the check means something
    for artifact, _summary in (static_per_channel, static_per_tensor):
        assert _cosine(reference, _logits(artifact, digits32.test)) > 0.9


def test_dynamic_uses_conv_integer_and_runs(float_onnx, dynamic, digits32) -> None:
    # ONNX Runtime 1.32 has a CPU ConvInteger kernel for int8 weights; older releases refused to load it.
    artifact, summary = dynamic
    assert {"DynamicQuantizeLinear", "ConvInteger"} <= _op_types(artifact.path)
    assert "QuantizeLinear" not in _op_types(artifact.path)
    assert is_quantized_onnx(artifact.path)
    assert artifact.size_bytes < 0.4 * float_onnx.size_bytes
    assert summary.method == "ort-dynamic" and summary.quantized_layers > 0
    assert artifact.lineage[-1] == "ort-dynamic(weights=int8, per_channel=False)"
    assert _cosine(_logits(float_onnx, digits32.test), _logits(artifact, digits32.test)) > 0.9


def test_dynamic_refused_clearly_when_cpu_cannot_run_it(float_onnx, tmp_path: Path, monkeypatch) -> None:
    import onnxruntime

    def no_kernel(*args, **kwargs):
        raise RuntimeError("NOT_IMPLEMENTED : Could not find an implementation for ConvInteger(10)")

    monkeypatch.setattr(onnxruntime, "InferenceSession", no_kernel)
    with pytest.raises(RuntimeUnavailableError, match="ConvInteger"):
        quantize_onnx_dynamic(float_onnx, config=QuantizeConfig(), path=tmp_path / "m_dyn.onnx")
    assert list(tmp_path.iterdir()) == []


def test_fp16_halves_weights_keeps_float32_io(float_onnx, digits32, tmp_path: Path) -> None:
    artifact = convert_onnx_fp16(float_onnx, path=tmp_path / "m_fp16.onnx")
    graph = onnx.load(str(artifact.path)).graph
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    weights = [init for init in graph.initializer if init.data_type in float_types]
    assert weights and all(init.data_type == onnx.TensorProto.FLOAT16 for init in weights)
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert (artifact.precision, artifact.lineage[-1]) == ("fp16", "onnx-fp16")
    assert artifact.size_bytes < 0.6 * float_onnx.size_bytes
    reference, half = _logits(float_onnx, digits32.test), _logits(artifact, digits32.test)
    assert np.abs(reference - half).max() < 0.05 * np.abs(reference).max()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m_fp16.onnx"]


def test_already_quantized_is_refused(static_per_channel, digits32, tmp_path: Path) -> None:
    quantized = static_per_channel[0]
    with pytest.raises(ShapeError, match="already quantized; give the float model"):
        quantize_onnx_static(quantized, calibration=digits32.train, config=QuantizeConfig(), path=tmp_path / "x.onnx")
    with pytest.raises(ShapeError, match="already quantized"):
        quantize_onnx_dynamic(quantized, config=QuantizeConfig(), path=tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []


def test_calibration_of_wrong_shape_is_refused(float_onnx, digits32, tmp_path: Path) -> None:
    wrong = digits32.train.with_resolution(48)
    with pytest.raises(ShapeError, match=r"\(1, 3, 48, 48\) but the model takes \(1, 3, 32, 32\)"):
        quantize_onnx_static(float_onnx, calibration=wrong, config=QuantizeConfig(), path=tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []


def test_too_few_calibration_images_is_refused(float_onnx, digits32, tmp_path: Path) -> None:
    train = digits32.train
    three = ImageDataset(train.images[:3], train.labels[:3], resolution=32, mean=train.mean, std=train.std)
    with pytest.raises(DataError, match="at least 8 images"):
        quantize_onnx_static(float_onnx, calibration=three, config=QuantizeConfig(), path=tmp_path / "x.onnx")


def test_unwritable_output_is_refused(float_onnx, digits32, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    config = QuantizeConfig(subset_size=8)
    with pytest.raises(OutputError):
        quantize_onnx_static(float_onnx, calibration=digits32.train, config=config, path=blocker / "x.onnx")
    with pytest.raises(OutputError):
        convert_onnx_fp16(float_onnx, path=blocker / "x.onnx")
