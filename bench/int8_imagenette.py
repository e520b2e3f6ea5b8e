"""INT8 on real photos: edgeflow's choice beside NNCF's and ONNX Runtime's defaults, per model, timed in turn.

For each model (trained from scratch on Imagenette once, see bench/imagenette.py): `edgeflow optimize` of the
checkpoint with recipes/imagenette.yaml builds the float artifacts and edgeflow's INT8 (OpenVINO through NNCF,
ONNX Runtime QDQ). Beside them, from the same float ONNX and the same calibration images (the recipe's
subset of the train split): ``nncf.quantize(model, dataset)`` with no options, and ONNX Runtime's
``quantize_static(float, out, reader)`` with no options. Every artifact is scored on the test split through its
own runtime, compared with its runtime's float artifact (top-1 agreement), and timed in turn with the others.
The table goes to --report.

    .venv/bin/python bench/int8_imagenette.py [--models mobilenet_v3_large,timm:efficientnet_b0,mobilenet_v2,resnet18]
        [--epochs 6] [--rounds 7] [--seconds 1.5] [--report reports/int8-imagenette-cpu.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import imagenette  # noqa: E402  (bench/imagenette.py: the trained checkpoints)
import numpy as np  # noqa: E402

import edgeflow  # noqa: E402
from edgeflow.io import write_text  # noqa: E402
from edgeflow.progress import Progress  # noqa: E402

HEADLINE = "mobilenet_v3_large"  # trained with the whole recipe (40 epochs); the others with --epochs
GATES_FLOAT = "openvino-int8-gates-float"  # edgeflow's INT8 with quantize.squeeze_excitation: float
# the quantization settings the table shows for edgeflow's rows
SHOWN_SETTINGS = {"preset", "per_channel", "activation_type", "calibrate_method", "reduce_range", "squeeze_excitation"}


def calibration_batches(report) -> tuple[list[np.ndarray], object]:
    """The images edgeflow calibrated with: the recipe's subset of the train split, in the model's batches."""
    from edgeflow.data import calibration_subset
    from edgeflow.data.load import load_data_for_input
    from edgeflow.data.preprocess import PreprocessSpec
    from edgeflow.data.splits import image_stacks

    shape = tuple(report.model.input_shape)
    spec = PreprocessSpec.model_validate(report.data["preprocess"])
    splits = load_data_for_input(str(imagenette.DATA), input_shape=shape, preprocess=spec, seed=report.data["seed"])
    int8 = next(variant for variant in report.variants if variant.precision == "int8")
    size = int8.quantization.settings["subset_size"]
    subset = calibration_subset(splits.train, size=size, seed=report.data["seed"])
    return image_stacks(subset, input_shape=shape, what="calibration"), splits


def nncf_defaults(onnx_path: Path, batches: list[np.ndarray], path: Path) -> Path:
    """``nncf.quantize`` with no options on the OpenVINO model read from the float ONNX."""
    import nncf
    import openvino as ov

    quantized = nncf.quantize(ov.Core().read_model(str(onnx_path)), nncf.Dataset(batches))
    ov.save_model(quantized, str(path))
    return path


def ort_defaults(onnx_path: Path, batches: list[np.ndarray], path: Path) -> Path:
    """``quantize_static`` with no options (QDQ, per-tensor int8 weights and activations, min-max)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    name = onnx.load(str(onnx_path)).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(batches)

        def get_next(self):
            batch = next(self._items, None)
            return None if batch is None else {name: batch}

    quantize_static(str(onnx_path), str(path), Reader())
    return path


def bench_model(
    model: str, *, epochs: int, rounds: int, seconds: float, out: Path, cache: Path
) -> tuple[dict, list[dict]]:
    from edgeflow.accuracy import collect_logits, measure_parity
    from edgeflow.backends import artifact_from_path, get_backend
    from edgeflow.device import load_device
    from edgeflow.profiling.in_turn import time_in_turn
    from edgeflow.profiling.loop import ProfileConfig
    from edgeflow.recipe import VariantSpec

    checkpoint, card = imagenette.trained(model, epochs=None if model == HEADLINE else epochs, out=out, cache=cache)
    recipe = imagenette.recipe(side=card["side"])
    recipe.variants.append(  # what keeping the squeeze-and-excitation gates in float buys, and costs
        VariantSpec.model_validate({
            "name": GATES_FLOAT, "backend": "openvino", "precision": "int8",
            "quantize": {**recipe.variants[1].quantize.model_dump(exclude_unset=True), "squeeze_excitation": "float"},
        })
    )  # fmt: skip
    recipe.variants.append(  # NNCF's QDQ ONNX on ONNX Runtime: closer to float, but how fast does ORT run it?
        VariantSpec.model_validate(
            {"name": "onnxruntime-int8-nncf", "backend": "onnxruntime", "precision": "int8",
             "quantize": {"method": "nncf-ptq"}}
        )
    )  # fmt: skip
    folder = out / model.replace(":", "-")
    report = edgeflow.optimize(
        str(checkpoint), arch=model, recipe=recipe, out=folder, progress=Progress.to_stderr()
    )  # fmt: skip
    batches, splits = calibration_batches(report)
    onnx_path = folder / "model_fp32.onnx"
    peers = {
        "openvino-int8-nncf-defaults": ("openvino", nncf_defaults(onnx_path, batches, folder / "nncf.xml")),
        "onnxruntime-int8-ort-defaults": ("onnxruntime", ort_defaults(onnx_path, batches, folder / "ort.onnx")),
    }
    device = load_device("cpu")
    rows = {}  # name: (backend, compiled, how it was made, size)
    for variant in report.variants:
        if variant.name == GATES_FLOAT and not variant.quantization.settings.get("float_gates"):
            continue  # a model without gates: the same artifact as openvino-int8
        requested = variant.runtime_settings.get("requested_execution_precision", "default")
        settings = device.runtime.model_copy(update={"execution_precision": requested})
        artifact = artifact_from_path(folder / variant.artifact)
        compiled = get_backend(variant.backend).compile(artifact, settings=settings)
        how = "float" if variant.precision == "fp32" else "edgeflow: " + ", ".join(
            f"{key} {value}" for key, value in variant.quantization.settings.items()
            if key in SHOWN_SETTINGS
        ) + f" ({variant.quantization.method})"  # fmt: skip
        rows[variant.name] = (variant.backend, compiled, how, artifact.size_bytes)
    for name, (backend, path) in peers.items():
        compiled = get_backend(backend).compile(artifact_from_path(path), settings=device.runtime)
        how = "nncf.quantize(model, dataset)" if backend == "openvino" else "quantize_static(float, out, reader)"
        rows[name] = (backend, compiled, how, artifact_from_path(path).size_bytes)
    outputs = {name: collect_logits(compiled, splits.test) for name, (_, compiled, _, _) in rows.items()}
    floats = {backend: name for name, (backend, _, how, _) in rows.items() if how == "float"}
    config = ProfileConfig(warmup=20, iterations=100000, max_seconds=seconds, min_iterations=20)
    p50 = time_in_turn({name: row[1] for name, row in rows.items()}, rounds=rounds, config=config)
    medians = p50.medians()
    table = []
    for name, (backend, _, how, size) in rows.items():
        logits, labels = outputs[name]
        reference_logits, _ = outputs[floats[backend]]
        parity = measure_parity(reference_logits, logits, reference_name=floats[backend], runtime=backend)
        top1 = float(np.mean(logits.argmax(axis=1) == labels))
        float_top1 = float(np.mean(reference_logits.argmax(axis=1) == labels))
        table.append({
            "model": model, "variant": name, "runtime": backend, "how": how, "top1": top1,
            "drop": 100 * (float_top1 - top1), "agreement": parity.top1_agreement, "p50": medians[name],
            "speedup": medians[floats[backend]] / medians[name], "images": int(labels.shape[0]), "mib": size / 2**20,
        })  # fmt: skip
    return card, table


def format_table(rows: list[dict], *, rounds: int) -> list[str]:
    lines = [
        f"| model | variant | runtime | how it was quantized | test top-1 % | drop vs its float (points) "
        f"| top-1 agreement with its float % | p50 ms (median of {rounds} rounds in turn) | speed-up vs its float "
        "| size MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['variant']} | {row['runtime']} | {row['how']} | {100 * row['top1']:.2f} "
            f"| {row['drop']:+.2f} | {100 * row['agreement']:.1f} | {row['p50']:.3f} | {row['speedup']:.2f}x "
            f"| {row['mib']:.2f} |"
        )
    return lines


def goals(rows: list[dict]) -> list[str]:
    lines = ["| model | goal | figure | met |", "|---|---|---|---|"]
    by = {(row["model"], row["variant"]): row for row in rows}
    for model in dict.fromkeys(row["model"] for row in rows):
        for ours, peer in (
            ("openvino-int8", "openvino-int8-nncf-defaults"), ("onnxruntime-int8", "onnxruntime-int8-ort-defaults")
        ):  # fmt: skip
            mine, theirs = by[(model, ours)], by[(model, peer)]
            checks = [
                (f"{ours} within 1.0 point of its float", f"{mine['drop']:+.2f}", mine["drop"] <= 1.0),
                (f"{ours} at least as accurate as {peer}", f"{100 * mine['top1']:.2f} vs {100 * theirs['top1']:.2f}",
                 mine["top1"] >= theirs["top1"]),
                (f"{ours} agreement at least 98%", f"{100 * mine['agreement']:.1f}", mine["agreement"] >= 0.98),
            ]  # fmt: skip
            for goal, figure, met in checks:
                lines.append(f"| {model} | {goal} | {figure} | {'yes' if met else 'NO'} |")
    return lines


def write_report(path: Path, *, cards: list[dict], rows: list[dict], args, pending: list[str]) -> None:
    """The report of the models benched so far (rewritten after each, so a long run leaves what it measured)."""
    command = (
        f".venv/bin/python bench/int8_imagenette.py --models {args.models} --epochs {args.epochs} "
        f"--rounds {args.rounds} --seconds {args.seconds}"
    )
    lines = [
        *imagenette.heading("INT8 on real photos (Imagenette), edgeflow beside the tools' defaults", command=command),
        "Training (from scratch here; checkpoints in bench/checkpoints or reports/bench-cache):",
        "",
        *imagenette.training_table(cards),
        "",
        "Every artifact scored on the whole test split through its own runtime; agreement against the float "
        "artifact of the same runtime on the same images; the calibration images are the same for every INT8 "
        "artifact of a model. Latency: batch 1, each artifact's timing loop in turn with the others of its "
        f"model, {args.rounds} rounds, median of the rounds' p50.",
        "",
        *format_table(rows, rounds=args.rounds),
        "",
        *goals(rows),
    ]
    if pending:
        lines += ["", f"Not benched yet in this run: {', '.join(pending)}."]
    write_text(path, "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v3_large,timm:efficientnet_b0,mobilenet_v2,resnet18")
    parser.add_argument("--epochs", type=int, default=6, help=f"training of the models other than {HEADLINE}")
    parser.add_argument("--rounds", type=int, default=7, help="timing rounds in turn (median quoted)")
    parser.add_argument("--seconds", type=float, default=1.5, help="timing per artifact per round")
    parser.add_argument("--out", type=Path, default=Path("reports/bench-int8-imagenette"))
    parser.add_argument("--cache", type=Path, default=imagenette.CACHE, help="checkpoints trained by the bench")
    parser.add_argument("--report", type=Path, default=Path("reports/int8-imagenette-cpu.md"))
    args = parser.parse_args()
    imagenette.require_data()
    models = args.models.split(",")
    cards, rows = [], []
    for index, model in enumerate(models):
        card, table = bench_model(
            model, epochs=args.epochs, rounds=args.rounds, seconds=args.seconds, out=args.out, cache=args.cache
        )
        cards.append(card)
        rows.extend(table)
        print("\n".join(format_table(table, rounds=args.rounds)), flush=True)
        write_report(args.report, cards=cards, rows=rows, args=args, pending=models[index + 1 :])
    print("\n".join(goals(rows)))
    print(f"\nwrote {args.report}")


if __name__ == "__main__":
    main()
