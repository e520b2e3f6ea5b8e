"""Where a model comes from: a registry name (trained here), a local checkpoint, or an ONNX file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edgeflow.data import DataSplits, load_data
from edgeflow.data.classes import read_class_order
from edgeflow.data.load import load_data_for_input
from edgeflow.data.preprocess import PreprocessSpec
from edgeflow.errors import ConfigError, DataError, ModelLoadError, ShapeError
from edgeflow.models import check_resolution, create_model, load_checkpoint, load_onnx, model_info, onnx_input
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
    shape: tuple[int, ...] | None = None  # the input shape when not 1 x 3 x R x R (non-square, NHWC, batch > 1)
    preprocess: PreprocessSpec | None = None  # as declared (recipe, command line) or read from an ONNX's metadata
    class_order: dict[str, int] | None = None  # class -> output as an ONNX's metadata says (labels or class map)
    probabilities: bool = False  # the output is already a softmax

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.shape or (1, 3, self.resolution, self.resolution)

    @property
    def size(self) -> tuple[int, int]:
        """Height and width of the input."""
        shape = self.input_shape
        nhwc = self.preprocess is not None and self.preprocess.layout == "nhwc"
        return (shape[1], shape[2]) if nhwc else (shape[2], shape[3])


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
    input_shape: tuple[int, ...] | None = None,
    preprocess: PreprocessSpec | None = None,
) -> ModelSource:
    """Build or load ``model``. ``num_classes`` is required for a registry name (untrained model).

    ``input_shape`` fixes an ONNX's dynamic dimensions (or sets a torch model's input); ``preprocess`` is the
    declared preprocessing (its size sets the input's height and width; an ONNX's metadata gives it otherwise).
    """
    if looks_like_file(model) and Path(model).suffix.lower() == ".onnx":
        return _onnx_source(
            Path(model), width=width, resolution=resolution, input_shape=input_shape, preprocess=preprocess
        )
    if preprocess is not None and preprocess.layout == "nhwc":
        raise ConfigError("layout: nhwc is for ONNX files that take NHWC input; torch models take NCHW")
    shape = _torch_shape(input_shape, preprocess)
    if shape is not None:
        resolution = shape[2]
    if looks_like_file(model):
        path = Path(model)
        if arch is None:
            raise ConfigError(f"{path}: a checkpoint holds weights only; name its architecture with --arch")
        info = model_info(arch)
        module = load_checkpoint(path, arch=info.name, width=width)
        resolution = resolution or info.default_resolution
        for side in (shape or (0, 0, resolution, resolution))[2:]:
            check_resolution(info.name, side)
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
            shape=shape,
            preprocess=preprocess,
        )
    info = model_info(model)
    if num_classes is None:
        raise ConfigError("num_classes is needed to build an untrained model")
    resolution = resolution or info.default_resolution
    for side in (shape or (0, 0, resolution, resolution))[2:]:
        check_resolution(info.name, side)
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
        shape=shape,
        preprocess=preprocess,
    )


def _torch_shape(input_shape: tuple[int, ...] | None, preprocess: PreprocessSpec | None) -> tuple[int, ...] | None:
    """A torch model's input shape when the input shape or the preprocessing's size sets it."""
    size = preprocess.size if preprocess is not None else None
    if input_shape is not None:
        if len(input_shape) != 4 or input_shape[1] != 3:
            raise ShapeError(f"input shape {'x'.join(map(str, input_shape))}: a torch model takes N x 3 x H x W")
        if size is not None and tuple(size) != tuple(input_shape[2:]):
            raise ShapeError(
                f"input shape {'x'.join(map(str, input_shape))} and the preprocessing's size {list(size)} differ"
            )
        return tuple(input_shape)
    return (1, 3, *size) if size is not None else None


def _onnx_source(
    path: Path,
    *,
    width: float,
    resolution: int | None,
    input_shape: tuple[int, ...] | None,
    preprocess: PreprocessSpec | None,
) -> ModelSource:
    proto = load_onnx(path)
    if width != 1.0:
        raise ConfigError(f"{path}: the width multiplier needs a torch model; an ONNX file has fixed channels")
    spec = preprocess or onnx_input.preprocess_from_metadata(proto, source=str(path))
    shape = onnx_input.fixed_input_shape(
        proto, source=str(path), input_shape=input_shape, preprocess=spec, resolution=resolution
    )
    source = ModelSource(
        name=path.stem,
        kind="onnx",
        arch=None,
        width=1.0,
        resolution=0,
        onnx_path=path,
        num_classes=onnx_input.output_classes(proto),
        trained=True,
        shape=shape,
        preprocess=spec,
        class_order=onnx_input.class_order_from_metadata(proto, source=str(path)),
        probabilities=onnx_input.outputs_probabilities(proto),
    )
    source.resolution = source.size[0]
    return source


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
    """The model and its data, read with one preprocessing: the recipe's (which the command line's options
    fill), else an ONNX's metadata. A file fixes its own class count; a registry model is built for the data's
    classes (or ``model.num_classes`` outputs, for a sparse class map). The class order is the class map's or
    labels file's, else an ONNX's metadata labels, else the sorted folder names. With a sparse class map the
    splits are labelled by output index (:meth:`DataSplits.labelled_by_output`): training learns those outputs
    and top-1 is over every output."""
    declared = recipe.preprocess
    input_shape = recipe.model.input_shape
    class_map = read_class_order(labels=recipe.labels, class_map=recipe.class_map)
    if looks_like_file(model):
        default = model_info(arch).default_resolution if arch else None
        resolution = recipe.model.input_side(default) if default else recipe.model.resolution
        source = resolve_model(
            model, arch=arch, width=recipe.model.width, resolution=resolution, input_shape=input_shape,
            preprocess=declared,
        )  # fmt: skip
        if class_map is None and source.class_order is not None:
            splits = _load_by_own_order(data, model=model, source=source, recipe=recipe)
        else:
            splits = _load(data, source=source, recipe=recipe, class_map=class_map)
        mismatch = source.num_classes is not None and source.num_classes != splits.num_classes
        if splits.output_indices is None and mismatch:
            raise DataError(
                f"{model} predicts {source.num_classes} classes but {data} has {splits.num_classes}; give a class "
                "map (--class-map) or labels file (--labels) saying which output each class folder is"
            )
        return source, splits.labelled_by_output()
    info = model_info(model)
    resolution = recipe.model.input_side(info.default_resolution) or info.default_resolution
    check_resolution(info.name, resolution)  # before spending time on data
    size = (declared.size if declared is not None else None) or (input_shape[2:] if input_shape else None)
    splits = load_data(
        data, resolution=size[0] if size else resolution, seed=recipe.seed, class_map=class_map,
        preprocess=_with_size(declared, size),
    )  # fmt: skip
    classes = recipe.model.num_classes or (
        max(splits.output_indices) + 1 if splits.output_indices is not None else splits.num_classes
    )
    if splits.output_indices is not None and classes <= max(splits.output_indices):
        raise ConfigError(f"model.num_classes is {classes} but the class map uses output {max(splits.output_indices)}")
    source = resolve_model(
        model, num_classes=classes, width=recipe.model.width, resolution=resolution, input_shape=input_shape,
        preprocess=declared,
    )  # fmt: skip
    return source, splits.labelled_by_output()


def _with_size(spec: PreprocessSpec | None, size) -> PreprocessSpec | None:
    if size is None:
        return spec
    return (spec or PreprocessSpec()).model_copy(update={"size": tuple(size)})


def _load_by_own_order(data: str, *, model: str, source: ModelSource, recipe: Recipe) -> DataSplits:
    """The data with its classes in the order an ONNX's metadata carries."""
    order = source.class_order or {}
    try:
        return _load(data, source=source, recipe=recipe, class_map=order)
    except DataError as error:
        if "is not in the class map" not in str(error):
            raise
        names = sorted(order, key=order.__getitem__)
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise DataError(
            f"{model} predicts {len(names)} classes labelled {shown} (its metadata) but {data} has other classes: "
            f"{str(error).split(' is not in')[0]} is not among them; give --labels or --class-map"
        ) from None


def _load(data: str, *, source: ModelSource, recipe: Recipe, class_map: dict[str, int] | None) -> DataSplits:
    """The data read at the model's input size with its preprocessing."""
    return load_data_for_input(
        data, input_shape=source.input_shape, preprocess=source.preprocess, seed=recipe.seed, class_map=class_map
    )
