"""Contracts every registered backend and quantization method keeps, on a tiny model (like timm's tests over
``list_models()``): a new runtime or method is checked by being registered, with no test of its own needed.

A backend: its float artifact is built, compiled, run, timed by the one profiler and scored; its declarations
name registered methods. A method: it builds an INT8 artifact for each backend it serves, which that backend
runs, and which agrees with the float artifact on most images. Runtimes that are not installed here (TensorRT
needs an NVIDIA GPU) skip with the reason their backend gives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgeflow.accuracy import collect_logits
from edgeflow.backends import BACKENDS, RuntimeSettings, all_backends, float_artifact, get_backend
from edgeflow.backends.base import FloatSources
from edgeflow.compress import METHODS, QuantizeJob, auto_methods, get_method
from edgeflow.data import load_data
from edgeflow.device import load_device
from edgeflow.export.onnx import export_onnx
from edgeflow.profiling.loop import ProfileConfig
from edgeflow.profiling.profile import compile_and_time
from edgeflow.recipe import QuantizeConfig

SHAPE = (1, 3, 16, 16)
F32 = RuntimeSettings(execution_precision="f32", threads=1)


class _Tiny(torch.nn.Module):
    """Convolution, batch norm, ReLU, pooling, linear: what every runtime and quantizer takes."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        )  # fmt: skip
        self.classifier = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


@pytest.fixture(autouse=True, scope="module")
def _torch_threads_restored():
    """The torch backend sets torch's process-wide thread count when it compiles (threads=1 here): later tests
    that train must not inherit it (a model trained on one thread rounds differently)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    splits = load_data("digits", resolution=16)
    module = _Tiny().eval()
    folder = tmp_path_factory.mktemp("contracts")
    onnx = export_onnx(module, input_shape=SHAPE, path=folder / "tiny.onnx")
    return FloatSources(onnx=onnx, module=module, input_shape=SHAPE, folder=folder, model_name="tiny"), splits


def _available(name: str) -> None:
    missing = get_backend(name).unavailable()
    if missing is not None:
        pytest.skip(missing)


def test_every_backend_declares_what_the_pipeline_asks() -> None:
    methods = set(METHODS.names())
    for backend in all_backends():
        assert backend.name in BACKENDS and backend.formats, backend.name
        assert set(backend.precisions) <= {"fp32", "fp16", "bf16", "int8"}, backend.name
        if "int8" in backend.precisions:
            assert backend.default_int8 in methods, f"{backend.name}: default INT8 method {backend.default_int8}"
            assert backend.name in get_method(backend.default_int8).backends, backend.name
            assert auto_methods(backend.name, default=backend.default_int8)[0] == backend.default_int8
        for format in backend.computes_accuracy_for:
            assert format in backend.formats, backend.name
        assert set(backend.remote_timers) <= {"ssh", "adb"}, backend.name
        if backend.exporter is not None or backend.fp16_converter is not None or backend.quantized_check:
            from edgeflow.registry import load_entry

            for path in (backend.exporter, backend.fp16_converter, backend.quantized_check):
                assert path is None or callable(load_entry(path)), f"{backend.name}: {path}"


def test_every_method_declares_what_the_pipeline_asks() -> None:
    union = set(QuantizeConfig.model_fields)
    for method in (get_method(name) for name in METHODS.names()):
        assert method.backends and all(name in BACKENDS for name in method.backends), method.name
        # a recipe's quantize: holds every method's keys, with the same defaults the method reads
        fields = method.config.model_fields
        assert set(fields) <= union, f"{method.name}: {set(fields) - union} are not recipe keys"
        for key, field in fields.items():
            assert QuantizeConfig.model_fields[key].default == field.default, (method.name, key)


# ExecuTorch exports and lowers through torch.export (~15 s): with the slow tests
_SLOW_BACKENDS = {"executorch"}


@pytest.mark.parametrize(
    "name",
    [pytest.param(name, marks=[pytest.mark.slow] if name in _SLOW_BACKENDS else []) for name in BACKENDS.names()],
)
def test_backend_builds_runs_times_and_scores_its_float_artifact(name: str, tiny) -> None:
    _available(name)
    sources, splits = tiny
    backend = get_backend(name)
    artifact = float_artifact(name, sources)
    assert artifact.format in backend.formats
    compiled = backend.compile(artifact, settings=F32)
    assert tuple(compiled.input_shape) == SHAPE
    image = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    with torch.inference_mode():
        reference = sources.module(torch.from_numpy(image)).numpy()
    np.testing.assert_allclose(compiled.run(image), reference, rtol=1e-3, atol=1e-4)
    _, timing = compile_and_time(artifact, device=load_device("cpu"), backend=name, settings=F32,
                                 config=ProfileConfig(warmup=2, iterations=10, max_seconds=0.2))  # fmt: skip
    assert 0 < timing.latency_ms.p50 <= timing.latency_ms.p99 and timing.memory is not None
    logits, labels = collect_logits(compiled, splits.test, max_samples=16)
    assert logits.shape == (16, 10) and len(labels) == 16
    assert backend.version()


# PT2E exports, calibrates and lowers twice (~9 s): with the slow tests
_SLOW_METHODS = {"executorch-pt2e"}


@pytest.mark.parametrize(
    "method, backend",
    [
        pytest.param(name, backend, marks=[pytest.mark.slow] if name in _SLOW_METHODS else [])
        for name in METHODS.names()
        for backend in get_method(name).backends
    ],
)
def test_method_builds_an_int8_artifact_its_backend_runs(method: str, backend: str, tiny, tmp_path: Path) -> None:
    _available(backend)
    if method == "nncf-qat":
        pytest.skip("nncf-qat fine-tunes through NNCF's torch extension (minutes): tests/test_qat.py, slow")
    sources, splits = tiny
    runtime = get_backend(backend)
    base = float_artifact(backend, sources)
    quantizer = get_method(method)
    config = quantizer.own_config(QuantizeConfig(method=method, subset_size=16, **runtime.int8_requires))
    job = QuantizeJob(base=base, splits=splits, config=config, path=tmp_path / f"int8{runtime.suffix()}",
                      module=sources.module, input_shape=SHAPE, settings=F32)  # fmt: skip
    artifact, summary = quantizer.quantize(job)
    assert summary.method == method and artifact.path.exists()
    if runtime.unavailable() is None and backend != "tensorrt":
        float_logits, _ = collect_logits(runtime.compile(base, settings=F32), splits.test, max_samples=64)
        logits, _ = collect_logits(runtime.compile(artifact, settings=F32), splits.test, max_samples=64)
        agreement = float(np.mean(float_logits.argmax(1) == logits.argmax(1)))
        assert agreement >= 0.8, f"{method} on {backend}: int8 agrees with float on {agreement:.0%} of images"


def test_every_target_is_registered_under_its_own_name() -> None:
    from edgeflow.targets.target import TARGETS, get_target

    for name in TARGETS.names():
        assert get_target(name).name == name and get_target(name).label


@pytest.mark.parametrize("name", ["local", "agent"])
def test_target_times_one_with_logits_and_several_in_turn(name: str, tiny, tmp_path: Path) -> None:
    """This process and the benchmark agent (here through a subprocess: the same agent an SSH device runs) time
    one artifact with the logits of the images sent, and several in turn, by name."""
    from edgeflow.targets.target import get_target
    from edgeflow.targets.transport import TimingRequest

    sources, splits = tiny
    target, device, profile = (
        get_target(name),
        load_device("cpu"),
        ProfileConfig(warmup=1, iterations=5, max_seconds=0.1),
    )
    images = np.stack([splits.test[index][0].numpy() for index in range(4)])
    timing = target.time(
        TimingRequest(sources.onnx, device, "onnxruntime", "fp32", profile, settings=F32, inputs=images)
    )
    assert timing.latency_ms.p50 > 0 and target.computes_logits and timing.logits.shape == (4, 10)
    with torch.inference_mode():
        expected = sources.module(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(timing.logits, expected, rtol=1e-3, atol=1e-4)
    second = export_onnx(sources.module, input_shape=SHAPE, path=tmp_path / "second.onnx")
    timed = target.time_in_turn({"a": sources.onnx, "b": second}, device=device, backend="onnxruntime",
                                profile=profile, rounds=2)  # fmt: skip
    assert set(timed.rounds_ms) == {"a", "b"} and all(len(values) == 2 for values in timed.rounds_ms.values())


def test_a_tool_target_times_one_artifact_at_a_time() -> None:
    from edgeflow.targets.target import get_target

    with pytest.raises(NotImplementedError, match="trtexec times one artifact at a time"):
        get_target("trtexec").time_in_turn({}, device=load_device("cpu"), backend="tensorrt",
                                           profile=ProfileConfig(), rounds=1)  # fmt: skip
