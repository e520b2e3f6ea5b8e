"""NNCF PTQ with the preset chosen by measurement: the fastest on the device among those within the budget.

Which activation scheme is fastest depends on the CPU and runtime, not on the network alone: on an
AMX Xeon, MobileNetV3 quantized with the ``performance`` preset (symmetric activations) ran 0.98-1.08x
the speed of OpenVINO's bf16 default while ``mixed`` (asymmetric, the textbook choice for h-swish) ran
0.91-0.97x.
So both are built, each is judged on the holdout split, and those within ``max_drop`` are timed in
turn on the device's runtime (interleaved rounds, median of the per-round p50s); the fastest is kept,
unless another within the budget runs within ``SAME_SPEED`` of it (timing noise on a shared CPU) and is more
accurate on holdout: then that one. On Imagenette's MobileNetV3 (bench/int8_imagenette.py, 2026-12-02) the two
presets ran 2% apart (mixed 0.870 ms, performance 0.853 ms) and performance was 0.15 points more accurate on
holdout; in an earlier run, mixed ran 3.4% faster and was 0.3 points less accurate on test.
"""

from __future__ import annotations

from pathlib import Path

from edgeflow.artifact import Artifact
from edgeflow.backends import get_backend, host_runtime
from edgeflow.compress.nncf_ptq import quantize_nncf
from edgeflow.compress.stats import QuantizationStats
from edgeflow.data import DataSplits
from edgeflow.device import RuntimeSettings
from edgeflow.profiling.loop import ProfileConfig
from edgeflow.recipe import QuantizeConfig

PRESETS = ("mixed", "performance")
TIMING_ROUNDS = 3
SAME_SPEED = 0.05  # p50s closer than this fraction are the same speed: accuracy decides
_TIMING = ProfileConfig(warmup=10, iterations=100_000, max_seconds=1.0, min_iterations=20)


def quantize_fastest_preset(
    artifact: Artifact,
    *,
    splits: DataSplits,
    config: QuantizeConfig,
    path: Path,
    seed: int,
    settings: RuntimeSettings | None = None,
) -> tuple[Artifact, QuantizationStats]:
    """NNCF PTQ with each preset; the fastest (measured with ``settings``) within ``config.max_drop``
    (:func:`choose_preset`: accuracy decides between presets of the same speed).

    When no preset meets the budget, the most accurate is kept and the summary says so.
    """
    from edgeflow.accuracy import holdout_top1

    float_top1 = holdout_top1(artifact, splits.holdout)
    candidates: dict[str, tuple[Artifact, QuantizationStats, float]] = {}
    for preset in PRESETS:
        attempt = config.model_copy(update={"preset": preset})
        candidate_path = path.with_name(f"{path.stem}.{preset}{path.suffix}")
        quantized, summary = quantize_nncf(
            artifact, calibration=splits.train, config=attempt, path=candidate_path, seed=seed
        )
        candidates[preset] = (quantized, summary, holdout_top1(quantized, splits.holdout))
    top1s = {preset: top1 for preset, (_, _, top1) in candidates.items()}
    within = within_budget(top1s, float_top1=float_top1, max_drop=config.max_drop)
    latency = _time_in_turn({preset: candidates[preset][0] for preset in within}, settings) if len(within) > 1 else {}
    chosen, why = choose_preset(top1s, latency, float_top1=float_top1, max_drop=config.max_drop)
    notes = []
    for preset, (_, _, top1) in candidates.items():
        timing = f", p50 {latency[preset]:.3f} ms (measured)" if preset in latency else ""
        notes.append(
            f"preset {preset}: holdout top-1 {100 * top1:.2f}% (float {100 * float_top1:.2f}%){timing}"
            + (f" <- kept, {why}" if preset == chosen else "")
        )
    for preset, (quantized, _, _) in candidates.items():
        if preset != chosen:
            quantized.remove()
    quantized, summary, top1 = candidates[chosen]
    quantized.move_to(path)
    settings_record = {
        **summary.settings,
        "preset_choice": {
            preset: {"holdout_top1": top1_, "p50_ms": latency.get(preset), "measured": preset in latency}
            for preset, (_, _, top1_) in candidates.items()
        },
    }
    summary = summary.model_copy(
        update={
            "settings": settings_record,
            "holdout_top1_float": float_top1,
            "holdout_top1_quantized": top1,
            "notes": [*summary.notes, *notes],
        }
    )
    return quantized, summary


def within_budget(top1: dict[str, float], *, float_top1: float, max_drop: float) -> list[str]:
    """The presets whose holdout top-1 is at most ``max_drop`` below ``float_top1``."""
    return [preset for preset in top1 if float_top1 - top1[preset] <= max_drop + 1e-9]


def choose_preset(
    top1: dict[str, float], latency: dict[str, float], *, float_top1: float, max_drop: float
) -> tuple[str, str]:
    """The preset kept, and why: the fastest within ``max_drop`` of ``float_top1`` on holdout, or one within
    ``SAME_SPEED`` of its p50 that is more accurate; the most accurate when none is within the budget."""
    within = within_budget(top1, float_top1=float_top1, max_drop=max_drop)
    if not within:
        return max(top1, key=top1.__getitem__), "no preset within the budget: the most accurate"
    if len(within) == 1:
        return within[0], "the only preset within the budget"
    fastest = min(within, key=latency.__getitem__)
    same_speed = [preset for preset in within if latency[preset] <= latency[fastest] * (1 + SAME_SPEED)]
    best = max(same_speed, key=lambda preset: (top1[preset], preset == fastest))
    if best == fastest:
        return fastest, "fastest within the budget"
    return best, f"within {100 * SAME_SPEED:.0f}% of the fastest and more accurate"


def _time_in_turn(artifacts: dict[str, Artifact], settings: RuntimeSettings | None) -> dict[str, float]:
    """Median over rounds of each artifact's p50 (ms), the artifacts timed in turn in every round."""
    from edgeflow.profiling.in_turn import time_in_turn

    compiled = {}
    for name, artifact in artifacts.items():
        compiled[name] = get_backend(host_runtime(artifact)).compile(artifact, settings=settings or RuntimeSettings())
    return time_in_turn(compiled, rounds=TIMING_ROUNDS, config=_TIMING).medians()
