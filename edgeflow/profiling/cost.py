"""What a model costs, counted from its exported graph: MACs per image and parameters."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from edgeflow.artifact import Artifact
from edgeflow.errors import ConfigError


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


def count_cost(artifact_model) -> CostStats:
    """MACs and params of an ``openvino.Model`` (read from ONNX or IR), per input image.

    Convolutions count output elements x input channels per group x kernel area; MatMul counts
    M x K x N. Params are the weights of convolutions and MatMuls plus the constant biases added
    to their outputs (batch norm is folded into these by export).
    """
    macs = 0
    params = 0
    batch = (
        max(1, output_shape(artifact_model.inputs[0])[0])
        if artifact_model.inputs[0].get_partial_shape().is_static
        else 1
    )
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


def artifact_cost(artifact: Artifact) -> CostStats:
    """MACs and params counted from an ONNX, IR or LiteRT artifact's graph."""
    if artifact.format == "litert":
        return count_tflite_cost(artifact.path)
    if artifact.format not in {"onnx", "openvino"}:
        raise ConfigError(f"cannot count MACs of a {artifact.format} artifact; give its exported graph")
    if artifact.format == "onnx":
        import openvino as ov

        try:
            # convert_model normalizes the ONNX frontend's graph (Gemm alpha/beta, bias reshapes) like the IR.
            return count_cost(ov.convert_model(str(artifact.path)))
        except Exception:  # operators OpenVINO cannot convert (QLinearConv, QGemm, ...): count the ONNX graph
            return count_onnx_cost(artifact.path)
    from edgeflow.backends.openvino import read_model

    return count_cost(read_model(artifact))


# ONNX operators that multiply-accumulate: the input that holds the weights, and the one that holds the bias.
_ONNX_WEIGHTED = {
    "Conv": (1, 2), "ConvInteger": (1, None), "QLinearConv": (3, 8),
    "Gemm": (1, 2), "QGemm": (3, 6), "MatMul": (1, None), "MatMulInteger": (1, None), "QLinearMatMul": (3, None),
}  # fmt: skip


def count_onnx_cost(path) -> CostStats:
    """MACs and params of an ONNX file read as ONNX (for graphs OpenVINO cannot convert, such as QOperator
    models): convolutions count output elements x input channels per group x kernel area, matrix products
    M x K x N; params are the weights and biases of those operators, from initializers or Constant nodes."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = shape_inference.infer_shapes(onnx.load(str(path)))
    graph = model.graph
    constants = {init.name: tuple(init.dims) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                constants[node.output[0]] = tuple(numpy_helper.to_array(value).shape)
    shapes = {
        info.name: tuple(dim.dim_value for dim in info.type.tensor_type.shape.dim)
        for info in [*graph.value_info, *graph.output, *graph.input]
    }
    first = shapes.get(graph.input[0].name, ()) if graph.input else ()
    batch = first[0] if first and first[0] > 0 else 1
    macs = params = 0
    for node in graph.node:
        if node.op_type not in _ONNX_WEIGHTED:
            continue
        weight_at, bias_at = _ONNX_WEIGHTED[node.op_type]
        weight = constants.get(node.input[weight_at]) if len(node.input) > weight_at else None
        if weight is None:
            continue  # both operands computed: no weights to count (attention-like products)
        params += int(np.prod(weight)) if weight else 1
        if bias_at is not None and len(node.input) > bias_at and node.input[bias_at] in constants:
            params += int(np.prod(constants[node.input[bias_at]]) or 1)
        if node.op_type in {"Conv", "ConvInteger", "QLinearConv"}:
            output = shapes.get(node.output[0])
            if output and all(size > 0 for size in output):
                macs += int(np.prod(output)) * int(np.prod(weight[1:]))
        else:  # M x K x N = the rows of the data operand x the weight's K x N (transposed or not)
            data = shapes.get(node.input[0], ())
            rows = int(np.prod(data[:-1])) if data and all(size > 0 for size in data) else batch
            macs += rows * int(np.prod(weight))
    return CostStats(macs=macs // batch, params=params)


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
