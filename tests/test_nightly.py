"""`edgeflow nightly` end to end on tiny cells: two real nights on this CPU, a failing cell carried past,
the history, findings that say what changed, the CLI's exit codes and its refusals of bad input, and the
HTML page opened in a real headless Chromium."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from nightly_recipe import nightly_recipe as _recipe
from typer.testing import CliRunner

from edgeflow.cli import app
from edgeflow.nightly import History
from edgeflow.nightly.history import CellRecord

runner = CliRunner()


@pytest.mark.slow  # two real nights of tiny cells (~40 s, the session's two_nights): with the slow tests
def test_a_night_carries_on_past_a_failing_cell(two_nights: dict) -> None:
    first = two_nights["first"]
    assert [(c.model.split("/")[-1], c.precision, c.status) for c in first.cells] == [
        ("mobilenet_v3_small", "fp32", "ok"), ("mobilenet_v3_small", "int8", "ok"),
        ("<i>broken&amp;<i>.pt", "fp32", "failed"), ("<i>broken&amp;<i>.pt", "int8", "failed"),
    ]  # fmt: skip
    ok, failed = first.cells[0], first.cells[2]
    assert ok.measured and ok.p50_ms > 0 and ok.samples >= 10 and 0 <= ok.top1 <= 1 and ok.slowest_layers
    assert len(ok.round_p50_ms) == 2 and ok.timing.startswith("in turn with the night's other cells")
    assert "broken" in failed.error and "\n" not in failed.error
    night = two_nights["out"] / "night-1"
    assert {"night.json", "night.md", "night.html", "pareto-cpu.svg", "trend-cpu.svg"} <= {
        p.name for p in night.iterdir()
    }
    assert json.loads((night / "night.json").read_text())["cells"][0]["measured"] is True
    assert (night / ok.report).is_file()  # the cell's own optimize report


@pytest.mark.slow  # two real nights of tiny cells (~40 s, the session's two_nights): with the slow tests
def test_a_nightly_page_served_to_a_team_is_readable_by_it(two_nights: dict) -> None:
    """Every file of the nights (pages, plots, cell reports, models, bundles, the history) and every folder has
    the mode the umask gives: a web server running as another user can serve them."""
    import os
    import stat

    umask = os.umask(0o022)
    os.umask(umask)
    out = two_nights["out"]
    modes = {str(path.relative_to(out)): stat.S_IMODE(path.stat().st_mode) for path in out.rglob("*")}
    wrong = {
        name: f"{mode:o}" for name, mode in modes.items()
        if mode != (0o777 if (out / name).is_dir() else 0o666) & ~umask
    }  # fmt: skip
    assert len(modes) > 20 and not wrong, wrong
    assert {"night-1/night.html", "history.sqlite"} <= set(modes)


@pytest.mark.slow  # two real nights of tiny cells (~40 s, the session's two_nights): with the slow tests
def test_the_history_keeps_both_nights_with_raw_samples(two_nights: dict) -> None:
    with History.open(two_nights["out"] / "history.sqlite") as store:
        runs = store.finished_runs()
        assert [run.label for run in runs] == ["night-2", "night-1"]
        cells = store.cells(runs[0].id)
        assert len(cells) == 4 and len(cells[0].samples) == two_nights["second"].cells[0].samples
        assert np.median(cells[0].samples) == pytest.approx(cells[0].p50_ms)


@pytest.mark.slow  # two real nights of tiny cells (~40 s, the session's two_nights): with the slow tests
def test_the_second_night_is_compared_and_says_what_changed(two_nights: dict) -> None:
    second = two_nights["second"]
    latency = [f for f in second.findings if f.kind == "latency" and f.precision == "fp32"][0]
    if two_nights["first"].cells[0].noisy:  # night 1 was timed on a busy machine: no baseline, and it says so
        assert latency.baseline_runs == [] and "no earlier night has a measured latency on a quiet" in latency.message
    else:
        assert latency.baseline_runs == ["night-1"] and latency.interval[0] <= latency.interval[1]
    assert any("pipeline.runtime" in change for change in latency.changes)  # the recipe's threads: None -> 1
    markdown = (two_nights["out"] / "night-2" / "night.md").read_text()
    assert "| model | device | node | precision |" in markdown
    assert "<script>" not in markdown and "<i>" not in markdown  # CI summaries render HTML: inputs are escaped


@pytest.mark.slow  # a third night over the two (~10 s)
def test_fail_on_regression_exits_non_zero_on_a_planted_baseline(two_nights: dict, tmp_path: Path) -> None:
    """The last night 100x faster than this machine can be: tonight regresses, and CI hears it."""
    history = tmp_path / "history.sqlite"
    shutil.copy(two_nights["out"] / "history.sqlite", history)
    with History.open(history) as store:
        run_id = store.start_run(label="impossibly-fast", started="x", recipe_name="tiny-night", recipe_hash="h",
                                 recipe={}, environment={})  # fmt: skip
        fast = np.full(50, two_nights["second"].cells[0].p50_ms / 100)
        store.add_cell(run_id, CellRecord(model="mobilenet_v3_small", device="cpu", precision="fp32",
                                          backend="openvino", status="ok", measured=True, p50_ms=float(fast[0]),
                                          samples=fast, top1=two_nights["second"].cells[0].top1))  # fmt: skip
        store.finish_run(run_id, finished="x")
    recipe = _recipe(
        tmp_path, models=["mobilenet_v3_small"], precisions=["fp32"], regression={"window": 1, "min_history": 1}
    )
    out = two_nights["out"]  # its training cache: the model is not trained again
    arguments = ["nightly", "--recipe", str(recipe), "--out", str(out), "--history", str(history)]
    result = runner.invoke(app, [*arguments, "--label", "a", "--fail-on-regression"])
    assert result.exit_code == 1, result.output
    assert "REGRESSED" in result.output and "regression: mobilenet_v3_small on cpu fp32: latency" in result.output
    report = json.loads((out / "a" / "night.json").read_text())
    flagged = [(f["kind"], f["precision"]) for f in report["findings"] if f["flagged"]]
    assert flagged == [("latency", "fp32")]
    assert runner.invoke(app, [*arguments, "--label", "b"]).exit_code == 0  # without the flag: reported only


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"matrix": {"models": ["mobilenet_v3_small"], "devices": ["no-such-device"]}},
            "matrix device 'no-such-device'",
        ),
        ({"matrix": {"models": ["no_such_model"]}}, "matrix model 'no_such_model'"),
        ({"matrix": {"models": ["mobilenet_v3_small"]}, "regression": {"windw": 3}}, "unknown key 'regression.windw'"),
        ({"matrix": {"models": ["mobilenet_v3_small"], "precisions": ["fp32", "fp32"]}}, "listed twice: fp32"),
        (
            {"matrix": {"models": ["mobilenet_v3_small"], "devices": ["jetson-orin-nano", "jetson"]}},
            "'jetson' is jetson-orin-nano, which the matrix already lists",
        ),
        (
            {"matrix": {"models": ["mobilenet_v3_small"]}, "regression": {"window": 2, "min_history": 3}},
            "min_history (3) exceeds window (2)",
        ),
    ],
)
def test_bad_recipes_get_one_line(tmp_path: Path, change: dict, message: str) -> None:
    data = {"kind": "nightly", "name": "bad", **change}
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["nightly", "--recipe", str(recipe), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_pipeline_recipe_is_not_a_nightly_one(tmp_path: Path) -> None:
    result = runner.invoke(app, ["nightly", "--recipe", "quick", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "not a nightly recipe" in result.output


def test_a_corrupt_history_stops_the_night_before_it_runs(tmp_path: Path) -> None:
    history = tmp_path / "history.sqlite"
    history.write_bytes(b"garbage" * 100)
    recipe = _recipe(tmp_path, models=["mobilenet_v3_small"])
    result = runner.invoke(app, ["nightly", "--recipe", str(recipe), "--out", str(tmp_path / "out"), "--history",
                                 str(history)])  # fmt: skip
    assert result.exit_code == 2 and "is not a readable edgeflow history" in result.output
    assert history.read_bytes() == b"garbage" * 100
    assert not any((tmp_path / "out").iterdir())


def test_the_shipped_nightly_recipe_loads() -> None:
    from edgeflow.nightly import load_nightly

    spec = load_nightly("nightly")
    assert len(spec.matrix.models) >= 3 and spec.matrix.precisions == ["fp32", "int8"]


def test_two_model_files_with_one_name_get_their_own_cell_folders(tmp_path: Path) -> None:
    from edgeflow.nightly.cells import _model_folder

    first, second = tmp_path / "a" / "model.onnx", tmp_path / "b" / "model.onnx"
    assert _model_folder(str(first)) != _model_folder(str(second))
    assert _model_folder(str(first)).startswith("model-") and _model_folder("resnet18") == "resnet18"
    assert _model_folder(str(tmp_path / "<i>x.pt")).startswith("_i_x-")


def test_a_shared_quantize_section_gives_each_cell_the_keys_of_its_method() -> None:
    """A matrix's quantize section is shared by every backend: an ONNX Runtime key (calibrate_method) stays with
    the ONNX Runtime cells and is left out of the OpenVINO and LiteRT ones instead of failing them."""
    from edgeflow.nightly.cells import cell_recipe
    from edgeflow.nightly.config import NightlySpec

    spec = NightlySpec.model_validate({
        "kind": "nightly", "name": "shared", "matrix": {"models": ["mobilenet_v3_small"], "precisions": ["int8"]},
        "pipeline": {"quantize": {"subset_size": 32, "calibrate_method": "minmax", "preset": "mixed"}},
    })  # fmt: skip
    ort = cell_recipe(spec, backend="onnxruntime", precision="int8").variants[0].quantize
    assert (ort.method, ort.calibrate_method, ort.subset_size) == ("ort-static", "minmax", 32)
    openvino = cell_recipe(spec, backend="openvino", precision="int8").variants[0].quantize
    assert openvino.method == "nncf-ptq" and openvino.preset == "mixed" and "calibrate_method" not in (
        openvino.model_fields_set)  # fmt: skip
    litert = cell_recipe(spec, backend="litert", precision="int8").variants[0].quantize
    assert litert.method == "litert-static" and litert.subset_size == 32
