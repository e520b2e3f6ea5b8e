"""A third-party ONNX's input as it comes: dimensions written ``-1``, ``?`` or a name, fixed batch sizes above
1, NCHW or NHWC, an input shape given for its dynamic dimensions (``--input-shape 1x3x48x192``), the labels and
preprocessing its metadata carries, and whether its output is already a softmax."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from edgeflow.backends.base import resolve_dims
from edgeflow.config import parse_spec
from edgeflow.data.preprocess import METADATA_KEY, PreprocessSpec
from edgeflow.errors import ConfigError, ShapeError

Dim = int | None  # None: dynamic (-1, 0, '?', a name, or missing)
LABEL_KEYS = ("labels", "classes", "names")  # names: Ultralytics' {0: 'person', ...}


def input_dims(proto: Any) -> list[Dim]:
    """The first input's dimensions; ``None`` where it is dynamic."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    return [dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None for dim in dims]


def describe_dim(proto: Any, index: int) -> str:
    dim = proto.graph.input[0].type.tensor_type.shape.dim[index]
    if dim.HasField("dim_param"):
        return repr(dim.dim_param)
    return str(dim.dim_value) if dim.HasField("dim_value") else "unset"


def fixed_input_shape(
    proto: Any,
    *,
    source: str,
    input_shape: tuple[int, ...] | None = None,
    preprocess: PreprocessSpec | None = None,
    resolution: int | None = None,
) -> tuple[int, ...]:
    """The shape the model runs at: its own fixed dimensions, with the dynamic ones taken from ``input_shape``,
    else the preprocessing's size (height and width) or ``resolution`` (a square side), a dynamic batch as 1.
    A fixed size that the preprocessing's size contradicts is an error; a recipe's ``resolution`` does not
    apply to a file whose sides are fixed.

    Raises:
        ShapeError: a dimension is dynamic and nothing gives it, or what is given contradicts the file.
    """
    dims = input_dims(proto)
    layout = preprocess.layout if preprocess is not None else "nchw"
    if len(dims) != 4:
        raise ShapeError(f"{source}: expected a 4-dimensional image input (N, C, H, W), got {len(dims)} dimensions")
    channel, spatial = (3, (1, 2)) if layout == "nhwc" else (1, (2, 3))
    if input_shape is not None:
        if len(input_shape) != 4:
            raise ShapeError(
                f"{source}: the input shape {_text(input_shape)} has {len(input_shape)} dimensions; the model has 4"
            )
        shape = resolve_dims(dims, input_shape, source=source)
    else:
        wanted: dict[int, int] = {0: 1}
        declared = preprocess.size if preprocess is not None and preprocess.size is not None else None
        # a recipe's resolution is the side of models built here: it fills a file's dynamic sides only
        size = declared or ((resolution, resolution) if resolution is not None else None)
        if size is not None:
            wanted.update({spatial[0]: size[0], spatial[1]: size[1]})
        for index in spatial:
            if dims[index] is not None and declared is not None and dims[index] != wanted[index]:
                fixed = f"{dims[spatial[0]]}x{dims[spatial[1]]}"
                raise ShapeError(f"{source} takes {fixed} inputs (H x W); re-export it to run at {size[0]}x{size[1]}")
        missing = [index for index, own in enumerate(dims) if own is None and index not in wanted]
        if missing:
            names = ", ".join(f"{index} ({describe_dim(proto, index)})" for index in missing)
            example = "1x3x224x224" if layout == "nchw" else "1x224x224x3"
            raise ShapeError(
                f"{source}: input dimension{'s' if len(missing) > 1 else ''} {names} "
                f"{'are' if len(missing) > 1 else 'is'} dynamic; give the shape to run at (--input-shape {example}, "
                "or input_shape: in the recipe) or a preprocessing size"
            )
        shape = tuple(own if own is not None else wanted[index] for index, own in enumerate(dims))
    if shape[channel] != 3:
        where = "last" if layout == "nhwc" else "second"
        hint = " (an NHWC model: set layout: nhwc in its preprocessing)" if layout == "nchw" and shape[3] == 3 else ""
        raise ShapeError(
            f"{source}: expected 3 colour channels in the {where} input dimension, got shape {_text(shape)}{hint}"
        )
    return shape


def with_fixed_input(proto: Any, shape: tuple[int, ...]) -> Any:
    """A copy of ``proto`` whose input has ``shape`` (every dimension fixed) and whose inner shapes are inferred
    again, so every runtime and quantizer sees a static model."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    for dim, value in zip(fixed.graph.input[0].type.tensor_type.shape.dim, shape, strict=True):
        dim.Clear()
        dim.dim_value = int(value)
    del fixed.graph.value_info[:]
    for output in fixed.graph.output:  # their dynamic batch is inferred anew from the fixed input
        for index, dim in enumerate(output.type.tensor_type.shape.dim):
            if index == 0 and not (dim.HasField("dim_value") and dim.dim_value > 0):
                dim.Clear()
    try:
        return onnx.shape_inference.infer_shapes(fixed)
    except Exception:  # noqa: BLE001 - shapes are an optimization here; the runtimes infer their own
        return fixed


def save_with_fixed_input(source: Path, target: Path, shape: tuple[int, ...]) -> None:
    """Write ``source`` to ``target`` with its input fixed at ``shape`` (a plain copy when it already is)."""
    from edgeflow.backends.onnx_file import load_onnx

    proto = load_onnx(source)
    if input_dims(proto) == list(shape):
        target.write_bytes(source.read_bytes())
        return
    import onnx

    onnx.save(with_fixed_input(proto, shape), str(target))


def metadata(proto: Any) -> dict[str, str]:
    return {entry.key: entry.value for entry in proto.metadata_props}


def labels_from_metadata(proto: Any, *, source: str) -> list[str] | None:
    """The class names an ONNX's metadata carries (``labels``/``classes`` as a JSON list or one per line;
    Ultralytics' ``names`` dict), in output order; ``None`` when it carries none."""
    props = metadata(proto)
    for key in LABEL_KEYS:
        if key not in props:
            continue
        text = props[key].strip()
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(text)  # literals only: never executes code
            except (ValueError, SyntaxError):
                value = [line.strip() for line in text.replace(",", "\n").splitlines() if line.strip()]
        if isinstance(value, dict):
            try:
                value = [value[index] for index in sorted(value, key=int)]
            except (TypeError, ValueError):
                raise ConfigError(f"{source}: metadata {key!r} maps non-numeric outputs") from None
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{source}: metadata {key!r} is not a list of class names")
        return [str(name) for name in value]
    return None


def preprocess_from_metadata(proto: Any, *, source: str) -> PreprocessSpec | None:
    """The spec an ONNX carries in its metadata (``edgeflow.preprocess``), if it carries one."""
    data = _json_entry(proto, METADATA_KEY, source=source, expect="a mapping")
    return None if data is None else parse_spec(PreprocessSpec, data, source=f"{source} metadata {METADATA_KEY}")


def _json_entry(proto: Any, key: str, *, source: str, expect: str) -> dict | None:
    """The JSON mapping a metadata entry holds; ``None`` when the ONNX has no such entry."""
    text = metadata(proto).get(key)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ConfigError(f"{source}: metadata {key} is not JSON") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: metadata {key} is not {expect}")
    return value


CLASS_MAP_KEY = "edgeflow.class_map"  # a sparse class map (folder -> output) as JSON


def class_map_from_metadata(proto: Any, *, source: str) -> dict[str, int] | None:
    """The sparse class map (10 folders of a 1,000-output model) edgeflow wrote into an ONNX, if any."""
    expect = "a mapping of class to output index"
    value = _json_entry(proto, CLASS_MAP_KEY, source=source, expect=expect)
    if value is not None and not all(isinstance(index, int) for index in value.values()):
        raise ConfigError(f"{source}: metadata {CLASS_MAP_KEY} is not {expect}")
    return value


def class_order_from_metadata(proto: Any, *, source: str) -> dict[str, int] | None:
    """Class -> output as an ONNX's metadata says: edgeflow's sparse class map, else its labels in order."""
    class_map = class_map_from_metadata(proto, source=source)
    if class_map is not None:
        return class_map
    labels = labels_from_metadata(proto, source=source)
    return None if labels is None else {name: index for index, name in enumerate(labels)}


def write_metadata(path: Path, *, splits: Any) -> None:
    """Record the preprocessing and the class order in an exported ONNX, so it carries what an app needs: the
    labels of its outputs, or for a sparse class map which output each class is."""
    import onnx

    proto = onnx.load(str(path))
    entries = {METADATA_KEY: json.dumps(splits.preprocess.describe())}
    if splits.output_indices is None:
        entries["labels"] = json.dumps(list(splits.class_names))
    else:
        entries[CLASS_MAP_KEY] = json.dumps(dict(zip(splits.class_names, splits.output_indices, strict=True)))
    kept = [entry for entry in proto.metadata_props if entry.key not in (*entries, "labels", CLASS_MAP_KEY)]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in entries.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def outputs_probabilities(proto: Any) -> bool:
    """Whether the first output is a softmax (through any Identity, Reshape, Flatten or Squeeze after it)."""
    producers = {output: node for node in proto.graph.node for output in node.output}
    name = proto.graph.output[0].name
    while name in producers:
        node = producers[name]
        if node.op_type in ("Softmax", "LogSoftmax"):
            return node.op_type == "Softmax"
        if node.op_type not in ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast"):
            return False
        name = node.input[0]
    return False


def output_classes(proto: Any) -> int | None:
    """Classes the first output predicts: its last dimension (rank 1, 2 or N x C x 1 x 1), when fixed."""
    dims = [
        dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None
        for dim in proto.graph.output[0].type.tensor_type.shape.dim
    ]
    if not dims:
        return None
    if len(dims) == 4 and dims[2:] == [1, 1]:
        return dims[1]
    return dims[-1]


def _text(shape: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in shape)


def prepare_artifact(
    artifact: Any, *, input_shape: tuple[int, ...] | None = None, preprocess: PreprocessSpec | None = None
) -> tuple[PreprocessSpec | None, dict[str, int] | None]:
    """Fill ``artifact.input_shape`` where the file leaves dimensions dynamic (from ``input_shape`` or the
    preprocessing's size), and return the preprocessing (given, else an ONNX's metadata) and the class order an
    ONNX's metadata carries (its labels, or a sparse class map), as class -> output. The runtimes read the
    shape from the artifact."""
    if artifact.format != "onnx":
        if input_shape is not None:
            artifact.input_shape = tuple(input_shape)
        return preprocess, None
    from edgeflow.backends.onnx_file import load_onnx

    proto = load_onnx(artifact.path)
    spec = preprocess or preprocess_from_metadata(proto, source=str(artifact.path))
    if input_shape is not None or any(dim is None for dim in input_dims(proto)[1:]):
        artifact.input_shape = fixed_input_shape(
            proto, source=str(artifact.path), input_shape=input_shape, preprocess=spec
        )
    return spec, class_order_from_metadata(proto, source=str(artifact.path))
