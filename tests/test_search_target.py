"""The search judged on the file that ships: which recipe variant it times, how a candidate becomes that file
(INT8 by the variant's method, calibrated on synthetic inputs), and the lookup table kept per backend and
precision. The whole INT8 search runs with the slow tests."""

from __future__ import annotations

import json

import pytest
import torch
from test_search import RECIPE as TINY_SEARCH  # the tiny search recipe, one home
from torch import nn

import edgeflow
from edgeflow.backends import artifact_from_path, get_backend, is_quantized_artifact
from edgeflow.device import load_device
from edgeflow.errors import ConfigError
from edgeflow.latency.table import default_table_path
from edgeflow.latency.timer import Timer
from edgeflow.netadapt.run import search_build, search_target
from edgeflow.profiling.loop import ProfileConfig
from edgeflow.recipe import Recipe, VariantSpec
from edgeflow.variants import TIMING_CALIBRATION, ShippedBuild

SHAPE = (1, 3, 24, 24)
TIMING = ProfileConfig(warmup=2, iterations=20, max_seconds=0.05, min_iterations=5)


class Tiny(nn.Sequential):
    def __init__(self) -> None:
        torch.manual_seed(0)
        super().__init__(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU(), nn.Conv2d(16, 24, 1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10),
        )  # fmt: skip
        self.eval()


def _recipe(*variants: dict, target: str | None = None) -> Recipe:
    spec = {**TINY_SEARCH, "variants": list(variants)}
    spec["search"] = {**TINY_SEARCH["search"], "target": target}
    return Recipe.model_validate(spec)


FP32 = {"name": "openvino-fp32", "backend": "openvino"}
INT8 = {"name": "onnxruntime-int8", "backend": "onnxruntime", "precision": "int8"}


def test_the_target_is_the_first_int8_variant_the_device_runs_unless_named():
    device = load_device("cpu")
    assert search_target(_recipe(FP32, INT8), device).name == "onnxruntime-int8"
    assert search_target(_recipe(FP32), device).name == "openvino-fp32"
    assert search_target(_recipe(FP32, INT8, target="openvino-fp32"), device).name == "openvino-fp32"
    with pytest.raises(ConfigError, match=r"search target 'litert-int8' is not a variant .*openvino-fp32"):
        search_target(_recipe(FP32, INT8, target="litert-int8"), device)
    with pytest.raises(ConfigError, match="has no tensorrt runtime"):
        search_target(_recipe(FP32, {"name": "trt", "backend": "tensorrt"}, target="trt"), device)
    # a float target on a runtime that reads ONNX times the float ONNX as it is; anything else builds its file
    assert search_build(search_target(_recipe(FP32), device), seed=0) is None
    assert search_build(search_target(_recipe(FP32, INT8), device), seed=0).method == "ort-static"


def test_methods_that_choose_by_accuracy_are_timed_as_the_post_training_quantization_they_start_from():
    auto = ShippedBuild(VariantSpec(name="a", backend="openvino", precision="int8", quantize={"method": "auto"}))
    assert auto.method == "nncf-ptq" and auto.context.startswith("precision=int8|method=nncf-ptq|settings=")
    control = VariantSpec(name="c", backend="openvino", precision="int8", quantize={"method": "nncf-accuracy-control"})
    assert ShippedBuild(control).method == "nncf-ptq"
    searched = ShippedBuild(VariantSpec(name="s", backend="onnxruntime", precision="int8"))  # calibrate_method auto
    timing = searched.timing_variant().quantize
    assert timing.method == "ort-static" and timing.calibrate_method == "minmax"
    assert timing.subset_size == TIMING_CALIBRATION
    fastest = VariantSpec(name="f", backend="openvino", precision="int8", quantize={"preset": "fastest"})
    assert ShippedBuild(fastest).timing_variant().quantize.preset == "auto"
    assert ShippedBuild(VariantSpec(name="f", backend="litert")).method is None
    # a method never in auto is timed as itself: dynamic quantization is another graph than static QDQ
    dynamic = VariantSpec(name="d", backend="onnxruntime", precision="int8", quantize={"method": "ort-dynamic"})
    assert ShippedBuild(dynamic).method == "ort-dynamic"
    # layers a recipe keeps in float are not in a block cut from the network: timing builds leave them out
    kept = VariantSpec(name="k", backend="onnxruntime", precision="int8", quantize={"float_layers": ["/x/Conv"]})
    assert ShippedBuild(kept).timing_variant().quantize.float_layers == []
    # every setting that changes the graph changes the table's context
    per_tensor = VariantSpec(name="p", backend="onnxruntime", precision="int8", quantize={"per_channel": False})
    assert ShippedBuild(per_tensor).context != searched.context


@pytest.mark.parametrize(
    "backend",
    [
        "onnxruntime",
        "openvino",
        pytest.param("litert", marks=pytest.mark.slow),
        pytest.param("executorch", marks=pytest.mark.slow),
    ],
)
def test_a_candidate_is_timed_as_the_int8_file_its_variant_ships(backend, tmp_path):
    missing = get_backend(backend).unavailable()
    if missing:
        pytest.skip(missing)
    device = load_device("cpu")
    build = ShippedBuild(VariantSpec(name=f"{backend}-int8", backend=backend, precision="int8"))
    artifact = build(Tiny(), SHAPE, folder=tmp_path)
    assert artifact.precision == "int8" and is_quantized_artifact(artifact) is True
    assert artifact.format in get_backend(backend).formats
    float_timer = Timer(device, backend, settings=device.runtime, profile=TIMING, workdir=tmp_path)
    timer = Timer(device, backend, settings=device.runtime, profile=TIMING, workdir=tmp_path, build=build)
    assert timer.time_module(Tiny(), SHAPE) > 0 and timer.cost.measurements == 1
    # the table is kept per backend and precision: an INT8 table never answers for float, nor the reverse
    assert timer.precision == "int8" and f"method={build.method}|settings=" in timer.context()
    assert default_table_path(tmp_path, timer, SHAPE) != default_table_path(tmp_path, float_timer, SHAPE)
    assert f"-{backend}-int8-" in default_table_path(tmp_path, timer, SHAPE).name
    assert not list(tmp_path.glob(".timing-*"))  # every timing build is removed


@pytest.mark.slow  # a whole search on this CPU, every candidate quantized
def test_the_search_judges_and_ships_the_int8_target(cache, tmp_path):
    recipe = _recipe(FP32, INT8)
    recipe.search.max_iterations = 1
    recipe.search.baselines.widths = [0.5]
    recipe.search.baselines.resolutions = []
    report = edgeflow.search("mobilenet_v3_small", recipe=recipe, out=tmp_path / "run")
    assert report.target["variant"] == "onnxruntime-int8" and report.target["precision"] == "int8"
    assert report.target["timing_method"] == "ort-static" and report.backend == "onnxruntime"
    for point in report.points:  # the start, the adapted model and the baseline: each the INT8 file that ships
        file = tmp_path / "run" / point.artifact
        assert is_quantized_artifact(artifact_from_path(file)) is True, point.name
    tables = list((cache / "latency-tables").glob("cpu-onnxruntime-int8-*.json"))
    assert len(tables) == 1 and "method=ort-static" in json.loads(tables[0].read_text())["context"]
    assert (
        "Target: variant onnxruntime-int8 (onnxruntime int8, quantized by ort-static"
        in (tmp_path / "run" / "search.md").read_text()
    )


def test_the_step_doubles_while_the_widths_in_between_run_slower_per_multiply_add():
    from edgeflow.latency.steps import favoured_step, probe_widths

    widths = probe_widths(8)
    assert widths == [32, 40, 48, 56, 64, 72, 80, 88, 96]
    flat = dict.fromkeys(widths, 1.0)
    assert favoured_step(flat, divisor=8) == (8, {16: 1.0})
    # odd multiples of 8 cost 1.5x their neighbours (ONNX Runtime's INT8 here): 16, but 48 and 80 cost no more
    sixteen = {width: 1.5 if width % 16 else 1.0 for width in widths}
    step, ratios = favoured_step(sixteen, divisor=8)
    assert step == 16 and ratios == {16: 1.5, 32: 1.0}
    # and where multiples of 16 that are not of 32 are slow too, 32
    thirty_two = {width: 1.0 if width % 32 == 0 else 1.3 if width % 16 == 0 else 1.6 for width in widths}
    assert favoured_step(thirty_two, divisor=8)[0] == 32
    assert favoured_step({**sixteen, 56: 1.05}, divisor=8)[0] == 16  # the median, not one width, decides


@pytest.mark.slow  # nine INT8 probes built and timed in turn
def test_the_channel_step_is_measured_through_the_targets_build_and_kept(tmp_path):
    from edgeflow.latency.steps import measure_channel_step

    device = load_device("cpu")
    build = ShippedBuild(VariantSpec(name="onnxruntime-int8", backend="onnxruntime", precision="int8"))
    timer = Timer(device, "onnxruntime", settings=device.runtime, profile=TIMING, workdir=tmp_path, build=build)
    stats = measure_channel_step(timer, divisor=8, side=16, rounds=2, cache=tmp_path)
    assert stats.widths == [32, 40, 48, 56, 64, 72, 80, 88, 96] and len(stats.p50_ms) == 9
    assert stats.step in (8, 16, 32) and "16" in stats.ratios and "method=ort-static" in stats.context
    assert all(ms > 0 for ms in stats.p50_ms) and timer.cost.measurements == 1  # one in-turn timing of 9 probes
    again = measure_channel_step(timer, divisor=8, side=16, rounds=2, cache=tmp_path)
    assert again == stats and timer.cost.measurements == 1  # read from the cache, nothing timed
    assert len(list(tmp_path.glob("channel-steps-cpu-onnxruntime-int8-*.json"))) == 1


def test_an_unfinished_search_resumes_only_on_its_target_and_a_finished_one_may_be_compared_as_another(tmp_path):
    from edgeflow.netadapt.run import _check_target, search_target_record
    from edgeflow.netadapt.state import Checkpoint, SearchState
    from edgeflow.progress import Progress

    device = load_device("cpu")
    int8 = search_target_record(search_target(_recipe(FP32, INT8), device), seed=0)
    fp32 = search_target_record(search_target(_recipe(FP32), device), seed=0)
    checkpoint = Checkpoint(tmp_path)
    state = SearchState(fingerprint="f")
    _check_target(state, int8, checkpoint=checkpoint, progress=Progress.silent())
    assert state.target == int8 and json.loads(checkpoint.path.read_text())["target"] == int8
    with pytest.raises(ConfigError, match=r"is a search on onnxruntime-int8 \(onnxruntime int8\); resume it with"):
        _check_target(state, fp32, checkpoint=checkpoint, progress=Progress.silent())
    state.phase = "done"
    _check_target(state, fp32, checkpoint=checkpoint, progress=Progress.silent())
    assert state.target == int8  # what it searched on stays recorded
