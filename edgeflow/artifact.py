"""An artifact: a model file (or in-memory torch module) in one format, with what is known about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The format names a backend declares it reads (Backend.formats): "onnx", "openvino", "torch", ...
ArtifactFormat = str


@dataclass
class Artifact:
    """A model ready for a backend.

    ``path`` is the file that ships (``.onnx``, ``.xml`` with its ``.bin``, a LiteRT ``.tflite``, or a ``.pt``
    state dict);
    ``module`` holds the torch model for the torch backend.
    """

    format: ArtifactFormat
    path: Path | None = None
    precision: str = "fp32"
    module: Any = None
    input_shape: tuple[int, ...] | None = None
    lineage: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        if self.path is None:
            return []
        if self.format == "openvino":
            return [self.path, self.path.with_suffix(".bin")]
        return [self.path]

    @property
    def size_bytes(self) -> int:
        return sum(file.stat().st_size for file in self.files if file.exists())

    def move_to(self, path: Path) -> Artifact:
        """Rename the artifact's files (an IR's ``.bin`` too) so that ``path`` is its file; returns self."""
        assert self.path is not None, "an in-memory artifact has no files to move"
        if self.format == "openvino":
            self.path.with_suffix(".bin").replace(path.with_suffix(".bin"))
        self.path.replace(path)
        self.path = path
        return self

    def remove(self) -> None:
        """Delete the artifact's files (a discarded candidate)."""
        for file in self.files:
            file.unlink(missing_ok=True)
