"""The weighted layers of a network, named once for every format: by their node name in the float ONNX (what
``quantize.float_layers`` takes), with the torch module each came from, and found again in the formats built
from it (OpenVINO's IR keeps the ONNX names; a ``.tflite`` converted from the torch model names its operators
otherwise, so its layers are matched by weight shape and order)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from edgeflow.artifact import Artifact
from edgeflow.errors import ConfigError

WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")


class QuantLayer(BaseModel):
    """A weighted layer of the float ONNX: its node name (what ``float_layers`` takes), the torch module it came
    from, its operator and weight count."""

    name: str
    module: str
    op: str
    weights: int


def module_name(node: str) -> str:
    """The torch module a node of an exported ONNX came from: ``/features/features.1/block/block.1/fc1/Conv``
    -> ``features.1.block.1.fc1`` (the exporter writes each scope whole after its parent's)."""
    parts: list[str] = []
    for scope in node.strip("/").split("/")[:-1]:
        if parts and scope.startswith(parts[-1] + "."):
            parts[-1] = scope
        else:
            parts.append(scope)
    return ".".join(parts) or node


def quantizable_layers(onnx: Artifact) -> list[QuantLayer]:
    """The weighted layers of a float ONNX (convolutions and matrix products with constant weights), in graph
    order."""
    from edgeflow.backends.onnx_file import load_onnx

    graph = load_onnx(onnx.path).graph
    weights = {tensor.name: int(np.prod(tensor.dims)) for tensor in graph.initializer}
    return [
        QuantLayer(name=node.name, module=module_name(node.name), op=node.op_type, weights=weights[node.input[1]])
        for node in graph.node
        if node.op_type in WEIGHTED_OPS and len(node.input) > 1 and node.input[1] in weights and node.name
    ]


def _onnx_signatures(onnx: Artifact) -> list[tuple[str, tuple]]:
    """(node name, weight signature) of each weighted layer of a float ONNX, in graph order."""
    from onnx import numpy_helper

    from edgeflow.backends.onnx_file import load_onnx

    graph = load_onnx(onnx.path).graph
    shapes = {tensor.name: tuple(numpy_helper.to_array(tensor).shape) for tensor in graph.initializer}
    found = []
    for node in graph.node:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2 or node.input[1] not in shapes:
            continue
        shape = shapes[node.input[1]]
        if node.op_type == "Conv":
            found.append((node.name, _signature(shape[0], shape[1], shape[2:])))
            continue
        transposed = node.op_type == "Gemm" and any(a.name == "transB" and a.i == 1 for a in node.attribute)
        out, into = (shape[0], shape[1]) if transposed else (shape[1], shape[0])
        found.append((node.name, _signature(out, into, ())))
    return found


def _signature(out: int, into: int, kernel: tuple) -> tuple:
    """A layer's weight shape, the same in every format: a 1x1 convolution and a matrix product are alike (a
    converter may turn one into the other)."""
    kernel = tuple(int(side) for side in kernel)
    if all(side == 1 for side in kernel):
        return ("pointwise", int(out), int(into))
    return ("conv", int(out), int(into), kernel)


def tflite_scopes(float_layers: list[str], *, onnx: Artifact, tflite: Path) -> list[str]:
    """The LiteRT quantizer's scopes (each operator's output tensor names, each followed by ``;``) of the
    ``.tflite`` layers that ``float_layers`` (float ONNX node names) became: the n-th layer with a weight shape in
    the ONNX is the n-th with that shape in the ``.tflite``.

    Raises:
        ConfigError: a name that is no weighted layer of the ONNX, or one with no counterpart in the ``.tflite``.
    """
    from edgeflow.backends.litert import tflite_operators

    def keyed(pairs):
        seen: Counter = Counter()
        keys = {}
        for name, signature in pairs:
            keys[name] = (signature, seen[signature])
            seen[signature] += 1
        return keys

    onnx_layers = _onnx_signatures(onnx)
    onnx_keys = keyed(onnx_layers)
    tflite_layers = []
    for kind, inputs, outputs in tflite_operators(tflite):
        if kind not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") or len(inputs) < 2 or inputs[1] is None:
            continue
        shape = tuple(int(side) for side in inputs[1]["shape"])
        scope = "".join(f"{detail['name']};" for detail in outputs if detail and detail["name"])
        if kind == "CONV_2D":  # filters O x kh x kw x I
            signature = _signature(shape[0], shape[3], shape[1:3])
        elif kind == "DEPTHWISE_CONV_2D":  # 1 x kh x kw x O
            signature = _signature(shape[3], 1, shape[1:3])
        else:  # O x I
            signature = _signature(shape[0], shape[1], ())
        tflite_layers.append((scope, signature))
    in_onnx = Counter(signature for _name, signature in onnx_layers)
    in_tflite = Counter(signature for _scope, signature in tflite_layers)
    if in_onnx != in_tflite:
        raise ConfigError(
            f"quantize.float_layers: the weighted layers of {Path(tflite).name} do not match the float ONNX's by "
            f"shape ({sum(in_tflite.values())} against {sum(in_onnx.values())}: the converter fused or split some), "
            "so they cannot be named by it"
        )
    by_key = {key: scope for scope, key in keyed(tflite_layers).items()}
    scopes = []
    for layer in float_layers:
        if layer not in onnx_keys:
            raise ConfigError(f"quantize.float_layers: {layer!r} is not a layer of the model")
        if onnx_keys[layer] not in by_key:
            raise ConfigError(f"quantize.float_layers: {layer!r} has no counterpart in {Path(tflite).name}")
        scopes.append(by_key[onnx_keys[layer]])
    return scopes
