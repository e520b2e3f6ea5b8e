"""The all-INT8 files mixed precision may start from, scored on holdout against the float file: each post-training
method of the runtime (what ``method: auto`` tries, :func:`edgeflow.mixed_precision.mixed_tries`) and, beside
them, the calibration settings a user could set by hand (more images, percentile ranges, 8-bit weights where
``reduce_range: auto`` chose 7). Top-1 agreement, top-1 and the mean KL divergence of the float file's softmax to
each file's, and every file's p50 timed in turn with the float file (median of --rounds): the start mixed
precision picks is the one of least KL among the starts within 10% of the fastest start's p50.

    .venv/bin/python bench/int8_starts.py --model bench/checkpoints/mobilenet_v3_large-imagenette-96px-40ep.pt \
        --arch mobilenet_v3_large --recipe recipes/imagenette.yaml --side 96 [--runtimes onnxruntime,litert] \
        [--report reports/int8-starts-mnv3-imagenette-cpu.md]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import imagenette  # noqa: E402  (the heading: machine, versions, command)
import numpy as np  # noqa: E402
from mixed_precision import float_files, load_model, model_arguments  # noqa: E402

from edgeflow.accuracy import collect_logits  # noqa: E402
from edgeflow.backends import get_backend  # noqa: E402
from edgeflow.compress.stats import START_SLOWER_BY, StartStats, pick_start  # noqa: E402
from edgeflow.device import load_device  # noqa: E402
from edgeflow.io import write_text  # noqa: E402
from edgeflow.mixed_precision import (  # noqa: E402
    TIMING,
    mean_kl,
    mixed_tries,
    reference_settings,
)
from edgeflow.profiling.in_turn import time_in_turn  # noqa: E402
from edgeflow.recipe import VariantSpec  # noqa: E402
from edgeflow.variants import build_variant  # noqa: E402

#: settings beside the starts, per runtime: (label, quantize keys)
BY_HAND = {
    "onnxruntime": [
        ("ort-static (minmax), --big-subset images", {"method": "ort-static", "calibrate_method": "minmax"}),
        ("ort-static (percentile), --big-subset images", {"method": "ort-static", "calibrate_method": "percentile"}),
        ("ort-static (minmax), 8-bit weights", {"method": "ort-static", "calibrate_method": "minmax",
                                                 "reduce_range": False}),
        ("nncf-ptq, --big-subset images", {"method": "nncf-ptq"}),
    ],
    "litert": [("litert-static, --big-subset images", {"method": "litert-static"})],
    "openvino": [("nncf-ptq, --big-subset images", {"method": "nncf-ptq"})],
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_arguments(parser)
    parser.add_argument("--runtimes", default="onnxruntime,litert")
    parser.add_argument("--subset", type=int, default=64, help="calibration images of the starts")
    parser.add_argument("--big-subset", type=int, default=300, help="calibration images of the by-hand rows")
    parser.add_argument("--holdout", type=int, default=None, help="holdout images (default: all)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of the timing in turn")
    parser.add_argument("--report", type=Path, default=None)
    args = parser.parse_args()
    source, splits = load_model(args)
    settings = load_device("cpu").runtime
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        floats = float_files(source, splits, folder)
        for runtime in [name for name in args.runtimes.split(",") if get_backend(name).unavailable() is None]:
            backend = get_backend(runtime)
            reference = backend.compile(floats.base(runtime), settings=reference_settings(backend, settings))
            float_logits, labels = collect_logits(reference, splits.holdout, max_samples=args.holdout)
            auto = VariantSpec(name="start", backend=runtime, precision="int8",
                               quantize={"method": "auto", "subset_size": args.subset})  # fmt: skip
            tries = [(f"start: {label}, {args.subset} images", variant) for label, variant in mixed_tries(auto)[0]]
            tries += [(label.replace("--big-subset", str(args.big_subset)),
                       VariantSpec(name="by-hand", backend=runtime, precision="int8",
                                   quantize={**keys, "subset_size": args.big_subset}))
                      for label, keys in BY_HAND.get(runtime, [])]  # fmt: skip
            compiled = {"float file": backend.compile(floats.base(runtime), settings=settings)}
            scored = []
            for index, (label, variant) in enumerate(tries):
                started = time.perf_counter()
                artifact, _ = build_variant(variant, floats=floats, splits=splits, folder=folder, seed=0,
                                            file_stem=f"{runtime}-{index}", settings=settings)  # fmt: skip
                compiled[label] = backend.compile(artifact, settings=settings)
                logits, _ = collect_logits(compiled[label], splits.holdout, max_samples=args.holdout)
                predicted = logits.argmax(1)
                scored.append((label, float(np.mean(predicted == float_logits.argmax(1))),
                               float(np.mean(predicted == labels)), mean_kl(float_logits, logits),
                               time.perf_counter() - started))  # fmt: skip
                print(runtime, scored[-1], flush=True)
            medians = time_in_turn(compiled, rounds=args.rounds, config=TIMING).medians()
            starts = [StartStats(label=label, agreement=agreement, top1=top1, kl=kl, ms=medians[label])
                      for label, agreement, top1, kl, _ in scored if label.startswith("start:")]  # fmt: skip
            picked = starts[pick_start(starts)].label
            rows.append((runtime, "float file", 1.0, float(np.mean(float_logits.argmax(1) == labels)), 0.0,
                         medians["float file"], None))  # fmt: skip
            rows += [(runtime, f"**{label}** (picked)" if label == picked else label, agreement, top1, kl,
                      medians[label], seconds) for label, agreement, top1, kl, seconds in scored]  # fmt: skip
    command = (
        f".venv/bin/python bench/int8_starts.py --model {args.model} --arch {args.arch} --recipe {args.recipe} "
        f"--side {args.side} --runtimes {args.runtimes} --subset {args.subset} --big-subset {args.big_subset}"
        + f" --rounds {args.rounds}"
        + (f" --holdout {args.holdout}" if args.holdout else "")
        + (f" --report {args.report}" if args.report else "")
    )
    title = f"INT8 starts for mixed precision: {Path(args.model).name}"
    lines = imagenette.heading(title, command=command, data=None)
    lines += [
        f"Data: {splits.name}: {len(float_logits)} holdout images scored, {splits.size[0]} px. Agreement and KL are "
        "against the float file through the same runtime (f32). Rows marked start are what `method: auto` "
        "builds all-INT8 first; mixed precision starts from the one of least KL among those within "
        f"{100 * START_SLOWER_BY:.0f}% of the fastest start's p50 (picked). Each runtime's files timed in turn "
        f"with its float file (as it ships), {args.rounds} rounds, median of the rounds' p50s.",
        "",
        "| runtime | file | holdout agreement with float % | holdout top-1 % | mean KL to float | p50 ms (in turn) "
        "| vs float file | build and score s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for runtime, label, agreement, top1, kl, ms, seconds in rows:
        base = next(row[5] for row in rows if row[0] == runtime and row[1] == "float file")
        lines.append(f"| {runtime} | {label} | {100 * agreement:.2f} | {100 * top1:.2f} | {kl:.4f} | {ms:.3f} | "
                     f"{ms / base:.2f}x | {'-' if seconds is None else f'{seconds:.0f}'} |")  # fmt: skip
    if args.report is not None:
        write_text(args.report, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
