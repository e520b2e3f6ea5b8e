"""The Backend interface: compile an artifact for a runtime and run it (timing is :mod:`edgeflow.profiling`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from edgeflow.artifact import Artifact
from edgeflow.config import StrictModel
from edgeflow.errors import EdgeflowError, ModelLoadError, ShapeError, first_line
from edgeflow.io import os_refusal

if TYPE_CHECKING:
    from edgeflow.backends.layers import LayerProfileStats


class RuntimeSettings(StrictModel):
    """Settings passed to a runtime when it compiles a model for timing. ``None`` = the runtime's default."""

    threads: int | None = Field(default=None, ge=1, description="inference threads; None = runtime default")
    performance_hint: Literal["latency", "throughput"] = "latency"
    execution_precision: Literal["default", "f32", "bf16", "f16"] = Field(
        default="default",
        description="what OpenVINO executes float layers in; 'default' lets it choose (bf16 on AMX CPUs)",
    )


@dataclass
class Compiled(ABC):
    """A model compiled by a runtime for a fixed input shape."""

    backend: str
    input_shape: tuple[int, ...]
    settings: dict[str, Any] = field(default_factory=dict)

    @abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run on one input of ``input_shape`` and return the first output as float32."""

    @abstractmethod
    def bind(self, batch: np.ndarray) -> Callable[[], None]:
        """Bind ``batch`` once and return a callable that runs one inference with nothing else to do.

        The profiler times this callable, so it must not allocate or convert on each call.
        """

    def layer_profile(self, *, inferences: int, warmup: int = 5) -> LayerProfileStats:
        """Per-layer times from the runtime's own profiler over ``inferences`` runs (compile with
        ``layer_profile=True``); runtimes without one raise NotImplementedError."""
        raise NotImplementedError(f"{self.backend} has no per-layer profiler")

    def check_shape(self, batch: np.ndarray) -> np.ndarray:
        if tuple(batch.shape) != tuple(self.input_shape):
            raise ShapeError(f"input shape {tuple(batch.shape)} does not match the model's {tuple(self.input_shape)}")
        return np.ascontiguousarray(batch, dtype=np.float32)


@dataclass
class FloatSources:
    """What a backend's float artifact is built from: the run's float ONNX, the torch model (None for an ONNX
    input), the input shape, the folder files are written to and the recipe's export settings."""

    onnx: Artifact
    module: Any
    input_shape: tuple[int, ...]
    folder: Path
    export: Any = None  # the recipe's export section (LiteRT's input layout, ...)
    model_name: str = "model"  # for the lineage of artifacts converted from the torch model


class Backend(ABC):
    """A runtime that can compile artifacts of some formats, and everything the pipeline asks about it.

    The pipeline never branches on a backend's name: it reads these declarations. A new runtime is its backend
    module (this class), its exporter (:meth:`float_artifact`), its quantization method (registered in
    :mod:`edgeflow.compress`) and, where a device's agent can run it, its agent entry.
    """

    name: str
    formats: tuple[str, ...]  # the artifact formats it reads
    #: the file suffixes of the format it owns (its first of :attr:`computes_accuracy_for`)
    suffixes: ClassVar[tuple[str, ...]] = ()
    #: the precisions a variant on it can hold; ``bf16`` is the fp32 artifact executed in bf16
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "int8")
    #: the ``execution_precision`` values a variant may ask of it (None: it has no such setting)
    execution_precisions: ClassVar[tuple[str, ...]] = ()
    #: fp16 variants are the float artifact executed in f16 (TensorRT builds its engine so), not an fp16 file
    fp16_from_float: ClassVar[bool] = False
    #: the INT8 method a variant uses when its recipe names none (a name of :data:`edgeflow.compress.METHODS`)
    default_int8: ClassVar[str | None] = None
    #: settings its INT8 artifacts must have, whatever the recipe says (TensorRT reads symmetric int8 Q/DQ only)
    int8_requires: ClassVar[dict[str, Any]] = {}
    #: the artifact formats whose accuracy this host computes with this runtime when the device's own runtime
    #: is elsewhere (an estimate, a tool that only times)
    computes_accuracy_for: ClassVar[tuple[str, ...]] = ()
    #: its artifacts go into the ship bundle when recommended
    ships: ClassVar[bool] = True
    #: every variant of it ships beside the recommended one (an app picks the file: float or int8)
    ships_every_variant: ClassVar[bool] = False
    #: what times it on a device that is not this machine, per transport ("agent", "trtexec", "perf_test",
    #: "benchmark_model"); a transport it lacks is estimated
    remote_timers: ClassVar[dict[str, str]] = {}
    #: NetAdapt's candidates and the lookup table's blocks can be timed with it
    searchable: ClassVar[bool] = False
    supports_layer_profile: ClassVar[bool] = False
    #: its float artifact needs the torch model (an ONNX input cannot give one)
    needs_module: ClassVar[bool] = False
    # The steps that build its files live in higher layers (export, compress) and are named by import path,
    # ``"module:function"``, resolved when first used (as the registries are):
    #: makes the float artifact its variants are built from out of :class:`FloatSources` (None: the float ONNX)
    exporter: ClassVar[str | None] = None
    #: writes ``base`` with fp16 weights to ``path`` (None: it has no fp16 file)
    fp16_converter: ClassVar[str | None] = None
    #: says whether a file of a format it :attr:`computes_accuracy_for` already carries quantization
    quantized_check: ClassVar[str | None] = None
    #: counts the MACs and params of a file of its format where OpenVINO's graph reader cannot (a .tflite, ...)
    cost_counter: ClassVar[str | None] = None

    @abstractmethod
    def compile(self, artifact: Artifact, *, settings: RuntimeSettings, layer_profile: bool = False) -> Compiled:
        """Load and compile ``artifact``; raises EdgeflowError subclasses for bad files.

        With ``layer_profile`` (where ``supports_layer_profile``) the runtime's per-layer profiler is on,
        for :meth:`Compiled.layer_profile`; it costs time per inference, so timing runs leave it off.
        """

    @abstractmethod
    def version(self) -> str: ...

    def cannot_read(self, artifact: Artifact) -> str | None:
        """Why this runtime cannot read ``artifact`` (operators it has no kernel for, ...), or None when it can.
        Runtimes that find out only while compiling say None."""
        return None

    def unavailable(self) -> str | None:
        """Why this runtime cannot run in this process (not installed), or None when it can."""
        return None

    def suffix(self) -> str:
        """The file suffix of the artifacts built for it: its own format's, else ONNX's (the file it reads)."""
        return self.suffixes[0] if self.suffixes else ".onnx"

    def model_input(self, artifact: Artifact) -> tuple[str, list[int], str | None]:
        """The input of a file of a format it owns: its name, the shape it is fed at, and its layout where the
        file fixes one (None: the preprocessing's)."""
        return "input", list(artifact.input_shape or []), None


def load_refused(runtime: str, source: object, reason: str) -> ModelLoadError:
    """The one-line error for ``runtime`` refusing to load ``source`` (a file, or a file at a shape): the first
    line of the runtime's ``reason``, cut at 300 characters like :func:`~edgeflow.errors.first_line`."""
    lines = reason.strip().splitlines()
    line = lines[0].strip()[:300] if lines else "no reason given"
    return ModelLoadError(f"{runtime} cannot load {source}: {line}")


@contextmanager
def loading(runtime: str, source: object, *, reason: Callable[[BaseException], str] = first_line) -> Iterator[None]:
    """Wrap only the runtime's own load, compile or allocate call: whatever it raises becomes
    :func:`load_refused`'s one line (``reason`` picks the line of the runtime's text, its first by default),
    chained to the runtime's exception. edgeflow's own errors pass through.

    Example::

        with loading("LiteRT", path):
            interpreter = Interpreter(model_path=str(path))
    """
    try:
        yield
    except EdgeflowError:
        raise
    except Exception as exc:  # runtimes raise RuntimeError, ValueError or their own types, with multi-line text
        refused = os_refusal(source) if isinstance(source, Path) else None
        if refused is not None:  # the system, not the file: too many open files, a permission
            raise ModelLoadError(f"cannot read {refused}") from exc
        raise load_refused(runtime, source, reason(exc)) from exc


def resolve_dims(dims: list[int | None], given: tuple[int, ...] | None, *, source: str) -> tuple[int, ...]:
    """A model input's static shape: its own fixed dimensions (``None`` = dynamic), the dynamic ones filled from
    ``given`` (the artifact's input shape: ``--input-shape``, or what the pipeline fixed), else a dynamic batch
    as 1. A dynamic height or width with nothing to fill it is an error naming the option that gives it."""
    if given is not None and len(given) == len(dims):
        for index, (own, wanted) in enumerate(zip(dims, given, strict=True)):
            if own is not None and own != wanted:
                raise ShapeError(
                    f"{source}: input dimension {index} is fixed at {own} but the input shape gives {wanted}"
                )
        return tuple(int(value) for value in given)
    shape = []
    for index, dim in enumerate(dims):
        if dim is not None:
            shape.append(dim)
        elif index == 0:
            shape.append(1)
        else:
            raise ShapeError(
                f"{source}: input dimension {index} is dynamic; give the shape to run at (--input-shape, "
                "e.g. 1x3x224x224)"
            )
    return tuple(shape)
