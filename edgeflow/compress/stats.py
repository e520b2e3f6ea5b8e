"""What a quantization step did: which layers are int8, which stayed in float and why."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pydantic import BaseModel

_WEIGHTED = {"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData"}
_WEIGHT_PATH = {"Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze", "FakeQuantize"}
_INTEGER_TYPES = {"i8", "u8", "i4", "u4"}


class FloatLayer(BaseModel):
    name: str
    type: str
    reason: str


class QuantizationStats(BaseModel):
    """Recorded in report.json for every quantized variant."""

    method: str
    settings: dict[str, Any]  # the options as resolved (e.g. preset chosen by "auto")
    quantized_layers: int
    float_layers: list[FloatLayer]
    holdout_top1_float: float | None = None
    holdout_top1_quantized: float | None = None
    max_drop: float | None = None
    budget_met: bool | None = None
    attempts: list[str] = []  # methods tried by a budget search, in order (the kept one is ``method``)
    notes: list[str] = []


def _weight_is_quantized(node) -> bool:
    """Follow a weight input upstream: quantized if it meets FakeQuantize or an integer constant."""
    seen = 0
    while seen < 12:
        seen += 1
        kind = node.get_type_name()
        if kind == "FakeQuantize":
            return True
        if kind == "Constant":
            return node.get_output_element_type(0).get_type_name() in _INTEGER_TYPES
        if kind not in _WEIGHT_PATH:
            return False
        node = node.input_value(0).get_node()
    return False


def layer_precisions(model) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(quantized, float) weighted layers of an ``openvino.Model`` (IR, or QDQ ONNX read by OpenVINO),
    each as (name, type)."""
    quantized, floating = [], []
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in _WEIGHTED:
            continue
        entry = (op.get_friendly_name(), kind)
        (quantized if _weight_is_quantized(op.input_value(1).get_node()) else floating).append(entry)
    return quantized, floating


GATE_REASON = "squeeze-and-excitation gate, kept in float (squeeze_excitation: float)"


def in_gates(layer: str, gates: Collection[str]) -> bool:
    """Whether a weighted layer (a name :func:`layer_precisions` gives) is one of the ``gates`` node names;
    OpenVINO names a convolution with a bias ``<ONNX node>/WithoutBiases``."""
    return layer in gates or layer.removesuffix("/WithoutBiases") in gates


def summarize(
    model, *, method: str, settings: dict[str, Any], reason: str, gates: Collection[str] = (), **extra: Any
) -> QuantizationStats:
    """A summary whose float layers carry ``reason``, or :data:`GATE_REASON` for those among ``gates`` (node
    names of the squeeze-and-excitation gates kept in float); callers refine reasons where they know more."""
    quantized, floating = layer_precisions(model)
    gates = set(gates)

    def why(name: str) -> str:
        return GATE_REASON if in_gates(name, gates) else reason

    return QuantizationStats(
        method=method,
        settings=settings,
        quantized_layers=len(quantized),
        float_layers=[FloatLayer(name=name, type=kind, reason=why(name)) for name, kind in floating],
        **extra,
    )
