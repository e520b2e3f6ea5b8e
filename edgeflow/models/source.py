"""Where a model comes from: a registry name (trained here), a local checkpoint, or an ONNX file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edgeflow.data import DataSplits, load_data
from edgeflow.errors import ConfigError, DataError, ModelLoadError, ShapeError
from edgeflow.models import check_resolution, create_model, load_checkpoint, load_onnx, model_info
from edgeflow.recipe import Recipe

_CHECKPOINT_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin"}


@dataclass
class ModelSource:
    """A model ready for the pipeline, with what is known about where it came from."""

    name: str
    kind: Literal["registry", "checkpoint", "onnx"]
    arch: str | None
    width: float
    resolution: int
    module: Any = None  # torch module for registry and checkpoint sources
    onnx_path: Path | None = None
    num_classes: int | None = None
    trained: bool = False

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, self.resolution, self.resolution)


def looks_like_file(model: str) -> bool:
    path = Path(model)
    return path.suffix.lower() in {".onnx", *_CHECKPOINT_SUFFIXES} or path.exists()


def resolve_model(
    model: str,
    *,
    arch: str | None = None,
    width: float = 1.0,
    resolution: int | None = None,
    num_classes: int | None = None,
) -> ModelSource:
    """Build or load ``model``. ``num_classes`` is required for a registry name (untrained model)."""
    if looks_like_file(model):
        path = Path(model)
        if path.suffix.lower() == ".onnx":
            return _onnx_source(path, width=width, resolution=resolution)
        if arch is None:
            raise ConfigError(f"{path}: a checkpoint holds weights only; name its architecture with --arch")
        info = model_info(arch)
        module = load_checkpoint(path, arch=info.name, width=width)
        resolution = resolution or info.default_resolution
        check_resolution(info.name, resolution)
        classes = _output_features(module)
        return ModelSource(
            name=path.stem,
            kind="checkpoint",
            arch=info.name,
            width=width,
            resolution=resolution,
            module=module,
            num_classes=classes,
            trained=True,
        )
    info = model_info(model)
    if num_classes is None:
        raise ConfigError("num_classes is needed to build an untrained model")
    resolution = resolution or info.default_resolution
    check_resolution(info.name, resolution)
    module = create_model(info.name, num_classes=num_classes, width=width)
    label = info.name if width == 1.0 else f"{info.name}_w{width:g}"
    return ModelSource(
        name=label,
        kind="registry",
        arch=info.name,
        width=width,
        resolution=resolution,
        module=module,
        num_classes=num_classes,
        trained=False,
    )


def _onnx_source(path: Path, *, width: float, resolution: int | None) -> ModelSource:
    proto = load_onnx(path)
    if width != 1.0:
        raise ConfigError(f"{path}: the width multiplier needs a torch model; an ONNX file has fixed channels")
    dims = [dim.dim_value for dim in proto.graph.input[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[2] <= 0 or dims[2] != dims[3] or dims[1] != 3:
        raise ShapeError(f"{path}: expected a square 3-channel NCHW input with a fixed size, got {dims}")
    if resolution is not None and resolution != dims[2]:
        raise ShapeError(f"{path} takes {dims[2]} px inputs; re-export it to run at {resolution} px")
    outputs = [dim.dim_value for dim in proto.graph.output[0].type.tensor_type.shape.dim]
    classes = outputs[-1] if outputs and outputs[-1] > 0 else None
    return ModelSource(
        name=path.stem,
        kind="onnx",
        arch=None,
        width=1.0,
        resolution=dims[2],
        onnx_path=path,
        num_classes=classes,
        trained=True,
    )


def _output_features(module: Any) -> int:
    """The number of classes a classifier predicts, read from its last Linear or 1x1 Conv layer."""
    import torch

    last = None
    for layer in module.modules():
        if isinstance(layer, torch.nn.Linear | torch.nn.Conv2d):
            last = layer
    if last is None:
        raise ModelLoadError("cannot tell how many classes the model predicts")
    return last.out_features if isinstance(last, torch.nn.Linear) else last.out_channels


def load_model_and_data(model: str, *, arch: str | None, data: str, recipe: Recipe) -> tuple[ModelSource, DataSplits]:
    """A file fixes its own class count; a registry model is built for the data set's classes."""
    if looks_like_file(model):
        default = model_info(arch).default_resolution if arch else None
        resolution = recipe.model.input_side(default) if default else recipe.model.resolution
        source = resolve_model(model, arch=arch, width=recipe.model.width, resolution=resolution)
        splits = load_data(data, resolution=source.resolution, seed=recipe.seed)
        if source.num_classes is not None and source.num_classes != splits.num_classes:
            raise DataError(f"{model} predicts {source.num_classes} classes but {data} has {splits.num_classes}")
        return source, splits
    info = model_info(model)
    resolution = recipe.model.input_side(info.default_resolution) or info.default_resolution
    check_resolution(info.name, resolution)  # before spending time on data
    splits = load_data(data, resolution=resolution, seed=recipe.seed)
    source = resolve_model(model, num_classes=splits.num_classes, width=recipe.model.width, resolution=resolution)
    return source, splits
