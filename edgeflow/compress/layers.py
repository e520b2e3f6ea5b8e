"""The units of a network that mixed precision may keep in float, named once for every format: by their node
names in the float ONNX (what ``quantize.float_layers`` takes), with the torch module each came from, and found
again in the formats built from it (OpenVINO's IR keeps the ONNX names; a ``.tflite`` converted from the torch
model names its operators otherwise, so its layers are matched by weight shape and order, its gates by order).

A unit is one of:

* ``layer``: a weighted layer (convolution, matrix product);
* ``gate``: a squeeze-and-excitation gate, every node of it (pool, convolutions, activations, the multiply): its
  nodes share one precision, since a gate half in float still scales whole channels by an 8-bit factor;
* ``add``: a residual add (an ``Add`` of two computed tensors), for NNCF, which quantizes an add's inputs where the
  CPU runs it in int8. Alone in float it buys little (its inputs also feed quantized convolutions), but with its
  neighbours in float its own quantizers are what is left: MobileNetV3's every layer and gate in float agrees with
  the float file on 98.94% of the Imagenette holdout through OpenVINO, with its ten residual adds too on 99.51%.

Another operator without weights (an activation, a pool) is no unit: kept alone in float by ONNX Runtime's QDQ
quantizer or NNCF, its tensors stay on the 8-bit grid its quantized neighbours put them on (the file has as many
QuantizeLinear or FakeQuantize nodes as with it INT8; tests/test_mixed_precision.py), so it changes nothing.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel

from edgeflow.artifact import Artifact
from edgeflow.errors import ConfigError

WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
UnitKind = Literal["layer", "gate", "add"]
UNIT_KINDS: tuple[UnitKind, ...] = ("layer", "gate", "add")


class QuantLayer(BaseModel):
    """A unit of the float ONNX that keeps one precision (module docstring): its name (a node name: a gate is named
    by its multiply), the torch module it came from, its operator (``gate`` for a gate), its weight count, and
    the nodes kept in float with it."""

    name: str
    module: str
    op: str
    weights: int
    kind: UnitKind = "layer"
    nodes: list[str] = []  # every node name it stands for; empty: ``name`` alone

    def node_names(self) -> list[str]:
        return list(self.nodes) or [self.name]

    def label(self) -> str:
        """How a report names it: the module, and for a gate or an add which it is."""
        return self.module if self.kind == "layer" else f"{self.module} ({self.op})"


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


def quantizable_layers(onnx: Artifact, *, kinds: tuple[UnitKind, ...] = ("layer",)) -> list[QuantLayer]:
    """The units of a float ONNX of the ``kinds`` asked, in graph order (a gate where its multiply is): weighted
    layers (convolutions and matrix products with constant weights), with ``gate`` each squeeze-and-excitation
    gate as one unit (its convolutions then belong to it, not to the layers), with ``add`` each residual add (both
    inputs computed by nodes outside any gate: not a constant, an initializer or the graph's input)."""
    from edgeflow.backends.onnx_file import load_onnx
    from edgeflow.compress.squeeze_excitation import find_gates

    model = load_onnx(onnx.path)
    graph = model.graph
    weights = {tensor.name: int(np.prod(tensor.dims)) for tensor in graph.initializer}
    gates = {gate[-1]: gate for gate in find_gates(model)} if "gate" in kinds else {}
    in_gate = {name for gate in gates.values() for name in gate}

    computed = {output for node in graph.node if node.op_type != "Constant" for output in node.output}

    def weighted(node) -> bool:
        return node.op_type in WEIGHTED_OPS and len(node.input) > 1 and node.input[1] in weights

    def residual(node) -> bool:
        return node.op_type == "Add" and len(node.input) == 2 and all(name in computed for name in node.input)

    units = []
    for node in graph.node:
        if not node.name:
            continue
        if node.name in gates:
            members = gates[node.name]
            units.append(QuantLayer(
                name=node.name, module=module_name(node.name), op="gate", kind="gate", nodes=members,
                weights=sum(weights[n.input[1]] for n in graph.node if n.name in members and weighted(n)),
            ))  # fmt: skip
        elif node.name in in_gate:
            continue
        elif weighted(node) and "layer" in kinds:
            units.append(QuantLayer(name=node.name, module=module_name(node.name), op=node.op_type,
                                    weights=weights[node.input[1]]))  # fmt: skip
        elif residual(node) and "add" in kinds:
            units.append(QuantLayer(name=node.name, module=module_name(node.name), op="add", kind="add", weights=0))
    return units


def _tflite_adds(tflite: Path) -> list[str]:
    """The scopes of a ``.tflite``'s residual adds, in execution order: each ``ADD`` whose two inputs are computed
    by other operators (not constants, not the graph's input), outside any squeeze-and-excitation gate."""
    from edgeflow.backends.litert import tflite_operators
    from edgeflow.compress.squeeze_excitation import find_gates

    operators = tflite_operators(tflite)
    computed = {detail["name"] for _kind, _inputs, outputs in operators for detail in outputs if detail}
    in_gate = {scope for gate in find_gates(tflite) for scope in gate}
    adds = []
    for kind, inputs, outputs in operators:
        scope = _scope(outputs)
        present = [detail for detail in inputs if detail is not None]
        if kind == "ADD" and len(present) == 2 and all(d["name"] in computed for d in present) and scope not in in_gate:
            adds.append(scope)
    return adds


def _onnx_signatures(graph) -> list[tuple[str, tuple]]:
    """(node name, weight signature) of each weighted layer of a float ONNX's graph, in graph order."""
    from onnx import numpy_helper

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
    ``.tflite`` units that ``float_layers`` (float ONNX node names) became: the n-th layer with a weight shape in
    the ONNX is the n-th with that shape in the ``.tflite``; a node of the n-th squeeze-and-excitation gate of the
    ONNX stands for every operator of the n-th gate of the ``.tflite`` (the converter rewrites a gate's operators,
    so they are found by structure: :func:`edgeflow.compress.squeeze_excitation.find_gates`); the n-th residual add
    of the ONNX is the n-th ``ADD`` of two computed tensors outside the gates of the ``.tflite``.

    Raises:
        ConfigError: a name that is no weighted layer, gate node or residual add of the ONNX, or one with no
            counterpart in the ``.tflite``.
    """
    from edgeflow.backends.litert import tflite_operators
    from edgeflow.backends.onnx_file import load_onnx
    from edgeflow.compress.squeeze_excitation import find_gates

    def keyed(pairs):
        seen: Counter = Counter()
        keys = {}
        for name, signature in pairs:
            keys[name] = (signature, seen[signature])
            seen[signature] += 1
        return keys

    model = load_onnx(onnx.path)
    onnx_gates = find_gates(model)
    gate_of = {name: index for index, gate in enumerate(onnx_gates) for name in gate}
    named_gates = any(layer in gate_of for layer in float_layers)
    tflite_gates = find_gates(tflite) if named_gates else []
    if named_gates and len(tflite_gates) != len(onnx_gates):
        raise ConfigError(
            f"quantize.float_layers: {Path(tflite).name} has {len(tflite_gates)} squeeze-and-excitation gates where "
            f"the float ONNX has {len(onnx_gates)} (the converter dropped the pool of some), so they cannot be named"
        )
    onnx_adds = [unit.name for unit in quantizable_layers(onnx, kinds=("gate", "add")) if unit.kind == "add"]
    add_of = {name: index for index, name in enumerate(onnx_adds)}
    tflite_adds = _tflite_adds(tflite) if any(layer in add_of for layer in float_layers) else []
    if tflite_adds and len(tflite_adds) != len(onnx_adds):
        raise ConfigError(
            f"quantize.float_layers: {Path(tflite).name} has {len(tflite_adds)} residual adds where the float ONNX "
            f"has {len(onnx_adds)}, so they cannot be named"
        )
    onnx_layers = _onnx_signatures(model.graph)
    onnx_keys = keyed(onnx_layers)
    operators = tflite_operators(tflite)
    split_from = _split_from_input(operators)
    tflite_layers = []
    for kind, inputs, outputs in operators:
        if kind not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") or len(inputs) < 2 or inputs[1] is None:
            continue
        shape = tuple(int(side) for side in inputs[1]["shape"])
        scope = _scope(outputs)
        if kind == "CONV_2D":  # filters O x kh x kw x I
            signature = _signature(shape[0], shape[3], shape[1:3])
        elif kind == "DEPTHWISE_CONV_2D":  # 1 x kh x kw x O
            signature = _signature(shape[3], 1, shape[1:3])
        else:  # O x I
            signature = _signature(shape[0], shape[1], ())
        tflite_layers.append(((*split_from(inputs[0]), scope), signature))
    in_onnx = Counter(signature for _name, signature in onnx_layers)
    in_tflite = Counter(signature for _scope, signature in tflite_layers)
    if in_onnx != in_tflite:
        raise ConfigError(
            f"quantize.float_layers: the weighted layers of {Path(tflite).name} do not match the float ONNX's by "
            f"shape ({sum(in_tflite.values())} against {sum(in_onnx.values())}: the converter fused or split some), "
            "so they cannot be named by it"
        )
    by_key = {key: scopes for scopes, key in keyed(tflite_layers).items()}
    scopes = []
    for layer in float_layers:
        if layer in gate_of:
            scopes.extend(tflite_gates[gate_of[layer]])
            continue
        if layer in add_of:
            scopes.append(tflite_adds[add_of[layer]])
            continue
        if layer not in onnx_keys:
            raise ConfigError(
                f"quantize.float_layers: {layer!r} is not a layer of the model that LiteRT can name "
                "(its weighted layers, by weight shape; its gates and residual adds, by order)"
            )
        if onnx_keys[layer] not in by_key:
            raise ConfigError(f"quantize.float_layers: {layer!r} has no counterpart in {Path(tflite).name}")
        scopes.extend(by_key[onnx_keys[layer]])
    return list(dict.fromkeys(scopes))


#: operators a converter splits from a layer's input side: a padded convolution's PAD, the pool and reshape before
#: a classifier, an NCHW input's TRANSPOSE. In the ONNX they are the layer's (its pads) or the graph's own.
_SPLIT_FROM_INPUT = {"PAD", "MEAN", "RESHAPE", "TRANSPOSE", "SQUEEZE"}


def _scope(outputs: list[dict | None]) -> str:
    """The LiteRT quantizer's scope of an operator: its output tensor names, each followed by ``;``."""
    return "".join(f"{detail['name']};" for detail in outputs if detail and detail["name"])


def _split_from_input(operators):
    """A function of a layer's input tensor that gives the scopes of the operators the converter split from the
    layer's input side (:data:`_SPLIT_FROM_INPUT`), first to last: the chain that feeds it, each operator's output
    read by the next alone."""
    producer = {detail["name"]: (kind, inputs, outputs) for kind, inputs, outputs in operators
                for detail in outputs if detail}  # fmt: skip
    readers = Counter(detail["name"] for _kind, inputs, _outputs in operators for detail in inputs if detail)

    def chain(tensor: dict | None) -> list[str]:
        found = []
        while tensor is not None and readers[tensor["name"]] == 1 and tensor["name"] in producer:
            kind, inputs, outputs = producer[tensor["name"]]
            if kind not in _SPLIT_FROM_INPUT or not inputs:
                break
            found.append(_scope(outputs))
            tensor = inputs[0]
        return found[::-1]

    return chain


#: what an ONNX layer's activation is made of (hardswish exports as HardSigmoid and Mul, swish as Sigmoid and Mul)
_ACTIVATION_OPS = {"Relu", "Clip", "HardSigmoid", "Sigmoid", "HardSwish", "LeakyRelu", "Tanh", "Mul"}
#: what feeds a layer's input and is only reshaping or pooling it (the head's pool and flatten before a classifier)
_INPUT_SIDE_OPS = {"GlobalAveragePool", "Flatten", "Reshape", "Squeeze", "Pad", "Transpose"}


def onnx_float_nodes(graph, float_layers: list[str]) -> list[str]:
    """What a quantizer of an ONNX ``graph`` for ONNX Runtime keeps in float for ``float_layers`` (its node names):
    each with its companions (:func:`onnx_companions`). ort-static and NNCF's ONNX backend both take it.

    Raises:
        ConfigError: a name that is no node of the graph.
    """
    names = {node.name for node in graph.node}
    for layer in float_layers:
        if layer not in names:
            raise ConfigError(f"quantize.float_layers: {layer!r} is not a layer of the model")
    return onnx_companions(graph, list(float_layers))


def onnx_companions(graph, names: list[str]) -> list[str]:
    """``names`` (nodes of an ONNX ``graph``), each weighted layer among them followed by the nodes that are part
    of it as a quantizer sees the graph: its activation (the nodes of :data:`_ACTIVATION_OPS` that read only its
    output and each other's, so a hardswish's HardSigmoid and Mul) and the chain of :data:`_INPUT_SIDE_OPS` that
    feeds its input alone (a classifier's pool and flatten). A quantizer that keeps the layer alone in float
    still rounds the tensors between them (ONNX Runtime's QDQ puts a quantize pair before each activation)."""
    producer = {output: node for node in graph.node for output in node.output}
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    constants = {tensor.name for tensor in graph.initializer}
    by_name = {node.name: node for node in graph.node}
    found = []
    for name in names:
        found.append(name)
        node = by_name.get(name)
        if node is None or node.op_type not in WEIGHTED_OPS:
            continue
        tensor = node.input[0]
        chain = []
        while tensor in producer and len(readers.get(tensor, [])) == 1 and producer[tensor].op_type in _INPUT_SIDE_OPS:
            chain.append(producer[tensor].name)
            tensor = producer[tensor].input[0]
        found.extend(chain[::-1])
        made, grown = set(node.output), True
        while grown:
            grown = False
            for reader in [r for output in list(made) for r in readers.get(output, [])]:
                inputs = [i for i in reader.input if i and i not in constants]
                if reader.op_type in _ACTIVATION_OPS and reader.name not in found and set(inputs) <= made:
                    found.append(reader.name)
                    made.update(reader.output)
                    grown = True
    return list(dict.fromkeys(found))
