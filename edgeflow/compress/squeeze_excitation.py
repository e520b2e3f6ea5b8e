"""Squeeze-and-excitation gates in an ONNX, OpenVINO or LiteRT graph: the nodes INT8 keeps in float when asked
(``quantize: {squeeze_excitation: float}``).

A gate multiplies a feature map ``x`` by a per-channel scale computed from ``x`` itself:
``x * sigmoid_like(conv(act(conv(mean(x)))))`` (torchvision's ``SqueezeExcitation``, timm's ``SqueezeExcite``:
MobileNetV3, EfficientNet, RegNetY). Its convolutions act on one pooled vector, so they cost little time in
float, while their INT8 rounding scales whole channels at once: keeping them in float lifts top-1 agreement
with the float model, at the price of their weights (a third of MobileNetV3's) staying 32-bit
(reports/int8-imagenette-cpu.md). Found by structure, not by name, so a third-party graph's gates are found too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

_POOLS = {"GlobalAveragePool", "ReduceMean"}
_MULTIPLIES = {"Mul", "Multiply"}
# What lies between the pooled vector and the multiply: 1x1 convolutions (or a Linear), their biases, the
# activations and sigmoid-like gates (h-sigmoid written out as add, clip, divide too), reshapes.
_GATE_OPS = {
    "Conv", "Convolution", "Gemm", "MatMul", "Add", "Relu", "Clip", "Clamp", "HardSwish", "HSwish", "Swish",
    "Sigmoid", "HardSigmoid", "HSigmoid", "Div", "Divide", "Mul", "Multiply", "Reshape", "Squeeze", "Unsqueeze",
    "Flatten",
}  # fmt: skip
_MAX_DEPTH = 16
# Outputs that are not data: constants, and shapes (OpenVINO reshapes a bias with a shape computed from its input)
_SHAPE_OPS = {"Constant", "Shape", "ShapeOf"}


@dataclass
class _Graph:
    types: dict[str, str] = field(default_factory=dict)  # node name -> op type
    inputs: dict[str, list[str]] = field(default_factory=dict)  # node name -> the tensors it reads
    producer: dict[str, str] = field(default_factory=dict)  # tensor -> the node that writes it
    constant: set[str] = field(default_factory=set)  # tensors computed from constants and shapes only

    def add(self, name: str, kind: str, inputs: list[str], outputs: list[str]) -> None:
        self.types[name], self.inputs[name] = kind, inputs
        for tensor in outputs:
            self.producer[tensor] = name
        if kind in _SHAPE_OPS or (inputs and all(tensor in self.constant for tensor in inputs)):
            self.constant.update(outputs)

    def data_inputs(self, name: str) -> list[str]:
        return [tensor for tensor in self.inputs[name] if tensor not in self.constant]


def find_gates(model) -> list[list[str]]:
    """Every squeeze-and-excitation gate in ``model`` (an ``onnx.ModelProto``: node names; an
    ``openvino.Model``: friendly names; the path of a ``.tflite``: each operator's scope, its output tensor
    names each followed by ``;``, what LiteRT's quantizer matches a recipe against), each as the names of its
    nodes: the pool, the convolutions, the activations and the multiply."""
    if isinstance(model, (str, Path)):
        graph = _tflite_graph(Path(model))
    else:
        graph = _onnx_graph(model) if hasattr(model, "graph") else _openvino_graph(model)
    gates = []
    for name, kind in graph.types.items():
        data = graph.data_inputs(name) if kind in _MULTIPLIES else []
        if len(data) != 2:
            continue
        for gate, features in (data, data[::-1]):
            path = _path_to_pool(graph, gate, features)
            if path is not None:
                gates.append([*reversed(path), name])  # in graph order: the pool first
                break
    return gates


def node_names(gates: list[list[str]]) -> list[str]:
    """The names of the nodes of ``gates`` (from :func:`find_gates`), once each, in graph order."""
    return list(dict.fromkeys(name for gate in gates for name in gate))


def _path_to_pool(graph: _Graph, tensor: str, features: str) -> list[str] | None:
    """The nodes from ``tensor`` back to a global average pool of ``features``, through gate ops only."""
    path: list[str] = []
    for _ in range(_MAX_DEPTH):
        name = graph.producer.get(tensor)
        if name is None:
            return None
        path.append(name)
        kind, data = graph.types[name], graph.data_inputs(name)
        if kind in _POOLS:
            return path if data and data[0] == features else None
        if kind not in _GATE_OPS:
            return None
        if kind in _MULTIPLIES and len(data) == 2:  # swish written out: x * sigmoid(x)
            swish = _swish(graph, data)
            if swish is None:
                return None
            sigmoid, data = swish
            path.append(sigmoid)
        if len(data) != 1:
            return None
        tensor = data[0]
    return None


def _swish(graph: _Graph, data: list[str]) -> tuple[str, list[str]] | None:
    """The sigmoid node and the input ``x`` of a multiply that is ``x * sigmoid(x)``."""
    for x, other in (data, data[::-1]):
        name = graph.producer.get(other)
        if name is not None and graph.types[name] == "Sigmoid" and graph.data_inputs(name) == [x]:
            return name, [x]
    return None


def _onnx_graph(model) -> _Graph:
    graph = _Graph()
    graph.constant.update(initializer.name for initializer in model.graph.initializer)
    for index, node in enumerate(model.graph.node):
        graph.add(node.name or f"{node.op_type}_{index}", node.op_type, [t for t in node.input if t], list(node.output))
    return graph


def _openvino_graph(model) -> _Graph:
    graph = _Graph()
    for op in model.get_ordered_ops():
        name = op.get_friendly_name()
        inputs = [
            f"{source.get_node().get_friendly_name()}:{source.get_index()}"
            for source in (port.get_source_output() for port in op.inputs())
        ]
        outputs = [f"{name}:{index}" for index in range(op.get_output_size())]
        graph.add(name, op.get_type_name(), inputs, outputs)
    return graph


# LiteRT's builtin operators under the names the gate search knows (the ONNX ones); the others keep theirs
_TFLITE_TYPES = {
    "MEAN": "ReduceMean", "CONV_2D": "Conv", "FULLY_CONNECTED": "Gemm", "ADD": "Add", "MUL": "Mul", "DIV": "Div",
    "RELU": "Relu", "RELU6": "Clip", "RELU_0_TO_1": "Clip", "HARD_SWISH": "HardSwish", "LOGISTIC": "Sigmoid",
    "RESHAPE": "Reshape", "SQUEEZE": "Squeeze",
}  # fmt: skip


def _tflite_graph(path: Path) -> _Graph:
    """A ``.tflite``'s operators, each named by its scope; tensors by index (names repeat in converted models);
    a tensor no operator writes is a constant (weights, biases, axes) unless it is a graph input. The converter
    drops a mean over a 1 x 1 map (the last stage of a small input), so such a gate has no pool and is not
    found; h-sigmoid arrives folded into its convolution and a multiply by 1/6, both gate operators."""
    from edgeflow.backends.litert import interpreter_class, tflite_operators

    graph = _Graph()
    inputs = {detail["index"] for detail in interpreter_class()(model_path=str(path)).get_input_details()}
    operators = tflite_operators(path)
    written = {detail["index"] for _, _, outputs in operators for detail in outputs if detail}
    for index, (kind, ins, outs) in enumerate(operators):
        read = [detail["index"] for detail in ins if detail]
        graph.constant.update(f"t{i}" for i in read if i not in written and i not in inputs)
        scope = "".join(f"{detail['name']};" for detail in outs if detail and detail["name"]) or f"{kind}_{index}"
        graph.add(scope, _TFLITE_TYPES.get(kind, kind), [f"t{i}" for i in read],
                  [f"t{detail['index']}" for detail in outs if detail])  # fmt: skip
    return graph
