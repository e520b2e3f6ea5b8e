"""Training speed on this CPU: steps per second of one model with each memory format and precision
(contiguous / channels-last, f32 / bf16 autocast where the CPU has bf16), timed in turn, median of rounds;
and what one epoch of a data set would take with the fastest. It says which of the training options help here.

    .venv/bin/python bench/train_speed.py [--model mobilenet_v3_large] [--sides 64,96,128] [--batch 64]
        [--rounds 5] [--steps 4] [--train-images 8049] [--out reports/train-speed-cpu.md]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from edgeflow.environment import host_has_bf16
from edgeflow.io import write_text
from edgeflow.models import create_model

MODES = {
    "contiguous f32": (False, False),
    "channels-last f32": (True, False),
    "contiguous bf16": (False, True),
    "channels-last bf16": (True, True),
}


def _step_runner(model: nn.Module, *, side: int, batch: int, channels_last: bool, bf16: bool):
    model = copy.deepcopy(model).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    images = torch.randn(batch, 3, side, side)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = criterion(model(images).float(), labels)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v3_large")
    parser.add_argument("--sides", default="64,96,128")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per model per round")
    parser.add_argument(
        "--train-images", type=int, default=8049, help="images per epoch (Imagenette's train less holdout)"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/train-speed-cpu.md"))
    args = parser.parse_args()
    torch.manual_seed(0)
    modes = {name: mode for name, mode in MODES.items() if host_has_bf16() or not mode[1]}
    model = create_model(args.model, num_classes=10)
    lines = [
        f"# Training speed of {args.model} on this CPU (batch {args.batch})",
        "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}; bf16 instructions: "
        f"{'yes' if host_has_bf16() else 'no (bf16 rows left out: emulated bf16 is slower)'}.",
        f"Command: `.venv/bin/python bench/train_speed.py --model {args.model} --sides {args.sides} "
        f"--batch {args.batch} --rounds {args.rounds} --steps {args.steps}`",
        "",
        "Each mode's steps timed in turn with the others in every round (one warm-up step first); median over "
        "rounds of each round's seconds per step.",
        "",
        f"| side | mode | s / step | images / s | vs contiguous f32 | one epoch of {args.train_images} images (min) |",
        "|---|---|---|---|---|---|",
    ]
    for side in (int(value) for value in args.sides.split(",")):
        runners = {
            name: _step_runner(model, side=side, batch=args.batch, channels_last=cl, bf16=bf16)
            for name, (cl, bf16) in modes.items()
        }
        for run in runners.values():
            run()  # warm-up: allocations, oneDNN primitive creation
        seconds: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(args.rounds):
            for name, run in runners.items():
                start = time.perf_counter()
                for _ in range(args.steps):
                    run()
                seconds[name].append((time.perf_counter() - start) / args.steps)
        base = statistics.median(seconds["contiguous f32"])
        for name, samples in seconds.items():
            per_step = statistics.median(samples)
            epoch_min = per_step * args.train_images / args.batch / 60
            lines.append(
                f"| {side} | {name} | {per_step:.3f} | {args.batch / per_step:.0f} | {base / per_step:.2f}x "
                f"| {epoch_min:.1f} |"
            )
        print("\n".join(lines[-len(seconds) :]), flush=True)
    write_text(args.out, "\n".join(lines) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
