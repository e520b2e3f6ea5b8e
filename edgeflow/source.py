"""Where a model comes from: a registry name (trained here), a local checkpoint, or an ONNX file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgeflow.data import DataSplits, load_data
from edgeflow.data.classes import read_class_order
from edgeflow.data.load import load_data_for_input
from edgeflow.data.preprocess import PreprocessSpec
from edgeflow.errors import ConfigError, DataError, ModelLoadError, ShapeError
from edgeflow.models import check_resolution, create_model, load_onnx, model_info, onnx_input
from edgeflow.models.checkpoint import LoadedWeights, load_weights
from edgeflow.models.head import output_classes, replace_head
from edgeflow.models.pretrained import load_pretrained, parse_model_name, scaled_preprocess, weights_preprocess
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
    weights: str | None = None  # what the weights are (a file's name, torchvision's or timm's weights): reports
    weights_notes: list[str] = field(default_factory=list)  # how a checkpoint's tensors were found and matched
    new_head: bool = False  # the weights' classifier was replaced by a new one for the data's classes

    def give_new_head(self, num_classes: int) -> None:
        """Replace the weights' classifier by a fresh one of ``num_classes`` outputs (fine-tuning to new classes)."""
        replace_head(self.module, num_classes=num_classes)
        self.num_classes, self.new_head = num_classes, True

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
    weights: str | None = None,
) -> ModelSource:
    """Build or load ``model``. ``num_classes`` is required for a registry name without ``weights`` (an untrained
    model); with ``weights`` (torchvision's ``IMAGENET1K_V2``, timm's tag, or a tag in the name:
    ``timm:efficientnet_b0.ra_in1k``) the pretrained model gets a new head when ``num_classes`` differs.

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
        resolution = resolution or info.default_resolution
        for side in (shape or (0, 0, resolution, resolution))[2:]:
            check_resolution(info.name, side)
        loaded = load_weights(path, arch=info.name, width=width)
        return _weighted_source(
            loaded, name=path.stem, kind="checkpoint", arch=info.name, width=width, resolution=resolution,
            shape=shape, preprocess=preprocess,
        )  # fmt: skip
    name, tag = parse_model_name(model)
    info = model_info(name)
    weights = weights or tag
    resolution = resolution or info.default_resolution
    for side in (shape or (0, 0, resolution, resolution))[2:]:
        check_resolution(info.name, side)
    if weights is not None:
        if width != 1.0:
            raise ConfigError(
                f"pretrained weights are for {info.name} at width 1; a width of {width:g} starts from random weights "
                "(leave out --weights) or prune the pretrained model (edgeflow search)"
            )
        loaded = load_pretrained(info.name, weights, num_classes=num_classes)
        return _weighted_source(
            loaded, name=info.name, kind="registry", arch=info.name, width=width, resolution=resolution, shape=shape,
            preprocess=preprocess,
        )  # fmt: skip
    if num_classes is None:
        raise ConfigError("num_classes is needed to build an untrained model")
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


def _weighted_source(loaded: LoadedWeights, *, name: str, kind: str, arch: str, width: float, resolution: int,
                     shape: tuple[int, ...] | None, preprocess: PreprocessSpec | None) -> ModelSource:  # fmt: skip
    return ModelSource(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        arch=arch,
        width=width,
        resolution=resolution,
        module=loaded.module,
        num_classes=output_classes(loaded.module),
        trained=True,
        shape=shape,
        preprocess=preprocess,
        weights=f"{loaded.origin} ({loaded.outputs} classes)",
        weights_notes=list(loaded.notes),
        new_head=loaded.new_head,
    )


def load_model_and_data(model: str, *, arch: str | None, data: str, recipe: Recipe) -> tuple[ModelSource, DataSplits]:
    """The model and its data, read with one preprocessing: the recipe's (which the command line's options
    fill), else the pretrained weights' own (torchvision's transforms, timm's pretrained_cfg; for a checkpoint,
    its architecture's), else an ONNX's metadata.

    An ONNX file fixes its own class count. Weights (a checkpoint, or ``model.weights``) whose classes are not the
    data's get a new head for the data's classes, to fine-tune, unless a class map or labels file says which of
    their outputs each class folder is. A registry model without weights is built for the data's classes (or
    ``model.num_classes`` outputs, for a sparse class map). The class order is the class map's or labels file's,
    else an ONNX's metadata labels, else the sorted folder names. With a sparse class map the splits are labelled
    by output index (:meth:`DataSplits.labelled_by_output`): training learns those outputs and top-1 is over
    every output."""
    class_map = read_class_order(labels=recipe.labels, class_map=recipe.class_map)
    if looks_like_file(model):
        return _file_and_data(model, arch=arch, data=data, recipe=recipe, class_map=class_map)
    name, tag = parse_model_name(model)
    info = model_info(name)
    weights = recipe.model.weights or tag
    if recipe.model.weights and tag and recipe.model.weights.lower() != tag.lower():
        raise ConfigError(f"{model} names the weights {tag} and model.weights says {recipe.model.weights}; give one")
    pipeline = weights_preprocess(info.name, weights) if weights else None
    default = pipeline.size[0] if pipeline is not None and pipeline.size else info.default_resolution
    resolution = recipe.model.input_side(default) or default
    check_resolution(info.name, resolution)  # before spending time on data
    declared = _weights_pipeline(recipe, pipeline, resolution)
    input_shape = recipe.model.input_shape
    size = (declared.size if declared is not None else None) or (input_shape[2:] if input_shape else None)
    splits = load_data(
        data, resolution=size[0] if size else resolution, seed=recipe.seed, class_map=class_map,
        preprocess=_with_size(declared, size),
    )  # fmt: skip
    sparse = splits.output_indices is not None
    classes = recipe.model.num_classes or (max(splits.output_indices) + 1 if sparse else splits.num_classes)
    if sparse and classes <= max(splits.output_indices):
        raise ConfigError(f"model.num_classes is {classes} but the class map uses output {max(splits.output_indices)}")
    try:
        source = resolve_model(
            name, num_classes=None if weights else classes, width=recipe.model.width, resolution=resolution,
            input_shape=input_shape, preprocess=declared, weights=weights,
        )  # fmt: skip
    except ModelLoadError as error:
        if weights and "could not be downloaded" in str(error):  # offline: say how to go on without them
            raise ModelLoadError(f"{error}; or train from random weights (--weights none)") from None
        raise
    if weights:
        _fit_head(source, splits, recipe=recipe, model=model, data=data)
    if sparse and source.num_classes is not None and source.num_classes <= max(splits.output_indices):
        raise DataError(f"the class map uses output {max(splits.output_indices)} but {source.weights} has "
                        f"{source.num_classes} outputs")  # fmt: skip
    return source, splits.labelled_by_output()


def _weights_pipeline(recipe: Recipe, pipeline: PreprocessSpec | None, side: int) -> PreprocessSpec | None:
    """The preprocessing to read the data with: the recipe's when it declares one, else the weights' own at the
    input side (or at the recipe's input shape)."""
    if recipe.preprocess is not None or pipeline is None:
        return recipe.preprocess
    if recipe.model.input_shape is not None:  # the shape sets the size; the weights set the rest
        return pipeline.model_copy(update={"size": None, "resize_side": None})
    return scaled_preprocess(pipeline, side)


def _file_and_data(
    model: str, *, arch: str | None, data: str, recipe: Recipe, class_map: dict[str, int] | None
) -> tuple[ModelSource, DataSplits]:
    """A checkpoint or ONNX file and its data (:func:`load_model_and_data`)."""
    checkpoint = arch is not None and Path(model).suffix.lower() != ".onnx"
    info = model_info(arch) if arch else None
    pipeline = weights_preprocess(info.name) if checkpoint and info is not None else None  # the architecture's
    default = None
    if info is not None:
        default = pipeline.size[0] if pipeline is not None and pipeline.size else info.default_resolution
    resolution = recipe.model.input_side(default) if default else recipe.model.resolution
    declared = _weights_pipeline(recipe, pipeline, resolution or default) if checkpoint else recipe.preprocess
    source = resolve_model(
        model, arch=arch, width=recipe.model.width, resolution=resolution, input_shape=recipe.model.input_shape,
        preprocess=declared,
    )  # fmt: skip
    if class_map is None and source.class_order is not None:
        splits = _load_by_own_order(data, model=model, source=source, recipe=recipe)
    else:
        splits = _load(data, source=source, recipe=recipe, class_map=class_map)
    _fit_head(source, splits, recipe=recipe, model=model, data=data)
    return source, splits.labelled_by_output()


def _fit_head(source: ModelSource, splits: DataSplits, *, recipe: Recipe, model: str, data: str) -> None:
    """Weights whose classes are not the data's get a new head for the data's classes (fine-tuned by
    ``train_if_needed``), as do any with ``finetune.head: new``; with a class map their head stays (the map says
    which output each class is). An ONNX file, or weights never fine-tuned, cannot learn other classes: the
    mismatch is an error."""
    if splits.output_indices is not None:
        return
    if source.module is not None and recipe.finetune.head == "new":
        source.give_new_head(splits.num_classes)
    elif source.num_classes is not None and source.num_classes != splits.num_classes:
        if source.module is None or recipe.finetune.when == "never":
            why = " and finetune.when is never" if source.module is not None else ""
            raise DataError(
                f"{model} predicts {source.num_classes} classes but {data} has {splits.num_classes}{why}; give a "
                "class map (--class-map) or labels file (--labels) saying which output each class folder is"
            )
        source.give_new_head(splits.num_classes)


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
