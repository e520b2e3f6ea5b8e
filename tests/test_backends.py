"""Backends run the same artifact to the same answer, record their settings, and refuse bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import edgeflow
from edgeflow.artifact import Artifact
from edgeflow.backends import BACKENDS, artifact_from_path, get_backend
from edgeflow.backends.base import RuntimeSettings
from edgeflow.errors import ModelLoadError, ShapeError
from edgeflow.profiling.loop import ProfileConfig, time_inference

F32 = RuntimeSettings(execution_precision="f32")


def test_registry_is_lazy_and_complete() -> None:
    assert BACKENDS.names() == ["executorch", "litert", "onnxruntime", "openvino", "tensorrt", "torch"]
    assert BACKENDS.resolve("ov") == "openvino" and BACKENDS.resolve("trt") == "tensorrt"
    assert BACKENDS.resolve("tflite") == "litert"
    import subprocess
    import sys

    # registered by import path: importing edgeflow and its backends never imports TensorRT or LiteRT (asked of a
    # fresh interpreter: in this one, other tests may have imported them)
    code = (
        "import sys, edgeflow, edgeflow.backends.litert, edgeflow.backends.tensorrt, edgeflow.backends.executorch; "
        "print([m for m in ('tensorrt', 'ai_edge_litert', 'executorch') if m in sys.modules])"
    )
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert imported == "[]"


@pytest.mark.parametrize("backend,key", [("openvino", "openvino"), ("openvino", "onnx"), ("onnxruntime", "onnx")])
def test_backends_agree_with_torch(tiny_artifacts, tiny_net, backend: str, key: str) -> None:
    compiled = get_backend(backend).compile(tiny_artifacts[key], settings=F32)
    batch = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    with torch.inference_mode():
        expected = tiny_net(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(compiled.run(batch), expected, atol=1e-4)
    assert compiled.input_shape == (1, 3, 16, 16)
    assert compiled.settings["threads"] >= 1


def test_openvino_records_what_it_executes(tiny_artifacts) -> None:
    backend = get_backend("openvino")
    forced = backend.compile(tiny_artifacts["openvino"], settings=F32)
    assert forced.settings["execution_precision"] == "f32"
    default = backend.compile(tiny_artifacts["openvino"], settings=RuntimeSettings())
    # Whatever the CPU picks (bf16 with AMX, f32 without), it is read back from the runtime, not assumed.
    assert default.settings["execution_precision"] in {"f32", "bf16", "f16"}
    assert default.settings["performance_hint"] == "latency"
    two = backend.compile(tiny_artifacts["openvino"], settings=RuntimeSettings(threads=1))
    assert two.settings["threads"] == 1


def test_torch_backend(tiny_net) -> None:
    artifact = Artifact(format="torch", module=tiny_net, input_shape=(1, 3, 16, 16))
    compiled = get_backend("torch").compile(artifact, settings=RuntimeSettings())
    stats = time_inference(compiled, config=ProfileConfig(warmup=1, iterations=5))
    assert stats.iterations == 5 and stats.p50 > 0


def test_bound_runner_profiles(tiny_artifacts) -> None:
    for name, key in (("openvino", "openvino"), ("onnxruntime", "onnx")):
        backend = get_backend(name)
        compiled = backend.compile(tiny_artifacts[key], settings=RuntimeSettings())
        stats = time_inference(compiled, config=ProfileConfig(warmup=2, iterations=30))
        assert stats.iterations == 30 and 0 < stats.min <= stats.p50 <= stats.max


def test_wrong_input_shape(tiny_artifacts) -> None:
    compiled = get_backend("onnxruntime").compile(tiny_artifacts["onnx"], settings=RuntimeSettings())
    with pytest.raises(ShapeError, match=r"\(1, 3, 32, 32\) does not match the model's \(1, 3, 16, 16\)"):
        compiled.run(np.zeros((1, 3, 32, 32), dtype=np.float32))


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_corrupt_and_truncated_files(tmp_path: Path, tiny_artifacts, backend: str) -> None:
    not_onnx = tmp_path / "fake.onnx"
    not_onnx.write_text("this is not a model")
    with pytest.raises(ModelLoadError, match="fake.onnx"):
        get_backend(backend).compile(artifact_from_path(not_onnx), settings=RuntimeSettings())
    truncated = tmp_path / "cut.onnx"
    data = tiny_artifacts["onnx"].path.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="cut.onnx"):
        get_backend(backend).compile(artifact_from_path(truncated), settings=RuntimeSettings())


def test_artifact_from_path_errors(tmp_path: Path, tiny_artifacts) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        artifact_from_path(tmp_path / "none.onnx")
    with pytest.raises(ModelLoadError, match="unsupported artifact type .txt"):
        (tmp_path / "model.txt").write_text("x")
        artifact_from_path(tmp_path / "model.txt")
    lonely = tmp_path / "lonely.xml"
    lonely.write_text(tiny_artifacts["openvino"].path.read_text())
    with pytest.raises(ModelLoadError, match="weights file lonely.bin is missing"):
        artifact_from_path(lonely)


# A runtime's refusal to load a file that passes edgeflow's own checks is one line naming the file and quoting the
# runtime, exit code 2, on every path that loads it (issue 28). The files are real, and real runtimes refuse them.


def _refusal(load) -> Exception:
    """What the runtime raises when ``load`` is called: the test's file must be one it refuses."""
    try:
        load()
    except Exception as exc:  # whatever the runtime raises is what the one line quotes
        return exc
    raise AssertionError("the runtime accepted the file the test made for it to refuse")


def _cli_refuses(path: Path, line: str, *options: str) -> None:
    """`edgeflow profile` and `edgeflow eval` of ``path`` both end in ``line`` alone, with exit code 2."""
    from test_cli import assert_one_line_error
    from typer.testing import CliRunner

    from edgeflow.cli import app

    runner = CliRunner()
    for command in (["profile", str(path), "--iterations", "5"], ["eval", str(path), "--data", "digits"]):
        assert_one_line_error(runner.invoke(app, [*command, *options]), line)


def _onnx_adding_int64_to_float(path: Path) -> Path:
    """A well-formed ONNX (the checker passes it) that adds an int64 constant to the float input: ONNX Runtime
    refuses the type mismatch when it creates the session."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    image = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    logits = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    offset = numpy_helper.from_array(np.ones(1, dtype=np.int64), "offset")
    graph = helper.make_graph([helper.make_node("Add", ["x", "offset"], ["y"])], "add", [image], [logits], [offset])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, path)
    return path


def test_onnxruntime_refusing_a_file_is_one_line(tmp_path: Path) -> None:
    import onnxruntime as ort

    from edgeflow.backends.onnx_file import load_onnx
    from edgeflow.backends.onnxruntime import session_refusal

    path = _onnx_adding_int64_to_float(tmp_path / "mismatch.onnx")
    load_onnx(path)  # edgeflow's own checks pass it: the refusal is ONNX Runtime's
    refused = _refusal(lambda: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))
    line = f"ONNX Runtime cannot load {path}: {session_refusal(refused)}"
    assert line.endswith("Type Error: Type parameter (T) of Optype (Add) bound to different types "
                         "(tensor(float) and tensor(int64) in node ().")  # fmt: skip
    with pytest.raises(ModelLoadError) as raised:
        get_backend("onnxruntime").compile(artifact_from_path(path), settings=RuntimeSettings())
    assert str(raised.value) == line and type(raised.value.__cause__) is type(refused)
    _cli_refuses(path, line, "--backend", "onnxruntime")


def _openvino_ir(xml: Path, *, layer_type: str = "Add", weight_bytes: int = 768) -> Path:
    """An OpenVINO IR (v11) adding a constant to the input: a 768-byte float constant read from the .bin
    (``weight_bytes`` long) and a ``layer_type`` operation of opset1."""
    dims = "".join(f"<dim>{size}</dim>" for size in (1, 3, 8, 8))
    xml.write_text(f"""<?xml version="1.0"?>
<net name="add" version="11">
  <layers>
    <layer id="0" name="x" type="Parameter" version="opset1">
      <data shape="1,3,8,8" element_type="f32"/>
      <output><port id="0" precision="FP32" names="x">{dims}</port></output>
    </layer>
    <layer id="1" name="offset" type="Const" version="opset1">
      <data element_type="f32" shape="1,3,8,8" offset="0" size="768"/>
      <output><port id="0" precision="FP32">{dims}</port></output>
    </layer>
    <layer id="2" name="add" type="{layer_type}" version="opset1">
      <data auto_broadcast="numpy"/>
      <input><port id="0" precision="FP32">{dims}</port><port id="1" precision="FP32">{dims}</port></input>
      <output><port id="2" precision="FP32" names="y">{dims}</port></output>
    </layer>
    <layer id="3" name="y" type="Result" version="opset1">
      <input><port id="0" precision="FP32">{dims}</port></input>
    </layer>
  </layers>
  <edges>
    <edge from-layer="0" from-port="0" to-layer="2" to-port="0"/>
    <edge from-layer="1" from-port="0" to-layer="2" to-port="1"/>
    <edge from-layer="2" from-port="2" to-layer="3" to-port="0"/>
  </edges>
</net>
""")
    xml.with_suffix(".bin").write_bytes(bytes(weight_bytes))
    return xml


@pytest.mark.parametrize(
    "flaw,expected",
    [
        ({"weight_bytes": 16}, "Incorrect weights in bin file!"),
        ({"layer_type": "Frobnicate"}, "Opset opset1 doesn't contain the operation with type: Frobnicate"),
    ],
    ids=["bin-too-short", "unknown-layer"],
)
def test_openvino_refusing_a_file_is_one_line(tmp_path: Path, flaw: dict, expected: str) -> None:
    import openvino as ov

    from edgeflow.backends.openvino import runtime_message

    good = _openvino_ir(tmp_path / "good.xml")
    ones = np.ones((1, 3, 8, 8), dtype=np.float32)
    np.testing.assert_array_equal(get_backend("openvino").compile(artifact_from_path(good), settings=F32).run(ones), 1)
    path = _openvino_ir(tmp_path / "bad.xml", **flaw)
    refused = _refusal(lambda: ov.Core().read_model(str(path)))
    line = f"OpenVINO cannot load {path}: {runtime_message(refused)}"
    assert line.endswith(expected)  # OpenVINO's first lines name its C++ source; the cause is the last
    with pytest.raises(ModelLoadError) as raised:
        get_backend("openvino").compile(artifact_from_path(path), settings=F32)
    assert str(raised.value) == line and raised.value.__cause__ is not None
    _cli_refuses(path, line)


def _int8_tflite(path: Path, *, quantized_dimension: int) -> Path:
    """A LiteRT model that quantizes its float input to int8 and back (QUANTIZE, DEQUANTIZE), written with LiteRT's
    own FlatBuffer schema; the int8 tensor is 4-D, so LiteRT takes a ``quantized_dimension`` of 0 to 3 only."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    def tensor(name: str, kind: int, buffer: int, quantization=None):
        made = schema.TensorT()
        made.name, made.shape, made.type, made.buffer = name, [1, 3, 8, 8], kind, buffer
        made.quantization = quantization
        return made

    def operator(code: int, inputs: list[int], outputs: list[int]):
        made = schema.OperatorT()
        made.opcodeIndex, made.inputs, made.outputs = code, inputs, outputs
        return made

    codes = []
    for builtin in (schema.BuiltinOperator.QUANTIZE, schema.BuiltinOperator.DEQUANTIZE):
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = builtin
        code.version = 1
        codes.append(code)
    quantization = schema.QuantizationParametersT()
    quantization.scale, quantization.zeroPoint = [0.05], [0]
    quantization.quantizedDimension = quantized_dimension
    subgraph = schema.SubGraphT()
    subgraph.tensors = [
        tensor("x", schema.TensorType.FLOAT32, 1),
        tensor("x_int8", schema.TensorType.INT8, 2, quantization),
        tensor("y", schema.TensorType.FLOAT32, 3),
    ]
    subgraph.inputs, subgraph.outputs = [0], [2]
    subgraph.operators = [operator(0, [0], [1]), operator(1, [1], [2])]
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs = 3, codes, [subgraph]
    model.buffers = [schema.BufferT() for _ in range(4)]  # buffer 0 is the schema's empty sentinel
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path


def test_litert_refusing_a_file_is_one_line(tmp_path: Path) -> None:
    """The case of issue 28: an int8 model whose quantization parameters LiteRT rejects when it creates the
    interpreter (profile meets it first where it counts the model's operators, eval where it compiles)."""
    interpreter = pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT is not installed (ai-edge-litert)")
    from edgeflow.errors import first_line

    good = _int8_tflite(tmp_path / "good.tflite", quantized_dimension=0)
    compiled = get_backend("litert").compile(artifact_from_path(good), settings=RuntimeSettings())
    np.testing.assert_allclose(compiled.run(np.full((1, 3, 8, 8), 0.5)), 0.5)
    path = _int8_tflite(tmp_path / "int8.tflite", quantized_dimension=4)
    refused = _refusal(lambda: interpreter.Interpreter(model_path=str(path)))
    line = f"LiteRT cannot load {path}: {first_line(refused)}"
    assert "quantized_dimension must be in range [0, 4). Was 4." in line
    with pytest.raises(ModelLoadError) as raised:
        get_backend("litert").compile(artifact_from_path(path), settings=RuntimeSettings())
    assert str(raised.value) == line and raised.value.__cause__ is not None
    _cli_refuses(path, line)


def test_the_agent_names_the_file_a_runtime_refuses(tmp_path: Path, capsys) -> None:
    """On a device, the benchmark agent reports a refusal as the same line, for the host to show."""
    import json

    from edgeflow.targets import agent

    pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT is not installed (ai-edge-litert)")
    files = {
        "onnxruntime": (_onnx_adding_int64_to_float(tmp_path / "mismatch.onnx"), "ONNX Runtime", "Type Error"),
        "openvino": (_openvino_ir(tmp_path / "short.xml", weight_bytes=16), "OpenVINO", "Incorrect weights in bin"),
        "litert": (_int8_tflite(tmp_path / "int8.tflite", quantized_dimension=4), "LiteRT", "quantized_dimension"),
    }
    for runtime, (path, name, quoted) in files.items():
        assert agent.main(["time", "--model", str(path), "--runtime", runtime]) == 3
        error = json.loads(capsys.readouterr().out)["error"]
        assert error.startswith(f"{name} cannot load {path}: ") and quoted in error, error


def test_executorch_refusing_a_file_is_one_line(tmp_path: Path) -> None:
    """A .pte that is not an ExecuTorch program is refused in one line before ExecuTorch's runtime sees it (its
    own refusal is a bare error code)."""
    pytest.importorskip("executorch.runtime", reason="ExecuTorch is not installed (pip install 'edgeflow[executorch]')")
    path = tmp_path / "model.pte"
    path.write_bytes(b"not an ExecuTorch program")
    _cli_refuses(path, f"{path}: not an ExecuTorch program (a .pte FlatBuffer carries the identifier ET")


@pytest.mark.slow  # torch.export and XNNPACK lowering (~7 s)
def test_executorch_refuses_an_operator_without_an_xnnpack_lowering(tmp_path: Path) -> None:
    """A layer XNNPACK cannot take (a cumulative sum) is named in one line; no half-delegated program is written."""
    pytest.importorskip("executorch.exir", reason="ExecuTorch is not installed (pip install 'edgeflow[executorch]')")
    from edgeflow.export.executorch import export_pte

    class Cumulative(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.adaptive_avg_pool2d(torch.cumsum(torch.relu(x), dim=1), 1).flatten(1)

    with pytest.raises(ModelLoadError, match=r"^ExecuTorch: no XNNPACK lowering for aten.cumsum \("):
        export_pte(Cumulative(), input_shape=(1, 3, 8, 8), path=tmp_path / "cumsum.pte")
    assert not list(tmp_path.iterdir())


@pytest.mark.gpu
def test_tensorrt_refusing_a_file_is_one_line(tmp_path: Path, monkeypatch) -> None:
    """TensorRT's ONNX parser refuses an operator it has no importer for; it keeps its errors, the first is quoted."""
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install tensorrt on a CUDA machine)")
    import onnx
    from onnx import TensorProto, helper

    monkeypatch.setenv("EDGEFLOW_CACHE", str(tmp_path / "cache"))
    image = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph(
        [helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")], "custom", [image],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    path = tmp_path / "custom.onnx"
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=8), path)
    logger = trt.Logger(trt.Logger.ERROR)
    parser = trt.OnnxParser(trt.Builder(logger).create_network(0), logger)
    assert not parser.parse(path.read_bytes())
    line = f"TensorRT cannot load {path}: {str(parser.get_error(0)).strip().splitlines()[0].strip()[:300]}"
    with pytest.raises(ModelLoadError) as raised:
        get_backend("tensorrt").compile(artifact_from_path(path), settings=RuntimeSettings())
    assert str(raised.value) == line
    _cli_refuses(path, line, "--device", "nvidia-gpu", "--backend", "tensorrt")


@pytest.mark.slow  # two programs lowered and one profiled (~5 s)
def test_executorch_programs_say_their_precision_and_cost(tmp_path: Path) -> None:
    """The XNNPACK payload is opaque: edgeflow's programs carry their precision, params and MACs, so `edgeflow
    profile model.pte` reports them as for any other file; a program written elsewhere says "unknown"."""
    pytest.importorskip("executorch.exir", reason="ExecuTorch is not installed (pip install 'edgeflow[executorch]')")
    from edgeflow.export.executorch import export_pte, write_program
    from edgeflow.export.onnx import export_onnx
    from edgeflow.profiling.cost import artifact_cost

    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(4))
    module(torch.zeros(1, 3, 8, 8))
    cost = artifact_cost(export_onnx(module.eval(), input_shape=(1, 3, 8, 8), path=tmp_path / "m.onnx"))
    export_pte(module, input_shape=(1, 3, 8, 8), path=tmp_path / "m.pte", cost=cost)
    stats = edgeflow.profile(tmp_path / "m.pte", config={"iterations": 20, "max_seconds": 0.2, "warmup": 2})
    assert (stats.precision, stats.execution_precision, stats.backend) == ("fp32", "f32", "executorch")
    assert (stats.params, stats.macs) == (cost.params, cost.macs) and stats.macs > 0
    assert stats.latency_ms.p50 > 0 and stats.measured
    bare = torch.export.export(module.eval(), (torch.zeros(1, 3, 8, 8),))
    write_program(bare, path=tmp_path / "bare.pte", int8=False)  # as another tool writes it: no cost
    with pytest.raises(edgeflow.EdgeflowError, match="does not say its MACs and params"):
        edgeflow.profile(tmp_path / "bare.pte")
    # a .pte is quantized from the torch model, never as a file: said before anything is built
    with pytest.raises(edgeflow.EdgeflowError, match="executorch files are quantized from the torch model"):
        edgeflow.quantize(tmp_path / "m.pte")
