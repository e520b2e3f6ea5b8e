"""What a quantization step did: which layers are int8, which stayed in float and why."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pydantic import BaseModel

from edgeflow.compress.layers import QuantLayer

_WEIGHTED = {"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData"}
_WEIGHT_PATH = {"Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze", "FakeQuantize"}
_INTEGER_TYPES = {"i8", "u8", "i4", "u4"}


class FloatLayer(BaseModel):
    name: str
    type: str
    reason: str


class LayerSensitivity(QuantLayer):
    """One unit (a weighted layer or a gate: :mod:`edgeflow.compress.layers`), measured through the
    runtime: the file with it alone INT8 (every other unit in float) and the file with it alone in float (every
    other INT8), each scored on holdout against the float file (top-1 agreement, and the mean KL divergence of
    the float file's softmax to its own: a continuous measure), the second also timed in turn with the all-INT8
    file."""

    alone_agreement: float  # it alone INT8
    alone_top1: float
    alone_kl: float
    float_agreement: float | None = None  # it alone in float
    float_kl: float | None = None
    float_ms: float | None = None  # p50, timed in turn with the all-INT8 file
    float_cost: float | None = None  # float_ms / all-INT8 p50 - 1


class StartStats(BaseModel):
    """One all-INT8 file a method's settings can build (ort-static's calibrations under ``calibrate_method:
    auto``), scored on holdout against the float file, and its p50 timed in turn with the other starts on this
    host; mixed precision starts from the one of least KL among those near the fastest
    (:func:`pick_start`)."""

    label: str
    agreement: float
    top1: float
    kl: float
    ms: float | None = None  # None: measured before starts were timed

    def describe(self) -> str:
        """``label 97.11% (KL 0.0135, 2.410 ms)``: its holdout agreement with the float file, KL and p50."""
        timed = f", {self.ms:.3f} ms" if self.ms is not None else ""
        return f"{self.label} {100 * self.agreement:.2f}% (KL {self.kl:.4f}{timed})"


#: a start (an all-INT8 file of one post-training method) slower than the fastest start by more than this share is
#: passed over: units kept in float only add latency to it. NNCF's ONNX quantizer places its quantize pairs where
#: ONNX Runtime's CPU kernels fuse few of them (47 of mobilenet_v3_large's 62 convolutions stay float between
#: quantize pairs): its file was the closest to float but ran 6x slower than ort-static's (14.8 ms against 2.4 ms)
START_SLOWER_BY = 0.10


def pick_start(starts: list[StartStats], *, slower_by: float = START_SLOWER_BY) -> int:
    """The index of the start mixed precision goes on from: the least KL to the float file among the starts
    whose p50 is within ``slower_by`` of the fastest start's (all of them where none was timed)."""
    timed = [start.ms for start in starts if start.ms is not None]
    near = [index for index, start in enumerate(starts)
            if not timed or start.ms is None or start.ms <= min(timed) * (1 + slower_by)]  # fmt: skip
    return min(near, key=lambda index: starts[index].kl)


class SensitivityStats(BaseModel):
    """Per-unit sensitivity of one variant, measured through its runtime on this host. ``reference`` is the file
    with every unit the method can keep in float in float (what it quantizes outside them stays INT8): a unit's
    damage is measured against it, not against the float file."""

    variant: str
    backend: str
    method: str
    holdout_images: int
    float_top1: float
    int8_top1: float
    int8_agreement: float
    int8_kl: float
    reference_agreement: float
    reference_kl: float
    int8_ms: float  # all-INT8, median of the rounds timed in turn
    rounds: int
    layers: list[LayerSensitivity]
    seconds: float
    start: str = ""  # the try the all-INT8 file and every unit's file were built with (its label)
    starts: list[StartStats] = []  # every try, where the method's settings gave more than one

    def damage(self, layer: LayerSensitivity) -> float:
        """KL divergence a layer adds alone INT8, over the reference's."""
        return max(0.0, layer.alone_kl - self.reference_kl)

    def recovery(self, layer: LayerSensitivity) -> float:
        """KL divergence the all-INT8 file loses when this layer alone is in float."""
        return max(0.0, self.int8_kl - layer.float_kl) if layer.float_kl is not None else 0.0

    def ranked(self) -> list[LayerSensitivity]:
        """Layers worth keeping in float: most KL recovered per millisecond first (a cost below timing noise counts
        as 0.2% of the all-INT8 p50), ties broken by the damage alone; layers that neither recover nor damage
        anything are left out."""
        floor = 0.002 * self.int8_ms

        def value(layer: LayerSensitivity) -> tuple[float, float]:
            cost = max(layer.float_ms - self.int8_ms, floor) if layer.float_ms is not None else self.int8_ms
            return self.recovery(layer) / cost, self.damage(layer) / cost

        useful = [layer for layer in self.layers if self.recovery(layer) > 0 or self.damage(layer) > 0]
        return sorted(useful, key=value, reverse=True)

    def returnable(self) -> list[LayerSensitivity]:
        """Units to return to INT8 from the reference (every unit in float): least KL added alone per millisecond
        its float costs first; a unit whose float costs no more than timing noise (0.2% of the all-INT8 p50) comes
        last, since returning it saves nothing, the largest saving first among equals."""
        floor = 0.002 * self.int8_ms

        def key(layer: LayerSensitivity) -> tuple[bool, float, float]:
            saving = layer.float_ms - self.int8_ms if layer.float_ms is not None else 0.0
            return saving <= floor, self.damage(layer) / max(saving, floor), -saving

        return sorted(self.layers, key=key)


class MixedStep(BaseModel):
    """One whole file built and scored on holdout. Forward (``added``): one unit tried in float with those kept so
    far, kept if it lowered the KL divergence to the float file. Backward (``returned``): from every unit in float,
    the first ``returned`` units of :meth:`SensitivityStats.returnable` back in INT8, kept if the file met the
    agreement budget."""

    added: str = ""
    returned: int | None = None
    float_layers: int
    agreement: float
    top1: float
    kl: float
    kept: bool = True


class MixedPrecisionStats(BaseModel):
    """The float set chosen, why (the measured steps and the sensitivity they followed), and whether the budget
    was met on holdout."""

    agreement_budget: float
    float_layers: list[str]  # the units kept in float, by name (float ONNX node names; a gate by its multiply)
    float_modules: list[str] = []  # how the report names them: the torch module, a gate's marked (gate)
    returned_modules: list[str] = []  # the backward pass: units returned to INT8 from every unit in float
    steps: list[MixedStep]
    agreement: float  # holdout top-1 agreement with the float file, whole
    agreement_interval: tuple[float, float] | None = None  # its 95% Wilson interval on the holdout images
    top1: float
    met: bool
    method: str = ""  # the post-training quantization the files were built with
    notes: list[str] = []  # where the variant's own settings were changed to build them
    sensitivity: SensitivityStats | None = None
    ms: float | None = None  # the chosen file's p50 on this host, median of the rounds timed in turn with ...
    float_ms: float | None = None  # ... the float file's, compiled as the variant ships

    @property
    def faster_than_float(self) -> bool:
        """The chosen file beat the float file timed in turn (unknown where not timed: taken as faster)."""
        return self.ms is None or self.float_ms is None or self.ms < self.float_ms

    @property
    def backward(self) -> bool:
        """The set was chosen by the backward pass (units returned to INT8 from every unit in float)."""
        return any(step.returned is not None and step.kept for step in self.steps)


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
    mixed_precision: MixedPrecisionStats | None = None  # the float set chosen from measured sensitivity


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
CHOSEN_REASON = "kept in float by quantize.float_layers (mixed precision)"


def in_gates(layer: str, gates: Collection[str]) -> bool:
    """Whether a weighted layer (a name :func:`layer_precisions` gives) is one of the ``gates`` node names;
    OpenVINO names a convolution with a bias ``<ONNX node>/WithoutBiases``."""
    return layer in gates or layer.removesuffix("/WithoutBiases") in gates


def summarize(
    model,
    *,
    method: str,
    settings: dict[str, Any],
    reason: str,
    gates: Collection[str] = (),
    chosen: Collection[str] = (),
    **extra: Any,
) -> QuantizationStats:
    """A summary whose float layers carry ``reason``, or :data:`GATE_REASON` for those among ``gates`` (node
    names of the squeeze-and-excitation gates kept in float), or :data:`CHOSEN_REASON` for those among
    ``chosen`` (``quantize.float_layers``); callers refine reasons where they know more."""
    quantized, floating = layer_precisions(model)
    gates, chosen = set(gates), set(chosen)

    def why(name: str) -> str:
        if in_gates(name, chosen):
            return CHOSEN_REASON
        return GATE_REASON if in_gates(name, gates) else reason

    return QuantizationStats(
        method=method,
        settings=settings,
        quantized_layers=len(quantized),
        float_layers=[FloatLayer(name=name, type=kind, reason=why(name)) for name, kind in floating],
        **extra,
    )
