"""Transfer learning on a user's photos (issue 29): ImageNet weights fine-tuned on clothing-small-160, beside the
same architecture trained from random weights for the same wall-clock time, and mobilenet_v3_large fine-tuned
from our Imagenette checkpoint; then the fine-tuned EfficientNet-Lite1 as float and INT8 through OpenVINO, ONNX
Runtime and LiteRT, each INT8 scored against its own runtime's float artifact and timed in turn with it.

    .venv/bin/python bench/transfer_clothing.py [--rows lite1,scratch,mnv3,int8] [--rounds 7] [--seconds 1.5]
        [--report reports/transfer-clothing-cpu.md] [--out reports/transfer-clothing]

Every run is `edgeflow optimize` (edgeflow.optimize) with recipes/transfer-clothing.yaml:
- lite1: ../shared/models/efficientnet-lite1 (efficientnet_pytorch's file, loaded into timm's tf_efficientnet_lite1
  by order and shape), a new head for the 10 classes, fine-tuned (head, then the whole network);
- scratch: timm:tf_efficientnet_lite1 from random weights with the recipe's ``train`` cut to the lite1 run's
  training minutes (``train.minutes``), at the side fine-tuning trained at (the most epochs in those minutes);
- mnv3: bench/checkpoints/mobilenet_v3_large-imagenette-96px-40ep.pt (10 Imagenette classes: ``finetune.head:
  new``), fine-tuned with the same recipe;
- int8: lite1's fine-tuned weights (its model.pt, the data's 10 classes: no further training) with every variant
  of the recipe: float and INT8 artifacts of OpenVINO, ONNX Runtime and LiteRT.
Test top-1 is the torch model's on the official test split (372 photos); the worst class is the class with the
lowest top-1 there. Needs ../shared (skips with a reason otherwise).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CLOTHING = SHARED / "data" / "clothing-small-160"
LITE1 = SHARED / "models" / "efficientnet-lite1" / "efficientnet-lite1-77cc7160.pth"
MNV3 = ROOT / "bench" / "checkpoints" / "mobilenet_v3_large-imagenette-96px-40ep.pt"
RECIPE = ROOT / "recipes" / "transfer-clothing.yaml"
RUNTIMES = ("openvino", "onnxruntime", "litert")
ROWS = {
    "lite1": "EfficientNet-Lite1, ImageNet weights",
    "scratch": "EfficientNet-Lite1, random weights, same minutes",
    "mnv3": "mobilenet_v3_large, our Imagenette weights",
}


def earlier(folder: Path):
    """The report of a row run before, or None."""
    from edgeflow.report.schema import Report

    path = folder / "report.json"
    return Report.model_validate_json(path.read_text()) if path.is_file() else None


def optimize(model: str, *, arch: str | None, recipe, out: Path, weights: str | None = None):
    import edgeflow
    from edgeflow.progress import Progress

    return edgeflow.optimize(
        model, arch=arch, recipe=recipe, data=str(CLOTHING), out=out, weights=weights, progress=Progress.to_stderr()
    )


def float_only(recipe):
    """The recipe with the torch variant only (the training rows need no artifacts timed)."""
    return recipe.model_copy(update={"variants": [v for v in recipe.variants if v.backend == "torch"]})


def training_row(label: str, report) -> str:
    torch_variant = next(v for v in report.variants if v.backend == "torch")
    accuracy = torch_variant.accuracy
    label_index, worst = accuracy.worst_class
    classes = report.data["classes"]
    training = report.training
    return (
        f"| {label} | {training.describe()} | {report.model.resolution} | {training.seconds / 60:.1f} | "
        f"{100 * accuracy.top1:.2f} | {100 * worst:.1f} ({classes[label_index]}) |"
    )


def int8_rows(report, folder: Path, *, rounds: int, seconds: float) -> list[str]:
    """Each runtime's float and INT8 artifact: test top-1 (its runtime), agreement of the INT8 top-1 with the
    float artifact's on every test photo, and p50s timed in turn (median over rounds)."""
    from edgeflow.accuracy import collect_logits
    from edgeflow.backends import artifact_from_path, get_backend
    from edgeflow.data.load import load_data_for_input
    from edgeflow.data.preprocess import PreprocessSpec
    from edgeflow.device import load_device
    from edgeflow.profiling.in_turn import time_in_turn
    from edgeflow.profiling.loop import ProfileConfig

    spec = PreprocessSpec.model_validate(report.data["preprocess"])
    shape = tuple(report.model.input_shape)
    seed = report.data["seed"]
    splits = load_data_for_input(str(CLOTHING), input_shape=shape, preprocess=spec, seed=seed, split="test")
    device = load_device("cpu")
    compiled, predictions, top1 = {}, {}, {}
    for variant in report.variants:
        if variant.backend not in RUNTIMES:
            continue
        artifact = artifact_from_path(folder / variant.artifact)
        settings = device.runtime
        if variant.execution_precision == "f32" and variant.backend == "openvino":
            settings = settings.model_copy(update={"execution_precision": "f32"})
        compiled[variant.name] = get_backend(variant.backend).compile(artifact, settings=settings)
        logits, labels = collect_logits(compiled[variant.name], splits.test)
        predictions[variant.name] = logits.argmax(axis=1)
        top1[variant.name] = float(np.mean(predictions[variant.name] == labels))
    config = ProfileConfig(warmup=20, iterations=100000, max_seconds=seconds, min_iterations=20)
    medians = time_in_turn(compiled, rounds=rounds, config=config).medians()
    rows = []
    for runtime in RUNTIMES:
        fp32, int8 = f"{runtime}-fp32", f"{runtime}-int8"
        if fp32 not in compiled or int8 not in compiled:
            rows.append(f"| {runtime} | not built (see the report's notes) | | | | | | |")
            continue
        agreement = float(np.mean(predictions[fp32] == predictions[int8]))
        drop = 100 * (top1[fp32] - top1[int8])
        rows.append(
            f"| {runtime} | {100 * top1[fp32]:.2f} | {100 * top1[int8]:.2f} | {drop:+.2f} | {100 * agreement:.1f} | "
            f"{medians[fp32]:.3f} | {medians[int8]:.3f} | {medians[fp32] / medians[int8]:.2f}x |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="lite1,scratch,mnv3,int8")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "transfer-clothing")
    parser.add_argument("--report", type=Path, default=ROOT / "reports" / "transfer-clothing-cpu.md")
    args = parser.parse_args()
    missing = [str(path) for path in (CLOTHING, LITE1) if not path.exists()]
    if missing:
        print(f"skipped: {', '.join(missing)} not found (../shared holds the photos and the weights)")
        return
    from imagenette import CLOTHING_PHOTOS, heading

    from edgeflow.io import write_text
    from edgeflow.recipe import load_recipe

    recipe = load_recipe(RECIPE)
    rows = [row for row in args.rows.split(",") if row]  # --rows "": the table again from the reports
    args.out.mkdir(parents=True, exist_ok=True)
    runs = {}
    if "lite1" in rows:
        runs["lite1"] = optimize(
            str(LITE1), arch="timm:tf_efficientnet_lite1", recipe=float_only(recipe), out=args.out / "lite1"
        )
    if "scratch" in rows:
        lite1 = runs.get("lite1") or earlier(args.out / "lite1")
        if lite1 is None:
            raise SystemExit("the scratch row takes the lite1 row's training minutes: run --rows lite1 first")
        scratch_recipe = float_only(recipe)
        budget = {"minutes": lite1.training.seconds / 60, "epochs": 200}
        scratch_recipe.train = scratch_recipe.train.model_copy(update=budget)
        side = recipe.finetune.resolution or recipe.model.resolution  # the side fine-tuning trained at: most epochs
        scratch_recipe.model = scratch_recipe.model.model_copy(update={"resolution": side})
        runs["scratch"] = optimize(
            "timm:tf_efficientnet_lite1", arch=None, recipe=scratch_recipe, out=args.out / "scratch", weights="none"
        )
    if "mnv3" in rows:
        mnv3_recipe = float_only(recipe)
        mnv3_recipe.finetune = mnv3_recipe.finetune.model_copy(update={"head": "new"})
        runs["mnv3"] = optimize(str(MNV3), arch="mobilenet_v3_large", recipe=mnv3_recipe, out=args.out / "mnv3")
    if "int8" in rows:  # the fine-tuned weights (lite1's model.pt) given back to optimize: every variant
        tuned = args.out / "lite1" / "model.pt"
        if not tuned.is_file():
            raise SystemExit(f"the int8 row quantizes the fine-tuned {tuned}: run --rows lite1 first")
        runs["int8"] = optimize(str(tuned), arch="timm:tf_efficientnet_lite1", recipe=recipe, out=args.out / "int8")
    for row in (*ROWS, "int8"):  # rows run before (an earlier --rows) are read back from their report.json
        if row not in runs and earlier(args.out / row) is not None:
            runs[row] = earlier(args.out / row)
    training = [training_row(ROWS[row], runs[row]) for row in ROWS if row in runs]
    int8 = []
    if "int8" in runs:
        int8 = int8_rows(runs["int8"], args.out / "int8", rounds=args.rounds, seconds=args.seconds)
    command = " ".join([".venv/bin/python bench/transfer_clothing.py", *map(shlex.quote, sys.argv[1:])])
    ran = ", ".join(f"{row} {run.created[:16].replace('T', ' ')}" for row, run in runs.items())
    lines = [
        *heading("Transfer learning on clothing-small-160 (this CPU)", command=command, data=CLOTHING_PHOTOS),
        f"Recipe: recipes/transfer-clothing.yaml. Rows not run by this command are read back from their report.json "
        f"in {args.out.name}/; each run's time: {ran}.",
        "",
        "| model | training | side px | train min | test top-1 % | worst class top-1 % |",
        "|---|---|---|---|---|---|",
        *training,
    ]
    if int8:
        lines += [
            "",
            f"## The fine-tuned EfficientNet-Lite1, float and INT8 (batch 1; p50s timed in turn, median of "
            f"{args.rounds} rounds)",
            "",
            "| runtime | float top-1 % | INT8 top-1 % | drop (points) | INT8 agrees with float % | float p50 ms | "
            "INT8 p50 ms | speed-up |",
            "|---|---|---|---|---|---|---|---|",
            *int8,
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    write_text(args.report, text)


if __name__ == "__main__":
    main()
