"""The nightly history: a real SQLite file, concurrent writer processes, a writer killed mid-write,
corrupt and foreign files. And the regression rules on planted samples kept in that history."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from edgeflow.nightly.config import RegressionConfig
from edgeflow.nightly.history import SCHEMA_VERSION, CellRecord, History, HistoryError
from edgeflow.nightly.regression import bootstrap_ratio, compare_run

ENVIRONMENT = {"versions": {"openvino": "2026.4.1", "torch": "2.14.1"}, "cpu": {"name": "test cpu", "cores": 2}}
RECIPE = {"pipeline": {"runtime": None}, "matrix": {"models": ["m"]}}


def _night(store: History, label: str, cells: list[CellRecord], *, environment=ENVIRONMENT, recipe=RECIPE) -> int:
    run_id = store.start_run(label=label, started=label, recipe_name="t", recipe_hash="h", recipe=recipe,
                             environment=environment)  # fmt: skip
    for cell in cells:
        store.add_cell(run_id, cell)
    store.finish_run(run_id, finished=label)
    return run_id


def _cell(samples: np.ndarray | None = None, *, top1=0.9, size=1000, status="ok", precision="fp32", **kw):
    measured = kw.pop("measured", samples is not None)
    cell = CellRecord(model="m", device="cpu", precision=precision, backend="openvino", status=status,
                      measured=measured, top1=top1, size_bytes=size, test_images=500,
                      runtime_version="openvino 2026.4.1", model_hash="a" * 64, **kw)  # fmt: skip
    if samples is not None:
        cell.samples, cell.p50_ms, cell.p90_ms = samples, float(np.median(samples)), float(np.percentile(samples, 90))
    return cell


def test_a_night_round_trips_with_its_raw_samples(tmp_path: Path) -> None:
    samples = np.random.default_rng(0).gamma(20, 0.05, size=300)
    with History.open(tmp_path / "h.sqlite") as store:
        run_id = _night(store, "n1", [_cell(samples), _cell(None, status="failed", error="boom <b>", precision="int8")])
        (ok, failed) = store.cells(run_id)
        assert np.array_equal(ok.samples, samples)  # every raw sample, bit for bit
        assert failed.status == "failed" and failed.error == "boom <b>" and failed.samples is None
        assert [run.label for run in store.finished_runs()] == ["n1"]
    connection = sqlite3.connect(tmp_path / "h.sqlite")
    assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_unfinished_night_is_never_a_baseline(tmp_path: Path) -> None:
    with History.open(tmp_path / "h.sqlite") as store:
        _night(store, "n1", [_cell(np.full(50, 1.0))])
        crashed = store.start_run(label="n2", started="n2", recipe_name="t", recipe_hash="h", recipe=RECIPE,
                                  environment=ENVIRONMENT)  # fmt: skip
        store.add_cell(crashed, _cell(np.full(50, 9.0)))  # the night died before finish_run
        tonight = _night(store, "n3", [_cell(np.full(50, 1.0))])
        past = store.cell_history(("m", "cpu", "fp32", "openvino"), before=tonight, limit=7)
        assert [run.label for run, _ in past] == ["n1"]


def _writer(path: str, writer: int, nights: int) -> None:
    with History.open(path) as store:
        for night in range(nights):
            samples = np.full(100, float(writer + night))
            _night(store, f"w{writer}-n{night}", [_cell(samples), _cell(samples, size=7, precision="int8")])


@pytest.mark.slow  # several writer processes, seconds each
def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_writer, args=(str(path), writer, 15)) for writer in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    with History.open(path) as store:
        assert store.count("runs") == 60 and store.count("cells") == 120
        assert len(store.finished_runs()) == 60
        for run in store.finished_runs():
            writer, night = (int(part[1:]) for part in run.label.split("-"))
            assert all(np.all(cell.samples == writer + night) for cell in store.cells(run.id))


def _killed_mid_write(path: str) -> None:
    store = History.open(path)
    cursor = store._connection.cursor()
    cursor.execute("BEGIN IMMEDIATE")
    cursor.execute("INSERT INTO runs (label, started, recipe_name, recipe_hash, recipe_json, environment_json) "
                   "VALUES ('half', 'x', 't', 'h', '{}', '{}')")  # fmt: skip
    run_id = cursor.lastrowid
    for index in range(2000):  # a large write under way
        cursor.execute(
            "INSERT INTO cells (run_id, model, device, precision, backend, status, samples) VALUES "
            "(?, ?, 'cpu', 'fp32', 'openvino', 'ok', zeroblob(4096))",
            (run_id, f"m{index}"),
        )
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow  # writers killed in turn (~10 s)
def test_a_writer_killed_mid_write_corrupts_nothing(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    with History.open(path) as store:
        _night(store, "before", [_cell(np.full(10, 1.0))])
    process = multiprocessing.get_context("spawn").Process(target=_killed_mid_write, args=(str(path),))
    process.start()
    process.join(timeout=60)
    assert process.exitcode == -signal.SIGKILL
    with History.open(path) as store:  # opens, passes its integrity check, and holds only the committed night
        assert store.count("runs") == 1 and store.count("cells") == 1
        _night(store, "after", [_cell(np.full(10, 1.0))])  # and takes new writes
        assert [run.label for run in store.finished_runs()] == ["after", "before"]


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"this is not a database, just some text\n" * 40, "not a database"),
        (b"SQLite format 3\x00" + b"\xff" * 4000, ""),  # a damaged header
    ],
)
def test_a_corrupt_history_is_reported_and_left_as_it_is(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "history.sqlite"
    path.write_bytes(content)
    with pytest.raises(HistoryError, match="left as it is") as caught:
        History.open(path)
    assert reason in str(caught.value) and "\n" not in str(caught.value)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.sqlite"]


def test_a_foreign_database_and_a_newer_schema_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE t (x)")
    with pytest.raises(HistoryError, match="no edgeflow schema version"):
        History.open(foreign)
    newer = tmp_path / "newer.sqlite"
    History.open(newer).close()
    with sqlite3.connect(newer) as connection:
        connection.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(HistoryError, match="newer than this edgeflow"):
        History.open(newer)


# regression rules, on samples planted in a real history

CONFIG = RegressionConfig(window=7, min_history=1, latency_threshold=0.10, bootstrap=1000)


def _latency_finding(tmp_path: Path, past_medians: list[float], tonight: np.ndarray, config=CONFIG, **tonight_kw):
    rng = np.random.default_rng(1)
    with History.open(tmp_path / "h.sqlite") as store:
        for index, median in enumerate(past_medians):
            _night(store, f"n{index}", [_cell(median * rng.lognormal(0, 0.03, size=300))])
        run_id = _night(store, "tonight", [_cell(tonight, **tonight_kw)])
        findings = compare_run(store, store.run(run_id), store.cells(run_id), config)
    return {finding.kind: finding for finding in findings}


def test_a_planted_slowdown_is_flagged(tmp_path: Path) -> None:
    tonight = 1.5 * np.random.default_rng(2).lognormal(0, 0.03, size=300)
    finding = _latency_finding(tmp_path, [1.0, 1.01, 0.99], tonight)["latency"]
    assert finding.flagged and finding.interval[0] > 1.10 and finding.p_value < 0.01
    assert finding.change == pytest.approx(0.5, abs=0.03)


def test_the_same_distribution_is_not_flagged(tmp_path: Path) -> None:
    tonight = np.random.default_rng(3).lognormal(0, 0.03, size=300)
    finding = _latency_finding(tmp_path, [1.0, 1.01, 0.99], tonight)["latency"]
    assert not finding.flagged and finding.interval[0] < 1.0 < finding.interval[1]


def test_a_slowdown_within_the_threshold_is_not_flagged(tmp_path: Path) -> None:
    tonight = 1.05 * np.random.default_rng(4).lognormal(0, 0.03, size=300)
    finding = _latency_finding(tmp_path, [1.0, 1.0, 1.0], tonight)["latency"]
    assert not finding.flagged and finding.p_value < 0.01  # real, but below the recipe's 10%


def test_noise_between_nights_widens_the_interval(tmp_path: Path) -> None:
    """+15% tonight: flagged after quiet nights, not after nights that swung by +-20% among themselves."""
    tonight = 1.15 * np.random.default_rng(5).lognormal(0, 0.03, size=300)
    quiet = _latency_finding(tmp_path / "quiet", [1.0, 1.0, 1.0, 1.0, 1.0], tonight)["latency"]
    noisy = _latency_finding(tmp_path / "noisy", [0.8, 1.2, 0.85, 1.15, 1.0], tonight)["latency"]
    assert quiet.flagged and not noisy.flagged
    assert noisy.interval[0] < quiet.interval[0]


def test_latency_is_not_judged_before_min_history_nights(tmp_path: Path) -> None:
    tonight = 1.5 * np.random.default_rng(2).lognormal(0, 0.03, size=300)
    config = CONFIG.model_copy(update={"min_history": 3})
    early = _latency_finding(tmp_path / "early", [1.0, 1.0], tonight, config=config)["latency"]
    assert not early.flagged and "not judged yet: 2 of the 3 nights" in early.message
    assert early.change == pytest.approx(0.5, abs=0.03)  # the figures are still reported
    assert _latency_finding(tmp_path / "enough", [1.0, 1.0, 1.0], tonight, config=config)["latency"].flagged


def test_a_noisy_night_is_never_a_baseline_and_a_noisy_tonight_is_never_flagged(tmp_path: Path) -> None:
    """A night timed while the device was busy is kept in the history and flagged, not mixed with the quiet
    ones: it is left out of the baseline. Tonight timed busy: the figures are given, never flagged."""
    rng = np.random.default_rng(7)
    slow = 1.5 * rng.lognormal(0, 0.03, size=300)
    with History.open(tmp_path / "h.sqlite") as store:
        for index in range(3):
            _night(store, f"n{index}", [_cell(rng.lognormal(0, 0.03, size=300))])
        _night(store, "busy", [_cell(1.5 * rng.lognormal(0, 0.03, size=300), detail={"noisy": True})])
        run_id = _night(store, "tonight", [_cell(slow)])
        quiet = {f.kind: f for f in compare_run(store, store.run(run_id), store.cells(run_id), CONFIG)}
        (busy,) = [cell for run in store.finished_runs(before=run_id) for cell in store.cells(run.id) if cell.noisy]
        noisy_id = _night(store, "tonight-busy", [_cell(slow, detail={"noisy": True})])
        noisy = {f.kind: f for f in compare_run(store, store.run(noisy_id), store.cells(noisy_id), CONFIG)}
    assert busy.detail == {"noisy": True}  # kept, with its flag
    assert quiet["latency"].baseline_runs == ["n2", "n1", "n0"] and quiet["latency"].flagged
    assert quiet["latency"].change == pytest.approx(0.5, abs=0.05)  # against the quiet nights only
    assert not noisy["latency"].flagged and "not judged: timed while other processes kept the device busy" in (
        noisy["latency"].message
    )
    assert noisy["latency"].change == pytest.approx(0.5, abs=0.05)  # the figures are still reported


def _rounds_cell(round_p50s: list[float]) -> CellRecord:
    """A cell timed in turn: its raw samples (tight within each round) and its per-round p50s."""
    rng = np.random.default_rng(len(round_p50s))
    samples = np.concatenate([p50 * rng.lognormal(0, 0.01, size=100) for p50 in round_p50s])
    return _cell(samples, detail={"round_p50_ms": round_p50s})


def test_rounds_are_the_units_when_cells_were_timed_in_turn(tmp_path: Path) -> None:
    """Within a round samples are tight, but the rounds drift: resampled as rounds, tonight's +12% is within
    the noise; resampled as raw samples (which ignores the drift) it would look certain."""
    with History.open(tmp_path / "h.sqlite") as store:
        for index in range(3):
            _night(store, f"n{index}", [_rounds_cell([0.8, 1.0, 1.25, 0.9, 1.1])])
        run_id = _night(store, "tonight", [_rounds_cell([0.95, 1.15, 1.35, 1.0, 1.2])])
        tonight = store.cells(run_id)
        (latency,) = [f for f in compare_run(store, store.run(run_id), tonight, CONFIG) if f.kind == "latency"]
        past = [cell.samples for run in store.finished_runs(before=run_id) for cell in store.cells(run.id)]
    assert not latency.flagged and latency.interval[0] < 1.0
    naive_low, _ = bootstrap_ratio(tonight[0].samples, past, CONFIG)
    assert naive_low > latency.interval[0]


def test_accuracy_drop_size_growth_and_a_new_failure_are_flagged(tmp_path: Path) -> None:
    samples = np.random.default_rng(6).lognormal(0, 0.03, size=200)
    findings = _latency_finding(tmp_path / "a", [1.0], samples, top1=0.87, size=1100)
    assert findings["accuracy"].flagged and findings["accuracy"].change == pytest.approx(0.03)
    assert findings["size"].flagged and findings["size"].change == pytest.approx(0.10)
    kept = _latency_finding(tmp_path / "b", [1.0], samples, top1=0.895, size=1010)
    assert not kept["accuracy"].flagged and not kept["size"].flagged
    with History.open(tmp_path / "c.sqlite") as store:
        _night(store, "n1", [_cell(samples)])
        run_id = _night(store, "n2", [_cell(None, status="failed", error="runtime crashed")])
        (finding,) = compare_run(store, store.run(run_id), store.cells(run_id), CONFIG)
    assert finding.kind == "failure" and finding.flagged and "runtime crashed" in finding.message


def test_estimated_latencies_are_not_compared(tmp_path: Path) -> None:
    with History.open(tmp_path / "h.sqlite") as store:
        _night(store, "n1", [_cell(None)])
        run_id = _night(store, "n2", [_cell(None)])
        findings = {f.kind: f for f in compare_run(store, store.run(run_id), store.cells(run_id), CONFIG)}
    assert not findings["latency"].flagged and "estimated" in findings["latency"].message


def test_a_finding_says_what_changed_between_the_runs(tmp_path: Path) -> None:
    samples = np.random.default_rng(7).lognormal(0, 0.03, size=200)
    upgraded = {**ENVIRONMENT, "versions": {"openvino": "2026.5.0", "torch": "2.14.1"}}
    halved = {"pipeline": {"runtime": {"threads": 1}}, "matrix": {"models": ["m"]}}
    with History.open(tmp_path / "h.sqlite") as store:
        _night(store, "n1", [_cell(samples)])
        run_id = _night(store, "n2", [_cell(2 * samples, artifact_hash="b" * 64)], environment=upgraded,
                        recipe=halved)  # fmt: skip
        findings = {f.kind: f for f in compare_run(store, store.run(run_id), store.cells(run_id), CONFIG)}
    changes = findings["latency"].changes
    assert findings["latency"].flagged
    assert "environment versions.openvino: 2026.4.1 -> 2026.5.0" in changes
    assert "recipe pipeline.runtime: None -> {'threads': 1}" in changes or any(
        "pipeline.runtime.threads: None -> 1" in change for change in changes
    )
    assert "artifact sha256: none -> bbbbbbbbbbbb" in changes


def test_a_summary_only_latency_is_compared_by_its_nights(tmp_path: Path) -> None:
    """A phone timed by onnxruntime_perf_test keeps a p50 and no samples: its nights are the units."""
    with History.open(tmp_path / "h.sqlite") as store:
        for index, p50 in enumerate([1.0, 1.02, 0.98, 1.01]):
            _night(store, f"n{index}", [_cell(None, measured=True, p50_ms=p50)])
        run_id = _night(store, "tonight", [_cell(None, measured=True, p50_ms=2.0)])
        findings = {f.kind: f for f in compare_run(store, store.run(run_id), store.cells(run_id), CONFIG)}
    assert findings["latency"].change == pytest.approx(1.0, abs=0.02) and findings["latency"].interval[0] > 1.9


def test_bootstrap_interval_covers_the_true_ratio() -> None:
    rng = np.random.default_rng(8)
    past = [rng.lognormal(0, 0.05, size=300) for _ in range(4)]
    low, high = bootstrap_ratio(1.3 * rng.lognormal(0, 0.05, size=300), past, CONFIG)
    assert low < 1.3 < high and high - low < 0.1
