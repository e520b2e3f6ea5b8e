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
    """MACs and params counted from an ONNX or IR artifact's graph."""
    if artifact.format not in {"onnx", "openvino"}:
        raise ConfigError(f"cannot count MACs of a {artifact.format} artifact; give its exported graph")
    if artifact.format == "onnx":
        import openvino as ov

        # convert_model normalizes the ONNX frontend's graph (Gemm alpha/beta, bias reshapes) like the IR.
        return count_cost(ov.convert_model(str(artifact.path)))
    from edgeflow.backends.openvino import read_model

    return count_cost(read_model(artifact))
