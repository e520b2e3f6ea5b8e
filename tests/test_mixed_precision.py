"""Mixed precision through the runtime: units (weighted layers, gates, operators) named by the float ONNX, kept
in float by the methods that can, per-unit sensitivity measured through the runtime, and the float set chosen
from it and checked whole. Tiny models on digits; the fine-tuned models are in bench/mixed_precision.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from edgeflow.compress import get_method
from edgeflow.compress.layers import UNIT_KINDS, module_name, quantizable_layers
from edgeflow.compress.stats import CHOSEN_REASON
from edgeflow.data import load_data
from edgeflow.device import load_device
from edgeflow.errors import ConfigError
from edgeflow.export.onnx import export_onnx
from edgeflow.mixed_precision import choose_float_layers, measure_sensitivity, mixed_tries, pick_start
from edgeflow.recipe import VariantSpec
from edgeflow.variants import FloatArtifacts, build_variant

SHAPE = (1, 3, 32, 32)


class Tiny(nn.Sequential):
    def __init__(self) -> None:
        torch.manual_seed(0)
        super().__init__(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU(), nn.Conv2d(16, 24, 1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10),
        )  # fmt: skip
        self.eval()


@pytest.fixture(scope="module")
def splits():
    return load_data("digits", resolution=SHAPE[-1])


def _floats(module: nn.Module, folder) -> FloatArtifacts:
    onnx = export_onnx(module, input_shape=SHAPE, path=folder / "model.onnx")
    return FloatArtifacts.of(onnx, module=module, input_shape=SHAPE, folder=folder)


def test_weighted_layers_are_named_by_the_float_onnx_and_lead_back_to_torch_modules(tmp_path):
    model = torchvision.models.mobilenet_v3_small(num_classes=10).eval()
    layers = quantizable_layers(_floats(model, tmp_path).onnx)
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == len(convs) == 54
    for layer in layers:  # every name leads back to the torch layer, whose weight count it carries
        module = model.get_submodule(layer.module)
        assert isinstance(module, (nn.Conv2d, nn.Linear)) and module.weight.numel() == layer.weights
    assert layers[2].module == "features.1.block.1.fc1" and layers[-1].op == "Gemm"
    assert module_name("/blocks/blocks.0/blocks.0.0/conv_dw/Conv") == "blocks.0.0.conv_dw"


@pytest.mark.parametrize(
    "backend", ["onnxruntime", "openvino", "litert", pytest.param("executorch", marks=pytest.mark.slow)]
)
def test_the_method_keeps_the_named_layers_in_float_and_says_why(backend, splits, tmp_path):
    from edgeflow.backends import get_backend

    if get_backend(backend).unavailable():
        pytest.skip(get_backend(backend).unavailable())
    floats = _floats(Tiny(), tmp_path)
    layers = quantizable_layers(floats.onnx)
    keep = [layers[1].name]  # the depthwise convolution
    variant = VariantSpec(name="v", backend=backend, precision="int8",
                          quantize={"subset_size": 16, "float_layers": keep})  # fmt: skip
    _artifact, stats = build_variant(variant, floats=floats, splits=splits, folder=tmp_path, seed=0)
    chosen = [layer for layer in stats.float_layers if layer.reason == CHOSEN_REASON]
    assert len(chosen) == 1 and chosen[0].type in ("Conv", "GroupConvolution", "DEPTHWISE_CONV_2D", "Conv2d")
    if backend == "executorch":  # PT2E keeps the torch module in float
        assert chosen[0].name == "3"
    elif backend != "litert":  # a .tflite names its operators otherwise (matched by weight shape and order)
        assert [layer.name.removesuffix("/WithoutBiases") for layer in chosen] == keep
    assert stats.quantized_layers == len(layers) - 1 and stats.settings["float_layers"] == keep
    wrong = variant.model_copy(update={"quantize": variant.quantize.model_copy(update={"float_layers": ["/nope"]})})
    with pytest.raises(ConfigError, match=r"quantize.float_layers: '/nope' is not a layer of the model"):
        build_variant(wrong, floats=floats, splits=splits, folder=tmp_path, seed=0, file_stem="wrong")


def _every_unit_in_float(module: nn.Module, backend: str, *, splits, folder):
    """``module``'s float files, and its INT8 variant on ``backend`` (the backend's default method) built with every
    unit that method can name kept in float: (floats, variant, artifact, stats). Skips where the runtime is
    missing."""
    from edgeflow.backends import get_backend

    if get_backend(backend).unavailable():
        pytest.skip(get_backend(backend).unavailable())
    floats = _floats(module, folder)
    variant = VariantSpec(name="v", backend=backend, precision="int8", quantize={"subset_size": 16})
    units = quantizable_layers(floats.onnx, kinds=get_method(variant.quantize.method).float_units)
    quantize = variant.quantize.model_copy(update={"float_layers": [unit.name for unit in units]})
    variant = variant.model_copy(update={"quantize": quantize})
    return floats, variant, *build_variant(variant, floats=floats, splits=splits, folder=folder, seed=0)


@pytest.mark.slow  # whole-file quantizations (about 30 s and 15 s on 2 cores)
def test_a_litert_layer_in_float_keeps_the_operators_the_converter_split_from_its_input(splits, tmp_path):
    """The converter writes a padded stride-2 convolution as PAD then CONV_2D, the pool before a classifier as
    MEAN (and RESHAPE), and an NCHW input as a TRANSPOSE: in the ONNX each is part of the layer's input (its pads,
    the head's pool) or of the graph's. A layer kept in float keeps them in float with it, so a file with every
    unit in float has no INT8 tensor left (before, its pads, pool and input transpose still rounded)."""
    from edgeflow.backends.litert import tflite_operators

    floats, variant, artifact, _stats = _every_unit_in_float(Tiny(), "litert", splits=splits, folder=tmp_path)
    operators = tflite_operators(artifact.path)
    kinds = {kind for kind, _inputs, _outputs in operators}
    assert {"PAD", "MEAN", "TRANSPOSE"} <= kinds  # what the converter split out is there to be kept
    int8 = [kind for kind, _inputs, outputs in operators if any(d and d["dtype"] == np.int8 for d in outputs)]
    assert int8 == []
    quantize = variant.quantize.model_copy(update={"float_layers": []})
    plain, _ = build_variant(variant.model_copy(update={"quantize": quantize}), floats=floats, splits=splits,
                             folder=tmp_path, seed=0, file_stem="plain")  # fmt: skip
    rounded = {kind for kind, _i, outputs in tflite_operators(plain.path) if any(d and d["dtype"] == np.int8
                                                                              for d in outputs)}  # fmt: skip
    assert {"PAD", "MEAN", "CONV_2D"} <= rounded  # all-INT8 rounds them


class TinyHardswish(nn.Sequential):
    """Hardswish activations (exported as HardSigmoid and Mul) and a head pooled and flattened into a classifier."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        super().__init__(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.Hardswish(),
            nn.Conv2d(16, 24, 1), nn.Hardswish(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10),
        )  # fmt: skip
        self.eval()


@pytest.mark.slow  # whole-file quantizations (about 30 s and 15 s on 2 cores)
def test_an_onnx_runtime_layer_in_float_keeps_its_activation_and_the_pool_that_feeds_it_in_float(splits, tmp_path):
    """ONNX Runtime's QDQ quantizer puts a quantize pair before each HardSigmoid and Mul of a hardswish and before
    the head's pool and flatten, even where the layers around them are excluded: a layer kept in float keeps its
    activation and the pool and flatten feeding it alone in float, so a file with every unit in float has no
    quantize node left (before: 8 of them, on activations and the pool)."""
    from edgeflow.backends.onnx_file import load_onnx

    floats, variant, artifact, stats = _every_unit_in_float(TinyHardswish(), "onnxruntime", splits=splits,
                                                            folder=tmp_path)  # fmt: skip
    units = variant.quantize.float_layers
    assert _quantize_ops(artifact) == 0 and stats.settings["float_layers"] == units
    graph = load_onnx(artifact.path).graph  # ONNX Runtime's pre-processing writes hardswish as HardSigmoid, Mul
    assert {"HardSigmoid", "Mul", "GlobalAveragePool", "Flatten"} <= {node.op_type for node in graph.node}
    classifier = [node.name for node in graph.node if node.op_type == "Gemm"]
    _artifact, alone = build_variant(variant.model_copy(update={"quantize": variant.quantize.model_copy(
        update={"float_layers": classifier})}), floats=floats, splits=splits, folder=tmp_path, seed=0,
        file_stem="classifier")  # fmt: skip
    assert len(alone.float_layers) == 1  # the classifier: the weighted layer is what is reported


class TinySE(nn.Module):
    """A stem, a squeeze-and-excitation gate, a residual add and a head: one unit of every kind."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.Hardswish())
        self.se = torchvision.ops.SqueezeExcitation(16, 8, scale_activation=nn.Hardsigmoid)
        self.conv = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
        self.eval()

    def forward(self, x):
        x = self.stem(x)
        return self.head(x + self.conv(self.se(x)))


def test_units_are_weighted_layers_and_gates_kept_whole(tmp_path):
    model = torchvision.models.mobilenet_v3_small(num_classes=10).eval()
    onnx = _floats(model, tmp_path).onnx
    units = quantizable_layers(onnx, kinds=UNIT_KINDS)
    gates = [unit for unit in units if unit.kind == "gate"]
    se = [name for name, m in model.named_modules() if isinstance(m, torchvision.ops.SqueezeExcitation)]
    assert [gate.module for gate in gates] == se and len(se) == 9  # each gate named by its module, in order
    for gate in gates:  # pool, two convolutions, two activations, the multiply; weights of both convolutions
        module = model.get_submodule(gate.module)
        assert gate.node_names()[-1] == gate.name and gate.name.endswith("/Mul") and len(gate.nodes) == 6
        assert gate.weights == module.fc1.weight.numel() + module.fc2.weight.numel()
        assert gate.label() == f"{gate.module} (gate)"
    layers = [unit for unit in units if unit.kind == "layer"]
    assert len(layers) == 54 - 2 * 9  # a gate's convolutions belong to it
    assert len(quantizable_layers(onnx, kinds=("gate",))) == 9
    adds = [unit for unit in units if unit.kind == "add"]  # the residual adds of the blocks with a shortcut
    shortcut = [name for name, m in model.named_modules() if getattr(m, "use_res_connect", False)]
    assert [add.module for add in adds] == shortcut and len(shortcut) == 6
    assert all(add.op == "add" and add.weights == 0 and add.label() == f"{add.module} (add)" for add in adds)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "litert"])
def test_a_gate_is_kept_in_float_whole_and_a_residual_add_only_with_its_neighbours(backend, splits, tmp_path):
    from edgeflow.backends import get_backend
    from edgeflow.backends.onnx_file import load_onnx

    if get_backend(backend).unavailable():
        pytest.skip(get_backend(backend).unavailable())
    floats = _floats(TinySE(), tmp_path)
    variant = VariantSpec(name="v", backend=backend, precision="int8", quantize={"subset_size": 16})
    [gate] = quantizable_layers(floats.onnx, kinds=("gate",))
    add = next(node.name for node in load_onnx(floats.onnx.path).graph.node if node.op_type == "Add")

    def build(float_layers, stem):
        quantize = variant.quantize.model_copy(update={"float_layers": float_layers})
        return build_variant(variant.model_copy(update={"quantize": quantize}), floats=floats, splits=splits,
                             folder=tmp_path, seed=0, file_stem=stem)  # fmt: skip

    in_float, stats = build(gate.node_names(), "gate")
    chosen = [layer for layer in stats.float_layers if layer.reason == CHOSEN_REASON]
    assert len(chosen) == 2 and stats.quantized_layers == 3  # the gate's two convolutions; stem, conv, head INT8
    plain, _ = build([], "plain")
    if backend == "litert":  # LiteRT's quantizer keeps an operator in float by its scope: the add alone runs float
        kept, _ = build([add], "add")
        assert _tflite_add_types(plain) == ["int8"] and _tflite_add_types(kept) == ["float32"]
        assert "add" in get_method(stats.method).float_units
        with pytest.raises(ConfigError, match="'/missing/Add' is not a layer of the model that LiteRT can name"):
            build(["/missing/Add"], "missing")
        return
    assert _quantize_ops(in_float) < _quantize_ops(plain) - 2  # more than the convolutions' inputs left float
    # the residual add alone "in float": its tensors stay on the grid its quantized neighbours put them on
    kept, _ = build([add], "add")
    assert _quantize_ops(kept) == _quantize_ops(plain) > 0
    layers = [unit.name for unit in quantizable_layers(floats.onnx, kinds=("layer",))]
    neighbours, _ = build([*gate.node_names(), *layers], "neighbours")
    with_add, _ = build([*gate.node_names(), *layers, add], "with-add")
    # with its neighbours in float, the quantizers on the add's inputs are what is left: it is a unit
    assert [unit.name for unit in quantizable_layers(floats.onnx, kinds=("add",))] == [add]
    assert _quantize_ops(with_add) < _quantize_ops(neighbours)
    assert "add" in get_method(stats.method).float_units


def _tflite_add_types(artifact) -> list[str]:
    """The output type of each ADD of a ``.tflite`` (TinySE has one: its residual add)."""
    from edgeflow.backends.litert import tflite_operators

    return [outputs[0]["dtype"].__name__ for kind, _inputs, outputs in tflite_operators(artifact.path) if kind == "ADD"]


def _quantize_ops(artifact) -> int:
    """Quantize operators in an INT8 file: QuantizeLinear in a QDQ ONNX, FakeQuantize in an OpenVINO IR."""
    if str(artifact.path).endswith(".onnx"):
        import onnx

        return sum(node.op_type == "QuantizeLinear" for node in onnx.load(str(artifact.path)).graph.node)
    import openvino as ov

    return sum(op.get_type_name() == "FakeQuantize" for op in ov.Core().read_model(str(artifact.path)).get_ops())


def test_a_resumed_run_reads_the_sensitivity_it_measured_and_measures_again_for_another_device(
    splits, tmp_path, monkeypatch
):
    import edgeflow.mixed_precision as mixed_precision
    from edgeflow.mixed_precision import build_mixed_variant

    floats = _floats(Tiny(), tmp_path)
    layers = quantizable_layers(floats.onnx)
    variant = VariantSpec(name="ort", backend="onnxruntime", precision="int8", quantize={"subset_size": 16},
                          mixed_precision={"agreement": 0.01, "holdout_samples": 32, "rounds": 1,
                                           "layers": [layers[0].name]})  # fmt: skip
    kept = tmp_path / "unfinished"

    def build(key: str):
        return build_mixed_variant(variant, floats=floats, splits=splits, folder=tmp_path, keep_in=kept,
                                   keep_key=key)  # fmt: skip

    _artifact, first = build("cpu")
    assert (kept / "sensitivity-ort.json").exists()

    def measured_again(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(mixed_precision, "_sensitivity", measured_again)
    _artifact, again = build("cpu")  # the same float file, variant, data and device: read, not measured
    assert again.mixed_precision.sensitivity == first.mixed_precision.sensitivity
    with pytest.raises(AssertionError, match="measured again"):
        build("another device")


def test_the_bench_keeps_a_measured_sensitivity_and_reads_it_back_for_the_same_settings_only(
    splits, tmp_path, monkeypatch
):
    import edgeflow.mixed_precision as mixed_precision

    floats = _floats(Tiny(), tmp_path)
    variant = VariantSpec(name="ort", backend="onnxruntime", precision="int8", quantize={"subset_size": 16})
    settings = load_device("cpu").runtime

    def measure(samples: int):
        return measure_sensitivity(variant, floats=floats, splits=splits, folder=tmp_path, settings=settings,
                                   rounds=1, max_samples=samples, layers=[quantizable_layers(floats.onnx)[0].name],
                                   keep_in=tmp_path / "kept")  # fmt: skip

    first = measure(32)

    def measured_again(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(mixed_precision, "_sensitivity", measured_again)
    assert measure(32) == first
    with pytest.raises(AssertionError, match="measured again"):
        measure(24)  # other holdout images: another measurement


def test_units_return_to_int8_least_damage_per_millisecond_saved_first():
    from edgeflow.compress.stats import LayerSensitivity, SensitivityStats

    def unit(name: str, alone_kl: float, float_ms: float) -> LayerSensitivity:
        return LayerSensitivity(name=name, module=name, op="Conv", weights=1, alone_agreement=1.0, alone_top1=1.0,
                                alone_kl=alone_kl, float_ms=float_ms)  # fmt: skip

    stats = SensitivityStats(
        variant="v", backend="openvino", method="nncf-ptq", holdout_images=10, float_top1=1.0, int8_top1=1.0,
        int8_agreement=0.9, int8_kl=0.05, reference_agreement=1.0, reference_kl=0.01, int8_ms=1.0, rounds=1,
        seconds=0.0,
        layers=[
            unit("costly-damaging", 0.03, 1.10),  # 0.02 KL for 0.1 ms saved: 0.2 per ms
            unit("free", 0.01, 1.001),  # its float costs nothing measurable: returning it saves nothing
            unit("cheap-harmless", 0.011, 1.05),  # 0.001 KL for 0.05 ms: 0.02 per ms
            unit("big-saving", 0.02, 1.20),  # 0.01 KL for 0.2 ms: 0.05 per ms
            unit("below-reference", 0.005, 1.02),  # no damage at all: first
        ],
    )  # fmt: skip
    assert [layer.name for layer in stats.returnable()] == [
        "below-reference", "cheap-harmless", "big-saving", "costly-damaging", "free"
    ]  # fmt: skip


def test_only_methods_that_keep_layers_in_float_take_part():
    [(_label, auto)], notes = mixed_tries(
        VariantSpec(name="a", backend="openvino", precision="int8", quantize={"method": "auto"})
    )
    assert auto.quantize.method == "nncf-ptq" and notes == []  # accuracy control and QAT are no post-training start
    [(_label, control)], notes = mixed_tries(
        VariantSpec(name="c", backend="openvino", precision="int8", quantize={"method": "nncf-accuracy-control"})
    )
    assert control.quantize.method == "nncf-ptq"
    assert "the post-training quantization nncf-accuracy-control starts from" in notes[0]
    searched, notes = mixed_tries(VariantSpec(name="s", backend="onnxruntime", precision="int8"))
    assert [variant.quantize.calibrate_method for _label, variant in searched] == ["minmax", "minmax-average"]
    assert notes == [
        "calibrate_method auto: each of minmax, minmax-average built all-INT8, scored on holdout and timed; mixed "
        "precision starts from the one of least KL to the float file among those within 10% of the fastest"
    ]
    with pytest.raises(ConfigError, match="mixed precision is for INT8 variants"):
        mixed_tries(VariantSpec(name="f", backend="openvino"))
    with pytest.raises(ConfigError, match="ort-dynamic cannot keep chosen layers in float"):
        mixed_tries(VariantSpec(name="d", backend="onnxruntime", precision="int8", quantize={"method": "ort-dynamic"}))


@pytest.mark.slow  # a few dozen INT8 builds, scored and timed
def test_sensitivity_is_measured_per_layer_and_the_float_set_checked_whole(splits, tmp_path):
    device = load_device("cpu")
    floats = _floats(Tiny(), tmp_path)
    layers = quantizable_layers(floats.onnx)
    variant = VariantSpec(name="ort", backend="onnxruntime", precision="int8", quantize={"subset_size": 16})
    stats = measure_sensitivity(
        variant, floats=floats, splits=splits, folder=tmp_path, settings=device.runtime, rounds=2, max_samples=64,
        layers=[layers[0].name, layers[2].module],  # by node name or by torch module
    )  # fmt: skip
    assert [row.name for row in stats.layers] == [layers[0].name, layers[2].name]
    assert stats.holdout_images == 64 and stats.int8_ms > 0 and 0 <= stats.int8_agreement <= 1
    assert stats.reference_kl >= 0 and stats.int8_kl >= 0 and 0 <= stats.reference_agreement <= 1
    for row in stats.layers:
        assert 0 <= row.alone_agreement <= 1 and 0 <= row.float_agreement <= 1 and row.float_ms > 0
        assert row.alone_kl >= 0 and row.float_kl >= 0
        assert row.float_cost == pytest.approx(row.float_ms / stats.int8_ms - 1)
    assert not list(tmp_path.glob("sensitivity-*"))  # every trial file removed
    # calibrate_method auto: both calibrations built all-INT8, scored and timed in turn; every file built from the
    # closest among those near the fastest
    assert [start.label for start in stats.starts] == ["ort-static (minmax)", "ort-static (minmax-average)"]
    assert all(start.ms > 0 for start in stats.starts)
    picked = stats.starts[pick_start(stats.starts)]
    assert stats.start == picked.label and stats.int8_kl == picked.kl
    # a budget already met keeps nothing in float; one out of reach tries the ranked layers and says it failed
    met, summary = choose_float_layers(variant, stats, floats=floats, splits=splits, folder=tmp_path,
                                       settings=device.runtime, agreement=0.0, max_samples=64)  # fmt: skip
    mixed = summary.mixed_precision
    assert mixed.met and mixed.float_layers == [] and mixed.steps == [] and met.path.exists()
    assert f"ort-static ({summary.settings['calibrate_method']})" == stats.start
    assert f"started from {stats.start}" in summary.notes[-2]
    ranked = stats.ranked()
    _artifact, summary = choose_float_layers(variant, stats, floats=floats, splits=splits, folder=tmp_path,
                                             settings=device.runtime, agreement=1.01, max_samples=64)  # fmt: skip
    failed = summary.mixed_precision
    forward = [step for step in failed.steps if step.returned is None]
    # two units named: the backward pass starts from those two in float, which cannot meet 101%, and stops there
    assert [(step.returned, step.kept) for step in failed.steps if step.returned is not None] == [(0, False)]
    assert not failed.backward and failed.ms > 0 and failed.float_ms > 0
    assert f"{failed.ms:.3f} ms against {failed.float_ms:.3f} ms" in summary.notes[-2]
    assert ("NOT faster than the float file" in summary.notes[-2]) == (failed.ms >= failed.float_ms)
    first, again = forward[: len(ranked)], forward[len(ranked) :]
    assert not failed.met and [step.added for step in first] == [row.name for row in ranked]  # every one tried
    # then once more, each one not kept that was tried before a later one was kept (with the set kept since)
    kept_after = [any(later.kept for later in first[index + 1 :]) for index in range(len(first))]
    expected = [step.added for step, grew in zip(first, kept_after, strict=True) if not step.kept and grew]
    assert [step.added for step in again] == expected
    # a layer is kept only where the whole file's KL went down; the kept set is what the summary names
    from edgeflow.mixed_precision import MIN_KL_GAIN

    best = stats.int8_kl
    for step in forward:
        assert step.kept == (step.kl < best * (1 - MIN_KL_GAIN))
        best = step.kl if step.kept else best
    assert failed.float_layers == [step.added for step in forward if step.kept]
    assert np.all(np.diff([0, *(step.float_layers for step in forward)]) >= 0)


class _CleanThenOutlier(nn.Module):
    """An identity 1x1 convolution INT8 cannot hurt, then OutlierNet (tests/outlier_net.py), which any INT8 of its
    two layers breaks: adding one unit to the float set never helps (each layer alone in float still collapses
    through the other), every unit in float is the float classifier, and only the convolution can go back."""

    def __init__(self, train) -> None:
        from outlier_net import OutlierNet

        super().__init__()
        self.clean = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.clean.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        self.outlier = OutlierNet(train)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outlier(self.clean(x))


@pytest.mark.slow  # sensitivity of three units, and a few whole files
def test_where_adding_units_falls_short_units_go_back_to_int8_from_every_unit_in_float(splits, tmp_path):
    device = load_device("cpu")
    floats = _floats(_CleanThenOutlier(splits.train), tmp_path)
    clean, scores, readout = (layer.name for layer in quantizable_layers(floats.onnx))
    variant = VariantSpec(name="ort", backend="onnxruntime", precision="int8",
                          quantize={"subset_size": 16, "calibrate_method": "minmax"})  # fmt: skip
    stats = measure_sensitivity(variant, floats=floats, splits=splits, folder=tmp_path, settings=device.runtime,
                                rounds=1, max_samples=96)  # fmt: skip
    # the known outcome: INT8 collapses it, every unit in float does not
    assert stats.int8_agreement < 0.5 < 0.95 <= stats.reference_agreement
    budget = stats.reference_agreement - 0.03
    artifact, summary = choose_float_layers(variant, stats, floats=floats, splits=splits, folder=tmp_path,
                                            settings=device.runtime, agreement=budget, max_samples=96)  # fmt: skip
    mixed = summary.mixed_precision
    forward = [step for step in mixed.steps if step.returned is None]
    backward = [step for step in mixed.steps if step.returned is not None]
    assert forward and not any(step.agreement >= budget for step in forward)  # no one unit in float helps
    assert mixed.met and artifact.path.exists() and mixed.agreement >= budget
    # then from every unit in float, by bisection on how many go back in returnable()'s order: only the
    # convolution can (either OutlierNet layer in INT8 collapses it). It comes first where its float measurably
    # costs time; where it does not (a tiny net's timings are within noise), returning it saves nothing, it comes
    # after a layer that does, every count then breaks the file, and every unit stays in float
    if stats.returnable()[0].name == clean:
        assert mixed.float_layers == [scores, readout] and mixed.returned_modules == ["clean"]
        assert [(step.returned, step.kept) for step in backward] == [(2, False), (1, True)]
        assert "but 1 returned to INT8 (clean)" in summary.notes[-1]
    else:
        assert stats.returnable()[0].name in (scores, readout)
        assert mixed.float_layers == [clean, scores, readout] and mixed.returned_modules == []
        assert [(step.returned, step.kept) for step in backward] == [(2, False), (1, False), (0, True)]


def test_the_start_is_the_closest_to_float_among_those_near_the_fastest():
    from edgeflow.compress.stats import StartStats

    def start(label: str, kl: float, ms: float | None) -> StartStats:
        return StartStats(label=label, agreement=0.97, top1=0.8, kl=kl, ms=ms)

    # NNCF's ONNX file on ONNX Runtime (stop 42): the closest to float, 6x slower than ort-static's: passed over
    starts = [start("ort-static (minmax)", 0.0135, 2.41), start("ort-static (minmax-average)", 0.0235, 2.40),
              start("nncf-ptq", 0.0073, 14.79)]  # fmt: skip
    assert pick_start(starts) == 0
    assert pick_start(starts, slower_by=10.0) == 2  # everything near enough: the least KL
    starts[2] = start("nncf-ptq", 0.0073, 2.60)  # within 10% of 2.40 ms: the least KL wins
    assert pick_start(starts) == 2
    assert "nncf-ptq 97.00% (KL 0.0073, 2.600 ms)" == starts[2].describe()
    # kept from before the starts were timed: the least KL, as then
    assert pick_start([start("a", 0.02, None), start("b", 0.01, None)]) == 1


def test_method_auto_starts_from_each_post_training_method_that_keeps_units_in_float():
    from edgeflow.mixed_precision import mixed_tries

    auto = VariantSpec(name="ort", backend="onnxruntime", precision="int8", quantize={"method": "auto"},
                       mixed_precision={})  # fmt: skip
    tries, notes = mixed_tries(auto)
    assert [label for label, _ in tries] == ["ort-static (minmax)", "ort-static (minmax-average)", "nncf-ptq"]
    assert [variant.quantize.method for _, variant in tries] == ["ort-static", "ort-static", "nncf-ptq"]
    assert "(ort-static, nncf-ptq)" in notes[0] and "calibrate_method auto: each of minmax, minmax-average" in notes[1]
    named = auto.model_copy(update={"quantize": auto.quantize.model_copy(update={"method": "ort-static"})})
    assert [variant.quantize.method for _, variant in mixed_tries(named)[0]] == ["ort-static", "ort-static"]


def test_a_mixed_file_no_faster_than_its_float_file_is_never_recommended():
    from edgeflow.compress.stats import MixedPrecisionStats, QuantizationStats
    from edgeflow.profiling.stats import LatencyStats
    from edgeflow.report.schema import VariantRecord
    from edgeflow.workflow import _mark_baseline_and_recommendation

    def record(name: str, p50: float, *, mixed_ms: float | None = None) -> VariantRecord:
        latency = LatencyStats(p50=p50, p90=p50, p99=p50, mean=p50, min=p50, max=p50, std=None, cold=None,
                               iterations=20, warmup=2, seconds=0.1, throughput_fps=1000 / p50)  # fmt: skip
        mixed = None if mixed_ms is None else MixedPrecisionStats(
            agreement_budget=0.99, float_layers=["a"], steps=[], agreement=0.995, top1=0.9, met=True,
            ms=mixed_ms, float_ms=2.0)  # fmt: skip
        quantization = None if mixed is None else QuantizationStats(
            method="ort-static", settings={}, quantized_layers=3, float_layers=[], mixed_precision=mixed)  # fmt: skip
        return VariantRecord.model_construct(
            name=name, backend="onnxruntime", precision="fp32" if mixed is None else "int8", holdout_top1=0.9,
            latency_ms=latency, estimate=None, measured=True, emulated=False, quantization=quantization,
            recommended=False, speedup_vs_baseline=None)  # fmt: skip

    # the device timed the mixed file a little faster, but mixed precision's own timing in turn found it slower
    # than the float file: the float file is the answer
    slower = [record("float", 2.0), record("mixed", 1.9, mixed_ms=2.1)]
    _mark_baseline_and_recommendation(slower, max_drop=0.01)
    assert [r.recommended for r in slower] == [True, False]
    faster = [record("float", 2.0), record("mixed", 1.9, mixed_ms=1.5)]
    _mark_baseline_and_recommendation(faster, max_drop=0.01)
    assert [r.recommended for r in faster] == [False, True]


def test_a_recipe_asks_for_mixed_precision_only_where_a_method_can_keep_layers_in_float():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="mixed_precision applies to int8 variants"):
        VariantSpec(name="f", backend="openvino", mixed_precision={})
    with pytest.raises(
        ValidationError, match=r"method ort-dynamic cannot keep layers in float \(use nncf-ptq, ort-static\)"
    ):
        VariantSpec(name="d", backend="onnxruntime", precision="int8", quantize={"method": "ort-dynamic"},
                    mixed_precision={})  # fmt: skip
    with pytest.raises(ValidationError, match=r"quantize.float_layers: method nncf-qat cannot keep layers in float"):
        VariantSpec(name="q", backend="openvino", precision="int8",
                    quantize={"method": "nncf-qat", "float_layers": ["/a/Conv"]})  # fmt: skip
    spec = VariantSpec(name="a", backend="openvino", precision="int8", quantize={"method": "auto"},
                       mixed_precision={"agreement": 0.995})  # fmt: skip
    assert spec.mixed_precision.agreement == 0.995 and spec.mixed_precision.max_layers == 16


@pytest.mark.slow  # trains, builds, scores and times a run
def test_optimize_builds_the_mixed_variant_and_reports_its_sensitivity(tmp_path):
    import json

    import edgeflow
    from edgeflow.recipe import load_recipe

    recipe = load_recipe("quick")
    mixed = VariantSpec(
        name="onnxruntime-mixed", backend="onnxruntime", precision="int8", quantize={"subset_size": 16},
        mixed_precision={"agreement": 1.0, "max_layers": 1, "holdout_samples": 48, "rounds": 2,
                         "layers": ["features.0.0", "features.1.block.0.0"]},
    )  # fmt: skip
    recipe = recipe.model_copy(update={"variants": [recipe.variants[2], mixed]})
    report = edgeflow.optimize("mobilenet_v3_small", recipe=recipe, out=tmp_path / "run")
    record = report.variants[1]
    stats = record.quantization.mixed_precision
    assert stats is not None and [layer.module for layer in stats.sensitivity.layers] == [
        "features.0.0",
        "features.1.block.0.0",
    ]
    # one try in each pass, then the two named units in float (the backward pass's start) where those fell short;
    # never a unit that was not named (every unit in float meets 100% here: it is the float file)
    assert len(stats.float_layers) <= 2 and len(stats.steps) <= 3
    assert set(stats.float_layers) <= {layer.name for layer in stats.sensitivity.layers}
    assert stats.ms > 0 and stats.float_ms > 0
    assert (tmp_path / "run" / record.artifact).name == "model_onnxruntime-mixed.onnx"
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["variants"][1]["quantization"]["mixed_precision"]["sensitivity"]["layers"][0]["float_ms"] > 0
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert f"{stats.ms:.3f} ms against the float file's {stats.float_ms:.3f} ms" in markdown
    assert "### Mixed precision: onnxruntime-mixed" in markdown and "| features.0.0 | Conv |" in markdown
    assert (
        f"built as {stats.sensitivity.start}, the post-training quantization whose all-INT8 file is closest" in markdown
    )
    low, high = stats.agreement_interval  # 48 holdout images: wide
    assert low <= stats.agreement <= high and high - low > 0.05 and "% on 48 images)" in markdown
    assert (tmp_path / "run" / "sensitivity_onnxruntime-mixed.png").stat().st_size > 0
    assert 'class="sensitivity"' in (tmp_path / "run" / "report.html").read_text()
    with pytest.raises(ConfigError, match="mixed_precision.layers: 'nope' is not a unit the method can keep"):
        bad = mixed.model_copy(
            update={"mixed_precision": mixed.mixed_precision.model_copy(update={"layers": ["nope"]})}
        )
        edgeflow.optimize("mobilenet_v3_small", recipe=recipe.model_copy(update={"variants": [bad]}),
                          out=tmp_path / "bad")  # fmt: skip


def test_a_layer_named_twice_or_unknown_is_said_in_one_line(tmp_path):
    from edgeflow.mixed_precision import _selected

    every = quantizable_layers(_floats(Tiny(), tmp_path).onnx)
    assert _selected(every, [every[0].name, every[0].module]) == [every[0]]  # one layer named both ways
    with pytest.raises(ConfigError, match="'features.9' is not a unit the method can keep in float"):
        _selected(every, [every[0].name, "features.9"])
