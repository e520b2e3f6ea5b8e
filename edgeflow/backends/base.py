"""The Backend interface: compile an artifact for a runtime, run it, profile it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeflow.artifact import Artifact
from edgeflow.device import RuntimeSettings
from edgeflow.errors import ShapeError

if TYPE_CHECKING:
    from edgeflow.profiling import LatencyStats
    from edgeflow.recipe import ProfileConfig


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

    def check_shape(self, batch: np.ndarray) -> np.ndarray:
        if tuple(batch.shape) != tuple(self.input_shape):
            raise ShapeError(f"input shape {tuple(batch.shape)} does not match the model's {tuple(self.input_shape)}")
        return np.ascontiguousarray(batch, dtype=np.float32)


class Backend(ABC):
    """A runtime that can compile artifacts of some formats."""

    name: str
    formats: tuple[str, ...]

    @abstractmethod
    def compile(self, artifact: Artifact, *, settings: RuntimeSettings) -> Compiled:
        """Load and compile ``artifact``; raises EdgeflowError subclasses for bad files."""

    @abstractmethod
    def version(self) -> str: ...

    def profile(self, compiled: Compiled, *, config: ProfileConfig) -> LatencyStats:
        """Time ``compiled`` with the shared timing loop (see :mod:`edgeflow.profiling`)."""
        from edgeflow.profiling import time_inference

        return time_inference(compiled, config=config)
