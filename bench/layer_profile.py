"""A lone block's compute time from OpenVINO's per-layer profiler (layers less layout conversions) beside the
same block timed whole, in turn over rounds: the compute time must not exceed the whole inference (a profile
that counted layers twice would be ~2x). A timing comparison, so it lives here, not in the tests.

    .venv/bin/python bench/layer_profile.py [--rounds 7] [--inferences 60]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from torch import nn

from edgeflow.artifact import Artifact
from edgeflow.backends import get_backend
from edgeflow.backends.base import RuntimeSettings
from edgeflow.export.onnx import export_onnx
from edgeflow.profiling.loop import ProfileConfig, time_inference

BLOCKS = {  # (input channels, expanded channels, side)
    "ir-16x64-32px": (16, 64, 32),
    "ir-24x96-28px": (24, 96, 28),
    "ir-40x240-14px": (40, 240, 14),
}


def block(channels: int, expanded: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, expanded, 1), nn.BatchNorm2d(expanded), nn.Hardswish(),
        nn.Conv2d(expanded, expanded, 3, padding=1, groups=expanded), nn.BatchNorm2d(expanded), nn.Hardswish(),
        nn.Conv2d(expanded, channels, 1),
    ).eval()  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--inferences", type=int, default=60)
    args = parser.parse_args()
    torch.manual_seed(0)
    runtime = get_backend("openvino")
    config = ProfileConfig(warmup=5, iterations=100_000, max_seconds=0.3)
    print(f"OpenVINO {runtime.version()}, {args.rounds} rounds in turn, medians over rounds (ms)")
    print("| block | compute (profiler) | layout (profiler) | whole inference | compute / whole |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name, (channels, expanded, side) in BLOCKS.items():
            shape = (1, channels, side, side)
            onnx = export_onnx(block(channels, expanded), input_shape=shape, path=Path(folder) / f"{name}.onnx")
            artifact = Artifact(format="onnx", path=onnx.path, input_shape=shape)
            profiled = runtime.compile(artifact, settings=RuntimeSettings(), layer_profile=True)
            plain = runtime.compile(artifact, settings=RuntimeSettings())
            computes, layouts, wholes = [], [], []
            for _ in range(args.rounds):
                profile = profiled.layer_profile(inferences=args.inferences)
                computes.append(profile.compute_ms)
                layouts.append(profile.layout_ms)
                wholes.append(time_inference(plain, config=config).p50)
            compute, whole = statistics.median(computes), statistics.median(wholes)
            print(
                f"| {name} | {compute:.4f} | {statistics.median(layouts):.4f} | {whole:.4f} | {compute / whole:.2f} |"
            )


if __name__ == "__main__":
    main()
