"""Is a cell worse tonight than in its recent history, by more than the noise between runs?

Latency: the ratio of tonight's median to the median of the last ``window`` nights' medians, with a
hierarchical bootstrap interval (resample the nights, then the units within each night: the per-round p50s
of cells timed in turn, else raw samples), so the spread between nights widens the interval as much as the
spread within one. Once ``min_history`` nights are in the window, a slowdown is flagged when the interval's
lower end clears ``1 + latency_threshold`` and a one-sided Mann-Whitney rank test of tonight's units
against the earlier nights' rejects at ``rank_test_alpha``. Accuracy is computed on the same
test images every night, so a drop above ``accuracy_drop`` is flagged as it is; size likewise. A cell that
failed tonight but ran before is flagged too. Every finding says what changed between the two runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from edgeflow.nightly.config import RegressionConfig
from edgeflow.nightly.history import CellRecord, History, RunRecord

Kind = Literal["latency", "accuracy", "size", "failure"]


@dataclass
class Finding:
    """One comparison of a cell with its history; ``flagged`` when it is a regression."""

    key: tuple[str, str, str, str]  # model, device, precision, backend
    kind: Kind
    flagged: bool
    message: str
    current: float | None = None
    baseline: float | None = None
    change: float | None = None  # latency/size: tonight / baseline - 1; accuracy: baseline - tonight (points)
    interval: tuple[float, float] | None = None  # bootstrap interval of the latency ratio
    p_value: float | None = None
    threshold: float | None = None
    baseline_runs: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)  # what differs between tonight's run and the last one


def compare_run(history: History, run: RunRecord, cells: list[CellRecord], config: RegressionConfig) -> list[Finding]:
    """Compare every cell of ``run`` with the same cell in earlier finished runs."""
    findings: list[Finding] = []
    for cell in cells:
        past = history.cell_history(cell.key, before=run.id, limit=config.window)
        if not past:
            continue
        last_run, last_cell = past[0]
        changes = describe_changes(last_run, run, last_cell, cell)
        if cell.status != "ok":
            ran_before = last_cell.status == "ok"
            findings.append(
                Finding(
                    key=cell.key,
                    kind="failure",
                    flagged=ran_before,
                    baseline_runs=[last_run.label],
                    changes=changes,
                    message=f"failed tonight ({cell.error})" + (f"; it ran on {last_run.label}" if ran_before else ""),
                )  # fmt: skip
            )
            continue
        good = [(run_, past_cell) for run_, past_cell in past if past_cell.status == "ok"]
        if not good:
            continue
        findings.append(_latency(cell, good, config, changes))
        findings.append(_accuracy(cell, good, config, changes))
        findings.append(_size(cell, good, config, changes))
    return [finding for finding in findings if finding is not None]


def _latency(cell: CellRecord, past: list[tuple[RunRecord, CellRecord]], config: RegressionConfig, changes):
    """Tonight against the nights that measured it on a quiet device (noisy nights are never a baseline); a
    cell timed tonight while its device was busy is compared, said, and never flagged."""
    timed = [(run, old) for run, old in past if old.measured and len(timing_units(old)) and not old.noisy]
    if not cell.measured or not len(timing_units(cell)) or not timed:
        return Finding(
            key=cell.key, kind="latency", flagged=False, changes=changes,
            message="not compared: emulated latencies (an emulator of the device) are not tracked for regressions"
            if cell.emulated else "not compared: estimated latencies are not tracked for regressions"
            if not cell.measured else "not compared: no earlier night has a measured latency on a quiet device",
        )  # fmt: skip
    units = timing_units(cell)
    past_units = [timing_units(old) for _, old in timed]
    # the figures the interval is about: tonight's median unit over the median of the nights' median units
    current = float(np.median(units))
    baseline = float(np.median([np.median(night) for night in past_units]))
    ratio = current / baseline
    verdict = "slower" if ratio >= 1 else "faster"
    low, high = bootstrap_ratio(units, past_units, config)
    p_value = rank_test(units, np.concatenate(past_units))
    figures = (
        f"p50 {current:.3f} ms vs {baseline:.3f} ms over {len(timed)} night(s): {abs(ratio - 1) * 100:.1f}% {verdict} "
        f"({100 * config.confidence:.0f}% interval of the ratio {low:.3f}-{high:.3f}, rank test p={p_value:.2g}"
    )
    if cell.noisy:
        flagged = False
        message = f"{figures}; not judged: timed while other processes kept the device busy)"
    elif len(timed) < config.min_history:
        flagged = False
        message = f"{figures}; not judged yet: {len(timed)} of the {config.min_history} nights that measure the noise)"
    else:
        flagged = low > 1 + config.latency_threshold and p_value < config.rank_test_alpha
        message = f"{figures}; flagged above +{100 * config.latency_threshold:.0f}%)"
    return Finding(
        key=cell.key, kind="latency", flagged=flagged, message=message, current=current, baseline=baseline,
        change=ratio - 1, interval=(low, high), p_value=p_value, threshold=config.latency_threshold,
        baseline_runs=[run.label for run, _ in timed], changes=changes,
    )  # fmt: skip


def timing_units(cell: CellRecord) -> np.ndarray:
    """What a night's latency is resampled by: the per-round p50s when the cells were timed in turn (rounds
    are nearly independent; consecutive samples are not), else the raw samples, else (a tool that reports
    only a summary) the p50 alone: then only the nights are resampled."""
    rounds = cell.detail.get("round_p50_ms") if cell.detail else None
    if rounds and len(rounds) >= 2:
        return np.asarray(rounds, dtype=float)
    if cell.samples is not None and len(cell.samples):
        return np.asarray(cell.samples, dtype=float)
    return np.asarray([] if cell.p50_ms is None else [cell.p50_ms], dtype=float)


def _accuracy(cell: CellRecord, past, config: RegressionConfig, changes):
    scored = [(run, old) for run, old in past if old.top1 is not None]
    if cell.top1 is None or not scored:
        return None
    baseline = float(np.median([old.top1 for _, old in scored]))
    drop = baseline - cell.top1
    flagged = drop > config.accuracy_drop
    return Finding(
        key=cell.key, kind="accuracy", flagged=flagged, current=cell.top1, baseline=baseline, change=drop,
        threshold=config.accuracy_drop, baseline_runs=[run.label for run, _ in scored], changes=changes,
        message=f"test top-1 {100 * cell.top1:.2f}% vs {100 * baseline:.2f}% ({-100 * drop:+.2f} points; "
        f"flagged below -{100 * config.accuracy_drop:.2f})",
    )  # fmt: skip


def _size(cell: CellRecord, past, config: RegressionConfig, changes):
    sized = [(run, old) for run, old in past if old.size_bytes]
    if not cell.size_bytes or not sized:
        return None
    baseline = float(np.median([old.size_bytes for _, old in sized]))
    growth = cell.size_bytes / baseline - 1
    return Finding(
        key=cell.key, kind="size", flagged=growth > config.size_growth, current=float(cell.size_bytes),
        baseline=baseline, change=growth, threshold=config.size_growth,
        baseline_runs=[run.label for run, _ in sized], changes=changes,
        message=f"artifact {cell.size_bytes / 2**20:.2f} MiB vs {baseline / 2**20:.2f} MiB ({100 * growth:+.1f}%; "
        f"flagged above +{100 * config.size_growth:.0f}%)",
    )  # fmt: skip


def bootstrap_ratio(current: np.ndarray, past: list[np.ndarray], config: RegressionConfig, seed: int = 0):
    """Interval of median(tonight) / median over nights of each night's median, resampling nights and samples."""
    rng = np.random.default_rng(seed)
    draws = config.bootstrap
    tonight = np.median(rng.choice(current, size=(draws, len(current))), axis=1)
    chosen = rng.integers(0, len(past), size=(draws, len(past)))  # resample the nights themselves ...
    slots = np.empty((draws, len(past)))
    for slot in range(len(past)):  # ... and, for every night drawn, its units afresh (a night drawn twice differs)
        fresh = np.stack([np.median(rng.choice(units, size=(draws, len(units))), axis=1) for units in past])
        slots[:, slot] = fresh[chosen[:, slot], np.arange(draws)]
    baseline = np.median(slots, axis=1)
    ratios = tonight / baseline
    tail = (1 - config.confidence) / 2
    return float(np.quantile(ratios, tail)), float(np.quantile(ratios, 1 - tail))


def rank_test(current: np.ndarray, previous: np.ndarray) -> float:
    """One-sided Mann-Whitney U: p-value of 'tonight's units are not larger than the earlier nights'."""
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(current, previous, alternative="greater").pvalue)


def describe_changes(old_run: RunRecord, new_run: RunRecord, old_cell: CellRecord, new_cell: CellRecord) -> list[str]:
    """What differs between two runs of a cell: versions, machine, recipe keys, model and artifact hashes."""
    changes = []
    for name, (old, new) in _differences(old_run.environment, new_run.environment).items():
        changes.append(f"environment {name}: {old} -> {new}")
    for name, (old, new) in _differences(old_run.recipe, new_run.recipe).items():
        changes.append(f"recipe {name}: {old} -> {new}")
    for label, old, new in (
        ("runtime", old_cell.runtime_version, new_cell.runtime_version),
        ("model weights sha256", old_cell.model_hash, new_cell.model_hash),
        ("artifact sha256", old_cell.artifact_hash, new_cell.artifact_hash),
    ):
        if old != new and (old or new):
            changes.append(f"{label}: {_short(old)} -> {_short(new)}")
    return changes


def _short(value: str | None) -> str:
    return "none" if value is None else value[:12] if len(value) == 64 else value


def _differences(old: dict, new: dict) -> dict[str, tuple]:
    flat_old, flat_new = _flatten(old), _flatten(new)
    return {
        key: (flat_old.get(key), flat_new.get(key))
        for key in sorted(set(flat_old) | set(flat_new))
        if flat_old.get(key) != flat_new.get(key)
    }


def _flatten(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        flat: dict[str, object] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}
