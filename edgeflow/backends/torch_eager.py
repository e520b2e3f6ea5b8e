"""Torch eager backend: the baseline every exported artifact is compared with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeflow.artifact import Artifact
from edgeflow.backends.base import Backend, Compiled, FloatSources, RuntimeSettings
from edgeflow.errors import ModelLoadError


@dataclass
class TorchCompiled(Compiled):
    module: Any = None

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.module(torch.from_numpy(self.check_shape(batch))).float().numpy()

    def bind(self, batch: np.ndarray) -> Callable[[], None]:
        import torch

        tensor = torch.from_numpy(self.check_shape(batch))
        module = self.module

        def run_once() -> None:
            with torch.inference_mode():
                module(tensor)

        return run_once


class TorchEagerBackend(Backend):
    name = "torch"
    formats = ("torch",)
    precisions = ("fp32",)  # the eager baseline
    ships = False
    needs_module = True
    exporter = "edgeflow.backends.torch_eager:float_module"

    def version(self) -> str:
        import torch

        return torch.__version__

    def compile(self, artifact: Artifact, *, settings: RuntimeSettings, layer_profile: bool = False) -> TorchCompiled:
        import torch

        if layer_profile:
            raise NotImplementedError("the torch backend has no per-layer profiler here")

        if artifact.module is None:
            raise ModelLoadError("the torch backend needs a model built in this process (model name or --arch)")
        if settings.threads is not None:
            torch.set_num_threads(settings.threads)
        if artifact.input_shape is None:
            raise ModelLoadError("the torch backend needs the artifact's input shape")
        shape = tuple(artifact.input_shape)
        return TorchCompiled(
            backend=self.name,
            input_shape=shape,
            settings={"device": "cpu", "threads": torch.get_num_threads(), "execution_precision": "f32"},
            module=artifact.module.eval(),
        )


def float_module(sources: FloatSources) -> Artifact:
    """The torch model itself (its state dict is the report folder's ``model.pt``)."""
    return Artifact(
        format="torch", path=sources.folder / "model.pt", module=sources.module, input_shape=sources.input_shape,
        lineage=["torch"],
    )  # fmt: skip
