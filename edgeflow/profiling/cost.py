"""What a model costs, counted from its exported graph: MACs per image and parameters."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from edgeflow.artifact import Artifact
from edgeflow.backends.base import resolve_dims
from edgeflow.errors import ConfigError, ShapeError, first_line


class CostStats(BaseModel):
    """What a model costs, counted from its graph: multiply-accumulates per image and weights."""

    macs: int
    params: int


_CONVOLUTIONS = {"Convolution", "GroupConvolution"}


def output_shape(output) -> list[int]:
    return [dim.get_length() for dim in output.get_partial_shape()]


def constant_elements(node) -> int:
    """Elements of the constant behind a (possibly decompressed or fake-quantized) weight input."""
    while node.get_type_name() in {"Convert", "FakeQuantize", "Multiply", "Subtract", "Reshape"}:
        node = node.input_value(0).get_node()
    if node.get_type_name() != "Constant":
        return 0
    return int(np.prod(output_shape(node.output(0)))) if len(node.output(0).get_partial_shape()) else 1


def static_model(artifact_model, *, input_shape: tuple[int, ...] | None = None, source: str = "model"):
    """``artifact_model`` with every input static: a dynamic batch as 1 (converters write it as a name,
    ``unk__653``, or -1), the first input's dynamic dimensions from ``input_shape``. A copy when it was dynamic;
    a static model as it is.

    Raises:
        ShapeError: a dimension other than the batch is dynamic and ``input_shape`` does not give it.
    """
    import openvino as ov

    if all(port.get_partial_shape().is_static for port in artifact_model.inputs):
        return artifact_model
    shapes = {}
    for index, port in enumerate(artifact_model.inputs):
        dims = [dim.get_length() if dim.is_static else None for dim in port.get_partial_shape()]
        shapes[index] = ov.PartialShape(list(resolve_dims(dims, input_shape if index == 0 else None, source=source)))
    model = artifact_model.clone()
    model.reshape({model.inputs[index]: shape for index, shape in shapes.items()})
    return model


def count_cost(artifact_model, *, input_shape: tuple[int, ...] | None = None, source: str = "model") -> CostStats:
    """MACs and params of an ``openvino.Model`` (read from ONNX or IR), per input image.

    Convolutions count output elements x input channels per group x kernel area; MatMul counts
    M x K x N. Params are the weights of convolutions and MatMuls plus the constant biases added
    to their outputs (batch norm is folded into these by export or by OpenVINO). A dynamic batch is counted
    as 1; other dynamic dimensions come from ``input_shape`` (see ``static_model``).
    """
    artifact_model = static_model(artifact_model, input_shape=input_shape, source=source)
    macs = 0
    params = 0
    first_input = output_shape(artifact_model.inputs[0])
    batch = max(1, first_input[0]) if first_input else 1
    for op in artifact_model.get_ordered_ops():
        kind = op.get_type_name()
        if kind in _CONVOLUTIONS:
            out_elements = int(np.prod(output_shape(op.output(0))))
            weights = output_shape(op.input_value(1))
            per_output = int(np.prod(weights[-3:])) if kind == "GroupConvolution" else int(np.prod(weights[1:]))
            macs += out_elements * per_output
        elif kind == "MatMul":
            a_shape = output_shape(op.input_value(0))
            transpose_a = op.get_attributes().get("transpose_a", False)
            inner = a_shape[-2] if transpose_a else a_shape[-1]
            macs += int(np.prod(output_shape(op.output(0)))) * inner
        else:
            continue
        params += constant_elements(op.input_value(1).get_node())
        for target in op.output(0).get_target_inputs():
            consumer = target.get_node()
            if consumer.get_type_name() == "Add":
                other = consumer.input_value(1 - target.get_index()).get_node()
                params += constant_elements(other)
    return CostStats(macs=macs // batch, params=params)


# The graph formats counted through OpenVINO's reader; other artifacts (a torch module, a .tflite, a .pte) are
# counted on the float ONNX of the same network in a run.
COUNTED_FORMATS = ("onnx", "openvino")


def artifact_cost(artifact: Artifact) -> CostStats:
    """MACs and params counted from an ONNX, IR or LiteRT artifact's graph, at the artifact's input shape (a
    dynamic batch as 1).

    Raises:
        ShapeError: the graph has a dynamic height or width and the artifact has no input shape, or a
            convolution's or matrix product's shape cannot be found (a count of 0 for it would be wrong).
    """
    if artifact.format not in COUNTED_FORMATS:
        from edgeflow.backends import format_owner
        from edgeflow.registry import load_entry

        try:
            counter = format_owner(artifact.format).cost_counter
        except ConfigError:  # no runtime here reads it (a torch module)
            counter = None
        if counter is not None:  # the runtime's own reader of its format (LiteRT's operators, ...)
            return load_entry(counter)(artifact)
        raise ConfigError(f"cannot count MACs of a {artifact.format} artifact; give its exported graph")
    if artifact.format == "onnx":
        import openvino as ov

        try:
            # convert_model normalizes the ONNX frontend's graph (Gemm alpha/beta, bias reshapes) like the IR.
            return count_cost(ov.convert_model(str(artifact.path)), input_shape=artifact.input_shape)
        except Exception:  # operators OpenVINO cannot convert (QLinearConv, QGemm, ...): count the ONNX graph
            return count_onnx_cost(artifact.path, input_shape=artifact.input_shape)
    from edgeflow.backends.openvino import read_model

    return count_cost(read_model(artifact), input_shape=artifact.input_shape, source=str(artifact.path))


# ONNX operators that multiply-accumulate: the input that holds the weights, and the one that holds the bias.
_ONNX_WEIGHTED = {
    "Conv": (1, 2), "ConvInteger": (1, None), "QLinearConv": (3, 8),
    "Gemm": (1, 2), "QGemm": (3, 6), "MatMul": (1, None), "MatMulInteger": (1, None), "QLinearMatMul": (3, None),
}  # fmt: skip
_ONNX_CONVOLUTIONS = {"Conv", "ConvInteger", "QLinearConv"}
# Operators between a stored weight and the operator that uses it that keep its element count (quantized
# weights' DequantizeLinear, converters' Identity, Cast, Transpose and Reshape of a weight).
_ONNX_WEIGHT_PASSES = {
    "Identity", "Cast", "DequantizeLinear", "QuantizeLinear", "Transpose", "Reshape", "Unsqueeze", "Squeeze", "Flatten",
}  # fmt: skip


def count_onnx_cost(path, *, input_shape: tuple[int, ...] | None = None) -> CostStats:
    """MACs and params of an ONNX file read as ONNX (for graphs OpenVINO cannot convert, such as QOperator
    models), per input image: convolutions count output elements x input channels per group x kernel area,
    matrix products output elements x K; params are the weights and biases of those operators, from initializers
    or Constant nodes, and the constant Add or BatchNormalization shift that folds into a bias after them.

    Graphs as converters write them are counted at a fixed input: a dynamic batch (a name such as tf2onnx's
    ``unk__653``, ``?`` or -1) as 1, the first input's other dynamic dimensions from ``input_shape``. Shapes come
    from ONNX's shape inference, and where it leaves one that the count needs unknown (an operator it does not
    know, a shape computed at run time), from one ONNX Runtime run on zeros.

    Raises:
        ShapeError: a dynamic dimension other than the batch that ``input_shape`` does not give, or a shape the
            count needs that neither inference nor a run finds.
    """
    import onnx

    source = str(path)
    model = onnx.load(source)
    graph = model.graph
    constants = _onnx_constant_shapes(graph)
    feeds = _fix_onnx_inputs(model, input_shape=input_shape, source=source)
    shapes = _inferred_shapes(model)
    shapes.update(constants)
    producers = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def stored(name: str) -> tuple[int, ...] | None:
        """The shape of the stored constant behind ``name``, through operators that keep its element count."""
        while name not in constants:
            node = producers.get(name)
            if node is None or node.op_type not in _ONNX_WEIGHT_PASSES or not node.input:
                return None
            name = node.input[0]
        return constants[name]

    def operands(node) -> tuple[str, str]:
        """The output and the input whose shape gives the MACs per output element: a convolution's weight (its
        input channels per group x kernel area), a matrix product's data operand (its K)."""
        return node.output[0], node.input[_ONNX_WEIGHTED[node.op_type][0] if node.op_type in _ONNX_CONVOLUTIONS else 0]

    weighted = [node for node in graph.node if node.op_type in _ONNX_WEIGHTED]
    needed = {name for node in weighted for name in operands(node) if name not in shapes}
    if needed:
        shapes.update(_shapes_from_a_run(model, sorted(needed), feeds=feeds, source=source))
    first_input = next(iter(feeds.values()), ((),))[0]
    batch = first_input[0] if first_input else 1
    macs = params = 0
    for node in weighted:
        output, operand = (shapes[name] for name in operands(node))
        if node.op_type in _ONNX_CONVOLUTIONS:
            macs += int(np.prod(output)) * int(np.prod(operand[1:]))
        else:  # M x K x N = the output's elements x the data operand's K (its rows when transposed)
            transposed = any(attribute.name == "transA" and attribute.i for attribute in node.attribute)
            macs += int(np.prod(output)) * (operand[-2] if transposed else operand[-1])
        weight_at, bias_at = _ONNX_WEIGHTED[node.op_type]
        weights = stored(node.input[weight_at])
        if weights is None:
            continue  # both operands computed (attention-like products): no weights to count
        params += int(np.prod(weights))
        bias = node.input[bias_at] if bias_at is not None and len(node.input) > bias_at else ""
        if bias and stored(bias) is not None:
            params += int(np.prod(stored(bias)))
        for consumer, value in _consumers_past_layout(node.output[0], consumers):
            if consumer.op_type == "Add":  # tf2onnx's MatMul + Add, a bias added after a convolution
                other = [name for name in consumer.input if name != value]
                shift = stored(other[0]) if len(other) == 1 else None
                params += int(np.prod(shift)) if shift is not None else 0
            elif consumer.op_type == "BatchNormalization" and not bias and consumer.input[0] == value:
                params += int(np.prod(shapes.get(consumer.input[2], (0,))))  # its shift folds into a bias
    return CostStats(macs=macs // max(1, batch), params=params)


def _consumers_past_layout(name: str, consumers: dict[str, list]) -> list[tuple]:
    """The operators that take tensor ``name``, past the Transpose pairs (and Identity) that converters put
    between an NCHW convolution and the batch norm or bias written in TensorFlow's NHWC: (operator, its input)."""
    found = []
    for consumer in consumers.get(name, []):
        if consumer.op_type in {"Transpose", "Identity"}:
            found += _consumers_past_layout(consumer.output[0], consumers)
        else:
            found.append((consumer, name))
    return found


def _onnx_constant_shapes(graph) -> dict[str, tuple[int, ...]]:
    """The shapes of a graph's initializers and Constant nodes' outputs, by name."""
    from onnx import helper

    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    for node in graph.node:
        if node.op_type != "Constant" or not node.attribute:
            continue
        attribute = node.attribute[0]
        if attribute.name == "value":
            shapes[node.output[0]] = tuple(attribute.t.dims)
        elif attribute.name == "sparse_value":
            shapes[node.output[0]] = tuple(attribute.sparse_tensor.dims)
        else:  # value_float(s), value_int(s), value_string(s)
            value = helper.get_attribute_value(attribute)
            shapes[node.output[0]] = (len(value),) if isinstance(value, list) else ()
    return shapes


def _fix_onnx_inputs(model, *, input_shape: tuple[int, ...] | None, source: str) -> dict[str, tuple]:
    """Fix ``model``'s inputs (in place) at static shapes, and forget the converter's inner and output shapes
    (written with its dynamic dimensions) so that inference finds them anew. Returns each input's shape and
    numpy dtype, for a run."""
    from onnx import helper

    stored = {init.name for init in model.graph.initializer}  # old IR versions list initializers as inputs too
    feeds = {}
    for info in model.graph.input:
        if info.name in stored:
            continue
        tensor = info.type.tensor_type
        if not tensor.HasField("shape"):
            raise ShapeError(f"{source}: input {info.name!r} has no shape; MACs cannot be counted without one")
        dims = [dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None for dim in tensor.shape.dim]
        given = input_shape if not feeds and None in dims else None  # a static file is counted as it is
        shape = resolve_dims(dims, given, source=source)
        for dim, value in zip(tensor.shape.dim, shape, strict=True):
            dim.Clear()
            dim.dim_value = value
        feeds[info.name] = (shape, helper.tensor_dtype_to_np_dtype(tensor.elem_type))
    del model.graph.value_info[:]
    for output in model.graph.output:
        output.type.tensor_type.ClearField("shape")
    return feeds


def _inferred_shapes(model) -> dict[str, tuple[int, ...]]:
    """The fully known tensor shapes ONNX's shape inference finds (with data propagation, for the Shape ->
    Gather -> Concat -> Reshape chains converters write); none when inference fails."""
    from onnx import shape_inference

    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - a run finds the shapes that inference cannot
        return {}
    graph = inferred.graph
    shapes = {}
    for info in [*graph.value_info, *graph.output, *graph.input]:
        tensor = info.type.tensor_type
        if tensor.HasField("shape") and all(
            dim.HasField("dim_value") and dim.dim_value > 0 for dim in tensor.shape.dim
        ):
            shapes[info.name] = tuple(dim.dim_value for dim in tensor.shape.dim)
    return shapes


def _shapes_from_a_run(model, names: list[str], *, feeds: dict[str, tuple], source: str) -> dict[str, tuple]:
    """The shapes of tensors ``names`` in one ONNX Runtime run of ``model`` on zeros at its fixed inputs."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {output.name for output in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names if name not in outputs)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor named
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        values = session.run(names, {name: np.zeros(shape, dtype) for name, (shape, dtype) in feeds.items()})
    except Exception as exc:  # noqa: BLE001 - said as the reason the count cannot be made
        raise ShapeError(
            f"{source}: cannot count MACs: ONNX shape inference leaves the shape of {names[0]!r} unknown and ONNX "
            f"Runtime cannot run the graph to find it ({first_line(exc)})"
        ) from None
    return {name: tuple(int(size) for size in np.shape(value)) for name, value in zip(names, values, strict=True)}


def count_litert_cost(artifact: Artifact) -> CostStats:
    """:func:`count_tflite_cost` of a LiteRT artifact (the counter the LiteRT backend declares)."""
    return count_tflite_cost(artifact.path)


def count_tflite_cost(path) -> CostStats:
    """MACs and params of a ``.tflite`` (float or quantized alike): convolutions count output elements x kernel
    area x input channels (depthwise: x 1), fully connected layers output elements x input features; params
    are their weights and biases. LiteRT stores weights OHWI (depthwise 1HWC) and activations NHWC."""
    from edgeflow.backends.litert import tflite_operators

    macs = params = 0
    batch = 1
    for name, inputs, outputs in tflite_operators(path):
        if name not in {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} or inputs[1] is None:
            continue
        weight, out = [int(d) for d in inputs[1]["shape"]], [int(d) for d in outputs[0]["shape"]]
        params += int(np.prod(weight)) + (int(np.prod(inputs[2]["shape"])) if len(inputs) > 2 and inputs[2] else 0)
        if name == "CONV_2D":
            macs += int(np.prod(out)) * int(np.prod(weight[1:]))
            batch = out[0]
        elif name == "DEPTHWISE_CONV_2D":
            macs += int(np.prod(out)) * weight[1] * weight[2]
        else:
            macs += int(np.prod(out)) * weight[-1]
    return CostStats(macs=macs // max(1, batch), params=params)
