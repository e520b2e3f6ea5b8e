"""Does `edgeflow profile` agree with OpenVINO's `benchmark_app -hint latency`? Prints a table of ratios.

Each model is exported once to OpenVINO IR (fp32 weights, 224 px, 1000 classes, random weights: values do
not change a CNN's latency). Then, for several rounds, both tools time the same .xml in separate processes,
alternating which goes first; the table gives each tool's median over the rounds of its own medians, and
their ratio (goal: 0.95-1.05).

    .venv/bin/python bench/profile_vs_benchmark_app.py [--models a,b,c] [--seconds 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import edgeflow
from edgeflow.targets.benchmark_app import parse_benchmark_app

BIN = Path(sys.executable).parent


def benchmark_app_median(xml: Path, seconds: float) -> float:
    tool = shutil.which("benchmark_app", path=str(BIN)) or "benchmark_app"
    output = subprocess.run(
        [tool, "-m", str(xml), "-d", "CPU", "-hint", "latency", "-t", str(int(seconds))],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return parse_benchmark_app(output).median_ms


def edgeflow_median(xml: Path, seconds: float) -> tuple[float, str]:
    output = subprocess.run(
        [
            str(BIN / "edgeflow"),
            "profile",
            str(xml),
            "--device",
            "cpu",
            "--json",
            "--seconds",
            str(seconds),
            "--iterations",
            "1000000",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = json.loads(output)
    return result["latency_ms"]["p50"], result["execution_precision"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v3_large,mobilenet_v2,resnet18")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=224)
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for model in args.models.split(","):
            xml = edgeflow.export(model, format="openvino", out=folder, resolution=args.resolution).path
            ours, theirs, precision = [], [], ""
            for round_index in range(args.rounds):
                if round_index % 2 == 0:
                    theirs.append(benchmark_app_median(xml, args.seconds))
                    value, precision = edgeflow_median(xml, args.seconds)
                    ours.append(value)
                else:
                    value, precision = edgeflow_median(xml, args.seconds)
                    ours.append(value)
                    theirs.append(benchmark_app_median(xml, args.seconds))
            rows.append((model, statistics.median(ours), statistics.median(theirs), precision, ours, theirs))

    print(
        f"\nedgeflow profile vs benchmark_app -hint latency: {args.resolution} px, batch 1, "
        f"{args.rounds} rounds x {args.seconds:g} s each, medians of per-round medians (ms)\n"
    )
    header = ["model", "executed as", "edgeflow p50", "benchmark_app median", "ratio", "within 0.95-1.05"]
    print("| " + " | ".join([*header, "rounds (edgeflow / benchmark_app)"]) + " |")
    print("|---|---|---|---|---|---|---|")
    for model, ours, theirs, precision, ours_all, theirs_all in rows:
        ratio = ours / theirs
        rounds = " ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(ours_all, theirs_all, strict=True))
        verdict = "yes" if 0.95 <= ratio <= 1.05 else "NO"
        print(f"| {model} | {precision} | {ours:.3f} | {theirs:.3f} | {ratio:.3f} | {verdict} | {rounds} |")


if __name__ == "__main__":
    main()
