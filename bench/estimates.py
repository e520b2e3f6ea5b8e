"""Estimated against measured latency on `cpu`: the roofline (devices/cpu.yaml's peak figures) and the
lookup table (block compute times measured here, fitted on the *other* models: leave one out), beside
each model's p50 measured with OpenVINO, all models timed in turn.

    .venv/bin/python bench/estimates.py [--resolution 128] [--rounds 7] [--out reports/estimates-cpu.md]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from edgeflow.device import load_device
from edgeflow.export.onnx import export_onnx
from edgeflow.io import write_text
from edgeflow.latency.roofline import estimate_roofline
from edgeflow.latency.table import LookupTable, cache_folder, default_table_path, least_squares
from edgeflow.models import create_model
from edgeflow.profiling.cost import artifact_cost
from edgeflow.targets.calibration import device_timer

MODELS = "mobilenet_v2,mobilenet_v3_large,mobilenet_v3_small,mnasnet1_0,efficientnet_b0,resnet18,squeezenet1_1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("reports/estimates-cpu.md"))
    args = parser.parse_args()
    started = time.perf_counter()
    device = load_device("cpu")
    shape = (1, 3, args.resolution, args.resolution)
    torch.manual_seed(0)
    modules = {name: create_model(name, num_classes=10).eval() for name in args.models.split(",")}
    timer = device_timer(device)
    table = LookupTable(timer, default_table_path(cache_folder(), timer, shape))
    features = {name: table.features(module, shape) for name, module in modules.items()}
    table.save()
    measured, to_table = table.time_with_reference(modules, shape, rounds=args.rounds)
    executed = timer.compile_module(modules[next(iter(modules))], shape).settings.get("execution_precision", "f32")
    precision = {"bf16": "bf16", "f16": "fp16"}.get(str(executed), "fp32")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, module in modules.items():
            graph = export_onnx(module, input_shape=shape, path=Path(folder) / f"{name}.onnx")
            roofline = estimate_roofline(graph, device=device, precision=precision)
            others = [other for other in modules if other != name]
            held_out = least_squares({o: features[o] for o in others}, {o: measured[o] * to_table for o in others})
            table_ms = held_out.estimate(*features[name]) / to_table  # back to the host's speed now
            rows.append((name, artifact_cost(graph).macs, measured[name], roofline.ms, table_ms, features[name][1]))
    all_fit = least_squares(features, {name: ms * to_table for name, ms in measured.items()})

    def error(estimate: float, truth: float) -> float:
        return 100 * (estimate / truth - 1)

    lines = [
        f"# Estimated vs measured latency on `cpu` ({args.resolution} px, batch 1)",
        "",
        f"OpenVINO on this host, executed in {executed}; measured = median over {args.rounds} rounds of each model's",
        "p50, all models timed in turn. Roofline: devices/cpu.yaml's peak figures at the executed precision. Lookup",
        "table: block compute times measured here, fitted (intercept, scale, per block) on the other models (leave",
        "one out).",
        "",
        "| model | MACs | blocks | measured p50 ms | roofline ms | roofline error | table ms (leave one out) "
        "| table error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, macs, truth, roof, tab, blocks in rows:
        lines.append(
            f"| {name} | {macs / 1e6:.0f}M | {blocks} | {truth:.3f} | {roof:.3f} | {error(roof, truth):+.1f}% | "
            f"{tab:.3f} | {error(tab, truth):+.1f}% |"
        )
    roof_errors = [abs(error(roof, truth)) for _, _, truth, roof, _, _ in rows]
    table_errors = [abs(error(tab, truth)) for _, _, truth, _, tab, _ in rows]
    lines += [
        "",
        "| estimate | median \\|error\\| | within +-10% | within +-25% |",
        "|---|---|---|---|",
        f"| roofline | {statistics.median(roof_errors):.1f}% | {sum(e <= 10 for e in roof_errors)} of {len(rows)} | "
        f"{sum(e <= 25 for e in roof_errors)} of {len(rows)} |",
        f"| lookup table (leave one out) | {statistics.median(table_errors):.1f}% | "
        f"{sum(e <= 10 for e in table_errors)} of {len(rows)} | {sum(e <= 25 for e in table_errors)} of {len(rows)} |",
        "",
        f"Fit on all {len(rows)} models: latency = {all_fit.intercept_ms:.3f} ms + {all_fit.compute_scale:.3f} x "
        f"blocks + {all_fit.per_block_ms:.4f} ms per block (table units). "
        f"Whole command: {time.perf_counter() - started:.0f} s.",
        "Command: `.venv/bin/python bench/estimates.py`",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    write_text(args.out, text)


if __name__ == "__main__":
    main()
