"""The phone runtimes (LiteRT, ExecuTorch) on this CPU beside ONNX Runtime and OpenVINO, on real photos, timed
in turn in one run.

For each model (trained from scratch on Imagenette once, see bench/imagenette.py): `edgeflow optimize` of the
checkpoint builds LiteRT fp32 and int8 (litert-torch, then LiteRT's quantizer, static per-channel; once with every
layer int8, once with the squeeze-and-excitation gates in float, which models without gates build alike),
ExecuTorch fp32 and int8 (torch.export lowered to XNNPACK; int8 by ExecuTorch's PT2E XNNPACK quantizer), ONNX
Runtime fp32 and int8 (static QDQ) and OpenVINO fp32 and int8 (NNCF) from the same float model and the same
calibration images. Every artifact is scored on the whole test split through its own runtime (LiteRT's
interpreter for the .tflite files, ExecuTorch's runtime for the .pte files), compared with its runtime's float
artifact, and timed in turn with the others (batch 1, threads = this machine's cores for every runtime).
``--data digits-hard`` runs the same on the built-in hard digits (models trained there by the run);
``--runtimes`` keeps the variants of the runtimes named.

    .venv/bin/python bench/litert.py [--models mobilenet_v3_large,mobilenet_v2,resnet18] [--epochs 6]
        [--rounds 7] [--seconds 1.0] [--data imagenette|digits-hard] [--runtimes litert,executorch,...]
        [--report reports/litert-imagenette-cpu.md]
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
from edgeflow.recipe import Recipe, VariantSpec  # noqa: E402

HEADLINE = "mobilenet_v3_large"  # trained with the whole recipe (40 epochs); the others with --epochs
VARIANTS = [
    {"name": "litert-fp32", "backend": "litert", "precision": "fp32"},
    {"name": "litert-int8", "backend": "litert", "precision": "int8", "quantize": {"subset_size": 300}},
    {"name": "litert-int8-gates-float", "backend": "litert", "precision": "int8",
     "quantize": {"subset_size": 300, "squeeze_excitation": "float"}},
    {"name": "executorch-fp32", "backend": "executorch", "precision": "fp32"},
    {"name": "executorch-int8", "backend": "executorch", "precision": "int8", "quantize": {"subset_size": 300}},
    {"name": "onnxruntime-fp32", "backend": "onnxruntime", "precision": "fp32"},
    {"name": "onnxruntime-int8", "backend": "onnxruntime", "precision": "int8", "quantize": {"subset_size": 300}},
    {"name": "openvino-fp32", "backend": "openvino", "precision": "fp32", "execution_precision": "f32"},
    {"name": "openvino-int8", "backend": "openvino", "precision": "int8", "quantize": {"subset_size": 300}},
]  # fmt: skip
DIGITS_HARD = {
    "name": "litert-digits-hard", "data": "digits-hard", "seed": 0, "model": {"resolution": 96},
    "train": {"epochs": 8, "batch_size": 64, "lr": 0.003},
    "variants": VARIANTS, "profile": {"warmup": 10, "iterations": 200, "max_seconds": 1},
}  # fmt: skip


def bench_model(model: str, *, args) -> tuple[dict | None, list[dict]]:
    from edgeflow.accuracy import collect_logits, measure_parity
    from edgeflow.backends import artifact_from_path, get_backend
    from edgeflow.device import load_device
    from edgeflow.profiling.in_turn import time_in_turn
    from edgeflow.profiling.loop import ProfileConfig

    folder = args.out / f"{model.replace(':', '-')}-{args.data}"
    if args.data == "imagenette":
        epochs = None if model == HEADLINE else args.epochs
        checkpoint, card = imagenette.trained(model, epochs=epochs, out=args.out, cache=args.cache)
        recipe = imagenette.recipe(side=card["side"])
        variants = [VariantSpec.model_validate(v) for v in VARIANTS if v["backend"] in args.runtimes.split(",")]
        recipe = recipe.model_copy(update={"variants": variants})
        report = edgeflow.optimize(str(checkpoint), arch=model, recipe=recipe, out=folder,
                                   progress=Progress.to_stderr())  # fmt: skip
    else:
        card = None
        report = edgeflow.optimize(model, recipe=Recipe.model_validate(DIGITS_HARD), out=folder,
                                   progress=Progress.to_stderr())  # fmt: skip
    splits = _test_split(report, data=args.data)
    device = load_device("cpu")
    rows = {}
    for variant in report.variants:
        settings = device.runtime
        if variant.backend == "openvino":  # the f32 execution the variant asked for, not bf16 on AMX
            requested = variant.runtime_settings.get("requested_execution_precision", "default")
            settings = settings.model_copy(update={"execution_precision": requested})
        artifact = artifact_from_path(folder / variant.artifact)
        compiled = get_backend(variant.backend).compile(artifact, settings=settings)
        method = variant.quantization.method if variant.quantization else "float"
        quantized = variant.quantization.settings if variant.quantization else {}
        kept = [*quantized.get("float_operators", []), *([f"{quantized['float_gates']} gates"]
                                                         if quantized.get("float_gates") else [])]  # fmt: skip
        shown = f"{method} ({', '.join(kept)} in float)" if kept else method
        rows[variant.name] = (variant.backend, compiled, shown, artifact.size_bytes, compiled.settings.get("threads"))
    outputs = {name: collect_logits(row[1], splits.test) for name, row in rows.items()}
    floats = {backend: name for name, (backend, _, method, _, _) in rows.items() if method == "float"}
    config = ProfileConfig(warmup=20, iterations=100000, max_seconds=args.seconds, min_iterations=20)
    medians = time_in_turn({name: row[1] for name, row in rows.items()}, rounds=args.rounds, config=config).medians()
    parity = {entry.runtime: entry for entry in report.parity}
    table = []
    for name, (backend, _, method, size, threads) in rows.items():
        logits, labels = outputs[name]
        reference, _ = outputs[floats[backend]]
        agreement = measure_parity(reference, logits, reference_name=floats[backend], runtime=backend)
        top1, float_top1 = (float(np.mean(values.argmax(axis=1) == labels)) for values in (logits, reference))
        table.append({
            "model": model, "variant": name, "runtime": backend, "method": method, "top1": top1,
            "drop": 100 * (float_top1 - top1), "agreement": agreement.top1_agreement, "p50": medians[name],
            "images": int(labels.shape[0]), "mib": size / 2**20, "threads": threads,
        })  # fmt: skip
    for row in table:
        row["vs_ort_fp32"] = medians["onnxruntime-fp32"] / row["p50"]
    for runtime in ("litert", "executorch"):
        torch_parity = parity.get(f"{runtime} (f32)")
        first = next((row for row in table if row["runtime"] == runtime), None)
        if torch_parity is not None and first is not None:
            first["torch_parity"] = f"{runtime}: max |diff| {torch_parity.max_abs_diff:.2e}, top-1 agreement " \
                                    f"{100 * torch_parity.top1_agreement:.1f}%"  # fmt: skip
    return card, table


def _test_split(report, *, data: str):
    from edgeflow.data.load import load_data_for_input
    from edgeflow.data.preprocess import PreprocessSpec

    spec = PreprocessSpec.model_validate(report.data["preprocess"])
    source = str(imagenette.DATA) if data == "imagenette" else data
    return load_data_for_input(source, input_shape=tuple(report.model.input_shape), preprocess=spec,
                               seed=report.data["seed"])  # fmt: skip


def format_table(rows: list[dict], *, rounds: int) -> list[str]:
    lines = [
        f"| model | variant | runtime | quantized by | test top-1 % | drop vs its float (points) | agreement with "
        f"its float % | p50 ms (median of {rounds} rounds in turn) | speed vs ORT fp32 | threads | size MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['variant']} | {row['runtime']} | {row['method']} | {100 * row['top1']:.2f} "
            f"| {row['drop']:+.2f} | {100 * row['agreement']:.1f} | {row['p50']:.3f} | {row['vs_ort_fp32']:.2f}x "
            f"| {row['threads']} | {row['mib']:.2f} |"
        )
    parities = [f"{row['model']}: {row['torch_parity']}" for row in rows if row.get("torch_parity")]
    if parities:
        lines += ["", "fp32 files against torch on the first test images (export parity): " + "; ".join(parities)]
    return lines


def goals(rows: list[dict]) -> list[str]:
    lines = ["| model | goal | figure | met |", "|---|---|---|---|"]
    for row in rows:
        if row["variant"].startswith(("litert-int8", "executorch-int8")):
            met = row["drop"] <= 1.0
            lines.append(f"| {row['model']} | {row['variant']} within 1.0 point of {row['runtime']}-fp32 | "
                         f"{row['drop']:+.2f} | {'yes' if met else 'NO'} |")  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v3_large,mobilenet_v2,resnet18")
    parser.add_argument("--epochs", type=int, default=6, help=f"Imagenette training of the models but {HEADLINE}")
    parser.add_argument("--data", choices=["imagenette", "digits-hard"], default="imagenette")
    parser.add_argument("--rounds", type=int, default=7, help="timing rounds in turn (median quoted)")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per artifact per round")
    parser.add_argument("--out", type=Path, default=Path("reports/bench-litert"))
    parser.add_argument("--cache", type=Path, default=imagenette.CACHE, help="checkpoints trained by the bench")
    parser.add_argument("--report", type=Path, default=None)
    parser.add_argument("--runtimes", default="litert,executorch,onnxruntime,openvino", help="the variants' runtimes")
    args = parser.parse_args()
    if args.data == "imagenette":
        imagenette.require_data()
    report_path = args.report or Path(f"reports/litert-{args.data}-cpu.md")
    command = (f".venv/bin/python bench/litert.py --models {args.models} --data {args.data} --epochs {args.epochs} "
               f"--rounds {args.rounds} --seconds {args.seconds} --runtimes {args.runtimes}"
               + (f" --report {args.report}" if args.report else ""))  # fmt: skip
    cards, rows = [], []
    for model in args.models.split(","):
        card, table = bench_model(model, args=args)
        if card is not None:
            cards.append(card)
        rows.extend(table)
        print("\n".join(format_table(table, rounds=args.rounds)), flush=True)
        what = "Imagenette photos" if args.data == "imagenette" else "digits-hard (built in, trained here, 96 px)"
        title = "LiteRT and ExecuTorch beside ONNX Runtime and OpenVINO on this CPU"
        heading = imagenette.heading(f"{title} ({what})", command=command)
        if args.data != "imagenette":  # the heading's data line names Imagenette
            heading = [line if not line.startswith("Data:") else f"Data: {args.data} ({what})." for line in heading]
        lines = [
            *heading,
            *(["Training:", "", *imagenette.training_table(cards), ""] if cards else []),
            "Every artifact scored on the whole test split through its own runtime; agreement against the float "
            "artifact of the same runtime; the same calibration images for every INT8 artifact of a model. "
            f"Latency: batch 1, each artifact's timing loop in turn with the others, {args.rounds} rounds, median "
            "of the rounds' p50.",
            "",
            *format_table(rows, rounds=args.rounds),
            "",
            *goals(rows),
        ]
        write_text(report_path, "\n".join(lines) + "\n")
    print("\n".join(goals(rows)))
    print(f"\nwrote {report_path}")


if __name__ == "__main__":
    main()
