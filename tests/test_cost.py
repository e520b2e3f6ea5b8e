"""MACs and params counted from graphs as converters write them (edgeflow/profiling/cost.py): tf2onnx's NHWC input
``input:0`` with a named dynamic batch, Transpose nodes around the convolutions, batch norm left as a node, weights
as Constant nodes or initializers, a MatMul + Add classifier, opsets 9 and 11. Yahoo's open_nsfw, written so, was
counted 0.0M MACs (its classifier only): every convolution's output had the batch as a name, read as 0."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgeflow
from edgeflow.artifact import Artifact
from edgeflow.errors import ShapeError
from edgeflow.profiling.cost import CostStats, artifact_cost, count_onnx_cost
from edgeflow.profiling.loop import ProfileConfig

DATA = Path(__file__).parent / "data"
SIDE = 16  # the NHWC input is SIDE x SIDE x 3

# The graph below, counted by hand (MACs = output elements x input channels per group x kernel area):
STEM_MACS = (SIDE // 2) ** 2 * 8 * (3 * 3 * 3)  # 3x3 stride 2, 3 -> 8 channels: 8x8x8 outputs
POINTWISE_MACS = (SIDE // 4) ** 2 * 8 * (8 * 1 * 1)  # 1x1, 8 -> 8, after a 2x2 max pool: 4x4x8 outputs
DEPTHWISE_MACS = (SIDE // 4) ** 2 * 8 * (1 * 3 * 3)  # 3x3, group 8: one input channel per output
CLASSIFIER_MACS = 8 * 10  # MatMul of the 8 pooled features by a (8, 10) weight
MACS = STEM_MACS + POINTWISE_MACS + DEPTHWISE_MACS + CLASSIFIER_MACS
assert MACS == 13_824 + 1_024 + 1_152 + 80 == 16_080
# weights and biases; the batch norm after the (bias-less) stem folds into an 8-element bias, as export folds it
PARAMS = (8 * 3 * 3 * 3 + 8) + (8 * 8 + 8) + 8 * 3 * 3 + (8 * 10 + 10)


def _weight(name: str, *shape: int, seed: int) -> onnx.TensorProto:
    values = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 0.1
    return numpy_helper.from_array(values, name)


def tf2onnx_like(*, opset: int = 9, head: str = "reduce_mean", dims: tuple = ("unk__653", SIDE, SIDE, 3)):
    """A ResNet-like graph as tf2onnx writes one: NHWC input ``input:0`` with a named batch, a Transpose to NCHW
    before and back to NHWC after each convolution group, the stem's weights in a Constant node, a batch norm node,
    a residual Add, then TensorFlow's mean over H and W (or ONNX's GlobalAveragePool + Flatten) and MatMul + Add."""
    to_nchw, to_nhwc = [0, 3, 1, 2], [0, 2, 3, 1]
    stem = numpy_helper.to_array(_weight("stem", 8, 3, 3, 3, seed=1))
    nodes = [
        helper.make_node("Constant", [], ["stem_w"], value=numpy_helper.from_array(stem, "stem_w")),
        helper.make_node("Transpose", ["input:0"], ["stem_in"], perm=to_nchw),
        helper.make_node("Conv", ["stem_in", "stem_w"], ["stem"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["stem", "bn_scale", "bn_shift", "bn_mean", "bn_var"], ["bn"],
                         epsilon=1e-3),
        helper.make_node("Transpose", ["bn"], ["bn_nhwc"], perm=to_nhwc),
        helper.make_node("Relu", ["bn_nhwc"], ["relu"]),
        helper.make_node("Transpose", ["relu"], ["pool_in"], perm=to_nchw),
        helper.make_node("MaxPool", ["pool_in"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["pool", "pointwise_w", "pointwise_b"], ["pointwise"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["pointwise"], ["pointwise_relu"]),
        helper.make_node("Conv", ["pointwise_relu", "depthwise_w"], ["depthwise"], kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], group=8),
        helper.make_node("Transpose", ["depthwise"], ["depthwise_nhwc"], perm=to_nhwc),
        helper.make_node("Transpose", ["pool"], ["pool_nhwc"], perm=to_nhwc),
        helper.make_node("Add", ["depthwise_nhwc", "pool_nhwc"], ["residual"]),
    ]  # fmt: skip
    if head == "reduce_mean":  # tf.reduce_mean(x, [1, 2]) and a reshape, as tf2onnx writes them
        nodes += [
            helper.make_node("ReduceMean", ["residual"], ["mean"], axes=[1, 2], keepdims=0),
            helper.make_node("Reshape", ["mean", "flat_shape"], ["features"]),
        ]
    else:
        nodes += [
            helper.make_node("Transpose", ["residual"], ["residual_nchw"], perm=to_nchw),
            helper.make_node("GlobalAveragePool", ["residual_nchw"], ["mean"]),
            helper.make_node("Flatten", ["mean"], ["features"]),
        ]
    nodes += [
        helper.make_node("MatMul", ["features", "fc_w"], ["fc"]),
        helper.make_node("Add", ["fc", "fc_b"], ["logits:0"]),
    ]
    initializers = [
        _weight("bn_scale", 8, seed=2), _weight("bn_shift", 8, seed=3), _weight("bn_mean", 8, seed=4),
        numpy_helper.from_array(np.full(8, 0.9, np.float32), "bn_var"),
        _weight("pointwise_w", 8, 8, 1, 1, seed=5), _weight("pointwise_b", 8, seed=6),
        _weight("depthwise_w", 8, 1, 3, 3, seed=7),
        numpy_helper.from_array(np.array([-1, 8], np.int64), "flat_shape"),
        _weight("fc_w", 8, 10, seed=8), _weight("fc_b", 10, seed=9),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "tf2onnx_like", [helper.make_tensor_value_info("input:0", TensorProto.FLOAT, list(dims))],
        [helper.make_tensor_value_info("logits:0", TensorProto.FLOAT, ["unk__654", 10])], initializers,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tf2onnx")
    model.ir_version = 4 if opset == 9 else 6  # what tf2onnx writes at these opsets
    onnx.checker.check_model(model)
    return model


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def _runs(path: Path, batch: int = 2) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).standard_normal((batch, SIDE, SIDE, 3)).astype(np.float32)
    return session.run(None, {"input:0": images})[0]


@pytest.mark.parametrize("head", ["reduce_mean", "global_average_pool"])
@pytest.mark.parametrize("opset", [9, 11])
def test_a_tf2onnx_like_graph_counts_every_convolution(opset: int, head: str, tmp_path: Path) -> None:
    path = _save(tf2onnx_like(opset=opset, head=head), tmp_path / "model.onnx")
    assert _runs(path).shape == (2, 10)  # a real graph: ONNX Runtime runs it at any batch
    expected = CostStats(macs=MACS, params=PARAMS)
    assert count_onnx_cost(path) == expected  # read as ONNX
    assert artifact_cost(Artifact(format="onnx", path=path)) == expected  # through OpenVINO, as profile counts it


def test_a_fixed_or_unnamed_batch_counts_per_image(tmp_path: Path) -> None:
    for batch in (2, "?", -1):
        model = tf2onnx_like(dims=(batch, SIDE, SIDE, 3))
        if batch == -1:  # some converters write -1, which onnx.helper refuses to build
            model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
        path = _save(model, tmp_path / "model.onnx")
        assert (
            count_onnx_cost(path)
            == artifact_cost(Artifact(format="onnx", path=path))
            == (CostStats(macs=MACS, params=PARAMS))
        ), batch


def test_dynamic_sides_count_at_the_shape_given_and_are_refused_without_one(tmp_path: Path) -> None:
    path = _save(tf2onnx_like(dims=("unk__653", "unk__654", "unk__655", 3)), tmp_path / "model.onnx")
    with pytest.raises(ShapeError, match="input dimension 1 is dynamic; give the shape"):
        count_onnx_cost(path)  # MACs depend on the sides: no count of 0 for the convolutions
    with pytest.raises(ShapeError, match="input dimension 1 is dynamic"):
        artifact_cost(Artifact(format="onnx", path=path))
    expected = CostStats(macs=MACS, params=PARAMS)
    assert count_onnx_cost(path, input_shape=(1, SIDE, SIDE, 3)) == expected
    assert artifact_cost(Artifact(format="onnx", path=path, input_shape=(1, SIDE, SIDE, 3))) == expected
    # twice the side: four times the convolutions' MACs, the same classifier
    doubled = artifact_cost(Artifact(format="onnx", path=path, input_shape=(1, 2 * SIDE, 2 * SIDE, 3)))
    assert doubled.macs == 4 * (MACS - CLASSIFIER_MACS) + CLASSIFIER_MACS


def _with_node_after_stem(model: onnx.ModelProto, node: onnx.NodeProto, domain: str) -> onnx.ModelProto:
    """``node`` (``relu`` -> ``odd``) inserted after the stem's ReLU, in an operator domain ONNX does not know."""
    for consumer in model.graph.node:
        consumer.input[:] = ["odd" if name == "relu" else name for name in consumer.input]
    position = [existing.output[0] for existing in model.graph.node].index("relu") + 1
    model.graph.node.insert(position, node)
    model.opset_import.append(helper.make_opsetid(domain, 1))
    return model


def test_shapes_onnx_inference_cannot_find_come_from_a_run(tmp_path: Path) -> None:
    """ONNX's shape inference stops at an ONNX Runtime contrib operator; a run on zeros gives the shapes after."""
    gelu = helper.make_node("Gelu", ["relu"], ["odd"], domain="com.microsoft")
    path = _save(_with_node_after_stem(tf2onnx_like(), gelu, "com.microsoft"), tmp_path / "model.onnx")
    assert _runs(path).shape == (2, 10)
    assert count_onnx_cost(path) == CostStats(macs=MACS, params=PARAMS)


def test_a_shape_nothing_can_find_is_an_error_not_a_small_count(tmp_path: Path) -> None:
    mystery = helper.make_node("Mystery", ["relu"], ["odd"], domain="example.custom")
    path = _save(_with_node_after_stem(tf2onnx_like(), mystery, "example.custom"), tmp_path / "model.onnx")
    with pytest.raises(ShapeError, match="cannot count MACs: ONNX shape inference leaves the shape of"):
        count_onnx_cost(path)
    with pytest.raises(ShapeError, match="cannot count MACs"):
        artifact_cost(Artifact(format="onnx", path=path))


@pytest.mark.parametrize("name", ["tf2onnx_resnet_opset9", "tf2onnx_resnet_opset9_unoptimized"])
def test_a_real_tf2onnx_graph_counts_as_keras_does_by_hand(name: str) -> None:
    """A Keras ResNet-style CNN converted by tf2onnx 1.16.1 at opset 9, with its optimizers (batch norm folded into
    the convolutions) and without (a Transpose pair around every convolution and batch norm, BatchNormalization
    nodes, as open_nsfw is written); made by tests/data/tf2onnx_resnet_opset9.py, which counted the MACs and
    params by hand from the Keras layers."""
    path = DATA / f"{name}.onnx"
    expected = json.loads((DATA / "tf2onnx_resnet_opset9.json").read_text())
    model = onnx.load(str(path))
    assert model.producer_name == "tf2onnx" and model.opset_import[0].version == 9
    assert model.graph.input[0].name == "input:0"
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param.startswith("unk__")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probe = np.linspace(-1, 1, 32 * 32 * 3, dtype=np.float32).reshape(1, 32, 32, 3)
    np.testing.assert_allclose(session.run(None, {"input:0": probe})[0][0], expected["logits"], rtol=1e-4, atol=1e-5)
    counted = CostStats(macs=expected["macs"], params=expected["params"])
    assert counted == CostStats(macs=639_808, params=20_170)
    assert count_onnx_cost(path) == artifact_cost(Artifact(format="onnx", path=path)) == counted
    # what `edgeflow profile open_nsfw.onnx` does with such a file
    profiled = edgeflow.profile(
        path, backend="onnxruntime", config=ProfileConfig(iterations=5, max_seconds=1, warmup=1)
    )
    assert (profiled.macs, profiled.params) == (counted.macs, counted.params)
