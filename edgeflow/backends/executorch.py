"""ExecuTorch backend: a ``.pte`` program (the torch model lowered to XNNPACK) run by ExecuTorch's own runtime
through its Python bindings, on this CPU: the same program and delegate a phone app runs.

ExecuTorch is optional (``pip install 'edgeflow[executorch]'``), imported only here and in its exporter and
quantizer. The bindings' thread pool (XNNPACK's) is one per process and is captured by a program when it loads,
so it is set before loading and a program loaded at another thread count is reloaded, never reused.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeflow.artifact import Artifact
from edgeflow.backends.base import Backend, Compiled, RuntimeSettings, loading, resolve_dims
from edgeflow.environment import usable_cores
from edgeflow.errors import ModelLoadError, RuntimeUnavailableError

# A .pte is a FlatBuffer whose file identifier (bytes 4 to 8) is "ET" and two digits (ET12 in ExecuTorch 1.x).
_IDENTIFIER = b"ET"


def executorch_runtime():
    """ExecuTorch's Python runtime module and its bindings, or a clear error where it is not installed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the bindings call themselves experimental
            from executorch.extension.pybindings import portable_lib
            from executorch.runtime import Runtime
    except Exception:  # an install without its native parts is as good as none
        raise RuntimeUnavailableError("ExecuTorch is not installed here (pip install 'edgeflow[executorch]')") from None
    return Runtime, portable_lib


def check_pte(path: Path) -> None:
    """Refuse a file that is not an ExecuTorch program before the runtime sees it."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if len(head) < 8 or head[4:6] != _IDENTIFIER or not head[6:8].isdigit():
        raise ModelLoadError(f"{path}: not an ExecuTorch program (a .pte FlatBuffer carries the identifier ET and "
                             f"two digits at byte 4; this file has {head[4:8]!r})")  # fmt: skip


def _missing_kernel(exc: BaseException) -> str:
    """The runtime's refusal in words: 0x14 is a kernel this runtime lacks (an operator left outside XNNPACK)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    if "0x14" in text.replace(":", ""):
        return f"{text} (an operator of the program has no kernel in this ExecuTorch runtime)"
    return text


@dataclass
class ExecuTorchCompiled(Compiled):
    program: Any = None  # the method borrows from its program: kept alive with it
    method: Any = None

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        output = self.method([torch.from_numpy(self.check_shape(batch))])[0]
        return np.asarray(output.numpy(), dtype=np.float32)

    def bind(self, batch: np.ndarray) -> Callable[[], None]:
        import torch

        inputs = [torch.from_numpy(self.check_shape(batch).copy())]  # copied in once
        method = self.method
        return lambda: method(inputs)


class ExecuTorchBackend(Backend):
    name = "executorch"
    formats = ("executorch",)
    precisions = ("fp32", "int8")
    default_int8 = "executorch-pt2e"
    computes_accuracy_for = ("executorch",)
    suffixes = (".pte",)
    ships_every_variant = True  # the app picks float or int8
    needs_module = True  # lowered from the torch model (torch.export), not from the ONNX
    exporter = "edgeflow.export.executorch:float_pte"
    quantized_check = "edgeflow.export.executorch:is_int8_program"
    cost_counter = "edgeflow.export.executorch:program_cost"

    def version(self) -> str:
        executorch_runtime()
        from importlib.metadata import version

        return version("executorch")

    def unavailable(self) -> str | None:
        try:
            executorch_runtime()
        except RuntimeUnavailableError as exc:
            return str(exc)
        return None

    def compile(
        self, artifact: Artifact, *, settings: RuntimeSettings, layer_profile: bool = False
    ) -> ExecuTorchCompiled:
        if layer_profile:
            raise NotImplementedError("the executorch backend has no per-layer profiler here")
        if artifact.format != "executorch" or artifact.path is None:
            raise ModelLoadError(f"{artifact.path}: the executorch backend runs .pte files, not {artifact.format}")
        runtime, bindings = executorch_runtime()
        check_pte(artifact.path)
        threads = settings.threads or usable_cores()
        if bindings._threadpool_get_thread_count() != threads:  # before loading: the program captures the pool
            bindings._unsafe_reset_threadpool(int(threads))
        with loading("ExecuTorch", artifact.path, reason=_missing_kernel):
            program = runtime.get().load_program(str(artifact.path))
            method = program.load_method("forward")
        meta = method.metadata if hasattr(method, "metadata") else method._method.method_meta()
        if meta.num_inputs() != 1:
            raise ModelLoadError(f"{artifact.path}: expected one input, found {meta.num_inputs()}")
        own = [int(dim) for dim in meta.input_tensor_meta(0).sizes()]
        shape = resolve_dims(own, artifact.input_shape, source=str(artifact.path))
        return ExecuTorchCompiled(
            backend=self.name,
            input_shape=tuple(shape),
            settings={
                "delegate": "XNNPACK",
                "threads": int(bindings._threadpool_get_thread_count()),
                "execution_precision": {"int8": "int8", "fp32": "f32"}.get(artifact.precision, "unknown"),
            },
            program=program,
            method=method._method,
        )
