"""The Backend interface: compile an artifact for a runtime and run it (timing is :mod:`edgeflow.profiling`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeflow.artifact import Artifact
from edgeflow.device import RuntimeSettings
from edgeflow.errors import EdgeflowError, ModelLoadError, ShapeError, first_line
from edgeflow.io import os_refusal

if TYPE_CHECKING:
    from edgeflow.profiling.layers import LayerProfileStats


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


class Backend(ABC):
    """A runtime that can compile artifacts of some formats."""

    name: str
    formats: tuple[str, ...]

    supports_layer_profile: bool = False

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
