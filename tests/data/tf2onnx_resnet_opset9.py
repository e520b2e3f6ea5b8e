"""Make tests/data/tf2onnx_resnet_opset9.onnx: a small Keras ResNet-style CNN (NHWC, conv/batch-norm/ReLU,
identity and projection residual blocks, a depthwise conv, global average pooling, a dense classifier) converted
by tf2onnx at opset 9, as third-party converters write graphs: NHWC input ``input:0`` with a named dynamic batch
(``unk__*``), MatMul + Add for the classifier. Also tests/data/tf2onnx_resnet_opset9_unoptimized.onnx, the same
network converted without tf2onnx's (and TensorFlow's) graph optimizers, as older conversions such as Yahoo's
open_nsfw are written: a Transpose pair around every convolution and batch norm, BatchNormalization nodes,
ReduceMean for the global pooling.

Run in a throwaway venv (TensorFlow is not an edgeflow dependency)::

    python3.11 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu==2.15.1 tf2onnx==1.16.1
    /tmp/tfvenv/bin/python tests/data/tf2onnx_resnet_opset9.py

Made with Python 3.11.7, tensorflow-cpu 2.15.1 (Keras 2.15), tf2onnx 1.16.1, onnx 1.17.0, numpy 1.26.4.
It writes the two .onnx files and tests/data/tf2onnx_resnet_opset9.json: the MACs and params counted by hand below (from
each Keras layer's kernel and output shape), and Keras' logits for a fixed input (the test checks ONNX Runtime
gives them, so the file is the network it claims to be).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf2onnx

SIDE = 32
CLASSES = 10
HERE = Path(__file__).resolve().parent
ONNX_PATH = HERE / "tf2onnx_resnet_opset9.onnx"
UNOPTIMIZED_PATH = HERE / "tf2onnx_resnet_opset9_unoptimized.onnx"
EXPECTED_PATH = HERE / "tf2onnx_resnet_opset9.json"


def conv_bn(x, filters: int, kernel: int, *, stride: int = 1, relu: bool = True, name: str):
    x = tf.keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=name)(x)
    x = tf.keras.layers.BatchNormalization(epsilon=1e-3, name=f"{name}_bn")(x)
    return tf.keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def build() -> tf.keras.Model:
    inputs = tf.keras.Input((SIDE, SIDE, 3), name="input")
    x = conv_bn(inputs, 16, 3, stride=2, name="stem")  # 16x16x16
    x = tf.keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool")(x)  # 8x8x16
    # an identity block
    y = conv_bn(x, 16, 3, name="block1_a")
    y = conv_bn(y, 16, 3, relu=False, name="block1_b")
    x = tf.keras.layers.ReLU(name="block1_relu")(tf.keras.layers.Add(name="block1_add")([x, y]))
    # a projection block: strided 3x3 and a strided 1x1 shortcut
    y = conv_bn(x, 32, 3, stride=2, name="block2_a")  # 4x4x32
    y = conv_bn(y, 32, 3, relu=False, name="block2_b")
    shortcut = conv_bn(x, 32, 1, stride=2, relu=False, name="block2_shortcut")
    x = tf.keras.layers.ReLU(name="block2_relu")(tf.keras.layers.Add(name="block2_add")([shortcut, y]))
    x = tf.keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="depthwise")(x)
    x = tf.keras.layers.BatchNormalization(epsilon=1e-3, name="depthwise_bn")(x)
    x = tf.keras.layers.ReLU(name="depthwise_relu")(x)
    x = tf.keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = tf.keras.layers.Dense(CLASSES, name="logits")(x)
    return tf.keras.Model(inputs, outputs, name="tf2onnx_resnet")


def count_by_hand(model: tf.keras.Model) -> tuple[int, int]:
    """MACs per image and params as edgeflow counts them (batch norm folded into a bias: one shift per channel).

    Conv2D: out_h x out_w x out_c x (k_h x k_w x in_c); DepthwiseConv2D: out_h x out_w x out_c x (k_h x k_w);
    Dense: in_features x out_features.
    """
    macs = params = 0
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.DepthwiseConv2D):  # a Conv2D subclass: test it first
            kernel_h, kernel_w, _, _ = layer.depthwise_kernel.shape
            _, out_h, out_w, out_c = layer.output.shape
            macs += out_h * out_w * out_c * kernel_h * kernel_w
            params += int(np.prod(layer.depthwise_kernel.shape))
        elif isinstance(layer, tf.keras.layers.Conv2D):
            kernel_h, kernel_w, in_c, _ = layer.kernel.shape
            _, out_h, out_w, out_c = layer.output.shape
            macs += out_h * out_w * out_c * kernel_h * kernel_w * in_c
            params += int(np.prod(layer.kernel.shape))
        elif isinstance(layer, tf.keras.layers.BatchNormalization):
            params += layer.beta.shape[0]  # folded into the preceding convolution's bias
        elif isinstance(layer, tf.keras.layers.Dense):
            in_features, out_features = layer.kernel.shape
            macs += in_features * out_features
            params += in_features * out_features + out_features
    return int(macs), int(params)


def main() -> None:
    tf.keras.utils.set_random_seed(0)
    model = build()
    # non-trivial batch-norm statistics and classifier bias (zeros would be folded away), so that they matter
    rng = np.random.default_rng(0)
    dense = model.get_layer("logits")
    dense.set_weights([dense.kernel.numpy(), rng.normal(0, 0.1, CLASSES)])
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 1.5, channels), rng.normal(0, 0.1, channels), rng.normal(0, 0.1, channels),
                 rng.uniform(0.5, 1.5, channels)]
            )  # fmt: skip
    probe = np.linspace(-1, 1, SIDE * SIDE * 3, dtype=np.float32).reshape(1, SIDE, SIDE, 3)
    logits = model(probe, training=False).numpy()[0]

    # tf2onnx's graph-def path names tensors as TensorFlow does ("input:0") and the unknown batch "unk__N"
    function = tf.function(lambda x: model(x, training=False))
    concrete = function.get_concrete_function(tf.TensorSpec((None, SIDE, SIDE, 3), tf.float32, name="input"))
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(concrete)
    graph_def = frozen.graph.as_graph_def()
    output_name = frozen.outputs[0].name
    proto, _ = tf2onnx.convert.from_graph_def(
        graph_def, input_names=["input:0"], output_names=[output_name], opset=9, output_path=str(ONNX_PATH)
    )
    # the same graph without the optimizers: TensorFlow's layout kept by a Transpose pair around each NCHW operator
    with tf.Graph().as_default() as tf_graph:
        tf.import_graph_def(graph_def, name="")
    unoptimized = tf2onnx.tfonnx.process_tf_graph(
        tf_graph, opset=9, input_names=["input:0"], output_names=[output_name]
    ).make_model("tf2onnx_resnet")
    UNOPTIMIZED_PATH.write_bytes(unoptimized.SerializeToString())
    macs, params = count_by_hand(model)
    expected = {
        "macs": macs,
        "params": params,
        "keras_params": int(model.count_params()),
        "input": proto.graph.input[0].name,
        "probe": "np.linspace(-1, 1, 32 * 32 * 3, dtype=np.float32).reshape(1, 32, 32, 3)",
        "logits": [float(value) for value in logits],
        "made_with": {
            "python": sys.version.split()[0],
            "tensorflow": tf.__version__,
            "tf2onnx": tf2onnx.__version__,
            "numpy": np.__version__,
        },
    }
    EXPECTED_PATH.write_text(json.dumps(expected, indent=1) + "\n")
    print(json.dumps({key: value for key, value in expected.items() if key != "logits"}, indent=1))
    for path in (ONNX_PATH, UNOPTIMIZED_PATH):
        print(f"{path}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
