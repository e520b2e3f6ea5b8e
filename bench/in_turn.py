"""Time model files in turn on this CPU and print their median p50s: a second look at a bench's timings
(machines are shared and noisy; files timed in turn see the same noise).

    .venv/bin/python bench/in_turn.py FILE [FILE ...] [--rounds 9] [--seconds 1.0]

Any file edgeflow reads (.onnx, .xml, .tflite), each with its own runtime and the cpu device's settings; batch 1.
The ratio is the first file's p50 over each file's.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    from edgeflow.backends import artifact_from_path, get_backend
    from edgeflow.device import choose_backend, load_device
    from edgeflow.profiling.in_turn import time_in_turn
    from edgeflow.profiling.loop import ProfileConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=9, help="rounds in turn (median quoted)")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per file per round")
    args = parser.parse_args()
    device = load_device("cpu")
    compiled = {}
    for path in args.files:
        artifact = artifact_from_path(path)
        compiled[str(path)] = get_backend(choose_backend(artifact, device)).compile(artifact, settings=device.runtime)
    config = ProfileConfig(warmup=20, iterations=100000, max_seconds=args.seconds, min_iterations=20)
    medians = time_in_turn(compiled, rounds=args.rounds, config=config).medians()
    first = next(iter(medians.values()))
    print(f"| file | runtime | p50 ms (median of {args.rounds} rounds in turn) | speed vs the first |")
    print("|---|---|---|---|")
    for name, p50 in medians.items():
        print(f"| {name} | {compiled[name].backend} | {p50:.3f} | {first / p50:.2f}x |")


if __name__ == "__main__":
    main()
