"""NetAdapt end to end on a tiny model, through OpenVINO on this CPU: the search, its report, and resume
after SIGKILL ending where an uninterrupted search ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import edgeflow
from edgeflow.errors import ConfigError
from edgeflow.recipe import Recipe

RECIPE = {
    "name": "tiny-search",
    "data": "digits",
    "seed": 0,
    "model": {"resolution": 48},
    "train": {"epochs": 1, "batch_size": 64, "lr": 0.003},
    "variants": [{"name": "openvino-fp32", "backend": "openvino"}],
    "profile": {"warmup": 3, "iterations": 100, "max_seconds": 0.2},
    "evaluate": {"max_samples": 120},
    "search": {
        # out of reach in 2 iterations: the stop, judged on measured latency, is the same in every run
        "latency_ratio": 0.5,
        "initial_step": 0.02,
        "screen_top_k": 2,
        "holdout_samples": 60,
        "short_term": {"steps": 2, "batch_size": 16, "bn_batches": 2},
        "long_term": {"steps": 3, "batch_size": 16, "bn_batches": 2},
        "max_iterations": 2,
        "profile": {"warmup": 3, "iterations": 60, "max_seconds": 0.05, "min_iterations": 10},
    },
}


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "tiny-search.yaml"
    path.write_text(json.dumps(RECIPE))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def finished(cache, recipe_file, tmp_path_factory):
    """One uninterrupted search (it also fills the latency table the resume test reuses)."""
    recipe = Recipe.model_validate(RECIPE)
    recipe.search.baselines.widths = [0.5]
    recipe.search.baselines.resolutions = [0.67]
    recipe.search.baselines.magnitude = [0.5]
    out = tmp_path_factory.mktemp("search") / "run"
    report = edgeflow.search("mobilenet_v3_small", recipe=recipe, out=out)
    return report, out


@pytest.mark.slow  # a whole search (or its table) on this CPU
def test_search_meets_its_targets_and_reports_everything(finished):
    report, out = finished
    assert report.iterations, report.stop_reason
    assert report.stop_reason.startswith("budget met") or "iterations" in report.stop_reason
    for iteration in report.iterations:
        assert iteration.estimate_ms <= iteration.target_ms + 1e-9  # the chosen proposal met the target
        assert iteration.measured_ms is not None and iteration.measured_ms > 0
        candidates = [record for record in iteration.proposals if record.skipped is None]
        assert iteration.chosen in {record.name for record in candidates}
        assert all(record.zero_shot_top1 is not None for record in candidates)
    start, final = report.point("start"), report.point("netadapt")
    assert final.params < start.params and final.macs < start.macs
    assert all(point.measured for point in report.points)
    assert {point.kind for point in report.points} == {"start", "netadapt", "width", "resolution", "magnitude"}
    assert report.point("magnitude-0.5").macs < start.macs
    assert report.point("resolution-0.67").resolution == 32
    assert report.table is not None and report.table.candidates >= len(report.iterations)
    assert len(report.table.errors_percent) == len(report.table.raw_errors_percent) == report.table.candidates
    measured = [record for it in report.iterations for record in it.proposals if record.measured_ms is not None]
    assert measured and all(record.reference_ms > 0 for record in measured)  # start timed beside each candidate
    for point in report.points:  # every model timed in turn with the others, round after round
        assert len(point.rounds_ms) == report.config["compare_rounds"] and point.p50_in_turn_ms > 0
    assert report.speedup() == pytest.approx(start.p50_in_turn_ms / final.p50_in_turn_ms)
    # recalibrated estimates: the table's figure x one scale per iteration, measured / table over the
    # models measured before it (for the first, the start's)
    for number, iteration in enumerate(report.iterations):
        scales = {record.estimate_ms / record.table_ms for record in iteration.proposals if record.table_ms}
        assert max(scales) == pytest.approx(min(scales))
        if number == 0:
            assert min(scales) == pytest.approx(report.start_measured_ms / report.start_estimate_ms)
    assert len(report.table.table_only_errors_percent) == report.table.candidates
    assert all(0.5 < record.ratio_to_start < 1.5 for record in measured)
    assert report.oracle_measurements > 0 and report.device_measurements > 0
    for name in ("search.json", "search.md", "search.png", final.artifact):
        assert (out / name).stat().st_size > 0
    saved = json.loads((out / "search.json").read_text())
    assert saved["iterations"][0]["proposals"] and saved["points"][0]["measured"] is True
    assert "estimated ms" in (out / "search.md").read_text()


def _kill_inside_the_first_iteration(command: list[str], *, env: dict, state_file: Path, pending: int,
                                     timeout: float) -> None:  # fmt: skip
    """Run ``command`` and SIGKILL it once its search state holds ``pending`` proposals not yet evaluated."""
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if state_file.exists() and len(json.loads(state_file.read_text() or "{}").get("pending", [])) >= pending:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def _final_weights(folder: Path) -> dict[str, torch.Tensor]:
    state = json.loads((folder / "state" / "state.json").read_text())
    return torch.load(folder / "state" / state["final_weights"], map_location="cpu", weights_only=True)


@pytest.mark.slow  # a whole search (or its table) on this CPU
def test_search_killed_mid_iteration_resumes_to_the_same_result(finished, cache, recipe_file, tmp_path):
    report, out = finished
    killed = tmp_path / "killed"
    env = {**os.environ, "EDGEFLOW_CACHE": str(cache)}
    command = [sys.executable, "-m", "edgeflow.cli", "search", "mobilenet_v3_small", "--recipe", str(recipe_file)]
    state_file = killed / "state" / "state.json"
    _kill_inside_the_first_iteration([*command, "--out", str(killed)], env=env, state_file=state_file, pending=3,
                                     timeout=300)  # fmt: skip
    interrupted = json.loads(state_file.read_text())
    assert interrupted["phase"] == "search" and interrupted["pending"]

    result = subprocess.run(
        [*command, "--out", str(killed)], env=env, capture_output=True, text=True, timeout=60
    )  # without --resume: refused, the state is kept
    assert result.returncode == 2 and "--resume" in result.stderr and "Traceback" not in result.stderr

    recipe = Recipe.model_validate(RECIPE)
    resumed = edgeflow.search("mobilenet_v3_small", recipe=recipe, out=killed, resume=True)
    assert [i.chosen for i in resumed.iterations] == [i.chosen for i in report.iterations]
    assert [i.holdout_top1 for i in resumed.iterations] == [i.holdout_top1 for i in report.iterations]
    expected, got = _final_weights(out), _final_weights(killed)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[name], got[name]) for name in expected)


@pytest.mark.slow  # a whole search (or its table) on this CPU
def test_a_finished_search_resumed_with_other_long_term_steps_fine_tunes_again_and_keeps_the_rest(finished, tmp_path):
    """The long-term fine-tuning is not part of what a search is: resumed with other steps, only the chosen
    model's fine-tuning (and the baselines', which use the same steps) run again; resumed as it is, nothing does."""
    import shutil

    report, out = finished
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    recipe = Recipe.model_validate(RECIPE)
    recipe.search.baselines.widths = [0.5]
    recipe.search.long_term.steps = 5
    before = json.loads((copy / "state" / "state.json").read_text())
    assert before["long_term"]["steps"] == 3 and set(before["baselines"]) == {"width-0.5", "resolution-0.67",
                                                                            "magnitude-0.5"}  # fmt: skip
    searched = {it["weights"]: (copy / "state" / it["weights"]).stat().st_mtime_ns for it in before["iterations"]}
    again = edgeflow.search("mobilenet_v3_small", recipe=recipe, out=copy, resume=True)
    assert {name: (copy / "state" / name).stat().st_mtime_ns for name in searched} == searched  # not searched again
    state = json.loads((copy / "state" / "state.json").read_text())
    assert state["long_term"]["steps"] == 5 and state["baselines"]["width-0.5"]["long_term"]["steps"] == 5
    assert state["iterations"] == before["iterations"]
    first, redone = _final_weights(out), _final_weights(copy)
    assert first.keys() == redone.keys() and not all(torch.equal(first[name], redone[name]) for name in first)
    assert [i.chosen for i in again.iterations] == [i.chosen for i in report.iterations]
    assert again.point("start").test_top1 == report.point("start").test_top1

    assert not (copy / "state" / before["final_weights"]).exists()  # the final model of 3 steps is gone
    assert not (copy / "state" / before["baselines"]["width-0.5"]["weights"]).exists()
    kept = {name: (copy / "state" / name).stat().st_mtime_ns
            for name in (state["final_weights"], state["baselines"]["width-0.5"]["weights"])}  # fmt: skip
    same = edgeflow.search("mobilenet_v3_small", recipe=recipe, out=copy, resume=True)
    assert {name: (copy / "state" / name).stat().st_mtime_ns for name in kept} == kept  # nothing trained again
    assert same.point("netadapt").test_top1 == again.point("netadapt").test_top1
    assert same.point("width-0.5").test_top1 == again.point("width-0.5").test_top1


def test_a_state_written_when_the_fingerprint_held_the_long_term_steps_resumes_with_the_same_steps(tmp_path):
    from edgeflow.netadapt.state import Checkpoint, SearchState

    checkpoint = Checkpoint(tmp_path)
    checkpoint.save(SearchState(fingerprint="with-steps", phase="done", final_weights="weights/final.pt"))
    with pytest.raises(ConfigError, match="belongs to a search with another model"):
        checkpoint.load("without-steps", earlier=("with-other-steps", {"steps": 4}))
    state = checkpoint.load("without-steps", earlier=("with-steps", {"steps": 3}))
    assert state.fingerprint == "without-steps" and state.long_term == {"steps": 3}  # made by those: not redone
    checkpoint.save(SearchState(fingerprint="with-steps", phase="search"))
    assert checkpoint.load("without-steps", earlier=("with-steps", {"steps": 3})).long_term is None


@pytest.mark.parametrize("steps", [0, 2])
def test_fine_tuning_with_frozen_batchnorm_keeps_the_starts_statistics_and_recompute_replaces_them(steps):
    """A start fine-tuned with its batch-norm statistics frozen has weights that fit them: the search's fine-tuning
    keeps them when told (``batchnorm: frozen``) and recomputes them from the photos by default."""
    from conftest import TinyNet

    from edgeflow.data import load_data
    from edgeflow.netadapt.loop import finetune
    from edgeflow.recipe import FineTuneConfig

    splits = load_data("digits", resolution=8)
    torch.manual_seed(0)
    start = TinyNet().eval()
    start.bn.running_mean.fill_(3.0)  # statistics the digits do not give
    start.bn.running_var.fill_(5.0)
    for batchnorm, kept in [("frozen", True), ("recompute", False)]:
        model = TinyNet()
        model.load_state_dict(start.state_dict())
        finetune(model, splits, FineTuneConfig(steps=steps, batch_size=16, bn_batches=2, batchnorm=batchnorm), seed=0)
        same = torch.equal(model.bn.running_mean, start.bn.running_mean)
        assert same == kept and torch.equal(model.bn.running_var, start.bn.running_var) == kept, batchnorm
        assert not model.training
    # the default is left out of what a search records, so searches recorded before the key resume as they were
    assert (
        "batchnorm" not in FineTuneConfig().model_dump()
        and FineTuneConfig(batchnorm="frozen").model_dump()["batchnorm"] == "frozen"
    )


def test_search_refuses_bad_requests(tmp_path, cache):
    recipe = Recipe.model_validate(RECIPE)
    with pytest.raises(ConfigError, match="nothing to resume"):
        edgeflow.search("mobilenet_v3_small", recipe=recipe, out=tmp_path / "none", resume=True)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        edgeflow.search("mobilenet_v3_small", recipe=recipe, out=tmp_path / "x", latency_ratio=1.5)
    with pytest.raises(ConfigError, match="no search section"):
        edgeflow.search("mobilenet_v3_small", recipe="default", out=tmp_path / "y")
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


@pytest.mark.slow  # a whole search (or its table) on this CPU
def test_optimize_runs_the_recipe_search_step_first(finished, cache, tmp_path):
    recipe = Recipe.model_validate(RECIPE)
    report = edgeflow.optimize("mobilenet_v3_small", recipe=recipe, out=tmp_path / "opt")
    assert report.search is not None and report.search["iterations"]
    assert any(note.startswith("NetAdapt") for note in report.notes)
    # the variant is the adapted model: fewer MACs than the same network unpruned at the same size
    assert report.variants[0].macs < finished[0].point("start").macs
    assert (tmp_path / "opt" / "search" / "state.json").exists()


@pytest.mark.slow  # a whole search (or its table) on this CPU
def test_lookup_table_is_kept_on_disk_and_tied_to_what_it_measured(tmp_path):
    import torchvision

    from edgeflow.device import load_device
    from edgeflow.latency.table import LookupTable
    from edgeflow.latency.timer import Timer
    from edgeflow.netadapt.oracle import calibration_models
    from edgeflow.profiling.loop import ProfileConfig

    device = load_device("cpu")
    timing = ProfileConfig(warmup=2, iterations=30, max_seconds=0.05, min_iterations=5)
    model = torchvision.models.mobilenet_v3_small(num_classes=10).eval()
    path = tmp_path / "table.json"
    first = LookupTable(Timer(device, "openvino", settings=device.runtime, profile=timing, workdir=tmp_path), path)
    fitted = first.fit(model, (1, 3, 32, 32), calibration=lambda: calibration_models(model, (1, 3, 32, 32)), rounds=2)
    estimate = first.latency(model, (1, 3, 32, 32))
    assert estimate > 0 and first.cost.measurements >= 10  # one per block, the call overhead, the calibration
    names = {point.name for point in fitted.calibration}
    assert names == {"start", "width-0.75", "width-0.5", "width-0.35", "half-the-blocks", "no-blocks"}
    depths = {point.name: point.blocks for point in fitted.calibration}
    assert depths["no-blocks"] < depths["half-the-blocks"] < depths["start"] == depths["width-0.5"]
    assert all(point.measured_ms > 0 for point in fitted.calibration)
    # least squares over six models with three unknowns: the fit describes them, not interpolates them
    for point in fitted.calibration:
        assert point.estimate_ms == pytest.approx(fitted.estimate(point.blocks_ms, point.blocks))
    assert first.reference_ms > 0  # entries are kept at the host's speed when the table was begun
    again = LookupTable(Timer(device, "openvino", settings=device.runtime, profile=timing, workdir=tmp_path), path)
    assert again.reference_ms == first.reference_ms and again.fit(model, (1, 3, 32, 32), calibration=dict) == fitted
    assert again.latency(model, (1, 3, 32, 32)) == estimate and again.cost.measurements == 0
    other = device.runtime.model_copy(update={"threads": 1})
    with pytest.raises(ConfigError, match="was measured for"):
        LookupTable(Timer(device, "openvino", settings=other, profile=timing, workdir=tmp_path), path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        LookupTable(Timer(device, "openvino", settings=device.runtime, profile=timing, workdir=tmp_path), path)


def test_last_target_stops_at_the_budget():
    """The step is taken off the current latency, but no deeper than the budget."""
    from edgeflow.netadapt.loop import Search
    from edgeflow.netadapt.oracle import MeasuredOracle
    from edgeflow.netadapt.state import SearchState
    from edgeflow.recipe import SearchConfig

    search = Search.__new__(Search)  # _target reads only the state, the config and the oracle's kind
    search.config = SearchConfig(latency_ratio=0.5, initial_step=0.1, step_decay=1.0)
    search.oracle = MeasuredOracle(timer=None)
    search.state = SearchState(fingerprint="x", start_estimate_ms=1.0, start_measured_ms=1.0, budget_ms=0.5)
    assert search._target() == pytest.approx(0.9)  # a full step
    assert search._target(shrink=1) == pytest.approx(0.95)
    search.state.budget_ms = 0.95
    assert search._target() == pytest.approx(0.95)  # the step would pass the budget


def test_table_scale_is_the_median_of_measured_over_table():
    """One timing taken while the host ran 40% slow moves the scale little."""
    from edgeflow.netadapt.space import Action
    from edgeflow.netadapt.state import IterationRecord, ProposalRecord, SearchState, table_scale

    action = Action(kind="remove-block", target="features.1")
    state = SearchState(fingerprint="x", start_estimate_ms=1.0, start_measured_ms=1.1)
    assert table_scale(state) == pytest.approx(1.1)
    records = [
        ProposalRecord(name="a", action=action, table_ms=0.9, measured_ms=2.0, ratio_to_start=0.9),  # 0.99 ms
        ProposalRecord(name="b", action=action, table_ms=0.8, measured_ms=2.0, ratio_to_start=1.2),  # the slow one
        ProposalRecord(name="c", action=action, table_ms=0.8, measured_ms=0.9, reference_ms=1.0),  # 0.99 ms
    ]
    state.iterations = [
        IterationRecord(
            index=1, target_ms=0.9, chosen="a", action=action, estimate_ms=0.99, table_ms=0.9, measured_ms=2.0,
            ratio_to_start=0.9, holdout_top1=0.9, weights="w.pt", proposals=records, seconds=1.0,
        )
    ]  # fmt: skip
    # ratios: start 1.1, a 1.1, b 1.65, c 1.2375 -> median 1.16875
    assert table_scale(state) == pytest.approx((1.1 + 1.2375) / 2)


def test_table_error_takes_the_hosts_drift_out():
    """A candidate timed while the host ran 30% slow: against the start timed beside it, the table's
    estimate is exact; against the raw timing it looks 23% off."""
    from edgeflow.netadapt.report import table_errors
    from edgeflow.netadapt.space import Action
    from edgeflow.netadapt.state import IterationRecord, ProposalRecord, SearchState

    action = Action(kind="remove-block", target="features.1")
    record = ProposalRecord(
        name="remove-block features.1", action=action, estimate_ms=0.8, measured_ms=1.04, reference_ms=1.3
    )
    state = SearchState(fingerprint="x", start_estimate_ms=1.0, start_measured_ms=1.0)
    state.iterations = [
        IterationRecord(
            index=1, target_ms=0.9, chosen=record.name, action=action, estimate_ms=0.8, measured_ms=1.04,
            reference_ms=1.3, holdout_top1=0.9, weights="w.pt", proposals=[record], seconds=1.0,
        )
    ]  # fmt: skip
    errors = table_errors(state)
    assert errors.candidates == 1  # the start model is not counted: the table is fitted on it
    assert errors.errors_percent == [pytest.approx(0.0, abs=0.01)] and errors.within_10_percent == 1.0
    assert errors.raw_errors_percent == [pytest.approx(-23.08, abs=0.01)] and errors.raw_within_10_percent == 0.0
    assert errors.table_only_errors_percent == []  # no table figure recorded: nothing to judge
    record.table_ms = 0.6  # the table alone, unanchored, 25% below the drift-corrected 0.8 ms
    assert table_errors(state).table_only_errors_percent == [pytest.approx(-25.0, abs=0.01)]


INT8_RECIPE = {
    **RECIPE,
    "name": "tiny-search-int8",
    "variants": [
        {
            "name": "openvino-int8", "backend": "openvino", "precision": "int8", "quantize": {"subset_size": 16},
            "mixed_precision": {"agreement": 1.0, "max_layers": 1, "holdout_samples": 48, "rounds": 2,
                                "layers": ["features.0.0", "features.1.block.1"]},
        }
    ],
}  # fmt: skip


@pytest.mark.slow  # a whole INT8 search, then a mixed-precision variant, on this CPU
def test_optimize_searches_on_the_int8_target_then_mixes_precision_and_resumes_after_a_kill(cache, tmp_path):
    """One flow: the search judged on the INT8 file, then mixed precision on its result; killed inside the search,
    the run goes on from ``<out>.unfinished`` (the trained model, the search's state) and removes it when done."""
    import torchvision

    from edgeflow.export.onnx import export_onnx
    from edgeflow.profiling.cost import count_onnx_cost

    recipe_file = tmp_path / "int8-search.yaml"
    recipe_file.write_text(json.dumps(INT8_RECIPE))
    out = tmp_path / "run"
    unfinished = tmp_path / "run.unfinished"
    env = {**os.environ, "EDGEFLOW_CACHE": str(cache)}
    command = [sys.executable, "-m", "edgeflow.cli", "optimize", "mobilenet_v3_small", "--recipe", str(recipe_file),
               "--out", str(out)]  # fmt: skip
    state_file = unfinished / "search" / "state.json"
    _kill_inside_the_first_iteration(command, env=env, state_file=state_file, pending=2, timeout=600)
    assert not out.exists() and (unfinished / "start.pt").exists()
    interrupted = json.loads(state_file.read_text())
    assert interrupted["phase"] == "search" and interrupted["target"]["variant"] == "openvino-int8"

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)  # without --resume
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr

    report = edgeflow.optimize("mobilenet_v3_small", recipe=str(recipe_file), out=out, resume=True)
    assert any(note.startswith("resumed: the model trained before") for note in report.notes)
    assert report.search is not None and report.search["iterations"]
    state = json.loads((out / "search" / "state.json").read_text())
    assert state["phase"] == "done" and state["target"]["precision"] == "int8"
    [variant] = report.variants
    mixed = variant.quantization.mixed_precision
    assert mixed is not None and [layer.label() for layer in mixed.sensitivity.layers] == [
        "features.0.0", "features.1.block.1 (gate)",
    ]  # fmt: skip
    start = torchvision.models.mobilenet_v3_small(num_classes=10).eval()
    unpruned = count_onnx_cost(export_onnx(start, input_shape=(1, 3, 48, 48), path=tmp_path / "start.onnx").path).macs
    assert variant.macs < unpruned  # the variant is built from the adapted model
    assert not unfinished.exists()  # the run succeeded: nothing left to resume
    with pytest.raises(ConfigError, match="nothing to resume"):
        edgeflow.optimize("mobilenet_v3_small", recipe=str(recipe_file), out=tmp_path / "other", resume=True)


def test_a_run_without_long_steps_has_nothing_to_resume_and_a_new_run_never_starts_over_an_unfinished_one(tmp_path):
    unfinished = tmp_path / "run.unfinished"
    unfinished.mkdir()
    with pytest.raises(ConfigError, match="recipe quick has no search and no mixed-precision variant"):
        edgeflow.optimize("mobilenet_v3_small", recipe="quick", out=tmp_path / "run", resume=True)
    recipe = Recipe.model_validate(INT8_RECIPE)
    (unfinished / "start.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"run.unfinished holds what an unfinished run measured; add --resume"):
        edgeflow.optimize("mobilenet_v3_small", recipe=recipe, out=tmp_path / "run")
    (unfinished / "start.json").write_text(json.dumps({"key": "another-run", "training": None}))
    with pytest.raises(ConfigError, match="cannot resume: .* was left by a run with another model, data"):
        edgeflow.optimize("mobilenet_v3_small", recipe=recipe, out=tmp_path / "run", resume=True)
    assert not (tmp_path / "run").exists()
