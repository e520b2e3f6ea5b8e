"""Third-party ONNX files as they come, each quirk on a small file made here from one tiny net: dimensions written
-1, '?' or a name, a fixed batch above 1, a rank-1 output, a softmax output, weights stored as Constant nodes,
opset 11. Each profiles, evaluates and quantizes (same weights: the same top-1 as the plain file), and the
hardest one goes through optimize and ships."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from torch import nn
from typer.testing import CliRunner

import edgeflow
from edgeflow.cli import app
from edgeflow.errors import ShapeError
from edgeflow.profiling.cost import count_onnx_cost
from edgeflow.profiling.loop import ProfileConfig

SIDE = 16


class Tiny(nn.Module):
    def __init__(self, *, softmax: bool = False, flat: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)
        self.softmax, self.flat = softmax, flat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))
        if self.softmax:
            logits = torch.softmax(logits, dim=1)
        return logits.reshape(-1) if self.flat else logits


def _export(path: Path, module: nn.Module, *, batch: int = 1, dynamic: bool = False, opset: int = 17) -> Path:
    axes = {"input": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notes
        torch.onnx.export(
            module.eval(), (torch.zeros(batch, 3, SIDE, SIDE),), str(path), dynamo=False, opset_version=opset,
            input_names=["input"], output_names=["logits"], dynamic_axes=axes,
        )  # fmt: skip
    return path


def _rewrite_dims(path: Path, target: Path, *, unknown: bool) -> Path:
    """The named dynamic dimensions rewritten as '?' (PaddlePaddle's) or as -1 (some converters')."""
    model = onnx.load(str(path))
    for dim in list(model.graph.input[0].type.tensor_type.shape.dim) + list(
        model.graph.output[0].type.tensor_type.shape.dim
    ):
        if dim.HasField("dim_param"):
            dim.Clear()
            if unknown:
                dim.dim_param = "?"
            else:
                dim.dim_value = -1
    onnx.save(model, str(target))
    return target


def _weights_as_constants(path: Path, target: Path) -> Path:
    """Every initializer moved into a Constant node (a parameter count read from initializers says 0)."""
    model = onnx.load(str(path))
    constants = [
        helper.make_node("Constant", [], [init.name], value=numpy_helper.from_array(numpy_helper.to_array(init)))
        for init in model.graph.initializer
    ]
    del model.graph.initializer[:]
    nodes = constants + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(target))
    return target


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("quirks")
    named = _export(folder / "named.onnx", Tiny(), dynamic=True)
    paddle_like = _export(folder / "paddle_base.onnx", Tiny(softmax=True), dynamic=True, opset=11)
    paddle_like = _rewrite_dims(paddle_like, folder / "p.onnx", unknown=True)
    paddle_like = _weights_as_constants(paddle_like, folder / "paddle.onnx")
    return {
        "plain": _export(folder / "plain.onnx", Tiny()),
        "named": named,
        "unknown": _rewrite_dims(named, folder / "unknown.onnx", unknown=True),
        "minus_one": _rewrite_dims(named, folder / "minus_one.onnx", unknown=False),
        "batch2": _export(folder / "batch2.onnx", Tiny(), batch=2),
        "rank1": _export(folder / "rank1.onnx", Tiny(flat=True)),
        "softmax": _export(folder / "softmax.onnx", Tiny(softmax=True)),
        "constants": _weights_as_constants(_export(folder / "c.onnx", Tiny()), folder / "constants.onnx"),
        "opset11": _export(folder / "opset11.onnx", Tiny(), opset=11),
        "paddle": paddle_like,  # '?' dims, opset 11, Constant weights, softmax output: all at once
    }


def _top1(path: Path, **options) -> float:
    return edgeflow.evaluate(path, data="digits", backend="onnxruntime", **options).top1


def test_every_quirk_evaluates_to_the_plain_files_top1(files) -> None:
    plain = _top1(files["plain"])
    shape = {"input_shape": f"1x3x{SIDE}x{SIDE}"}
    for name in ("named", "unknown", "minus_one", "paddle"):
        assert _top1(files[name], **shape) == plain, name
    for name in ("batch2", "rank1", "softmax", "constants", "opset11"):
        assert _top1(files[name]) == plain, name
    # a fixed batch of 2 runs whole batches: an odd number of images leaves the last one out, and says so by count
    assert edgeflow.evaluate(files["batch2"], data="digits", max_samples=7).samples == 6


def test_a_dynamic_dimension_without_a_shape_is_one_clear_error(files) -> None:
    for name in ("named", "unknown", "minus_one"):
        with pytest.raises(ShapeError, match=r"input dimensions 2 \(.*\), 3 \(.*\) are dynamic; give the shape"):
            _top1(files[name])
    with pytest.raises(ShapeError, match="input dimension 0 is fixed at 2 but the input shape gives 1"):
        _top1(files["batch2"], input_shape=f"1x3x{SIDE}x{SIDE}")
    with pytest.raises(ShapeError, match="has 3 dimensions; the model has 4"):
        _top1(files["named"], input_shape="1x3x16")


def test_params_and_macs_count_constant_stored_weights(files) -> None:
    plain, constants = count_onnx_cost(files["plain"]), count_onnx_cost(files["constants"])
    assert constants.params == plain.params == 3 * 8 * 9 + 8 + 8 * 10 + 10
    assert constants.macs == plain.macs > 0


@pytest.mark.slow  # every quirk profiled and quantized (~9 s)
def test_profile_and_quantize_each_quirk(files, tmp_path: Path) -> None:
    shape = f"1x3x{SIDE}x{SIDE}"
    for name in ("unknown", "batch2", "rank1", "paddle"):
        options = {"input_shape": shape} if name in ("unknown", "paddle") else {}
        profiled = edgeflow.profile(
            files[name], backend="onnxruntime", config=ProfileConfig(iterations=20, max_seconds=1, warmup=2),
            **options,
        )  # fmt: skip
        assert profiled.input_shape == [2 if name == "batch2" else 1, 3, SIDE, SIDE] and profiled.latency_ms.p50 > 0
        result = edgeflow.quantize(
            files[name], data="digits", method="ort-static", backend="onnxruntime", out=tmp_path / name,
            subset_size=16, max_drop=1.0, **options,
        )  # fmt: skip
        assert result.summary.quantized_layers > 0, name
        assert result.agreement.outputs == ("probabilities" if name == "paddle" else "logits")
        assert result.agreement.top1_agreement > 0.5, name


def test_optimize_ships_the_paddle_like_file_at_the_shape_given(files, tmp_path: Path) -> None:
    """'?' dims, opset 11, Constant weights and a softmax, through optimize: the copy is fixed at the shape,
    the quantized variant is built (opset raised to 13 for per-channel QDQ), agreement is over probabilities."""
    result = CliRunner().invoke(
        app,
        ["optimize", str(files["paddle"]), "--recipe", "mobile", "--data", "digits", "--input-shape",
         f"1x3x{SIDE}x{SIDE}", "--out", str(tmp_path / "run"), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"]["input_shape"] == [1, 3, SIDE, SIDE] and report["model"]["outputs"] == "probabilities"
    variants = {variant["name"]: variant for variant in report["variants"]}
    assert set(variants) == {"onnxruntime-fp32", "onnxruntime-int8"}
    assert variants["onnxruntime-int8"]["agreement"]["outputs"] == "probabilities"
    assert variants["onnxruntime-fp32"]["params"] == 3 * 8 * 9 + 8 + 8 * 10 + 10
    shipped = onnx.load(str(tmp_path / "run" / "bundle" / "model.onnx"))
    dims = [dim.dim_value for dim in shipped.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, SIDE, SIDE]
    manifest = json.loads((tmp_path / "run" / "bundle" / "manifest.json").read_text())
    assert manifest["input"]["shape"] == [1, 3, SIDE, SIDE] and manifest["input"]["preprocess"]["size"] == [SIDE, SIDE]
    # the ONNX written carries its preprocessing and labels: eval needs neither --input-shape nor --preprocess
    fp32 = tmp_path / "run" / "model_fp32.onnx"
    metadata = {entry.key: entry.value for entry in onnx.load(str(fp32)).metadata_props}
    assert json.loads(metadata["labels"]) == [str(digit) for digit in range(10)]
    assert np.isclose(_top1(fp32), variants["onnxruntime-fp32"]["accuracy"]["top1"])


def test_the_new_bad_inputs_are_one_clear_line_each(files, tmp_path: Path) -> None:
    from test_cli import assert_one_line_error

    bad = tmp_path / "bad.yaml"
    bad.write_text("size: [48, 192]\nchanels: bgr\n")
    labels, tsv = tmp_path / "labels.txt", tmp_path / "map.tsv"
    labels.write_text("a\nb\n")
    tsv.write_text("a\t0\n")
    named = str(files["named"])
    cases = [
        (["eval", named, "--data", "digits"], "input dimensions 2 ('height'), 3 ('width') are dynamic"),
        (["eval", named, "--data", "digits", "--input-shape", "1x3xHx16"], "expected positive integers joined by x"),
        (["eval", named, "--data", "digits", "--input-shape", "2x3x16x16x1"], "has 5 dimensions; the model has 4"),
        (["eval", str(files["batch2"]), "--data", "digits", "--input-shape", "1x3x16x16"], "fixed at 2"),
        (["eval", named, "--data", "digits", "--preprocess", str(bad)], f"{bad}: unknown key 'chanels'"),
        (["eval", named, "--data", "digits", "--preprocess", str(tmp_path / "no.yaml")], "preprocess file not found"),
        (["eval", str(files["plain"]), "--data", "digits", "--labels", str(labels), "--class-map", str(tsv)],
         "not both"),
        (["profile", named, "--input-shape", "1x4x16x16"], "dimension 1 is fixed at 3 but the input shape gives 4"),
        (["optimize", named, "--recipe", "quick", "--out", str(tmp_path / "o"), "--preprocess", str(bad)],
         "unknown key 'chanels'"),
    ]  # fmt: skip
    for argv, message in cases:
        assert_one_line_error(CliRunner().invoke(app, argv), message)
    assert not (tmp_path / "o").exists()


def test_the_device_agent_feeds_a_fixed_batch_and_flattens_rank1_outputs(files, tmp_path: Path) -> None:
    """The on-device agent (run here as it runs on a device) returns one row of outputs per image sent, for a
    fixed batch of 2 with an odd number of images and for a rank-1 output; the rows equal ONNX Runtime's here."""
    import subprocess
    import sys

    import onnxruntime as ort

    agent = Path(edgeflow.__file__).parent / "targets" / "agent.py"
    images = np.random.default_rng(0).standard_normal((5, 3, SIDE, SIDE)).astype(np.float32)
    np.save(tmp_path / "inputs.npy", images)
    plain = ort.InferenceSession(str(files["plain"]), providers=["CPUExecutionProvider"])
    expected = np.concatenate([plain.run(None, {"input": image[None]})[0] for image in images])
    for name in ("batch2", "rank1"):
        done = subprocess.run(
            [sys.executable, str(agent), "time", "--model", str(files[name]), "--runtime", "onnxruntime",
             "--warmup", "1", "--iterations", "3", "--min-iterations", "1", "--max-seconds", "1",
             "--inputs", str(tmp_path / "inputs.npy"), "--outputs", str(tmp_path / f"{name}.npy")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout.splitlines()[-1])["outputs"] == 5
        np.testing.assert_allclose(np.load(tmp_path / f"{name}.npy"), expected, rtol=1e-4, atol=1e-5)


def test_class_order_from_an_onnxs_metadata(files, tmp_path: Path) -> None:
    """labels as JSON or one a line, Ultralytics' names dict, edgeflow's sparse class map; and the order is
    used: a labels entry that reverses digits' classes is refused on digits (whose order is fixed)."""
    from edgeflow.errors import DataError
    from edgeflow.models.onnx_input import class_map_from_metadata, labels_from_metadata

    def with_metadata(**entries) -> onnx.ModelProto:
        model = onnx.load(str(files["plain"]))
        for key, value in entries.items():
            model.metadata_props.add(key=key, value=value)
        return model

    assert labels_from_metadata(with_metadata(labels='["cat", "dog"]'), source="m") == ["cat", "dog"]
    assert labels_from_metadata(with_metadata(classes="cat\ndog\n"), source="m") == ["cat", "dog"]
    assert labels_from_metadata(with_metadata(names="{1: 'dog', 0: 'cat'}"), source="m") == ["cat", "dog"]
    assert labels_from_metadata(with_metadata(), source="m") is None
    sparse = with_metadata(**{"edgeflow.class_map": '{"n01440764": 0, "n02102040": 217}'})
    assert class_map_from_metadata(sparse, source="m") == {"n01440764": 0, "n02102040": 217}
    reversed_digits = with_metadata(labels=json.dumps([str(9 - digit) for digit in range(10)]))
    onnx.save(reversed_digits, str(tmp_path / "reversed.onnx"))
    with pytest.raises(DataError, match="built-in data set whose classes are 0, 1"):
        _top1(tmp_path / "reversed.onnx")


def test_a_recipes_resolution_fills_dynamic_sides_only(files) -> None:
    """The quick recipe's 32 px is the side of models built here: a file fixed at 16 px keeps its own size (and
    its batch of 2), a file with dynamic sides runs at 32 px, and a preprocessing size that contradicts a fixed
    file is an error."""
    from edgeflow.data.preprocess import PreprocessSpec
    from edgeflow.recipe import load_recipe
    from edgeflow.source import load_model_and_data

    quick = load_recipe("quick")
    source, splits = load_model_and_data(str(files["batch2"]), arch=None, data="digits", recipe=quick)
    assert source.input_shape == (2, 3, SIDE, SIDE) and splits.size == (SIDE, SIDE)
    source, splits = load_model_and_data(str(files["named"]), arch=None, data="digits", recipe=quick)
    assert source.input_shape == (1, 3, 32, 32) and splits.size == (32, 32)
    wrong = quick.with_inputs(preprocess=PreprocessSpec(size=(8, 8)))
    with pytest.raises(ShapeError, match="takes 16x16 inputs"):
        load_model_and_data(str(files["plain"]), arch=None, data="digits", recipe=wrong)
