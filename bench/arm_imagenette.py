"""The Imagenette mobilenet_v3_large on an ARM userland: FP32 and INT8 through ONNX Runtime and LiteRT, scored
on the test split (or each class's share of it: --samples) by the aarch64 builds (the emulated Debian of
tests/arm_device.py, reached over SSH by the agent) and by this host's x86 builds of the same files, with the
top-1 agreement between the two.

    .venv/bin/python bench/arm_imagenette.py [--report reports/arm-device-imagenette-cpu.md]

Needs root, qemu-user-static and debootstrap (tests/arm_device.py says what is missing). The ARM timings are
emulated (qemu-user on this host): printed as such, and neither the device's latency nor a prediction.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "tests")]

import arm_device  # noqa: E402
import imagenette  # noqa: E402

import edgeflow  # noqa: E402
from edgeflow.api import check_device  # noqa: E402
from edgeflow.device import load_device  # noqa: E402
from edgeflow.io import write_text  # noqa: E402
from edgeflow.recipe import load_recipe  # noqa: E402

MODEL = "mobilenet_v3_large"
VARIANTS = [
    {"name": "onnxruntime-fp32", "backend": "onnxruntime", "precision": "fp32"},
    {"name": "onnxruntime-int8", "backend": "onnxruntime", "precision": "int8",
     "quantize": {"method": "ort-static", "subset_size": 300}},
    {"name": "litert-fp32", "backend": "litert", "precision": "fp32"},
    {"name": "litert-int8", "backend": "litert", "precision": "int8", "quantize": {"subset_size": 300}},
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=Path("reports/arm-device-imagenette-cpu.md"))
    parser.add_argument("--samples", type=int, default=None,
                        help="test images, each class's share (default: the whole 3,925; qemu runs "
                        "mobilenet_v3_large at about 0.3-0.7 s an image and file here)")  # fmt: skip
    parser.add_argument(
        "--cpu",
        default=arm_device.CPU,
        help="the CPU qemu emulates: cortex-a76 (a Raspberry Pi 5's core), cortex-a72 (a Pi 4's)",
    )
    parser.add_argument("--holdout-samples", type=int, default=300,
                        help="holdout images, each class's share: they choose the recommendation")  # fmt: skip
    args = parser.parse_args()
    imagenette.require_data()
    reason = arm_device.missing()
    if reason:
        sys.exit(f"bench: {reason}")
    checkpoint = imagenette.COMMITTED / f"{imagenette.checkpoint_name(MODEL, side=96, epochs=40)}.pt"
    started = time.perf_counter()
    root = arm_device.build(log=lambda line: print(line, file=sys.stderr, flush=True))
    found = time.perf_counter() - started
    built = (root / ".edgeflow-ready").read_text()
    spec = load_recipe(str(imagenette.RECIPE)).model_dump(exclude_unset=True)
    spec.update(name="imagenette-arm", variants=VARIANTS, profile={"warmup": 3, "iterations": 30, "max_seconds": 3},
                evaluate={"max_samples": args.samples, "holdout_samples": args.holdout_samples})  # fmt: skip
    recipe = type(load_recipe(str(imagenette.RECIPE))).model_validate(spec)
    with tempfile.TemporaryDirectory() as scratch:
        server = arm_device.start(Path(scratch) / "sshd", root=root, cpu=args.cpu)
        try:
            device_file = Path(scratch) / "arm-pi.yaml"
            # one command scores a split: under qemu about 0.5 s an image and file, so allow 3 s an image
            device_file.write_text(server.device_yaml(command_timeout_s=max(600, 3 * (args.samples or 3925))))
            features = check_device(load_device(device_file)).isa
            run_started = time.perf_counter()
            report = edgeflow.optimize(str(checkpoint), arch=MODEL, device=load_device(device_file), recipe=recipe,
                                       out=Path(scratch) / "out")  # fmt: skip
            run_seconds = time.perf_counter() - run_started
        finally:
            server.stop()
    samples = "" if args.samples is None else f" --samples {args.samples}"
    lines = [
        *imagenette.heading(
            "Imagenette mobilenet_v3_large on an emulated aarch64 Debian: the ARM builds beside this host's",
            command=f".venv/bin/python bench/arm_imagenette.py{samples} --cpu {args.cpu} --holdout-samples "
            f"{args.holdout_samples} --report {args.report}",
        ),
        f"ARM root: `{root}` ({built.strip()}); found or built by this run in {found:.1f} s. The agent ran on "
        f"aarch64 (qemu-user, emulating a {args.cpu}: cpu features {' '.join(features)}) over SSH; every file "
        "was built here and scored by the device's build and by this "
        f"host's on {report.variants[0].host_build.images} of the 3,925 test images (a subset keeps each class's "
        f"share); the recommendation was chosen on {report.variants[0].holdout_samples} holdout images. The whole "
        f"optimize run: {run_seconds / 60:.1f} min.",
        "",
        "| variant | top-1 % through the aarch64 build | top-1 % through this host's (x86_64) | top-1 agreement % | "
        "aarch64 runtime | p50 ms (emulated: qemu, not a device's) |",
        "|---|---|---|---|---|---|",
    ]
    for variant in report.variants:
        build = variant.host_build
        lines.append(
            f"| {variant.name} | {100 * build.device_top1:.2f} | {100 * build.top1:.2f} | {100 * build.agreement:.2f} "
            f"| {variant.backend} {variant.runtime_version} | {variant.latency_ms.p50:.2f} ({variant.latency_kind}) |"
        )
    lines += ["", f"Test images: {report.variants[0].host_build.images}. Notes: " + "; ".join(report.notes), ""]
    write_text(args.report, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
