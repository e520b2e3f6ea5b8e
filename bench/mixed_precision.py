"""Mixed precision chosen from measured sensitivity, beside all-INT8, NNCF's accuracy control and the
gates-in-float option, per runtime, on a fine-tuned model (issue 31).

For each runtime: the float file; all-INT8 by the runtime's default method; squeeze-and-excitation gates kept in
float (``squeeze_excitation: float``, where the network has gates); NNCF's accuracy control (OpenVINO: it exists
for OpenVINO only; its budget is ``--max-drop`` of top-1 on holdout); and edgeflow's mixed precision: every
unit the method can keep in float (weighted layer, squeeze-and-excitation gate whole, or residual add: each
method's ``float_units``) quantized alone and kept alone in float through the runtime (:mod:`edgeflow.mixed_precision`),
then the float set that meets ``--agreement`` with the float file on the holdout split at the least latency,
checked whole. Every file is then scored on the test split (top-1, top-1 agreement with the float file) and the
runtime's files are timed in turn (median of the rounds' p50s).

    .venv/bin/python bench/mixed_precision.py --model bench/checkpoints/mobilenet_v3_large-imagenette-96px-40ep.pt \
        --arch mobilenet_v3_large --recipe recipes/imagenette.yaml --side 96 \
        [--runtimes openvino,onnxruntime,litert] [--agreement 0.99] [--report reports/mixed-precision-mnv3-cpu.md]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import imagenette  # noqa: E402  (the heading: machine, versions, command)
import numpy as np  # noqa: E402

from edgeflow.accuracy import collect_logits, wilson_interval  # noqa: E402
from edgeflow.backends import get_backend  # noqa: E402
from edgeflow.compress.squeeze_excitation import find_gates  # noqa: E402
from edgeflow.compress.stats import START_SLOWER_BY  # noqa: E402
from edgeflow.device import load_device  # noqa: E402
from edgeflow.export.onnx import export_onnx  # noqa: E402
from edgeflow.io import write_text  # noqa: E402
from edgeflow.mixed_precision import MIN_KL_GAIN, choose_float_layers, measure_sensitivity, reference_settings  # noqa: E402
from edgeflow.profiling.in_turn import time_in_turn  # noqa: E402
from edgeflow.profiling.loop import ProfileConfig  # noqa: E402
from edgeflow.progress import Progress  # noqa: E402
from edgeflow.recipe import VariantSpec, load_recipe  # noqa: E402
from edgeflow.source import load_model_and_data  # noqa: E402
from edgeflow.variants import FloatArtifacts, build_variant  # noqa: E402

TIMING = ProfileConfig(warmup=10, iterations=100_000, max_seconds=0.5, min_iterations=20)


def model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --arch, --recipe and --side: the trained model a mixed-precision bench starts from."""
    parser.add_argument("--model", required=True)
    parser.add_argument("--arch", required=True)
    parser.add_argument("--recipe", required=True, help="the recipe the model was trained with (data, preprocessing)")
    parser.add_argument("--side", type=int, required=True)


def load_model(args: argparse.Namespace):
    """The model of :func:`model_arguments` and its data splits, at ``--side``."""
    recipe = load_recipe(args.recipe)
    recipe = recipe.model_copy(update={"model": recipe.model.model_copy(update={"resolution": args.side})})
    return load_model_and_data(args.model, arch=args.arch, data=recipe.data, recipe=recipe)


def float_files(source, splits, folder: Path) -> FloatArtifacts:
    """The model exported to ONNX in ``folder``, as the float files every runtime's files are built from."""
    shape = (1, 3, *splits.size)
    onnx = export_onnx(source.module.eval(), input_shape=shape, path=folder / "model.onnx")
    return FloatArtifacts.of(onnx, module=source.module, input_shape=shape, folder=folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_arguments(parser)
    parser.add_argument("--runtimes", default="openvino,onnxruntime,litert")
    parser.add_argument("--agreement", type=float, default=0.99)
    parser.add_argument("--max-drop", type=float, default=0.01, help="NNCF accuracy control's top-1 budget")
    parser.add_argument("--subset", type=int, default=128, help="calibration images of every INT8 file")
    parser.add_argument("--holdout", type=int, default=None, help="holdout images the choices are made on")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--method", default=None,
                        help="the mixed file's method (default: the runtime's default, as all-INT8); auto: each "
                        "post-training method of the runtime built all-INT8, mixed precision starts from the "
                        f"closest to float among those within {100 * START_SLOWER_BY:.0f}%% of the "
                        "fastest")  # fmt: skip
    parser.add_argument("--report", type=Path, default=None)
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep each runtime's measured sensitivity here; a rerun on the same model, data and "
                        "settings reads it instead of measuring again")  # fmt: skip
    args = parser.parse_args()
    source, splits = load_model(args)
    device = load_device("cpu")
    runtimes = [name for name in args.runtimes.split(",") if get_backend(name).unavailable() is None]
    progress = Progress.to_stderr()
    results, sensitivities = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        floats = float_files(source, splits, folder)
        gates = bool(find_gates(__import__("onnx").load(str(floats.onnx.path))))
        for runtime in runtimes:
            rows, sensitivity = run_runtime(runtime, floats=floats, splits=splits, device=device, folder=folder,
                                            args=args, gates=gates, progress=progress)  # fmt: skip
            results[runtime], sensitivities[runtime] = rows, sensitivity
            print(json.dumps({runtime: rows}, default=str), flush=True)
    command = (
        f".venv/bin/python bench/mixed_precision.py --model {args.model} --arch {args.arch} --recipe {args.recipe} "
        f"--side {args.side} --runtimes {args.runtimes} --agreement {args.agreement} --max-drop {args.max_drop} "
        f"--subset {args.subset} --rounds {args.rounds}"
        + (f" --holdout {args.holdout}" if args.holdout else "")
        + (f" --method {args.method}" if args.method else "")
        + (f" --report {args.report}" if args.report else "")
        + (f" --keep {args.keep}" if args.keep else "")
    )
    title = f"Mixed precision through the runtime: {Path(args.model).name}"
    heading = imagenette.heading(title, command=command, data=None)
    lines = [*heading, f"Data: {splits.name}: {splits.describe()['train']} train, {len(splits.holdout)} holdout, "
             f"{len(splits.test)} test images, {splits.size[0]} px.", "", *explain(args, gates), ""]  # fmt: skip
    lines += tables(results, sensitivities, args)
    if args.report is not None:
        plot(sensitivities, args.report.with_suffix(".png"))
        lines += ["", f"![sensitivity]({args.report.with_suffix('.png').name})"]
        write_text(args.report, "\n".join(lines) + "\n")
    print("\n".join(lines))


def run_runtime(runtime, *, floats, splits, device, folder, args, gates, progress):
    backend = get_backend(runtime)
    settings = device.runtime
    base = VariantSpec(name=f"{runtime}-int8", backend=runtime, precision="int8",
                       quantize={"subset_size": args.subset, "max_drop": args.max_drop})  # fmt: skip
    files = {"float": floats.base(runtime)}
    notes = {}
    started = time.perf_counter()
    files["all-int8"], _ = build_variant(base, floats=floats, splits=splits, folder=folder, seed=0,
                                         file_stem=f"{runtime}-all-int8", settings=settings)  # fmt: skip
    notes["all-int8"] = f"{base.quantize.method}, {time.perf_counter() - started:.0f} s"
    if gates:
        variant = base.model_copy(update={"quantize": base.quantize.model_copy(update={"squeeze_excitation": "float"})})
        started = time.perf_counter()
        files["gates-float"], _ = build_variant(variant, floats=floats, splits=splits, folder=folder, seed=0,
                                                file_stem=f"{runtime}-gates", settings=settings)  # fmt: skip
        notes["gates-float"] = f"squeeze_excitation: float, {time.perf_counter() - started:.0f} s"
    if runtime == "openvino":
        control = base.model_copy(
            update={"quantize": base.quantize.model_copy(update={"method": "nncf-accuracy-control"})}
        )
        started = time.perf_counter()
        files["nncf-accuracy-control"], stats = build_variant(
            control, floats=floats, splits=splits, folder=folder, seed=0, file_stem="ov-control", settings=settings
        )
        notes["nncf-accuracy-control"] = (
            f"max_drop {args.max_drop}, {len(stats.float_layers)} layers float, {time.perf_counter() - started:.0f} s"
        )
    started = time.perf_counter()
    if args.method:
        base = base.model_copy(update={"quantize": base.quantize.model_copy(update={"method": args.method})})
    sensitivity = measure_sensitivity(base, floats=floats, splits=splits, folder=folder, settings=settings,
                                      rounds=5, max_samples=args.holdout, progress=progress,
                                      keep_in=args.keep)  # fmt: skip
    files["mixed"], summary = choose_float_layers(
        base, sensitivity, floats=floats, splits=splits, folder=folder, settings=settings,
        agreement=args.agreement, max_samples=args.holdout, progress=progress,
    )  # fmt: skip
    mixed = summary.mixed_precision
    notes["mixed"] = (
        f"{len(mixed.float_layers)} units float, holdout agreement {100 * mixed.agreement:.2f}% "
        f"({'met' if mixed.met else 'NOT met'}); built as {sensitivity.start}; "
        f"sensitivity {sensitivity.seconds:.0f} s, "
        f"whole {time.perf_counter() - started:.0f} s"
    )
    compiled = {name: backend.compile(artifact, settings=reference_settings(backend, settings) if name == "float"
                                      else settings) for name, artifact in files.items()}  # fmt: skip
    logits = {name: collect_logits(model, splits.test)[0] for name, model in compiled.items()}
    labels = collect_logits(compiled["float"], splits.test)[1]
    timed = time_in_turn(compiled, rounds=args.rounds, config=TIMING).medians()
    reference = logits["float"].argmax(1)
    rows = {
        name: {
            "test_top1": float(np.mean(logits[name].argmax(1) == labels)),
            "agreement": float(np.mean(logits[name].argmax(1) == reference)),
            "images": len(reference),
            "p50_ms": timed[name],
            "size_mb": files[name].size_bytes / 1e6,
            "note": notes.get(name, ""),
        }
        for name in files
    }
    rows["mixed"]["float_layers"] = mixed.float_modules
    rows["mixed"]["returned"] = mixed.returned_modules if mixed.backward else None
    return rows, sensitivity


def tables(results: dict, sensitivities: dict, args) -> list[str]:
    lines = [
        "| runtime | file | test top-1 % | agreement with float (test) % (95% interval) | p50 ms (in turn) | "
        "vs all-INT8 | size MB | goal: agreement >= 99% at <= 10% over all-INT8 | how |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for runtime, rows in results.items():
        int8 = rows["all-int8"]["p50_ms"]
        for name, row in rows.items():
            over = row["p50_ms"] / int8 - 1
            goal = "yes" if row["agreement"] >= args.agreement and over <= 0.10 else "no"
            low, high = wilson_interval(round(row["agreement"] * row["images"]), row["images"])
            lines.append(
                f"| {runtime} | {name} | {100 * row['test_top1']:.2f} | {100 * row['agreement']:.2f} "
                f"({100 * low:.1f}-{100 * high:.1f}) | "
                f"{row['p50_ms']:.3f} | {100 * over:+.1f}% | {row['size_mb']:.2f} | "
                f"{goal if name != 'float' else '-'} | {row['note']} |"
            )
    for runtime, sensitivity in sensitivities.items():
        kept, returned = results[runtime]["mixed"]["float_layers"], results[runtime]["mixed"]["returned"]
        chosen = (
            f"Adding units to the float set fell short; from every unit in float, {len(returned)} returned to INT8 "
            f"by the backward pass ({', '.join(returned) or 'none'}), {len(kept)} kept in float"
            if returned is not None
            else f"Kept in float by mixed precision: {', '.join(kept) or 'none'}"
        )
        lines += [
            "",
            f"### {runtime}: the units that matter ({sensitivity.method}; holdout, {sensitivity.holdout_images} "
            f"images; all-INT8 agrees on {100 * sensitivity.int8_agreement:.2f}%, p50 {sensitivity.int8_ms:.3f} ms)",
            "",
            *(
                [
                    f"Started from {sensitivity.start}, the post-training quantization whose all-INT8 file is "
                    f"closest to float on holdout among those within {100 * START_SLOWER_BY:.0f}% of the fastest's "
                    "p50: " + ", ".join(start.describe() for start in sensitivity.starts) + ".",
                    "",
                ]
                if sensitivity.starts
                else []
            ),
            f"{chosen}. Against the float file: all-INT8 KL "
            f"{sensitivity.int8_kl:.4f}; every unit in float KL {sensitivity.reference_kl:.4f} (agreement "
            f"{100 * sensitivity.reference_agreement:.2f}%). {len(sensitivity.layers)} units ("
            f"{', '.join(f'{count} {kind}s' for kind, count in kinds(sensitivity))}); "
            "the 12 with the highest KL alone:",
            "",
            "| unit | op | weights | INT8 alone: agreement % | INT8 alone: KL | float alone: agreement % | "
            "float alone: KL | p50 with it alone in float ms | latency cost % | kept in float |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        worst = sorted(sensitivity.layers, key=lambda layer: -layer.alone_kl)[:12]
        for layer in worst:
            lines.append(
                f"| {layer.label()} | {layer.op} | {layer.weights} | {100 * layer.alone_agreement:.2f} | "
                f"{layer.alone_kl:.4f} | {100 * layer.float_agreement:.2f} | {layer.float_kl:.4f} | "
                f"{layer.float_ms:.3f} | {100 * layer.float_cost:+.1f} | {'yes' if layer.label() in kept else ''} |"
            )
    return lines


def kinds(sensitivity) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for layer in sensitivity.layers:
        counts[layer.kind] = counts.get(layer.kind, 0) + 1
    return list(counts.items())


def plot(sensitivities: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(sensitivities), figsize=(5 * len(sensitivities), 4), squeeze=False)
    for axis, (runtime, sensitivity) in zip(axes[0], sensitivities.items(), strict=True):
        damage = [1000 * sensitivity.damage(layer) for layer in sensitivity.layers]
        cost = [100 * layer.float_cost for layer in sensitivity.layers]
        axis.scatter(cost, damage, s=12)
        for layer, x, y in sorted(zip(sensitivity.layers, cost, damage, strict=True), key=lambda item: -item[2])[:5]:
            axis.annotate(layer.label(), (x, y), fontsize=7)
        axis.set_title(f"{runtime} ({sensitivity.method})")
        axis.set_xlabel("latency cost of keeping it alone in float (%)")
        axis.set_ylabel("KL added when INT8 alone (milli-nats)")
    figure.tight_layout()
    partial = path.with_suffix(".partial.png")
    figure.savefig(partial, dpi=110)
    partial.replace(path)


def explain(args, gates: bool) -> list[str]:
    return [
        f"Every INT8 file: the runtime's default method (nncf-ptq, ort-static, litert-static) calibrated on "
        f"{args.subset} train images. Sensitivity, through the runtime, on holdout against the float file (top-1 "
        "agreement, and the mean KL divergence of the softmaxes): each unit (weighted layer, squeeze-and-excitation "
        "gate whole, or residual add where the method can keep one in float) INT8 alone and in float alone, "
        "the latter also timed in turn with the all-INT8 file (5 rounds). Mixed: units ranked by KL recovered per "
        "millisecond they cost in float, each tried in float with those kept so far, the whole file built and "
        "scored, kept only where the KL fell by at least "
        f"{100 * MIN_KL_GAIN:.0f}%, until agreement >= {100 * args.agreement:g}%; then a second pass over the "
        "units not kept that the kept set has grown since; where that falls short and every unit in float meets "
        "the budget, a backward pass from that file returns to INT8 the units of least KL added alone per "
        "millisecond saved, as many as the whole file allows (bisection). "
        + (
            "Gates in float: squeeze_excitation: float. "
            if gates
            else "The network has no squeeze-and-excitation "
            "gates, so the gates-in-float option is the same file as all-INT8 and is left out. "
        )
        + f"NNCF's accuracy control: max_drop {args.max_drop} of holdout top-1 (OpenVINO only). Test split scored "
        f"through each runtime; p50 of each runtime's files timed in turn, {args.rounds} rounds, median. Agreement "
        "is with the float file executed in f32 (OpenVINO would run it in bf16 on a CPU with AMX); the INT8 files "
        "run with the runtime's own choice, as they ship."
    ]


if __name__ == "__main__":
    main()
