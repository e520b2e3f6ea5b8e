"""The lookup table per backend and precision: its error against whole INT8 (and float) models, and the channel
step each runtime's kernels favour, on a fine-tuned model (issue 31).

For each runtime and precision the search's own parts are used: a :class:`~edgeflow.variants.ShippedBuild` of
the runtime's default INT8 method (the file that ships) or the float file, a
:class:`~edgeflow.latency.table.LookupTable` fitted on the calibration models the search fits it on, and the
channel-step probe (:mod:`edgeflow.latency.steps`). Then ``--candidates`` pruned models such as a search reaches
(random channel groups kept at random multiples of 8, sometimes a block removed; seeded) are estimated by the
table and timed whole on the device in turn with the start and the table's reference workload. The error is
the table's estimate against the whole model's timing brought to the table's units (drift taken out by the
reference), raw and scaled by measured / table on the start (what the search's recalibration does first).

    .venv/bin/python bench/int8_table.py --model reports/transfer-clothing/lite1/model.pt \
        --arch timm:tf_efficientnet_lite1 --side 224 [--runtimes openvino,onnxruntime,litert] \
        [--precisions int8,fp32] [--candidates 8] [--report reports/int8-table-lite1-cpu.md]
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import imagenette  # noqa: E402  (the heading: machine, versions, command)
import torch  # noqa: E402

from edgeflow.backends import get_backend  # noqa: E402
from edgeflow.device import load_device  # noqa: E402
from edgeflow.io import write_text  # noqa: E402
from edgeflow.latency.steps import measure_channel_step  # noqa: E402
from edgeflow.latency.table import LookupTable  # noqa: E402
from edgeflow.latency.timer import Timer  # noqa: E402
from edgeflow.netadapt import space  # noqa: E402
from edgeflow.netadapt.oracle import calibration_models  # noqa: E402
from edgeflow.recipe import SearchConfig, VariantSpec  # noqa: E402
from edgeflow.source import resolve_model  # noqa: E402
from edgeflow.variants import ShippedBuild  # noqa: E402


def candidates(start: torch.nn.Module, shape: tuple[int, ...], *, count: int, seed: int) -> dict[str, torch.nn.Module]:
    """Pruned models like those a search reaches: 2 to 6 channel groups kept at a random multiple of 8 between
    40% and 90% of their channels, and every third one a residual block removed."""
    rng = random.Random(seed)
    example = torch.zeros(shape)
    blocks = space.removable_blocks(start)
    models = {}
    for index in range(count):
        model = copy.deepcopy(start).eval()
        changes = []
        if blocks and index % 3 == 2:
            block = rng.choice(blocks)
            space.apply(model, space.Action(kind="remove-block", target=block), example)
            changes.append(f"-{block}")
        live = {group.name: group for group in space.prunable_groups(model, example, min_channels=16)}
        for group in rng.sample(sorted(live), k=min(len(live), rng.randint(2, 6))):
            channels = live[group].channels
            keep = max(8, 8 * round(channels * rng.uniform(0.4, 0.9) / 8))
            if keep < channels:
                space.apply(model, space.l2_prune_action(model, example, group, keep), example)
                changes.append(f"{group}:{channels}->{keep}")
        models[f"c{index}"] = model
        print(f"candidate c{index}: {', '.join(changes)}", flush=True)
    return models


def run_one(runtime: str, precision: str, *, start, shape, models, rounds: int, cache: Path, work: Path) -> dict:
    device = load_device("cpu")
    profile = SearchConfig().profile
    variant = VariantSpec(name=f"{runtime}-{precision}", backend=runtime, precision=precision)
    build = ShippedBuild(variant) if precision != "fp32" or "onnx" not in get_backend(runtime).formats else None
    timer = Timer(device, runtime, settings=device.runtime, profile=profile, workdir=work, build=build)
    started = time.perf_counter()
    steps = measure_channel_step(timer, divisor=8, side=shape[-1], rounds=rounds, cache=cache)
    step_seconds = time.perf_counter() - started
    table = LookupTable(timer, cache / f"table-{runtime}-{precision}-{'x'.join(map(str, shape))}.json")
    started = time.perf_counter()
    fitted = table.fit(start, shape, calibration=lambda: calibration_models(start, shape), rounds=rounds)
    estimates = {name: table.latency(model, shape) for name, model in models.items()}
    start_estimate = table.latency(start, shape)
    table_seconds = time.perf_counter() - started
    started = time.perf_counter()
    measured = table.in_table_units({**models, "start": start}, shape, rounds=rounds)
    measure_seconds = time.perf_counter() - started
    scale = measured["start"] / start_estimate
    raw = {name: 100 * (estimates[name] - measured[name]) / measured[name] for name in models}
    scaled = {name: 100 * (scale * estimates[name] - measured[name]) / measured[name] for name in models}
    calibration = [100 * (p.estimate_ms - p.measured_ms) / p.measured_ms for p in fitted.calibration]
    return {
        "runtime": runtime,
        "precision": precision,
        "method": build.method if build is not None else None,
        "start_ms": measured["start"],
        "entries": len(table.entries),
        "raw": raw,
        "scaled": scaled,
        "measured": measured,
        "estimates": estimates,
        "calibration": calibration,
        "steps": steps,
        "seconds": {"step": step_seconds, "table": table_seconds, "measure": measure_seconds},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a checkpoint (.pt) of --arch")
    parser.add_argument("--arch", required=True)
    parser.add_argument("--side", type=int, required=True)
    parser.add_argument("--runtimes", default="openvino,onnxruntime,litert")
    parser.add_argument("--precisions", default="int8,fp32")
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", type=Path, default=None)
    args = parser.parse_args()
    source = resolve_model(args.model, arch=args.arch, resolution=args.side)
    start = source.module.eval()
    shape = (1, 3, args.side, args.side)
    models = candidates(start, shape, count=args.candidates, seed=args.seed)
    runtimes = [name for name in args.runtimes.split(",") if get_backend(name).unavailable() is None]
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        cache, work = Path(scratch) / "cache", Path(scratch) / "work"
        cache.mkdir()
        work.mkdir()
        for runtime in runtimes:
            for precision in args.precisions.split(","):
                print(f"{runtime} {precision}: channel step, table, candidates", flush=True)
                results.append(run_one(runtime, precision, start=start, shape=shape, models=models,
                                       rounds=args.rounds, cache=cache, work=work))  # fmt: skip
                print(summary_row(results[-1]), flush=True)
    command = (
        f".venv/bin/python bench/int8_table.py --model {args.model} --arch {args.arch} --side {args.side} "
        f"--runtimes {args.runtimes} --precisions {args.precisions} --candidates {args.candidates} "
        f"--rounds {args.rounds} --seed {args.seed}" + (f" --report {args.report}" if args.report else "")
    )
    heading = imagenette.heading(
        f"The lookup table per backend and precision: {Path(args.model).name}", command=command, data=None
    )
    text = "\n".join([*heading, "", *explain(args), "", *tables(results, models)]) + "\n"
    if args.report is not None:
        write_text(args.report, text)
    print(text)


def summary_row(result: dict) -> str:
    raw, scaled = list(result["raw"].values()), list(result["scaled"].values())
    within = sum(abs(error) <= 10 for error in scaled)
    return (
        f"| {result['runtime']} | {result['precision']} | {result['method'] or '-'} | {result['steps'].step} | "
        f"{result['start_ms']:.3f} | {result['entries']} | "
        f"{statistics.median(abs(e) for e in raw):.1f} | {statistics.median(abs(e) for e in scaled):.1f} | "
        f"{max(abs(e) for e in scaled):.1f} | {within}/{len(scaled)} | "
        f"{statistics.median(abs(e) for e in result['calibration']):.1f} | "
        f"{result['seconds']['step']:.0f} / {result['seconds']['table']:.0f} / {result['seconds']['measure']:.0f} |"
    )


def tables(results: list[dict], models: dict) -> list[str]:
    lines = [
        "| runtime | precision | timing method | channel step | start ms (table units) | table entries | "
        "median abs error raw % | median abs error scaled % | max abs error scaled % | within 10% (scaled) | "
        "calibration fit median abs error % | seconds: step / table / candidates |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *[summary_row(result) for result in results],
        "",
        "Per candidate: measured ms (table units) / scaled estimate error %",
        "",
        "| candidate | " + " | ".join(f"{r['runtime']} {r['precision']}" for r in results) + " |",
        "|---|" + "---|" * len(results),
    ]
    for name in models:
        cells = [f"{r['measured'][name]:.3f} / {r['scaled'][name]:+.1f}" for r in results]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Channel-step probe (us per million multiply-adds of the blocks, per width):", ""]
    widths = results[0]["steps"].widths if results else []
    lines += [
        "| runtime | precision | " + " | ".join(f"C={w}" for w in widths) + " | ratios (in-between / neighbours) |",
        "|---|---|" + "---|" * (len(widths) + 1),
    ]
    for r in results:
        steps = r["steps"]
        ratios = ", ".join(f"step {k}: {v:.2f}x" for k, v in steps.ratios.items())
        lines.append(
            f"| {r['runtime']} | {r['precision']} | "
            + " | ".join(f"{v:.2f}" for v in steps.per_mmac_us)
            + f" | {ratios} |"
        )
    return lines


def explain(args) -> list[str]:
    return [
        f"Start: {Path(args.model).name} ({args.arch}) at {args.side} px, batch 1, this machine's cores. Every file "
        "timed is built as the search builds it: INT8 by the runtime's default method (nncf-ptq for OpenVINO, "
        "ort-static for ONNX Runtime, litert-static for LiteRT), calibrated on 8 synthetic inputs (an INT8 graph's "
        "kernels do not depend on its scales); float: the float ONNX (OpenVINO, ONNX Runtime) or the runtime's own "
        "float file (LiteRT).",
        f"Candidates: {args.candidates} pruned models (seed {args.seed}): 2 to 6 channel groups kept at a random "
        "multiple of 8 between 40% and 90%, every third one a residual block removed. Error = table estimate vs the "
        "whole model timed in turn with the start and the table's reference workload "
        f"({args.rounds} rounds, medians); scaled = estimate x (measured start / estimated start), the search's "
        "first recalibration.",
    ]


if __name__ == "__main__":
    main()
