"""Do the INT8 kernels of each runtime favour some channel counts? Measured, not assumed (issue 31: the search's
channel steps should follow what the int8 kernels run fastest).

A probe network (stem 3->32 stride 2, then inverted-residual blocks 32 -> C -> depthwise 3x3 C -> 32, pool,
linear: `edgeflow.latency.steps.StepProbe`, the probe the search measures its channel step on) is built for every
expanded width C given, exported and quantized through the same pipeline `optimize`
uses (each backend's float artifact and its default INT8 method, calibrated on the built-in digits), and every
artifact of one runtime is timed in turn with the others (batch 1, this machine's cores). The table gives each
p50 and its time per million MACs of the block, so a width the kernels favour shows as a dip against its
neighbours; fp32 beside int8 shows whether the pattern is the int8 kernels' own.

    .venv/bin/python bench/int8_channel_steps.py [--widths 48,50,52,56,60,64,66,72] [--side 112]
        [--runtimes onnxruntime,openvino,litert,executorch] [--rounds 7] [--seconds 0.3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import imagenette  # noqa: E402  (the heading: machine, versions, command)

from edgeflow.backends import get_backend  # noqa: E402
from edgeflow.data import load_data  # noqa: E402
from edgeflow.device import load_device  # noqa: E402
from edgeflow.export.onnx import export_onnx  # noqa: E402
from edgeflow.io import write_text  # noqa: E402
from edgeflow.latency.steps import PROBE_BLOCKS, StepProbe  # noqa: E402
from edgeflow.profiling.in_turn import time_in_turn  # noqa: E402
from edgeflow.profiling.loop import ProfileConfig  # noqa: E402
from edgeflow.recipe import VariantSpec  # noqa: E402
from edgeflow.variants import FloatArtifacts, build_variant  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="48,50,52,56,60,64,66,72")
    parser.add_argument("--side", type=int, default=112)
    parser.add_argument("--runtimes", default="onnxruntime,openvino,litert,executorch")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.3)
    parser.add_argument("--report", type=Path, default=Path("reports/int8-channel-steps-cpu.md"))
    args = parser.parse_args()
    widths = [int(value) for value in args.widths.split(",")]
    runtimes = [name for name in args.runtimes.split(",") if get_backend(name).unavailable() is None]
    splits = load_data("digits", resolution=args.side)
    device = load_device("cpu")
    shape = (1, 3, args.side, args.side)
    config = ProfileConfig(warmup=10, iterations=100000, max_seconds=args.seconds, min_iterations=20)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        built: dict[str, dict[tuple[int, str], object]] = {runtime: {} for runtime in runtimes}
        block_macs = {}
        for width in widths:
            module = StepProbe(width)
            folder = Path(scratch) / f"w{width}"
            folder.mkdir()
            onnx = export_onnx(module, input_shape=shape, path=folder / "model_fp32.onnx")
            block_macs[width] = StepProbe.block_macs(width, side=args.side)
            floats = FloatArtifacts.of(onnx, module=module, input_shape=shape, folder=folder)
            for runtime in runtimes:
                for precision in ("fp32", "int8"):
                    variant = VariantSpec(
                        name=f"{runtime}-{precision}",
                        backend=runtime,
                        precision=precision,
                        **({"quantize": {"subset_size": 64}} if precision == "int8" else {}),
                    )
                    artifact, _ = build_variant(variant, floats=floats, splits=splits, folder=folder, seed=0,
                                                settings=device.runtime)  # fmt: skip
                    compiled = get_backend(runtime).compile(artifact, settings=device.runtime)
                    built[runtime][(width, precision)] = compiled
                print(f"built width {width}", flush=True)
        for runtime in runtimes:
            medians = time_in_turn(
                {f"{width}/{precision}": model for (width, precision), model in built[runtime].items()},
                rounds=args.rounds, config=config,
            ).medians()  # fmt: skip
            for (width, precision), model in built[runtime].items():
                p50 = medians[f"{width}/{precision}"]
                rows.append(
                    {
                        "runtime": runtime,
                        "width": width,
                        "precision": precision,
                        "p50": p50,
                        "per_mmac": 1e6 * p50 / block_macs[width],
                        "threads": model.settings.get("threads"),
                    }
                )
            print(f"timed {runtime}", flush=True)
    lines = table(rows, widths=widths, runtimes=runtimes)
    command = (f".venv/bin/python bench/int8_channel_steps.py --widths {args.widths} --side {args.side} "
               f"--runtimes {args.runtimes} --rounds {args.rounds} --seconds {args.seconds}")  # fmt: skip
    heading = imagenette.heading("Do the INT8 kernels favour some channel counts? (this CPU)", command=command)
    heading = [line for line in heading if not line.startswith("Data:")]
    text = "\n".join([*heading, "", *explain(args), "", *lines]) + "\n"
    write_text(args.report, text)
    print(text)


def explain(args) -> list[str]:
    return [
        f"Probe: stem 3->32 (stride 2) at {args.side} px, then {PROBE_BLOCKS} blocks 32 -> C (1x1) -> depthwise 3x3 C "
        "-> "
        f"32 (1x1) at {args.side // 2} px, pool, linear. Each runtime's float artifact and its default INT8 method "
        "(the pipeline's `build_variant`), calibrated on 64 digits images. Each runtime's artifacts timed in turn, "
        f"{args.rounds} rounds of {args.seconds:g} s, median of the rounds' p50; per MMAC = p50 per million MACs "
        "of the blocks (the stem adds a fixed share; a width the kernels favour dips below its neighbours).",
    ]


def table(rows: list[dict], *, widths: list[int], runtimes: list[str]) -> list[str]:
    header = "| runtime | precision | " + " | ".join(f"C={width}" for width in widths) + " |"
    lines = [header, "|---|---|" + "---|" * len(widths)]
    for runtime in runtimes:
        for precision in ("fp32", "int8"):
            cells = {row["width"]: row for row in rows if row["runtime"] == runtime and row["precision"] == precision}
            lines.append(f"| {runtime} | {precision} p50 ms | "
                         + " | ".join(f"{cells[width]['p50']:.4f}" for width in widths) + " |")  # fmt: skip
            lines.append(f"| {runtime} | {precision} us/MMAC | "
                         + " | ".join(f"{cells[width]['per_mmac']:.3f}" for width in widths) + " |")  # fmt: skip
    return lines


if __name__ == "__main__":
    main()
