"""Backends run the same artifact to the same answer, record their settings, and refuse bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgeflow.artifact import Artifact, artifact_from_path
from edgeflow.backends import BACKENDS, get_backend
from edgeflow.device import RuntimeSettings
from edgeflow.errors import ModelLoadError, ShapeError
from edgeflow.profiling.loop import ProfileConfig, time_inference

F32 = RuntimeSettings(execution_precision="f32")


def test_registry_is_lazy_and_complete() -> None:
    assert BACKENDS.names() == ["litert", "onnxruntime", "openvino", "tensorrt", "torch"]
    assert BACKENDS.resolve("ov") == "openvino" and BACKENDS.resolve("trt") == "tensorrt"
    assert BACKENDS.resolve("tflite") == "litert"
    import subprocess
    import sys

    # registered by import path: importing edgeflow and its backends never imports TensorRT or LiteRT (asked of a
    # fresh interpreter: in this one, other tests may have imported them)
    code = (
        "import sys, edgeflow, edgeflow.backends.litert, edgeflow.backends.tensorrt; "
        "print([m for m in ('tensorrt', 'ai_edge_litert') if m in sys.modules])"
    )
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert imported == "[]"


@pytest.mark.parametrize("backend,key", [("openvino", "openvino"), ("openvino", "onnx"), ("onnxruntime", "onnx")])
def test_backends_agree_with_torch(tiny_artifacts, tiny_net, backend: str, key: str) -> None:
    compiled = get_backend(backend).compile(tiny_artifacts[key], settings=F32)
    batch = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    with torch.inference_mode():
        expected = tiny_net(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(compiled.run(batch), expected, atol=1e-4)
    assert compiled.input_shape == (1, 3, 16, 16)
    assert compiled.settings["threads"] >= 1


def test_openvino_records_what_it_executes(tiny_artifacts) -> None:
    backend = get_backend("openvino")
    forced = backend.compile(tiny_artifacts["openvino"], settings=F32)
    assert forced.settings["execution_precision"] == "f32"
    default = backend.compile(tiny_artifacts["openvino"], settings=RuntimeSettings())
    # Whatever the CPU picks (bf16 with AMX, f32 without), it is read back from the runtime, not assumed.
    assert default.settings["execution_precision"] in {"f32", "bf16", "f16"}
    assert default.settings["performance_hint"] == "latency"
    two = backend.compile(tiny_artifacts["openvino"], settings=RuntimeSettings(threads=1))
    assert two.settings["threads"] == 1


def test_torch_backend(tiny_net) -> None:
    artifact = Artifact(format="torch", module=tiny_net, input_shape=(1, 3, 16, 16))
    compiled = get_backend("torch").compile(artifact, settings=RuntimeSettings())
    stats = time_inference(compiled, config=ProfileConfig(warmup=1, iterations=5))
    assert stats.iterations == 5 and stats.p50 > 0


def test_bound_runner_profiles(tiny_artifacts) -> None:
    for name, key in (("openvino", "openvino"), ("onnxruntime", "onnx")):
        backend = get_backend(name)
        compiled = backend.compile(tiny_artifacts[key], settings=RuntimeSettings())
        stats = time_inference(compiled, config=ProfileConfig(warmup=2, iterations=30))
        assert stats.iterations == 30 and 0 < stats.min <= stats.p50 <= stats.max


def test_wrong_input_shape(tiny_artifacts) -> None:
    compiled = get_backend("onnxruntime").compile(tiny_artifacts["onnx"], settings=RuntimeSettings())
    with pytest.raises(ShapeError, match=r"\(1, 3, 32, 32\) does not match the model's \(1, 3, 16, 16\)"):
        compiled.run(np.zeros((1, 3, 32, 32), dtype=np.float32))


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_corrupt_and_truncated_files(tmp_path: Path, tiny_artifacts, backend: str) -> None:
    not_onnx = tmp_path / "fake.onnx"
    not_onnx.write_text("this is not a model")
    with pytest.raises(ModelLoadError, match="fake.onnx"):
        get_backend(backend).compile(artifact_from_path(not_onnx), settings=RuntimeSettings())
    truncated = tmp_path / "cut.onnx"
    data = tiny_artifacts["onnx"].path.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="cut.onnx"):
        get_backend(backend).compile(artifact_from_path(truncated), settings=RuntimeSettings())


def test_artifact_from_path_errors(tmp_path: Path, tiny_artifacts) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        artifact_from_path(tmp_path / "none.onnx")
    with pytest.raises(ModelLoadError, match="unsupported artifact type .txt"):
        (tmp_path / "model.txt").write_text("x")
        artifact_from_path(tmp_path / "model.txt")
    lonely = tmp_path / "lonely.xml"
    lonely.write_text(tiny_artifacts["openvino"].path.read_text())
    with pytest.raises(ModelLoadError, match="weights file lonely.bin is missing"):
        artifact_from_path(lonely)
