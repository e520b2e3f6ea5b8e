"""The whole path, end to end, on a tiny model: optimize writes a complete, honest report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import edgeflow
from edgeflow.errors import ConfigError, DataError, ShapeError, UnknownNameError
from edgeflow.recipe import load_recipe

REQUIRED_VARIANT_KEYS = {
    "name",
    "backend",
    "precision",
    "artifact",
    "accuracy",
    "latency_ms",
    "size_bytes",
    "params",
    "macs",
    "measured",
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("runs") / "quick"
    report = edgeflow.optimize("mobilenet_v3_small", device="cpu", recipe="quick", out=out)
    return report, out


def test_report_json_has_every_field(quick_run) -> None:
    _report, out = quick_run
    data = json.loads((out / "report.json").read_text())
    for key in ("model", "device", "recipe", "environment", "variants"):
        assert key in data
    assert data["model"]["name"] == "mobilenet_v3_small" and data["device"]["name"] == "cpu"
    assert data["recipe"]["name"] == "quick"
    assert data["environment"]["versions"]["openvino"] and data["environment"]["versions"]["torch"]
    names = [variant["name"] for variant in data["variants"]]
    assert names == ["openvino-fp32", "openvino-int8", "onnxruntime-fp32", "torch-fp32"]
    for variant in data["variants"]:
        assert REQUIRED_VARIANT_KEYS <= set(variant)
        assert variant["measured"] is True  # timed here, on the device's own runtime
        assert 0.0 <= variant["accuracy"]["top1"] <= 1.0 and variant["accuracy"]["split"] == "test"
        latency = variant["latency_ms"]
        assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["max"]
        assert latency["mean"] > 0 and variant["size_bytes"] > 0 and variant["params"] > 0 and variant["macs"] > 0
        assert (out / variant["artifact"]).exists()
        assert variant["execution_precision"] in {"f32", "bf16", "f16", "int8"}
    assert sum(variant["recommended"] for variant in data["variants"]) == 1


def test_int8_variant_is_a_real_int8_artifact(quick_run) -> None:
    report, out = quick_run
    by_name = {variant.name: variant for variant in report.variants}
    fp32, int8 = by_name["openvino-fp32"], by_name["openvino-int8"]
    assert int8.precision == "int8" and int8.size_bytes < 0.5 * fp32.size_bytes
    assert int8.macs == fp32.macs  # the same network
    assert int8.accuracy.runtime == "openvino"
    assert "quantized" not in fp32.lineage[-1] and "nncf-ptq" in int8.lineage[-1]


def test_parity_was_checked(quick_run) -> None:
    report, _ = quick_run
    runtimes = {parity.runtime for parity in report.parity}
    assert runtimes == {"onnxruntime (f32)", "openvino (f32)"}
    for parity in report.parity:
        assert parity.max_abs_diff < 1e-3 and parity.top1_agreement == 1.0


def test_report_pages_and_plot(quick_run) -> None:
    report, out = quick_run
    markdown = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert (out / "accuracy_latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for variant in report.variants:
        assert variant.name in markdown and variant.name in html
    assert "measured" in markdown and 'id="variants"' in html and "data:image/png;base64," in html
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_trained_model_is_saved_and_reloadable(quick_run) -> None:
    from edgeflow.models import load_checkpoint

    _report, out = quick_run
    module = load_checkpoint(out / "model.pt", arch="mobilenet_v3_small")
    assert module.classifier[-1].out_features == 10


def test_profile_and_evaluate_an_artifact_from_the_run(quick_run) -> None:
    report, out = quick_run
    int8 = next(v for v in report.variants if v.name == "openvino-int8")
    profiled = edgeflow.profile(out / int8.artifact, device="cpu", config=load_recipe("quick").profile)
    assert profiled.precision == "int8" and profiled.measured and profiled.macs == int8.macs
    stats = edgeflow.evaluate(out / int8.artifact, data="digits", max_samples=64)
    assert stats.top1 == pytest.approx(int8.accuracy.top1, abs=0.05)  # same images; bf16/threads may differ


@pytest.mark.slow  # a whole optimize run (~9 s); test_onnx_quirks runs optimize on an ONNX input in make test
def test_onnx_model_as_input(quick_run, tmp_path: Path) -> None:
    _report, out = quick_run
    report = edgeflow.optimize(str(out / "model_fp32.onnx"), recipe="quick", out=tmp_path / "from_onnx")
    assert [v.name for v in report.variants] == ["openvino-fp32", "openvino-int8", "onnxruntime-fp32"]
    assert report.model.source == "onnx" and report.training is None
    assert any("torch-fp32 skipped" in note for note in report.notes)


def test_checkpoint_as_input_with_arch(quick_run, tmp_path: Path) -> None:
    _report, out = quick_run
    with pytest.raises(ConfigError, match="--arch"):
        edgeflow.optimize(str(out / "model.pt"), recipe="quick", out=tmp_path / "x")
    with pytest.raises(DataError, match="predicts 10 classes"):
        recipe = load_recipe("quick")
        edgeflow.optimize(
            str(out / "model_fp32.onnx"),
            recipe=recipe,
            data=str(_three_class_folder(tmp_path)),
            out=tmp_path / "y",
        )
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def _three_class_folder(root: Path) -> Path:
    from PIL import Image

    folder = root / "images"
    for label in ("a", "b", "c"):
        (folder / label).mkdir(parents=True)
        for index in range(4):
            Image.new("RGB", (32, 32), color=(index * 40, 10, 10)).save(folder / label / f"{index}.png")
    return folder


def test_user_mistakes_fail_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="unknown model"):
        edgeflow.optimize("mobilenet_v9", recipe="quick", out=tmp_path / "a")
    with pytest.raises(UnknownNameError, match="unknown device"):
        edgeflow.optimize("mobilenet_v3_small", device="toaster", recipe="quick", out=tmp_path / "a")
    with pytest.raises(ShapeError, match="vgg11"):
        recipe = load_recipe("quick")
        edgeflow.optimize("vgg11", recipe=recipe, out=tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_trained_weights_survive_a_failure_after_training(tmp_path: Path, monkeypatch) -> None:
    """Training can take an hour: when a later step fails, the weights move beside the report folder (whole,
    loadable as a checkpoint) and the error says where; the report folder itself is not written."""
    import edgeflow.workflow as workflow
    from edgeflow.models.checkpoint import load_checkpoint

    def crash(*args, **kwargs):
        raise RuntimeError("the runtime crashed while quantizing")

    monkeypatch.setattr(workflow, "build_variant", crash)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="crashed") as caught:
        edgeflow.optimize("mobilenet_v3_small", recipe="quick", out=out)
    kept = tmp_path / "run.trained.pt"
    assert [path.name for path in tmp_path.iterdir()] == ["run.trained.pt"]  # no report folder, no staging
    assert caught.value.__notes__ == [
        f"the weights trained here are kept in {kept}: give it as the model (with --arch mobilenet_v3_small) "
        "to go on without training"
    ]
    load_checkpoint(kept, arch="mobilenet_v3_small")


def test_html_escapes_names_from_inputs(quick_run) -> None:
    from edgeflow.report.render import render_html

    report, out = quick_run
    hostile = report.model_copy(deep=True)
    hostile.model.name = "<script>alert(1)</script>"
    hostile.notes = ["error in <img src=x onerror=alert(1)>"]
    html = render_html(hostile, plot_path=out / "accuracy_latency.png")
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html


# Keys report.json gained after the layout move (tests/data/report_keys/quick.json): the class order, the
# preprocessing, the input shape and what the outputs are (issue 15), the photo-training keys and the
# squeeze-and-excitation setting of INT8 (issue 16), the LiteRT input layout (issue 18), pretrained weights and
# fine-tuning (issue 29). Nothing was moved or removed.
ADDED_SINCE_THE_LAYOUT_MOVE = [
    "/data/classes", "/data/output_indices", "/data/preprocess", "/model/input_shape", "/model/outputs",
    "/parity/[]/outputs", "/recipe/class_map", "/recipe/labels", "/recipe/preprocess", "/recipe/model/input_shape",
    "/recipe/model/num_classes", "/recipe/train/augment", "/recipe/train/bf16", "/recipe/train/channels_last",
    "/recipe/train/schedule", "/recipe/train/warmup_epochs", "/recipe/variants/[]/quantize/squeeze_excitation",
    "/variants/[]/agreement/outputs", "/variants/[]/quantization/settings/squeeze_excitation",
    "/recipe/profile/busy_retries", "/recipe/profile/busy_share", "/variants/[]/latency_ms/state", "/recipe/ray",
    "/recipe/variants/[]/quantize/reduce_range", "/recipe/export/litert_layout",
    # issue 29: the weights a model started from, fine-tuning, time budgets, each class's top-1
    "/model/new_head", "/model/weights", "/model/weights_notes", "/recipe/finetune", "/recipe/model/weights",
    "/recipe/train/minutes", "/training/head_epochs", "/training/new_head", "/training/resolution",
    "/training/started_from", "/variants/[]/accuracy/per_class_top1",
    # issue 31: layers kept in float, mixed precision from measured sensitivity
    "/recipe/variants/[]/mixed_precision", "/recipe/variants/[]/quantize/float_layers",
    "/variants/[]/quantization/mixed_precision",
    # issue 32: a device emulated on this host (its timings labelled emulated), the device's build beside this host's
    "/device/emulated", "/variants/[]/emulated", "/variants/[]/host_build",
    # how many holdout images chose the recommendation (a slow device scores the test split whole, less holdout)
    "/recipe/evaluate/holdout_samples", "/variants/[]/holdout_samples",
]  # fmt: skip


def test_report_json_keys_are_those_written_before_the_layout_move(quick_run) -> None:
    """The key tree of the quick run's report.json holds every key the code before the package layout moved
    wrote for the same run (tests/data/report_keys/quick.json), where it was; the keys added since are listed."""
    from report_keys import differences, key_tree

    _report, out = quick_run
    before = json.loads((Path(__file__).parent / "data" / "report_keys" / "quick.json").read_text())
    found = differences(before, key_tree(json.loads((out / "report.json").read_text())))
    assert sorted(found) == sorted(f"{key}: only after" for key in ADDED_SINCE_THE_LAYOUT_MOVE)


def test_key_tree_comparison_sees_a_moved_key() -> None:
    from report_keys import differences, key_tree

    before = key_tree({"variants": [{"latency_ms": {"p50": 1.0}, "macs": 3}], "notes": ["a"]})
    assert before == {"notes": {"[]": ""}, "variants": {"[]": {"latency_ms": {"p50": ""}, "macs": ""}}}
    after = key_tree({"variants": [{"latency": {"p50": 1.0}, "macs": 3}], "notes": []})
    assert differences(before, after) == ["/variants/[]/latency_ms: only before", "/variants/[]/latency: only after"]
