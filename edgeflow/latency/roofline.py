"""Roofline estimate: each layer takes the longer of its arithmetic at the device's peak and its memory
traffic at the device's bandwidth, plus a fixed per-layer cost; layers add up.

Layers are read from the model's graph (OpenVINO's reading of the ONNX or IR): convolutions and matrix
products (arithmetic: 2 x MACs), and the ops that move whole tensors without a convolution to fuse into
(residual adds, squeeze-excitation multiplies, pooling, concatenation). Activations and batch norm are
taken as fused into the layer before them, as every runtime here does. Bytes count the layer's inputs,
output and weights once at the precision's width: caches and tiling are not modelled, so small
networks, whose per-layer costs dominate, are where a roofline errs most (see the README's table).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeflow.artifact import Artifact
from edgeflow.device import DeviceSpec
from edgeflow.errors import ConfigError
from edgeflow.latency.estimate import LatencyEstimate
from edgeflow.profiling.cost import constant_elements, output_shape

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}
_ARITHMETIC = {"Convolution", "GroupConvolution", "MatMul"}
_MOVERS = {"Add", "Multiply", "AvgPool", "MaxPool", "ReduceMean", "Concat", "Subtract"}


@dataclass(frozen=True)
class LayerCost:
    name: str
    type: str
    flops: float
    bytes: float


def layer_costs(model, *, precision: str) -> list[LayerCost]:
    """The layers of an ``openvino.Model`` the roofline counts, with their arithmetic and memory traffic."""
    width = BYTES[precision]
    costs = []
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in _ARITHMETIC and kind not in _MOVERS:
            continue
        out = float(np.prod(output_shape(op.output(0)))) if op.get_output_partial_shape(0).is_static else 0.0
        inputs, weights = 0.0, 0.0
        for value in op.input_values():
            node = value.get_node()
            if node.get_type_name() in ("Constant", "Convert") or constant_elements(node):
                weights += constant_elements(node)
            elif value.get_partial_shape().is_static:
                inputs += float(np.prod(output_shape(value)))
        if kind in _MOVERS:
            if inputs == 0 or (kind in ("Add", "Multiply", "Subtract") and weights):
                continue  # a constant bias or scale: folded into the convolution before it
            weights = 0.0  # the constants of a pool or reduction are its axes and kernel, not data
        if kind == "Convolution":
            kernel = output_shape(op.input_value(1))
            flops = 2.0 * out * float(np.prod(kernel[1:]))
        elif kind == "GroupConvolution":
            kernel = output_shape(op.input_value(1))
            flops = 2.0 * out * float(np.prod(kernel[-3:]))
        elif kind == "MatMul":
            shape = output_shape(op.input_value(0))
            flops = 2.0 * out * shape[-1]
        else:
            flops = out
        costs.append(LayerCost(op.get_friendly_name(), kind, flops, (inputs + out + weights) * width))
    return costs


def estimate_roofline(artifact: Artifact, *, device: DeviceSpec, precision: str) -> LatencyEstimate:
    """The roofline latency of ``artifact`` on ``device`` at ``precision`` (fp32, fp16, int8)."""
    if device.peak is None:
        raise ConfigError(f"device {device.name} has no peak figures (peak: in its file) to estimate latency from")
    peak_gops = device.peak.compute_gops.get(precision)
    if peak_gops is None and precision == "bf16":
        peak_gops = device.peak.compute_gops.get("fp16")
    if peak_gops is None:
        raise ConfigError(f"device {device.name} has no peak figure for {precision}")
    from edgeflow.backends.openvino import read_model

    model = _read(artifact, read_model)
    costs = layer_costs(model, precision=precision)
    bandwidth = device.peak.memory_bandwidth_gbs * 1e9
    compute_bound = 0
    seconds = 0.0
    for cost in costs:
        arithmetic, traffic = cost.flops / (peak_gops * 1e9), cost.bytes / bandwidth
        compute_bound += arithmetic >= traffic
        seconds += max(arithmetic, traffic) + device.peak.layer_overhead_us * 1e-6
    return LatencyEstimate(
        ms=seconds * 1e3, method="roofline", device=device.name, precision=precision,
        detail=(
            f"{len(costs)} layers ({compute_bound} compute-bound, {len(costs) - compute_bound} memory-bound) at "
            f"{peak_gops:g} GOP/s and {device.peak.memory_bandwidth_gbs:g} GB/s, "
            f"+{device.peak.layer_overhead_us:g} us per layer"
        ),
        source=device.peak.source,
    )  # fmt: skip


def _read(artifact: Artifact, read_model):
    if artifact.format == "onnx":
        import openvino as ov

        return ov.convert_model(str(artifact.path))
    if artifact.format == "openvino":
        return read_model(artifact)
    raise ConfigError(f"cannot estimate a {artifact.format} artifact; give its ONNX or IR")
