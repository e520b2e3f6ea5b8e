"""NetAdapt on a user's photos: the EfficientNet-Lite1 fine-tuned from ImageNet weights on clothing-small-160,
shrunk against the latency of the file that ships (``--target``, e.g. litert-int8 or openvino-int8) measured on
this CPU, beside the width multiplier and Torch-Pruning's uniform magnitude pruning, every model fine-tuned with
the same steps and timed in turn.

Starts from reports/transfer-clothing/lite1/model.pt (``bench/transfer_clothing.py --rows lite1`` writes it;
its test top-1 at 224 px is in that folder's report), runs `edgeflow search` with recipes/clothing-search.yaml (a
CPU recipe: 160 px, 300 long-term steps) and writes the report and plot (the models: measured p50 in turn,
speed-up, test top-1 through the target's runtime on the 372 test photos, MACs; the iterations; the goals).

    .venv/bin/python bench/netadapt_clothing.py --target litert-int8 [--ratio 0.64] [--resume]
    .venv/bin/python bench/netadapt_clothing.py --target litert-fp32 --out reports/bench-netadapt-clothing-fp32
    .venv/bin/python bench/netadapt_clothing.py --target litert-int8 --resume --out reports/bench-netadapt-clothing-fp32
        # the float-judged search's models built and timed as the INT8 file (--resume with another target)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from imagenette import CLOTHING_PHOTOS
from netadapt_imagenette import search_or_rewrite, write_report

ROOT = Path(__file__).resolve().parents[1]
CLOTHING = ROOT.parent / "shared" / "data" / "clothing-small-160"
START = Path("reports/transfer-clothing/lite1/model.pt")
ARCH = "timm:tf_efficientnet_lite1"
RECIPE = Path("recipes/clothing-search.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="<backend>-<precision>: litert-int8, openvino-int8, ...")
    parser.add_argument("--ratio", type=float, default=None, help="latency ratio (default: the recipe's)")
    parser.add_argument("--out", type=Path, default=None, help="default: reports/bench-netadapt-clothing-<target>")
    parser.add_argument("--resume", action="store_true", help="go on with the search in --out")
    parser.add_argument("--report", type=Path, default=None, help="default: reports/netadapt-clothing-<target>-cpu.md")
    parser.add_argument("--rewrite", action="store_true", help="write the report from --out/search.json, no search")
    args = parser.parse_args()
    args.out = args.out or Path(f"reports/bench-netadapt-clothing-{args.target}")
    args.report = args.report or Path(f"reports/netadapt-clothing-{args.target}-cpu.md")
    if not (CLOTHING / "train").is_dir():
        sys.exit(f"bench: {CLOTHING} is missing (the shared clothing-small-160 set, ../shared beside the project)")
    if not START.is_file():
        sys.exit(f"bench: {START} is missing: .venv/bin/python bench/transfer_clothing.py --rows lite1 writes it")
    report, total = search_or_rewrite(args, model=str(START), arch=ARCH, recipe=RECIPE)
    start = (
        f"Start: EfficientNet-Lite1 fine-tuned here from ImageNet weights on clothing-small-160 (`{START}`, "
        f"bench/transfer_clothing.py; 224 px there), searched, fine-tuned and scored at "
        f"{report.resolution} px: a CPU recipe."
    )
    write_report(args, report=report, start=start, script="bench/netadapt_clothing.py", recipe=RECIPE,
                 data="a user's photos (clothing-small-160)", test="the 372 test photos", total=total,
                 photos=CLOTHING_PHOTOS)  # fmt: skip


if __name__ == "__main__":
    main()
