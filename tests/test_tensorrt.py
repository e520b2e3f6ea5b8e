"""TensorRT on a local CUDA GPU (marked gpu: skipped where there is none): engines built from ONNX in fp32,
fp16 and int8 from a symmetric QDQ ONNX, cached by TensorRT version, GPU, precision and shape."""

from __future__ import annotations

import numpy as np
import pytest

from edgeflow.artifact import Artifact
from edgeflow.backends import get_backend
from edgeflow.backends.base import RuntimeSettings
from edgeflow.profiling.loop import ProfileConfig, time_inference

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _needs_tensorrt(tmp_path, monkeypatch):
    pytest.importorskip("tensorrt")
    monkeypatch.setenv("EDGEFLOW_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("execution_precision", ["default", "f16"])
def test_engine_matches_onnxruntime(mobilenet_artifacts, execution_precision: str) -> None:
    artifact = mobilenet_artifacts["onnx"]
    settings = RuntimeSettings(execution_precision=execution_precision)
    compiled = get_backend("tensorrt").compile(artifact, settings=settings)
    reference = get_backend("onnxruntime").compile(artifact, settings=RuntimeSettings())
    image = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    tolerance = 1e-3 if execution_precision == "default" else 5e-2
    np.testing.assert_allclose(compiled.run(image), reference.run(image), rtol=tolerance, atol=tolerance)
    assert compiled.settings["execution_precision"] == ("fp32" if execution_precision == "default" else "fp16")
    latency = time_inference(compiled, config=ProfileConfig(warmup=5, iterations=50, max_seconds=1))
    assert 0 < latency.p50 < 50


def test_engines_are_cached_per_precision(mobilenet_artifacts, tmp_path) -> None:
    from edgeflow.backends.tensorrt import engine_cache_folder

    backend = get_backend("tensorrt")
    first = backend.compile(mobilenet_artifacts["onnx"], settings=RuntimeSettings(execution_precision="f16"))
    cached = sorted(engine_cache_folder().glob("*.engine"))
    assert len(cached) == 1 and first.settings["engine_cache"] == str(cached[0])
    backend.compile(mobilenet_artifacts["onnx"], settings=RuntimeSettings(execution_precision="f16"))
    assert sorted(engine_cache_folder().glob("*.engine")) == cached  # reused, not rebuilt
    backend.compile(mobilenet_artifacts["onnx"], settings=RuntimeSettings())
    assert len(list(engine_cache_folder().glob("*.engine"))) == 2  # fp32 is another engine


def test_int8_from_symmetric_qdq(mobilenet_artifacts, tmp_path) -> None:
    from edgeflow.compress.ort_quantize import quantize_onnx_static
    from edgeflow.data import load_data
    from edgeflow.recipe import QuantizeConfig

    config = QuantizeConfig(method="ort-static", subset_size=16, activation_type="int8", symmetric=True)
    qdq, _summary = quantize_onnx_static(
        mobilenet_artifacts["onnx"], calibration=load_data("digits", resolution=32).train, config=config,
        path=tmp_path / "m_int8.onnx",
    )  # fmt: skip
    compiled = get_backend("tensorrt").compile(
        Artifact(format="onnx", path=qdq.path, input_shape=qdq.input_shape, precision="int8"),
        settings=RuntimeSettings(),
    )
    assert compiled.settings["execution_precision"] == "int8"
    image = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    reference = get_backend("onnxruntime").compile(qdq, settings=RuntimeSettings()).run(image)
    assert np.argmax(compiled.run(image)) == np.argmax(reference)
