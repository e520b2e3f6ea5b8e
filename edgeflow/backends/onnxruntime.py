"""ONNX Runtime backend (CPU execution provider) with pre-bound inputs for timing."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeflow.artifact import Artifact
from edgeflow.backends.base import Backend, Compiled, RuntimeSettings, loading, resolve_dims
from edgeflow.backends.layers import LayerProfileStats, summarize
from edgeflow.environment import usable_cores
from edgeflow.errors import ModelLoadError, first_line


@dataclass
class OnnxRuntimeCompiled(Compiled):
    session: Any = None
    model_bytes: bytes | None = None  # kept when compiled with layer_profile: each profile opens a session
    threads: int | None = None

    @property
    def _input_name(self) -> str:
        return self.session.get_inputs()[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        outputs = self.session.run(None, {self._input_name: self.check_shape(batch)})
        return np.asarray(outputs[0], dtype=np.float32)

    def bind(self, batch: np.ndarray) -> Callable[[], None]:
        binding = self.session.io_binding()
        binding.bind_cpu_input(self._input_name, self.check_shape(batch))
        for output in self.session.get_outputs():
            binding.bind_output(output.name)
        session = self.session

        def run_once() -> None:
            session.run_with_iobinding(binding)

        return run_once

    def layer_profile(self, *, inferences: int, warmup: int = 5) -> LayerProfileStats:
        """ONNX Runtime's session profiling: a fresh session records ``warmup + inferences`` runs, and the
        node events inside each ``model_run`` are that inference's layers."""
        import tempfile

        if self.model_bytes is None:
            raise NotImplementedError("compile with layer_profile=True to profile layers")
        with tempfile.TemporaryDirectory(prefix="edgeflow-ort-profile-") as folder:
            options = _session_options(self.threads)
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(folder) / "profile")
            session = _ort().InferenceSession(self.model_bytes, options, providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: np.zeros(self.input_shape, dtype=np.float32)}
            for _ in range(warmup + inferences):
                session.run(None, feed)
            events = json.loads(Path(session.end_profiling()).read_text())
        runs = [event for event in events if event.get("cat") == "Session" and event.get("name") == "model_run"]
        nodes = [event for event in events if event.get("cat") == "Node" and event["name"].endswith("_kernel_time")]
        layers: list[list[tuple[str, str, str, float]]] = []
        for run in sorted(runs, key=lambda event: event["ts"])[warmup:]:
            begin, end = run["ts"], run["ts"] + run["dur"]
            layers.append(
                [
                    (
                        node["name"].removesuffix("_kernel_time"),
                        node.get("args", {}).get("op_name", "?"),
                        node.get("args", {}).get("provider", ""),
                        node["dur"] / 1000,
                    )
                    for node in nodes
                    if begin <= node["ts"] <= end
                ]
            )
        return summarize(layers)


def _ort():
    import onnxruntime

    return onnxruntime


def _session_options(threads: int | None):
    ort = _ort()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    return options


# "[ONNXRuntimeError] : 1 : FAIL : Load model from m.onnx failed:" before what ONNX Runtime found wrong.
_SESSION_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : (?:Load model from .*? failed:)?\s*")


def session_refusal(exc: BaseException) -> str:
    """The first line of ONNX Runtime's refusal to create a session, without its status code and the path
    the one-line error names already."""
    line = first_line(exc, limit=None)
    return _SESSION_PREFIX.sub("", line) or line


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    formats = ("onnx",)
    # ORT's own quantizer. NNCF's QDQ ONNX agrees more with the float model on real photos, but ONNX Runtime's
    # CPU provider runs it several times slower than float (reports/int8-imagenette-cpu.md): a method only
    default_int8 = "ort-static"
    computes_accuracy_for = ("onnx",)
    suffixes = (".onnx",)
    remote_timers = {"ssh": "agent", "adb": "perf_test"}
    searchable = True
    supports_layer_profile = True
    fp16_converter = "edgeflow.compress.ort_quantize:convert_onnx_fp16"
    quantized_check = "edgeflow.compress.ort_quantize:is_quantized_file"

    def model_input(self, artifact: Artifact) -> tuple[str, list[int], str | None]:
        import onnx

        name = onnx.load(str(artifact.path), load_external_data=False).graph.input[0].name
        return name, list(artifact.input_shape or []), None

    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def compile(
        self, artifact: Artifact, *, settings: RuntimeSettings, layer_profile: bool = False
    ) -> OnnxRuntimeCompiled:
        import onnxruntime as ort

        if artifact.format != "onnx":
            raise ModelLoadError(f"{artifact.path}: onnxruntime runs .onnx files, not {artifact.format}")
        options = _session_options(settings.threads)
        with loading("ONNX Runtime", artifact.path, reason=session_refusal):
            session = ort.InferenceSession(str(artifact.path), options, providers=["CPUExecutionProvider"])
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ModelLoadError(f"{artifact.path}: expected one input, found {len(inputs)}")
        dims = [dim if isinstance(dim, int) and dim > 0 else None for dim in inputs[0].shape]
        shape = resolve_dims(dims, artifact.input_shape, source=str(artifact.path))
        threads = settings.threads
        if threads is None:
            threads = (
                int(session.get_session_options().intra_op_num_threads) or usable_cores()
            )  # ORT's default pool: a thread a core
        return OnnxRuntimeCompiled(
            backend=self.name,
            input_shape=tuple(shape),
            settings={
                "device": "CPUExecutionProvider",
                "threads": threads,
                "graph_optimization": "all",
                "execution_precision": "f32" if artifact.precision != "int8" else "int8",
            },
            session=session,
            model_bytes=Path(artifact.path).read_bytes() if layer_profile else None,
            threads=settings.threads,
        )
