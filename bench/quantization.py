"""Quantization that keeps accuracy: every precision and method, per model, measured in one run.

For each model: train on digits-hard once (cached as a checkpoint under --cache), then run
`edgeflow optimize` with recipes/quantization.yaml and print, per variant, test top-1 through its own
runtime, the drop against its float artifact, agreement with fp32, p50 latency and speed-ups. Then the
goals of the quantization issue are checked and printed.

    .venv/bin/python bench/quantization.py [--models mobilenet_v3_large,mobilenet_v2,resnet18] [--resolution 96]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import edgeflow
from edgeflow.recipe import load_recipe


def run(model: str, *, resolution: int, epochs: int, cache: Path, out: Path):
    recipe = load_recipe("quantization").model_copy(deep=True)
    recipe.model.resolution = resolution
    recipe.train.epochs = epochs
    checkpoint = cache / f"{model}_{recipe.data}_{resolution}px_{epochs}ep.pt"
    if not checkpoint.exists():  # train once, keep the weights, then every run starts from them
        training = recipe.model_copy(update={"variants": recipe.variants[:1]})
        edgeflow.optimize(model, recipe=training, out=out / f"{model}-training")
        cache.mkdir(parents=True, exist_ok=True)
        (out / f"{model}-training" / "model.pt").replace(checkpoint)
    return edgeflow.optimize(str(checkpoint), arch=model, recipe=recipe, out=out / model)


def interleaved(report, folder: Path, *, rounds: int, seconds: float) -> dict[str, float]:
    """Median over ``rounds`` of each variant's p50, the variants timed in turn in every round."""
    from edgeflow.backends import artifact_from_path, get_backend
    from edgeflow.device import load_device
    from edgeflow.profiling.in_turn import time_in_turn
    from edgeflow.profiling.loop import ProfileConfig

    device = load_device("cpu")
    compiled = {}
    for variant in report.variants:
        if variant.backend == "torch":
            continue
        requested = variant.runtime_settings.get("requested_execution_precision", "default")
        settings = device.runtime.model_copy(update={"execution_precision": requested})
        compiled[variant.name] = get_backend(variant.backend).compile(
            artifact_from_path(folder / variant.artifact), settings=settings
        )
    config = ProfileConfig(warmup=20, iterations=100000, max_seconds=seconds, min_iterations=20)
    return time_in_turn(compiled, rounds=rounds, config=config).medians()


def print_table(report, p50: dict[str, float], rounds: int) -> dict[str, object]:
    by_name = {variant.name: variant for variant in report.variants}
    for name, value in p50.items():  # the interleaved medians replace the single timing of the run
        by_name[name].latency_ms.p50 = value
    default = by_name["openvino-fp32"]
    print(
        f"\n### {report.model.arch or report.model.name} on {report.data['name']} at {report.model.resolution} px "
        f"(test split {report.data['test']} images; "
        f"float at OpenVINO's default precision runs {default.execution_precision}; p50 = median over {rounds} "
        "interleaved rounds)\n"
    )
    print(
        "| variant | precision (artifact / executed) | test top-1 % | drop vs its fp32 (points) | agreement % | cosine "
        "| p50 ms | speed-up vs openvino-fp32 | speed-up vs its fp32 | size MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for variant in report.variants:
        own_float = by_name["onnxruntime-fp32"] if variant.backend == "onnxruntime" else default
        drop = 100 * (own_float.accuracy.top1 - variant.accuracy.top1)
        print(
            f"| {variant.name}{' *' if variant.recommended else ''} "
            f"| {variant.precision} / {variant.execution_precision} "
            f"| {100 * variant.accuracy.top1:.2f} | {drop:+.2f} | {100 * variant.agreement.top1_agreement:.1f} "
            f"| {variant.agreement.cosine_similarity:.4f} | {variant.latency_ms.p50:.3f} "
            f"| {default.latency_ms.p50 / variant.latency_ms.p50:.2f}x "
            f"| {own_float.latency_ms.p50 / variant.latency_ms.p50:.2f}x "
            f"| {variant.size_bytes / 2**20:.2f} |"
        )
    int8, qdq, dynamic = by_name["openvino-int8"], by_name["onnxruntime-int8-qdq"], by_name["onnxruntime-int8-dynamic"]
    choice = int8.quantization.settings.get("preset_choice", {}) if int8.quantization else {}
    if choice:
        print(f"\nopenvino-int8 (preset: fastest) kept **{int8.quantization.settings['preset']}**:")
        for note in int8.quantization.notes:
            if note.startswith("preset "):
                print(f"- {note}")
    ort = by_name["onnxruntime-fp32"]
    return {
        "openvino int8 drop <= 1.0": 100 * (default.accuracy.top1 - int8.accuracy.top1) <= 1.0,
        "openvino int8 >= 1.25x vs default-precision float": default.latency_ms.p50 / int8.latency_ms.p50 >= 1.25,
        "onnxruntime qdq drop <= 1.0": 100 * (ort.accuracy.top1 - qdq.accuracy.top1) <= 1.0,
        "naive dynamic loses more than qdq": dynamic.accuracy.top1 < qdq.accuracy.top1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v3_large,mobilenet_v2,resnet18")
    parser.add_argument("--resolution", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (median quoted)")
    parser.add_argument("--seconds", type=float, default=1.5, help="timing per variant per round")
    parser.add_argument("--cache", type=Path, default=Path("reports/bench-cache"))
    parser.add_argument("--out", type=Path, default=Path("reports/bench-quantization"))
    args = parser.parse_args()
    goals = {}
    for model in args.models.split(","):
        report = run(model, resolution=args.resolution, epochs=args.epochs, cache=args.cache, out=args.out)
        p50 = interleaved(report, args.out / model, rounds=args.rounds, seconds=args.seconds)
        goals[model] = print_table(report, p50, args.rounds)
    print("\n| model | goal | met |\n|---|---|---|")
    for model, checks in goals.items():
        for goal, met in checks.items():
            print(f"| {model} | {goal} | {'yes' if met else 'NO'} |")


if __name__ == "__main__":
    main()
