"""The CLI: listings, --json on stdout, and one clear line with exit code 2 for every user mistake."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeflow.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def assert_one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert pattern in lines[0], lines[0]
    assert "Traceback" not in result.output


def test_listings_as_json() -> None:
    models = json.loads(invoke("models", "--json").output)
    names = {model["name"] for model in models}
    assert {"mobilenet_v1", "mobilenet_v3_large", "resnet18", "efficientnet_b0", "shufflenet_v2_x1_0"} <= names
    assert "mobilenetv3" in next(m for m in models if m["name"] == "mobilenet_v3_large")["aliases"]
    names = [device["name"] for device in json.loads(invoke("devices", "--json").output)]
    assert {"cpu", "jetson-orin-nano", "jetson-agx-orin", "raspberry-pi-5", "pixel-8", "nvidia-gpu"} <= set(names)
    assert json.loads(invoke("devices", "show", "jetson").output)["name"] == "jetson-orin-nano"
    assert "demo" in {recipe["name"] for recipe in json.loads(invoke("recipes", "--json").output)}
    assert "mobilenet_v3_large" in invoke("models").output


def test_export_and_profile_and_eval(tmp_path: Path) -> None:
    result = invoke(
        "export",
        "mobilenet_v3_small",
        "--format",
        "openvino",
        "--resolution",
        "32",
        "--width",
        "0.5",
        "--num-classes",
        "10",
        "--out",
        str(tmp_path),
        "--json",
    )
    assert result.exit_code == 0, result.output
    exported = json.loads(result.stdout)
    xml = Path(exported["path"])
    assert xml.suffix == ".xml" and xml.with_suffix(".bin").exists() and exported["input_shape"] == [1, 3, 32, 32]
    assert not list(tmp_path.glob("*.onnx"))  # the intermediate ONNX is not left behind

    result = invoke("profile", str(xml), "--json", "-n", "20", "-t", "1", "--warmup", "2")
    assert result.exit_code == 0, result.output
    profiled = json.loads(result.stdout)
    assert profiled["measured"] is True and profiled["latency_ms"]["iterations"] == 20
    assert profiled["backend"] == "openvino" and profiled["execution_precision"] in {"f32", "bf16"}

    result = invoke("profile", str(xml), "-n", "5", "-t", "1")
    assert result.exit_code == 0 and "p50" in result.output and "measured" in result.output

    result = invoke("eval", str(xml), "--data", "digits", "--max-samples", "20", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["samples"] == 20


def test_unknown_names() -> None:
    assert_one_line_error(invoke("optimize", "mobilenet_v9"), "unknown model 'mobilenet_v9'")
    assert_one_line_error(invoke("optimize", "mobilenetv3", "--device", "jetsn"), "unknown device 'jetsn'")
    assert_one_line_error(invoke("optimize", "mobilenetv3", "--recipe", "nope"), "unknown recipe 'nope'")
    assert_one_line_error(invoke("eval", "x.onnx", "--data", "mnist"), "not found")


def test_bad_files(tmp_path: Path) -> None:
    fake_onnx = tmp_path / "fake.onnx"
    fake_onnx.write_text("not a model")
    assert_one_line_error(invoke("profile", str(fake_onnx)), "fake.onnx")
    assert_one_line_error(invoke("optimize", str(fake_onnx), "--out", str(tmp_path / "o")), "not a valid ONNX model")

    not_checkpoint = tmp_path / "weights.pt"
    not_checkpoint.write_bytes(os.urandom(256))
    result = invoke("optimize", str(not_checkpoint), "--arch", "mobilenet_v3_small", "--out", str(tmp_path / "o"))
    assert_one_line_error(result, "weights.pt")

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"state_dict": Payload()}))
    result = invoke("optimize", str(evil), "--arch", "mobilenet_v3_small", "--out", str(tmp_path / "o"))
    assert_one_line_error(result, "evil.pt")
    assert not marker.exists()
    assert not (tmp_path / "o").exists()


def test_bad_recipe_file(tmp_path: Path) -> None:
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("name: mine\nvariants: [{name: a, backend: openvino}]\nprofile: {iterashuns: 3}\n")
    assert_one_line_error(
        invoke("optimize", "mobilenetv3", "--recipe", str(recipe)), "unknown key 'profile.iterashuns'"
    )


def test_unwritable_output(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("I am a file")
    result = invoke("optimize", "mobilenet_v3_small", "--recipe", "quick", "--out", str(blocker / "sub" / "out"))
    assert_one_line_error(result, "cannot create output folder")
    result = invoke("export", "mobilenet_v3_small", "--out", str(blocker))
    assert_one_line_error(result, "cannot create output folder")


def test_wrong_resolution(tmp_path: Path) -> None:
    assert_one_line_error(invoke("export", "mobilenet_v3_small", "--resolution", "16", "--out", str(tmp_path)), "16")
    assert_one_line_error(invoke("export", "resnet18", "--width", "0.5", "--out", str(tmp_path)), "width multiplier")


def test_real_entry_point_prints_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "fake.xml"
    fake.write_text("<net>")
    fake.with_suffix(".bin").write_bytes(b"")
    completed = subprocess.run(
        [sys.executable, "-m", "edgeflow.cli", "profile", str(fake)], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert completed.stderr.count("\n") == 1 and completed.stderr.startswith("error: ")


def _commands() -> list[tuple[str, ...]]:
    """Every command and sub-command the CLI registers, read from typer's click group."""
    import typer.main

    def walk(command, prefix: tuple[str, ...]):
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            yield (*prefix, name)
            yield from walk(sub, (*prefix, name))

    return list(walk(typer.main.get_command(app), ()))


def test_the_help_test_sees_every_command() -> None:
    commands = set(_commands())
    top = {"optimize", "search", "export", "profile", "quantize", "eval", "models", "devices", "nightly", "recipes"}
    assert {(name,) for name in top} <= commands
    assert {("devices", name) for name in ("list", "show", "check", "calibrate")} <= commands


@pytest.mark.parametrize("command", _commands(), ids=" ".join)
def test_every_command_has_help(command: tuple[str, ...]) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert f"Usage: root {' '.join(command)} " in " ".join(result.output.split()), result.output


def test_multipliers_on_export(tmp_path: Path) -> None:
    result = invoke("export", "mobilenet_v2", "--rho", "0.5", "--width", "0.75", "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    exported = json.loads(result.stdout)
    assert exported["input_shape"] == [1, 3, 112, 112]  # 224 x 0.5
    assert Path(exported["path"]).name == "mobilenet_v2_w0.75.onnx"
    both = invoke("export", "mobilenet_v2", "--rho", "0.5", "--resolution", "100", "--out", str(tmp_path))
    assert_one_line_error(both, "not both")


@pytest.mark.slow  # a whole optimize run through the CLI (the API's is in test_api)
def test_optimize_json_keeps_stdout_clean(tmp_path: Path) -> None:
    exported = invoke(
        "export", "mobilenet_v3_small", "--resolution", "32", "--num-classes", "10", "--out", str(tmp_path), "--json"
    )
    onnx_path = json.loads(exported.stdout)["path"]
    completed = subprocess.run(
        [sys.executable, "-m", "edgeflow.cli", "optimize", onnx_path, "--recipe", "quick", "--json",
         "--out", str(tmp_path / "run")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)  # NNCF's progress bars went to stderr, not into the JSON
    assert report["model"]["source"] == "onnx"
    assert (tmp_path / "run" / "report.json").exists()


def test_profile_plain_output_keeps_size_params_and_macs(tiny_artifacts) -> None:
    """With memory known (always, locally), the plain line still gives size, params and MACs before it
    (an implicit string concatenation once bound before the conditional and dropped them)."""
    result = invoke("profile", str(tiny_artifacts["onnx"].path), "--device", "cpu", "-n", "20", "-t", "1")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("size "))
    assert "MiB, " in line and "M params, " in line and "M MACs; memory: load peak +" in line, line


def test_export_refuses_a_zero_resolution(tmp_path: Path) -> None:
    result = invoke("export", "mobilenet_v3_small", "--resolution", "0", "--format", "onnx", "--out", str(tmp_path))
    assert_one_line_error(result, "export options: key 'resolution': Input should be greater than or equal to 8")
    assert not list(tmp_path.iterdir())  # nothing written


def test_profile_refuses_zero_iterations(tiny_artifacts) -> None:
    result = invoke("profile", str(tiny_artifacts["onnx"].path), "--device", "cpu", "-n", "0")
    assert_one_line_error(result, "iterations")


def _tiny_onnx(folder: Path, *, num_classes: int) -> Path:
    from conftest import TinyNet

    from edgeflow.export.onnx import export_onnx

    return export_onnx(TinyNet(num_classes).eval(), input_shape=(1, 3, 16, 16), path=folder / "tiny.onnx").path


def test_eval_scores_every_image_of_a_folder_with_split_all(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    for index, name in enumerate(("cat", "dog", "emu")):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for number in range(7):
            pixels = np.full((20, 20, 3), 40 * index + number, dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "pets" / name / f"{number}.png")
    model = _tiny_onnx(tmp_path, num_classes=3)
    whole = invoke("eval", str(model), "--data", str(tmp_path / "pets"), "--split", "all", "--json")
    assert whole.exit_code == 0, whole.output
    assert json.loads(whole.stdout)["samples"] == 21 and json.loads(whole.stdout)["split"] == "all"
    test = json.loads(invoke("eval", str(model), "--data", str(tmp_path / "pets"), "--json").stdout)
    assert test["samples"] == 3 and test["split"] == "test"  # 15% of each class of 7
    plain = invoke("eval", str(model), "--data", str(tmp_path / "pets"), "--split", "all")
    assert "on 21 images (all of the data)" in " ".join(plain.output.split())


def test_eval_refuses_a_model_whose_outputs_are_not_the_data_classes(tmp_path: Path) -> None:
    """12 outputs scored against digits' 10 classes would be a number that means nothing: one line instead."""
    model = _tiny_onnx(tmp_path, num_classes=12)
    result = invoke("eval", str(model), "--data", "digits")
    assert_one_line_error(result, "the model has 12 outputs but digits has 10 classes")
    quantize = invoke("quantize", str(model), "--data", "digits", "--out", str(tmp_path / "q"))
    assert_one_line_error(quantize, "the model has 12 outputs but digits has 10 classes")
    assert not (tmp_path / "q").exists() or not list((tmp_path / "q").iterdir())


def test_eval_of_a_model_with_more_outputs_through_a_class_map(tmp_path: Path) -> None:
    """A 12-output model on 3 folders: refused without a map; with one, top-1 over the mapped outputs (checked
    against the logits computed here) and over every output beside it."""
    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    from edgeflow.data import load_data

    for index, name in enumerate(("cat", "dog", "emu")):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for number in range(7):
            pixels = np.random.default_rng(10 * index + number).integers(0, 255, (20, 20, 3)).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "pets" / name / f"{number}.png")
    model = _tiny_onnx(tmp_path, num_classes=12)
    assert_one_line_error(invoke("eval", str(model), "--data", str(tmp_path / "pets")), "has 12 outputs")
    class_map = tmp_path / "classes.tsv"
    class_map.write_text("folder\toutput\ncat\t7\ndog\t2\nemu\t11\n")
    result = invoke("eval", str(model), "--data", str(tmp_path / "pets"), "--class-map", str(class_map), "--split",
                    "all", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    splits = load_data(str(tmp_path / "pets"), resolution=16, class_map={"cat": 7, "dog": 2, "emu": 11})
    session = ort.InferenceSession(str(model))
    every = splits.every_image()
    logits = np.concatenate([session.run(None, {"input": image[None].numpy()})[0] for image, _ in every])
    labels = every.labels.numpy()
    mapped = logits[:, [7, 2, 11]].argmax(axis=1) == labels
    assert stats["samples"] == 21 and stats["outputs"] == 12
    assert stats["top1"] == pytest.approx(mapped.mean())
    assert stats["top1_all_outputs"] == pytest.approx((logits.argmax(axis=1) == np.array([7, 2, 11])[labels]).mean())
    both = invoke("eval", str(model), "--data", str(tmp_path / "pets"), "--class-map", str(class_map), "--labels",
                  str(class_map))  # fmt: skip
    assert_one_line_error(both, "not both")
    too_far = tmp_path / "far.tsv"
    too_far.write_text("cat\t7\ndog\t2\nemu\t40\n")
    assert_one_line_error(
        invoke("eval", str(model), "--data", str(tmp_path / "pets"), "--class-map", str(too_far)), "output 40"
    )


@pytest.mark.slow  # reads Imagenette's 13,394 photos twice
def test_eval_a_1000_output_model_on_imagenette_val_through_its_class_map(tmp_path: Path) -> None:
    """Imagenette's own classes.tsv (../shared) maps its 10 wnid folders to ImageNet-1k outputs; a 1,000-output
    model is scored on the whole val split through it (and refused without it)."""
    root = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenette2-128"
    if not root.is_dir():
        pytest.skip(f"the shared Imagenette folder is missing: {root}")
    model = _tiny_onnx(tmp_path, num_classes=1000)
    refused = invoke("eval", str(model), "--data", str(root))
    assert_one_line_error(refused, "the model has 1000 outputs but")
    result = invoke("eval", str(model), "--data", str(root), "--class-map", str(root / "classes.tsv"), "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["samples"] == 3925 and stats["split"] == "test" and stats["outputs"] == 1000  # val, every image
    assert 0 <= stats["top1_all_outputs"] <= stats["top1"] <= 1


@pytest.fixture(scope="module")
def qoperator_onnx(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny net as float ONNX and as ONNX Runtime's QOperator INT8 (QLinearConv, QGemm: OpenVINO reads neither)."""
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    folder = tmp_path_factory.mktemp("qoperator")
    floats = _tiny_onnx(folder, num_classes=10)

    class Images(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(np.random.default_rng(0).standard_normal((8, 1, 3, 16, 16)).astype(np.float32))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch}

    quantized = folder / "tiny_qoperator.onnx"
    quantize_static(str(floats), str(quantized), Images(), quant_format=QuantFormat.QOperator)
    return floats, quantized


def test_an_already_quantized_qoperator_onnx_goes_to_the_runtime_that_reads_it(qoperator_onnx) -> None:
    floats, quantized = qoperator_onnx
    profiled = invoke("profile", str(quantized), "--device", "cpu", "-n", "20", "-t", "1", "--json")
    assert profiled.exit_code == 0, profiled.output
    data = json.loads(profiled.stdout)
    assert data["backend"] == "onnxruntime" and data["precision"] == "int8" and data["measured"] is True
    reference = json.loads(invoke("profile", str(floats), "--device", "cpu", "-n", "20", "-t", "1", "--json").stdout)
    assert data["macs"] == reference["macs"] == 13904  # counted on the ONNX graph: TinyNet's MACs by hand
    evaluated = invoke("eval", str(quantized), "--data", "digits", "--json")
    assert evaluated.exit_code == 0 and json.loads(evaluated.stdout)["runtime"] == "onnxruntime", evaluated.output
    assert_one_line_error(
        invoke("eval", str(quantized), "--data", "digits", "--backend", "openvino"),
        "openvino: -- No conversion rule found for operations",
    )
    refused = invoke("eval", str(quantized), "--data", "digits", "--backend", "openvino")
    assert "try --backend onnxruntime" in refused.output
    assert_one_line_error(invoke("quantize", str(quantized), "--data", "digits"), "is already quantized")


@pytest.mark.slow  # starts an optimize run (model, data, training) to stop it
def test_sigterm_stops_optimize_without_leaving_folders(tmp_path: Path) -> None:
    """A run stopped by SIGTERM (a scheduler's stop) goes through its cleanup like Ctrl-C: one line, exit 143, no
    output folder and no hidden staging folder left beside it."""
    import signal
    import time

    process = subprocess.Popen(
        [sys.executable, "-m", "edgeflow.cli", "optimize", "mobilenet_v3_small", "--recipe", "quick",
         "--out", str(tmp_path / "run")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".run.staging-*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process.poll() is None, "the run ended before it could be stopped: the test proves nothing"
    assert list(tmp_path.glob(".run.staging-*")), "no staging folder appeared within 120 s"
    time.sleep(1.0)  # into the run's work (training), not its first line
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    assert stderr.strip().splitlines()[-1] == "error: stopped by SIGTERM; nothing was written"
    assert "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []  # neither run/ nor .run.staging-*


def _photos(root: Path, counts: dict[str, int]) -> Path:
    """``root/<class>/`` with ``counts[class]`` 8x8 PNGs of random pixels."""
    import numpy as np
    from PIL import Image

    for index, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for number in range(count):
            pixels = np.random.default_rng(10 * index + number).integers(0, 255, (8, 8, 3)).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{number}.png")
    return root


def test_eval_scores_a_class_folder_holding_a_gif(tmp_path: Path) -> None:
    """A published set has a GIF in a class folder: PIL reads it, so it is scored; a file PIL cannot read is
    one line naming it."""
    from PIL import Image

    photos = _photos(tmp_path / "photos", {"cat": 3, "dog": 3})
    Image.new("RGB", (8, 8), (0, 0, 250)).save(photos / "cat" / "n0153282900000293.gif")
    model = _tiny_onnx(tmp_path, num_classes=2)
    result = invoke("eval", str(model), "--data", str(photos), "--split", "all", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["samples"] == 7
    every = ("eval", str(model), "--data", str(photos), "--split", "all")
    (photos / "dog" / "scan.tif").write_bytes(b"II*\x00 a TIFF header, then nothing")
    assert_one_line_error(invoke(*every), f"cannot read image {photos}/dog/scan.tif")
    (photos / "dog" / "scan.tif").unlink()
    (photos / "dog" / "notes").write_text("taken at the zoo")
    assert_one_line_error(invoke(*every), f"{photos}/dog/notes is not an image")


def test_eval_of_val_reads_no_image_of_train(tmp_path: Path) -> None:
    """eval scores val/ of train/ + val/: a corrupt image in train/ stops nothing (every split still finds it)."""
    root = tmp_path / "set"
    _photos(root / "train", {"cat": 4, "dog": 4})
    _photos(root / "val", {"cat": 2, "dog": 2})
    (root / "train" / "cat" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n cut off by a failed download")
    model = _tiny_onnx(tmp_path, num_classes=2)
    result = invoke("eval", str(model), "--data", str(root), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["samples"] == 4 and json.loads(result.stdout)["split"] == "test"
    assert_one_line_error(
        invoke("eval", str(model), "--data", str(root), "--split", "all"), f"cannot read image {root}/train/cat/corrupt"
    )


def test_eval_through_labels_naming_outputs_without_a_folder(tmp_path: Path) -> None:
    """Labels naming a 2-output model's outputs, and one class folder: that folder is scored as its output of
    the two (a class map covering one output alike); a folder the labels do not name is one line saying so."""
    import numpy as np
    import onnxruntime as ort

    from edgeflow.data import load_data

    photos = _photos(tmp_path / "photos", {"cat": 5})
    model = _tiny_onnx(tmp_path, num_classes=2)
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    result = invoke("eval", str(model), "--data", str(photos), "--labels", str(labels), "--split", "all", "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    session = ort.InferenceSession(str(model))
    every = load_data(str(photos), resolution=16).every_image()
    logits = np.concatenate([session.run(None, {"input": image[None].numpy()})[0] for image, _ in every])
    assert stats["samples"] == 5 and stats["outputs"] == 2 and stats["top1"] == 1.0  # one class: one output
    assert stats["top1_all_outputs"] == pytest.approx(float(np.mean(logits.argmax(axis=1) == 0)))
    tsv = tmp_path / "classes.tsv"
    tsv.write_text("folder\toutput\ncat\t0\n")
    mapped = invoke("eval", str(model), "--data", str(photos), "--class-map", str(tsv), "--split", "all", "--json")
    assert mapped.exit_code == 0, mapped.output
    assert json.loads(mapped.stdout) == stats
    quantized = invoke("quantize", str(model), "--data", str(photos), "--class-map", str(tsv), "--method",
                       "ort-static", "--backend", "onnxruntime", "--subset-size", "2", "--out", str(tmp_path / "q"),
                       "--json")  # fmt: skip
    assert quantized.exit_code == 0, quantized.output  # quantize takes the same map as a map
    assert json.loads(quantized.stdout)["accuracy"]["samples"] == 1  # the one test image of the one folder
    _photos(photos, {"cow": 3})
    assert_one_line_error(
        invoke("eval", str(model), "--data", str(photos), "--labels", str(labels)),
        f"class folder {photos}/cow is not in {labels} (which names: cat, dog)",
    )
    too_many = tmp_path / "three.txt"
    too_many.write_text("cat\ncow\ndog\n")
    _photos(photos, {"dog": 3})
    assert_one_line_error(
        invoke("eval", str(model), "--data", str(photos), "--labels", str(too_many)),
        f"{too_many} sends class 'dog' of {photos} to output 2 but the model has 2 outputs (0 to 1)",
    )
    exact = tmp_path / "two.txt"
    exact.write_text("cat\ncow\n")
    shutil.rmtree(photos / "dog")
    plain = invoke("eval", str(model), "--data", str(photos), "--labels", str(exact), "--json")
    assert plain.exit_code == 0 and "outputs" not in json.loads(plain.stdout), plain.output
