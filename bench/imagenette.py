"""The Imagenette checkpoints the real-photo benches start from, and the facts every real-photo table heads with.

Each model is trained from scratch once with recipes/imagenette.yaml (``--epochs`` and ``--side`` may shorten
it) and kept with a card (JSON: side, epochs, minutes of training, test top-1, command, date, machine).
``bench/checkpoints/`` holds the committed ones (mobilenet_v3_large: an hour of training here); the others are
cached under ``--cache`` (``reports/bench-cache``). A finished ``edgeflow optimize`` of the recipe is kept with

    .venv/bin/python bench/imagenette.py --keep reports/imagenette [--to bench/checkpoints]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import edgeflow
from edgeflow.environment import cpu_description
from edgeflow.io import write_text
from edgeflow.progress import Progress
from edgeflow.recipe import Recipe, load_recipe

DATA = Path("../shared/data/imagenette2-128")
RECIPE = Path("recipes/imagenette.yaml")
COMMITTED = Path("bench/checkpoints")
CACHE = Path("reports/bench-cache")


def require_data() -> Path:
    """The shared Imagenette folder, or exit with one line saying where it was looked for."""
    if not (DATA / "train").is_dir():
        sys.exit(f"bench: {DATA} is missing (the shared Imagenette 2 set, ../shared beside the project)")
    return DATA


def recipe(*, epochs: int | None = None, side: int | None = None) -> Recipe:
    """recipes/imagenette.yaml, with its epochs and input side overridden where given."""
    loaded = load_recipe(RECIPE).model_copy(deep=True)
    if epochs is not None:
        loaded.train.epochs = epochs
    if side is not None:
        loaded.model.resolution = side
    return loaded


def checkpoint_name(model: str, *, side: int, epochs: int) -> str:
    return f"{model.replace(':', '-')}-imagenette-{side}px-{epochs}ep"


def machine() -> str:
    cpu = cpu_description()
    return f"{cpu['name']}, {cpu['logical_cores']} cores ({', '.join(cpu['isa'])})"


def trained(
    model: str, *, epochs: int | None = None, side: int | None = None, cache: Path = CACHE, out: Path
) -> tuple[Path, dict]:
    """The checkpoint of ``model`` trained on Imagenette (committed, cached, or trained now) and its card."""
    require_data()
    spec = recipe(epochs=epochs, side=side)
    name = checkpoint_name(model, side=spec.model.resolution, epochs=spec.train.epochs)
    for folder in (COMMITTED, cache):
        if (folder / f"{name}.pt").exists():
            return folder / f"{name}.pt", json.loads((folder / f"{name}.json").read_text())
    folder = out / f"{name}-training"
    training = spec.model_copy(update={"variants": spec.variants[:1]})  # the float artifact gives the test top-1
    report = edgeflow.optimize(model, recipe=training, out=folder, progress=Progress.to_stderr())
    command = f"edgeflow optimize {model} --recipe {RECIPE} (epochs {spec.train.epochs}, side {spec.model.resolution})"
    return keep(folder, report=report, to=cache, name=name, command=command)


def keep(folder: Path, *, report=None, to: Path, name: str | None = None, command: str | None = None):
    """Copy ``folder``'s model.pt (a finished optimize of the recipe) to ``to`` with its card."""
    from edgeflow.report.schema import Report

    report = report or Report.model_validate_json((folder / "report.json").read_text())
    model = report.model.arch or report.model.name
    side, epochs = report.model.resolution, report.training.epochs
    name = name or checkpoint_name(model, side=side, epochs=epochs)
    floats = next(variant for variant in report.variants if variant.precision == "fp32")
    card = {
        "model": model,
        "data": report.data["name"],
        "side": side,
        "epochs": epochs,
        "training_minutes": round(report.training.seconds / 60, 1),
        "test_top1": floats.accuracy.top1,
        "test_images": floats.accuracy.samples,
        "measured_through": floats.accuracy.runtime,
        "holdout_top1": report.training.holdout_top1,
        "recipe": report.recipe["name"],
        "command": command or f"edgeflow optimize {model} --recipe {RECIPE}",
        "date": report.created,
        "machine": machine(),
    }
    to.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / "model.pt", to / f"{name}.pt.partial")
    (to / f"{name}.pt.partial").replace(to / f"{name}.pt")
    write_text(to / f"{name}.json", json.dumps(card, indent=2) + "\n")
    return to / f"{name}.pt", card


IMAGENETTE = (
    f"{DATA} (Imagenette 2, real photos: the train folder less a 15% holdout trains, `val/` is the test split)."
)


CLOTHING_PHOTOS = (
    "../shared/data/clothing-small-160 (10 garment classes, real photos: the official train split trains, val is "
    "the holdout, test the test split of 372 photos)."
)


def heading(title: str, *, command: str, when: datetime | None = None, data: str | None = IMAGENETTE) -> list[str]:
    """The lines a real-photo table in reports/ opens with: what, when (``when``, else now), where, the photos
    (``data``; None: the caller says it after), and how to make it again."""
    import nncf
    import onnxruntime
    import openvino
    import torch

    return [
        f"# {title}",
        "",
        f"{(when or datetime.now(timezone.utc)):%Y-%m-%d %H:%M} UTC; {machine()}; torch {torch.__version__}, "
        f"OpenVINO {openvino.__version__.split('-')[0]}, NNCF {nncf.__version__}, "
        f"ONNX Runtime {onnxruntime.__version__}.",
        *([f"Data: {data}"] if data else []),
        f"Command: `{command}`",
        "",
    ]


def training_table(cards: list[dict]) -> list[str]:
    lines = [
        "| model | side (px) | epochs | training (min) | test top-1 % | test images |",
        "|---|---|---|---|---|---|",
    ]
    for card in cards:
        lines.append(
            f"| {card['model']} | {card['side']} | {card['epochs']} | {card['training_minutes']} "
            f"| {100 * card['test_top1']:.2f} | {card['test_images']} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, required=True, help="a finished optimize folder of the recipe")
    parser.add_argument("--to", type=Path, default=COMMITTED)
    args = parser.parse_args()
    path, card = keep(args.keep, to=args.to)
    print(f"kept {path}")
    print("\n".join(training_table([card])))


if __name__ == "__main__":
    main()
