"""NetAdapt on the device: the adapted model against its start and the multiplier baselines, measured in one run.

Trains mobilenet_v3_large on digits-hard at 128 px once (cached under --cache), then runs
`edgeflow search` with recipes/search.yaml on this CPU with OpenVINO and prints the models (measured
p50, test top-1 through OpenVINO), the iterations, the lookup table's error against measured latency,
what the search cost, and the goals of the NetAdapt issue.

    .venv/bin/python bench/search.py [--model mobilenet_v3_large] [--resolution 128] [--ratio 0.55]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import edgeflow
from edgeflow.progress import Progress
from edgeflow.recipe import load_recipe


def trained_start(model: str, *, resolution: int, epochs: int, cache: Path, out: Path) -> Path:
    """A checkpoint of ``model`` trained on digits-hard (the bench starts from a trained model)."""
    recipe = load_recipe("search").model_copy(deep=True)
    recipe.model.resolution, recipe.train.epochs = resolution, epochs
    checkpoint = cache / f"{model}_{recipe.data}_{resolution}px_{epochs}ep.pt"
    if not checkpoint.exists():
        training = recipe.model_copy(update={"search": None})
        edgeflow.optimize(model, recipe=training, out=out / f"{model}-training", progress=Progress.to_stderr())
        cache.mkdir(parents=True, exist_ok=True)
        (out / f"{model}-training" / "model.pt").replace(checkpoint)
    return checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v3_large")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--ratio", type=float, default=None, help="latency ratio (default: the recipe's)")
    parser.add_argument("--cache", type=Path, default=Path("reports/bench-cache"))
    parser.add_argument("--out", type=Path, default=Path("reports/bench-search"))
    parser.add_argument("--resume", action="store_true", help="go on with (or re-compare) the search in --out")
    parser.add_argument("--widths", default=None, help="width baselines, comma-separated (default: the recipe's)")
    parser.add_argument("--resolutions", default=None, help="resolution baselines (default: the recipe's; '' = none)")
    args = parser.parse_args()

    checkpoint = trained_start(
        args.model, resolution=args.resolution, epochs=args.epochs, cache=args.cache, out=args.out
    )
    recipe = load_recipe("search").model_copy(deep=True)
    recipe.model.resolution = args.resolution
    baselines = recipe.search.baselines
    if args.widths is not None:
        baselines.widths = [float(value) for value in args.widths.split(",") if value]
    if args.resolutions is not None:
        baselines.resolutions = [float(value) for value in args.resolutions.split(",") if value]
    started = time.perf_counter()
    report = edgeflow.search(
        str(checkpoint), arch=args.model, recipe=recipe, out=args.out / args.model, latency_ratio=args.ratio,
        resume=args.resume, progress=Progress.to_stderr(),
    )  # fmt: skip
    total = time.perf_counter() - started
    print((args.out / args.model / "search.md").read_text())

    start, final = report.point("start"), report.point("netadapt")
    speedup = report.speedup()
    drop = 100 * (start.test_top1 - final.test_top1)
    width_top1 = report.width_top1_at(final.p50())
    table = report.table
    print(f"search {report.search_seconds / 60:.1f} min (whole command incl. baselines {total / 60:.1f} min)\n")
    print("| goal | figure | met |\n|---|---|---|")
    rows = [
        ("measured p50 speed-up vs start >= 1.7x", f"{speedup:.2f}x", speedup >= 1.7),
        ("test top-1 drop vs start <= 0.5 point", f"{drop:+.2f} points", drop <= 0.5),
        (
            "test top-1 >= width multiplier at equal latency",
            "no width point brackets its latency"
            if width_top1 is None
            else f"{100 * final.test_top1:.2f}% vs {100 * width_top1:.2f}% (interpolated)",
            width_top1 is not None and final.test_top1 >= width_top1,
        ),
        (
            "table within +-10% for >= 95% of measured candidates",
            "n/a" if table is None else f"{100 * table.within_10_percent:.1f}% of {table.candidates}",
            table is not None and table.within_10_percent >= 0.95,
        ),
        (
            "(the table alone, without recalibration, within +-10%)",
            "n/a"
            if table is None or table.table_only_within_10_percent is None
            else f"{100 * table.table_only_within_10_percent:.1f}% of {table.candidates}",
            table is not None and (table.table_only_within_10_percent or 0) >= 0.95,
        ),
        ("search within 45 min", f"{report.search_seconds / 60:.1f} min", report.search_seconds <= 45 * 60),
    ]
    for goal, figure, met in rows:
        print(f"| {goal} | {figure} | {'yes' if met else 'no'} |")


if __name__ == "__main__":
    main()
