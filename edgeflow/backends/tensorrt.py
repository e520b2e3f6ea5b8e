"""TensorRT through its Python API, on a CUDA GPU of this machine.

Engines are built from ONNX: fp32, fp16 (``execution_precision: f16``), and int8 from QDQ ONNX (explicit
quantization; the deprecated calibrators are not used). A built engine is cached on disk under a key of
the ONNX file's hash, the TensorRT version, the GPU's name, the precision and the input shape, because an
engine does not carry between GPUs or TensorRT versions. Buffers live in CUDA memory allocated by torch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeflow.artifact import Artifact
from edgeflow.backends.base import Backend, Compiled, RuntimeSettings, load_refused, loading
from edgeflow.errors import ModelLoadError, RuntimeUnavailableError


def _tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise RuntimeUnavailableError(
            "TensorRT is not installed here (pip install tensorrt on a CUDA machine)"
        ) from None
    import torch

    if not torch.cuda.is_available():
        raise RuntimeUnavailableError("TensorRT needs a CUDA GPU, and this machine has none")
    return trt


def engine_precision(artifact: Artifact, settings: RuntimeSettings) -> str:
    """int8 for a QDQ ONNX, fp16 when asked to execute in f16, else fp32."""
    if artifact.precision == "int8":
        return "int8"
    return "fp16" if settings.execution_precision == "f16" else "fp32"


def engine_cache_key(onnx_bytes: bytes, *, tensorrt_version: str, gpu: str, precision: str, shape) -> str:
    text = f"{hashlib.sha256(onnx_bytes).hexdigest()}|trt{tensorrt_version}|{gpu}|{precision}|{tuple(shape)}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def engine_cache_folder() -> Path:
    import os

    return Path(os.environ.get("EDGEFLOW_CACHE", Path.home() / ".cache" / "edgeflow")) / "tensorrt-engines"


@dataclass
class TensorRTCompiled(Compiled):
    engine: Any = None
    context: Any = None
    buffers: dict[str, Any] | None = None  # tensor name -> torch CUDA tensor
    input_name: str = ""
    output_name: str = ""
    stream: Any = None

    def _infer(self) -> None:
        self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        batch = self.check_shape(batch)
        self.buffers[self.input_name].copy_(torch.from_numpy(batch))
        self._infer()
        return self.buffers[self.output_name].float().cpu().numpy()

    def bind(self, batch: np.ndarray) -> Callable[[], None]:
        import torch

        self.buffers[self.input_name].copy_(torch.from_numpy(self.check_shape(batch)))
        return self._infer


class TensorRTBackend(Backend):
    name = "tensorrt"
    formats = ("onnx",)
    execution_precisions = ("default", "f32", "f16")
    fp16_from_float = True  # TensorRT reads the float ONNX and builds an fp16 engine from it (--fp16)
    default_int8 = "ort-static"
    int8_requires = {"activation_type": "int8", "symmetric": True}  # explicit quantization: symmetric Q/DQ
    remote_timers = {"ssh": "trtexec"}

    def unavailable(self) -> str | None:
        try:
            _tensorrt()
        except RuntimeUnavailableError as exc:
            return str(exc)
        return None

    def version(self) -> str:
        try:
            import tensorrt as trt
        except ImportError:
            return "not installed"
        return trt.__version__

    def compile(self, artifact: Artifact, *, settings: RuntimeSettings, layer_profile: bool = False) -> Compiled:
        trt = _tensorrt()
        import torch

        if artifact.format != "onnx" or artifact.path is None:
            raise ModelLoadError(f"TensorRT builds engines from ONNX files, not {artifact.format}")
        onnx_bytes = artifact.path.read_bytes()
        precision = engine_precision(artifact, settings)
        gpu = torch.cuda.get_device_name()
        logger = trt.Logger(trt.Logger.WARNING)
        key = engine_cache_key(onnx_bytes, tensorrt_version=trt.__version__, gpu=gpu, precision=precision,
                               shape=artifact.input_shape or ())  # fmt: skip
        cached = engine_cache_folder() / f"{key}.engine"
        if cached.exists():
            serialized = cached.read_bytes()
        else:
            serialized = _build(trt, logger, onnx_bytes, precision=precision, source=artifact.path)
            from edgeflow.io import atomic_path

            with atomic_path(cached) as temporary:
                temporary.write_bytes(serialized)
        with loading("TensorRT", artifact.path):
            engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
            context = None if engine is None else engine.create_execution_context()
        if context is None:  # TensorRT logs why (at WARNING and above) and returns None
            raise load_refused("TensorRT", artifact.path, f"its engine {cached} gave no execution context")
        buffers, input_name, output_name = {}, "", ""
        dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int8: torch.int8}
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            shape = tuple(engine.get_tensor_shape(name))
            tensor = torch.empty(shape, dtype=dtypes[engine.get_tensor_dtype(name)], device="cuda")
            context.set_tensor_address(name, tensor.data_ptr())
            buffers[name] = tensor
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                input_name = name
            elif not output_name:
                output_name = name
        return TensorRTCompiled(
            backend=self.name, input_shape=tuple(buffers[input_name].shape),
            settings={"execution_precision": precision, "gpu": gpu, "engine_cache": str(cached)},
            engine=engine, context=context, buffers=buffers, input_name=input_name, output_name=output_name,
            stream=torch.cuda.Stream(),
        )  # fmt: skip


def _build(trt, logger, onnx_bytes: bytes, *, precision: str, source: Path) -> bytes:
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    with loading("TensorRT", source):
        parsed = parser.parse(onnx_bytes)
    if not parsed:  # the parser keeps its errors rather than raising them: the first says what it refused
        first = str(parser.get_error(0)) if parser.num_errors else "its ONNX parser refused the file"
        raise load_refused("TensorRT", source, first)
    config = builder.create_builder_config()
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # with Q/DQ in the graph: explicit quantization, no calibrator
    with loading("TensorRT", source):
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:  # TensorRT logs why (at WARNING and above) and returns None
        raise load_refused("TensorRT", source, f"no engine could be built at {precision}")
    return bytes(serialized)
