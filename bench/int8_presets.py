"""Which INT8 setting runs fastest on this CPU: NNCF presets, with and without SE blocks in float, timed in turn.

Trains (or reuses, from --cache) the model at --train-resolution on digits-hard, exports it at
--resolution, builds OpenVINO fp32 (default precision and f32) and INT8 variants (mixed, performance, each
also with the squeeze-and-excitation gates in float: ``squeeze_excitation: float``), and prints test top-1
and the median over --rounds interleaved rounds of each variant's p50.

    .venv/bin/python bench/int8_presets.py [--model mobilenet_v3_large] [--resolution 96] [--train-resolution 96]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import quantization as quantization_bench  # noqa: E402  (bench/quantization.py: the timing in turn)

import edgeflow  # noqa: E402
from edgeflow.recipe import VariantSpec, load_recipe  # noqa: E402


def int8(name: str, **quantize) -> VariantSpec:
    return VariantSpec.model_validate(
        {"name": name, "backend": "openvino", "precision": "int8",
         "quantize": {"method": "nncf-ptq", "subset_size": 300, **quantize}}
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v3_large")
    parser.add_argument("--resolution", type=int, default=96, help="input side of the exported models")
    parser.add_argument("--train-resolution", type=int, default=None, help="side the checkpoint is trained at")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--cache", type=Path, default=Path("reports/bench-cache"))
    parser.add_argument("--out", type=Path, default=Path("reports/bench-int8-presets"))
    args = parser.parse_args()
    recipe = load_recipe("quantization").model_copy(deep=True)
    recipe.model.resolution = args.train_resolution or args.resolution
    float_variants = recipe.variants[:2]  # openvino-fp32 (default precision) and openvino-fp32-exec-f32
    checkpoint = args.cache / f"{args.model}_{recipe.data}_{recipe.model.resolution}px_{recipe.train.epochs}ep.pt"
    if not checkpoint.exists():
        training = recipe.model_copy(update={"variants": float_variants[:1]})
        edgeflow.optimize(args.model, recipe=training, out=args.out / "training")
        args.cache.mkdir(parents=True, exist_ok=True)
        (args.out / "training" / "model.pt").replace(checkpoint)
    recipe.model.resolution = args.resolution
    recipe.variants = [
        *float_variants,
        int8("int8-mixed", preset="mixed"),
        int8("int8-performance", preset="performance"),
        int8("int8-mixed-se-float", preset="mixed", squeeze_excitation="float"),
        int8("int8-performance-se-float", preset="performance", squeeze_excitation="float"),
    ]
    report = edgeflow.optimize(str(checkpoint), arch=args.model, recipe=recipe, out=args.out / "run")
    p50 = quantization_bench.interleaved(report, args.out / "run", rounds=args.rounds, seconds=1.5)
    base = p50["openvino-fp32"]
    trained_at = args.train_resolution or args.resolution
    print(f"\n{args.model} at {args.resolution} px (checkpoint trained at {trained_at} px)\n")
    print("| variant | precision (artifact / executed) | test top-1 % | p50 ms | vs openvino-fp32 |")
    print("|---|---|---|---|---|")
    for variant in report.variants:
        print(
            f"| {variant.name} | {variant.precision} / {variant.execution_precision} | "
            f"{100 * variant.accuracy.top1:.2f} | {p50[variant.name]:.3f} | {base / p50[variant.name]:.2f}x |"
        )


if __name__ == "__main__":
    main()
