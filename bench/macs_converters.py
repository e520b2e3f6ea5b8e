"""MACs of a graph as converters write it: Yahoo open_nsfw's architecture (ResNet-50-1by2: ResNet-50 with half the
channels in every layer, Caffe layout: the stride on each stage's first 1x1 convolution, a 2-class classifier),
built in Keras and converted by tf2onnx at opset 9 (NHWC input ``input:0``, a named dynamic batch), counted by
edgeflow (both readings: OpenVINO's, as ``edgeflow profile`` counts, and the ONNX one), by hand (the per-layer
formula below), and by onnx-tool (PyPI). Two conversions: tf2onnx as it runs today (its optimizers fold batch norm
into the convolutions and cancel the Transpose pairs), and without the graph optimizers, as older conversions
such as open_nsfw's are written (a Transpose pair around every convolution and batch norm, BatchNormalization
nodes, ReduceMean).

TensorFlow, tf2onnx and onnx-tool are not edgeflow dependencies: they run in a throwaway venv, given by
``--tf-python`` (default ``$EDGEFLOW_TF_PYTHON``, else /tmp/tfvenv/bin/python)::

    python3.11 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu==2.15.1 tf2onnx==1.16.1 onnx-tool
    .venv/bin/python bench/macs_converters.py [--side 224] [--opset 9] [--keep FOLDER]

Where that venv or one of its packages is missing, the bench says which and skips that column (or all of it,
without TensorFlow: nothing to convert). This file is also what runs in that venv (``--make``, ``--onnx-tool``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import tempfile
from pathlib import Path

CLASSES = 2  # open_nsfw: sfw, nsfw
STEM = 32  # ResNet-50's 64, halved
# (bottleneck width, output channels, blocks, stride of the first block): ResNet-50's, halved
STAGES = [(32, 128, 3, 1), (64, 256, 4, 2), (128, 512, 6, 2), (256, 1024, 3, 2)]


def count_by_hand(side: int) -> tuple[int, int, list[tuple[str, int]]]:
    """MACs per image, params (batch norm folded into one bias per channel, as tf2onnx writes it) and MACs per
    layer. A convolution: out_h x out_w x out_channels x (k_h x k_w x in_channels); the classifier: in x out."""
    layers: list[tuple[str, int]] = []
    params = 0

    def conv(name: str, size: int, kernel: int, in_channels: int, out_channels: int) -> None:
        nonlocal params
        layers.append((name, size * size * out_channels * kernel * kernel * in_channels))
        params += kernel * kernel * in_channels * out_channels + out_channels  # + the folded batch norm's shift

    size = (side + 2 * 3 - 7) // 2 + 1  # 7x7 stride 2, padded by 3
    conv("conv_1", size, 7, 3, STEM)
    size = -(-size // 2)  # 3x3 max pool, stride 2, 'same'
    channels = STEM
    for stage, (width, out, blocks, stride) in enumerate(STAGES, start=2):
        for block in range(blocks):
            step = stride if block == 0 else 1
            size_out = -(-size // step)  # a 1x1 convolution with stride `step`
            name = f"res{stage}{chr(ord('a') + block)}"
            if block == 0:
                conv(f"{name}_branch1", size_out, 1, channels, out)
            conv(f"{name}_branch2a", size_out, 1, channels, width)
            conv(f"{name}_branch2b", size_out, 3, width, width)
            conv(f"{name}_branch2c", size_out, 1, width, out)
            channels, size = out, size_out
    layers.append(("fc_nsfw", channels * CLASSES))
    params += channels * CLASSES + CLASSES
    return sum(macs for _, macs in layers), params, layers


def make(folder: Path, *, side: int, opset: int) -> None:
    """(In the TensorFlow venv.) Build ResNet-50-1by2 in Keras and write it as tf2onnx writes it, with its
    optimizers (``folder/optimized.onnx``) and without (``folder/unoptimized.onnx``)."""
    import numpy as np
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    layers = tf.keras.layers
    tf.keras.utils.set_random_seed(0)

    def conv_bn(x, filters: int, kernel: int, *, stride: int = 1, relu: bool = True, name: str):
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=name)(x)
        x = layers.BatchNormalization(epsilon=1e-5, name=f"bn_{name}")(x)
        return layers.ReLU()(x) if relu else x

    inputs = tf.keras.Input((side, side, 3), name="input")
    x = layers.ZeroPadding2D(3)(inputs)
    x = layers.Conv2D(STEM, 7, strides=2, use_bias=False, name="conv_1")(x)
    x = layers.ReLU()(layers.BatchNormalization(epsilon=1e-5, name="bn_1")(x))
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    for stage, (width, out, blocks, stride) in enumerate(STAGES, start=2):
        for block in range(blocks):
            step = stride if block == 0 else 1
            name = f"res{stage}{chr(ord('a') + block)}"
            shortcut = conv_bn(x, out, 1, stride=step, relu=False, name=f"{name}_branch1") if block == 0 else x
            y = conv_bn(x, width, 1, stride=step, name=f"{name}_branch2a")
            y = conv_bn(y, width, 3, name=f"{name}_branch2b")
            y = conv_bn(y, out, 1, relu=False, name=f"{name}_branch2c")
            x = layers.ReLU()(layers.Add()([shortcut, y]))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dense(CLASSES, name="fc_nsfw")(x)
    model = tf.keras.Model(inputs, layers.Softmax(name="prob")(x))
    # statistics and biases as trained ones are: with Keras' initial ones every folded bias is zeros, which
    # tf2onnx stores once for every convolution and OpenVINO drops (an added zero), and the params differ
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 1.5, channels), rng.normal(0, 0.1, channels), rng.normal(0, 0.1, channels),
                 rng.uniform(0.5, 1.5, channels)]
            )  # fmt: skip
    model.get_layer("fc_nsfw").set_weights([model.get_layer("fc_nsfw").kernel.numpy(), rng.normal(0, 0.1, CLASSES)])
    function = tf.function(lambda images: model(images, training=False))
    concrete = function.get_concrete_function(tf.TensorSpec((None, side, side, 3), tf.float32, name="input"))
    frozen = convert_variables_to_constants_v2(concrete)  # the graph-def path names tensors as TF does: input:0
    graph_def, names = (
        frozen.graph.as_graph_def(),
        {"input_names": ["input:0"], "output_names": [frozen.outputs[0].name]},
    )
    tf2onnx.convert.from_graph_def(graph_def, opset=opset, output_path=str(folder / "optimized.onnx"), **names)
    with tf.Graph().as_default() as tf_graph:
        tf.import_graph_def(graph_def, name="")
    unoptimized = tf2onnx.tfonnx.process_tf_graph(tf_graph, opset=opset, **names).make_model("resnet50_1by2")
    (folder / "unoptimized.onnx").write_bytes(unoptimized.SerializeToString())
    print(json.dumps({"tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__}))


def count_with_onnx_tool(path: Path, *, side: int) -> None:
    """(In a venv with onnx-tool.) Its MACs: in total, and of Conv and MatMul/Gemm without the bias adds it
    counts with each convolution (one per output element), to compare with multiply-accumulates."""
    import numpy as np
    import onnx_tool

    graph = onnx_tool.Model(str(path)).graph
    graph.shape_infer({"input:0": np.zeros((1, side, side, 3), np.float32)})  # its batch is dynamic: give one
    graph.profile()
    products = bias_adds = 0
    for node in graph.nodemap.values():
        if node.op_type in {"Conv", "MatMul", "Gemm"}:
            products += int(node.macs[0])
            if node.op_type == "Conv" and len(node.input) > 2:
                bias_adds += int(np.prod(graph.tensormap[node.output[0]].shape))
    version = importlib.metadata.version("onnx-tool")
    total = int(graph.macs[0])
    print(
        json.dumps({"total": total, "products": products - bias_adds, "params": int(graph.params), "version": version})
    )


def _in_tf_venv(python: str, *args: str) -> tuple[dict | None, str]:
    done = subprocess.run([python, __file__, *args], capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return None, (done.stderr.strip().splitlines() or ["failed"])[-1]
    return json.loads(lines[-1]), ""


def _has(python: str, module: str) -> bool:
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=224)
    parser.add_argument("--opset", type=int, default=9)
    parser.add_argument("--tf-python", default=os.environ.get("EDGEFLOW_TF_PYTHON", "/tmp/tfvenv/bin/python"))
    parser.add_argument("--keep", type=Path, help="write the converted .onnx files here (else a temporary folder)")
    parser.add_argument("--make", type=Path, help=argparse.SUPPRESS)  # in the TF venv: convert into this folder
    parser.add_argument("--onnx-tool", type=Path, help=argparse.SUPPRESS)  # in the TF venv: onnx-tool's count
    args = parser.parse_args()
    if args.make:
        return make(args.make, side=args.side, opset=args.opset)
    if args.onnx_tool:
        return count_with_onnx_tool(args.onnx_tool, side=args.side)

    hand_macs, hand_params, _ = count_by_hand(args.side)
    python = args.tf_python
    if not Path(python).exists() or not (_has(python, "tensorflow") and _has(python, "tf2onnx")):
        print(f"skipped: {python} lacks TensorFlow or tf2onnx (see this file's docstring for the venv)")
        print(f"by hand: {hand_macs:,} MACs, {hand_params:,} params")
        return
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.keep or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        versions, error = _in_tf_venv(
            python, "--make", str(folder), "--side", str(args.side), "--opset", str(args.opset)
        )
        if versions is None:
            raise SystemExit(f"the conversion failed: {error}")
        print(
            f"ResNet-50-1by2 (open_nsfw's architecture), {args.side}x{args.side}, from Keras via tf2onnx "
            f"{versions['tf2onnx']} (TensorFlow {versions['tensorflow']}) at opset {args.opset}; by hand: "
            f"{hand_macs:,} MACs, {hand_params:,} params"
        )
        for variant in ("optimized", "unoptimized"):
            table(folder / f"{variant}.onnx", python=python, side=args.side, hand=(hand_macs, hand_params))


def table(path: Path, *, python: str, side: int, hand: tuple[int, int]) -> None:
    """Print one converted file's counts beside the hand count."""
    import onnx

    from edgeflow.artifact import Artifact
    from edgeflow.profiling.cost import artifact_cost, count_onnx_cost

    proto = onnx.load(str(path), load_external_data=False)
    dims = [dim.dim_param or dim.dim_value for dim in proto.graph.input[0].type.tensor_type.shape.dim]
    kinds = [node.op_type for node in proto.graph.node]
    rows = [
        ("edgeflow: artifact_cost (OpenVINO reading; edgeflow profile)", artifact_cost(Artifact("onnx", path))),
        ("edgeflow: count_onnx_cost (ONNX reading)", count_onnx_cost(path)),
    ]
    rows = [(name, cost.macs, cost.params) for name, cost in rows]
    rows.append(("by hand (per-layer formula in this file)", *hand))
    if _has(python, "onnx_tool"):
        other, error = _in_tf_venv(python, "--onnx-tool", str(path), "--side", str(side))
    else:
        other, error = None, f"onnx-tool is not installed in {python}"
    if other is not None:
        rows.append((f"onnx-tool {other['version']}: Conv + MatMul, bias adds left out", other["products"],
                     other["params"]))  # fmt: skip
        rows.append((f"onnx-tool {other['version']}: every operator (its total)", other["total"], other["params"]))
    print(
        f"\n{path.name}: input {proto.graph.input[0].name} {dims}, {len(kinds)} nodes: {kinds.count('Conv')} Conv, "
        f"{kinds.count('Transpose')} Transpose, {kinds.count('BatchNormalization')} BatchNormalization\n"
    )
    print("| counter | MACs per image | params | MACs vs by hand |\n|---|---:|---:|---:|")
    for name, macs, params in rows:
        print(f"| {name} | {macs:,} | {params:,} | {macs / hand[0]:.4f} |")
    if other is None:
        print(f"\nonnx-tool: skipped ({error})")


if __name__ == "__main__":
    main()
