"""Squeeze-and-excitation gates: found by structure in ONNX and OpenVINO graphs, kept in float when asked."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from torch import nn
from torchvision.ops import SqueezeExcitation

from edgeflow.backends.litert import litert_available
from edgeflow.backends.openvino import read_model
from edgeflow.compress.nncf_ptq import quantize_nncf
from edgeflow.compress.ort_quantize import quantize_onnx_static
from edgeflow.compress.squeeze_excitation import find_gates, node_names
from edgeflow.compress.stats import GATE_REASON
from edgeflow.data import load_data
from edgeflow.export.onnx import export_onnx
from edgeflow.recipe import QuantizeConfig


class TimmStyleGate(nn.Module):
    """timm's SqueezeExcite: ``x.mean((2, 3))``, SiLU written out as x * sigmoid(x), a sigmoid gate."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.reduce, self.expand = nn.Conv2d(channels, 4, 1), nn.Conv2d(4, channels, 1)
        self.head = nn.Conv2d(channels, 4, 1)

    def forward(self, x):
        x = nn.functional.silu(self.stem(x))
        scale = self.expand(nn.functional.silu(self.reduce(x.mean((2, 3), keepdim=True))))
        return self.head(x * scale.sigmoid())


class LookAlikes(nn.Module):
    """Multiplies that are not squeeze-and-excitation: a spatial gate (no pool), a gate from another tensor's
    pool, and swish."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 3, padding=1)
        self.spatial, self.fc = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1)

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        spatial = a * torch.sigmoid(self.spatial(a))
        crossed = b * torch.sigmoid(self.fc(a.mean((2, 3), keepdim=True)))
        return nn.functional.silu(spatial + crossed)


def _graphs(module: nn.Module, folder: Path, name: str):
    artifact = export_onnx(module.eval(), input_shape=(1, 3, 16, 16), path=folder / f"{name}.onnx")
    return onnx.load(str(artifact.path)), read_model(artifact)


def test_every_gate_of_torchvision_and_timm_graphs_is_found(mobilenet_artifacts, tmp_path: Path) -> None:
    blocks = sum(isinstance(layer, SqueezeExcitation) for layer in mobilenet_artifacts["module"].modules())
    proto = onnx.load(str(mobilenet_artifacts["onnx"].path))
    for model in (proto, read_model(mobilenet_artifacts["onnx"]), read_model(mobilenet_artifacts["openvino"])):
        gates = find_gates(model)
        assert len(gates) == blocks > 0
    by_name = {node.name: node.op_type for node in proto.graph.node}
    for gate in find_gates(proto):  # pool first ... the multiply last, with both 1x1 convolutions between
        kinds = [by_name[name] for name in gate]
        assert kinds[0] == "GlobalAveragePool" and kinds[-2:] == ["HardSigmoid", "Mul"]
        assert kinds.count("Conv") == 2
    for model in _graphs(TimmStyleGate(), tmp_path, "timm"):
        (gate,) = find_gates(model)
        assert len(gate) >= 6  # pool, reduce, swish (sigmoid, multiply), expand, sigmoid, multiply


def test_multiplies_that_are_not_gates_are_left_alone(tmp_path: Path) -> None:
    for model in _graphs(LookAlikes(), tmp_path, "lookalikes"):
        assert find_gates(model) == [] and node_names(find_gates(model)) == []


@pytest.fixture(scope="module")
def digits32():
    return load_data("digits", resolution=32)


@pytest.mark.slow  # NNCF quantizes twice (~12 s)
def test_nncf_keeps_the_gates_in_float_when_asked(mobilenet_artifacts, digits32, tmp_path: Path) -> None:
    blocks = len(find_gates(read_model(mobilenet_artifacts["openvino"])))
    runs = {}
    for mode in ("float", "int8"):
        config = QuantizeConfig(subset_size=16, squeeze_excitation=mode)
        _artifact, runs[mode] = quantize_nncf(
            mobilenet_artifacts["openvino"], calibration=digits32.train, config=config, path=tmp_path / f"{mode}.xml"
        )
    kept = [layer for layer in runs["float"].float_layers if layer.reason == GATE_REASON]
    assert len(kept) == 2 * blocks  # both convolutions of every gate
    assert runs["float"].settings["squeeze_excitation"] == "float" and runs["float"].settings["float_gates"] == blocks
    assert not any(layer.reason == GATE_REASON for layer in runs["int8"].float_layers)
    assert runs["int8"].quantized_layers == runs["float"].quantized_layers + 2 * blocks


def test_onnx_runtime_keeps_the_gates_in_float(mobilenet_artifacts, digits32, tmp_path: Path) -> None:
    config = QuantizeConfig(method="ort-static", subset_size=16, squeeze_excitation="float")
    artifact, summary = quantize_onnx_static(
        mobilenet_artifacts["onnx"], calibration=digits32.train, config=config, path=tmp_path / "q.onnx"
    )
    proto = onnx.load(str(artifact.path))
    produced_by = {output: node for node in proto.graph.node for output in node.output}
    gate_convs = [
        node for node in proto.graph.node if node.op_type == "Conv" and "/fc" in node.name
    ]  # torchvision names the gate's convolutions fc1, fc2
    assert gate_convs
    for conv in gate_convs:  # weights read straight from an initializer, not through a DequantizeLinear
        weight = produced_by.get(conv.input[1])
        assert weight is None or weight.op_type != "DequantizeLinear", conv.name
    assert summary.settings["float_gates"] == len(find_gates(onnx.load(str(mobilenet_artifacts["onnx"].path))))
    assert {layer.reason for layer in summary.float_layers} == {GATE_REASON}


_needs_litert = pytest.mark.skipif(
    not litert_available(), reason="LiteRT is not installed (pip install 'edgeflow[litert]')"
)


@_needs_litert
@pytest.mark.slow  # converts mobilenet_v3_small to .tflite (20 s on 2 cores)
def test_the_gates_of_a_tflite_are_found(mobilenet_artifacts, tmp_path: Path) -> None:
    """The same search on LiteRT's operators (MEAN, CONV_2D, LOGISTIC, MUL, ...), each named by its scope, so a
    recipe of LiteRT's quantizer can name it; look-alikes are left alone there too. At 64 px, where the last
    stage is still 2 x 2: the converter drops a mean over a 1 x 1 map, and a gate without its pool is not told
    from a spatial one by structure."""
    from edgeflow.export.litert import export_tflite

    blocks = sum(isinstance(layer, SqueezeExcitation) for layer in mobilenet_artifacts["module"].modules())
    tflite = export_tflite(mobilenet_artifacts["module"], input_shape=(1, 3, 64, 64), path=tmp_path / "m.tflite")
    gates = find_gates(tflite.path)
    assert len(gates) == blocks > 0
    scopes = scopes_of(tflite.path)
    for gate in gates:  # pool first, the multiply last, the gate's two 1x1 convolutions between
        kinds = [scopes[name] for name in gate]
        assert kinds[0] == "MEAN" and kinds[-1] == "MUL" and kinds.count("CONV_2D") == 2, kinds
    timm_style = export_tflite(TimmStyleGate().eval(), input_shape=(1, 3, 16, 16), path=tmp_path / "timm.tflite")
    ((*_, multiply),) = find_gates(timm_style.path)
    assert scopes_of(timm_style.path)[multiply] == "MUL"
    lookalikes = export_tflite(LookAlikes().eval(), input_shape=(1, 3, 16, 16), path=tmp_path / "look.tflite")
    assert find_gates(lookalikes.path) == []


def scopes_of(path: Path) -> dict[str, str]:
    from edgeflow.backends.litert import tflite_operators

    return {"".join(f"{t['name']};" for t in outputs): kind for kind, _, outputs in tflite_operators(path)}


@_needs_litert
@pytest.mark.slow  # converts and quantizes mobilenet_v3_small to .tflite (20 s on 2 cores)
def test_litert_keeps_the_gates_in_float(mobilenet_artifacts, tmp_path: Path) -> None:
    from edgeflow.compress.litert_quantize import quantize_litert_static, weighted_layers, xnnpack_partitions
    from edgeflow.export.litert import export_tflite

    tflite = export_tflite(mobilenet_artifacts["module"], input_shape=(1, 3, 64, 64), path=tmp_path / "m.tflite")
    blocks = len(find_gates(tflite.path))
    runs = {}
    for mode in ("float", "int8"):
        config = QuantizeConfig(method="litert-static", subset_size=8, squeeze_excitation=mode)
        runs[mode] = quantize_litert_static(tflite, calibration=load_data("digits", resolution=64).train, config=config,
                                            path=tmp_path / f"{mode}.tflite")  # fmt: skip
    (gated, kept), (_, all_int8) = runs["float"], runs["int8"]
    assert [layer.reason for layer in kept.float_layers] == [GATE_REASON] * (2 * blocks)
    assert kept.settings["squeeze_excitation"] == "float" and kept.settings["float_gates"] == blocks
    assert all_int8.float_layers == [] and all_int8.quantized_layers == kept.quantized_layers + 2 * blocks
    floating = {name for name, _ in weighted_layers(gated.path)[1]}  # read back from the file itself
    assert floating == {layer.name for layer in kept.float_layers}
    assert xnnpack_partitions(gated.path.read_bytes()) == 1  # float gates stay inside XNNPACK's one partition
