"""ONNX Runtime backend (CPU execution provider) with pre-bound inputs for timing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeflow.artifact import Artifact
from edgeflow.backends.base import Backend, Compiled
from edgeflow.backends.openvino import runtime_message
from edgeflow.device import RuntimeSettings
from edgeflow.errors import ModelLoadError, ShapeError


@dataclass
class OnnxRuntimeCompiled(Compiled):
    session: Any = None

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


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    formats = ("onnx",)

    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def compile(self, artifact: Artifact, *, settings: RuntimeSettings) -> OnnxRuntimeCompiled:
        import onnxruntime as ort

        if artifact.format != "onnx":
            raise ModelLoadError(f"{artifact.path}: onnxruntime runs .onnx files, not {artifact.format}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if settings.threads is not None:
            options.intra_op_num_threads = settings.threads
        try:
            session = ort.InferenceSession(str(artifact.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            message = runtime_message(exc)
            raise ModelLoadError(f"{artifact.path}: ONNX Runtime cannot load this model: {message}") from None
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ModelLoadError(f"{artifact.path}: expected one input, found {len(inputs)}")
        shape = []
        for index, dim in enumerate(inputs[0].shape):
            if isinstance(dim, int):
                shape.append(dim)
            elif index == 0:
                shape.append(1)
            else:
                raise ShapeError(f"{artifact.path}: input dimension {index} is dynamic; export a fixed size")
        threads = settings.threads
        if threads is None:
            threads = int(session.get_session_options().intra_op_num_threads) or _default_threads()
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
        )


def _default_threads() -> int:
    """ONNX Runtime's default intra-op pool: one thread per physical core."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
