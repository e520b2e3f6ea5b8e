"""NNCF PTQ with the preset chosen by measurement: the fastest on the device among those within the budget.

Which activation scheme is fastest depends on the CPU and runtime, not on the network alone: on an
AMX Xeon, MobileNetV3 quantized with the ``performance`` preset (symmetric activations) ran 0.98-1.08x
the speed of OpenVINO's bf16 default while ``mixed`` (asymmetric, the textbook choice for h-swish) ran
0.91-0.97x.
So both are built, each is judged on the holdout split, and those within ``max_drop`` are timed in
turn on the device's runtime (interleaved rounds, median of the per-round p50s); the fastest is kept.
"""

from __future__ import annotations

from pathlib import Path

from edgeflow.artifact import Artifact
from edgeflow.backends import get_backend
from edgeflow.compress.nncf_ptq import quantize_nncf
from edgeflow.compress.stats import QuantizationStats
from edgeflow.data import DataSplits
from edgeflow.device import RuntimeSettings
from edgeflow.profiling.loop import ProfileConfig
from edgeflow.recipe import QuantizeConfig

PRESETS = ("mixed", "performance")
TIMING_ROUNDS = 3
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
    """NNCF PTQ with each preset; the fastest (measured with ``settings``) within ``config.max_drop``.

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
    within = [preset for preset, (_, _, top1) in candidates.items() if float_top1 - top1 <= config.max_drop + 1e-9]
    latency = _time_in_turn({preset: candidates[preset][0] for preset in within}, settings) if len(within) > 1 else {}
    if within:
        chosen = min(within, key=lambda preset: latency.get(preset, 0.0))
        why = "fastest within the budget" if len(within) > 1 else "the only preset within the budget"
    else:
        chosen = max(candidates, key=lambda preset: candidates[preset][2])
        why = "no preset within the budget: the most accurate"
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


def _time_in_turn(artifacts: dict[str, Artifact], settings: RuntimeSettings | None) -> dict[str, float]:
    """Median over rounds of each artifact's p50 (ms), the artifacts timed in turn in every round."""
    from edgeflow.profiling.in_turn import time_in_turn

    compiled = {}
    for name, artifact in artifacts.items():
        backend = "onnxruntime" if artifact.format == "onnx" else "openvino"
        compiled[name] = get_backend(backend).compile(artifact, settings=settings or RuntimeSettings())
    return time_in_turn(compiled, rounds=TIMING_ROUNDS, config=_TIMING).medians()
