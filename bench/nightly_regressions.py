"""Nightly regression detection on this CPU: a first night, N reruns under identical conditions (every
flag among them is a false alarm), then a planted slowdown (half the threads), all with recipes/nightly.yaml.

    .venv/bin/python bench/nightly_regressions.py [--reruns 10] [--out reports/nightly-bench]

Prints one row per night (cells, flags, the largest latency change and interval), then each cell of the
planted night. The nights, their pages and the history stay under --out.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import numpy as np

from edgeflow.backends.base import RuntimeSettings
from edgeflow.nightly import load_nightly, run_nightly
from edgeflow.progress import Progress


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="nightly")
    parser.add_argument("--reruns", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("reports/nightly-bench"))
    parser.add_argument("--keep", action="store_true", help="add to an existing history instead of starting anew")
    args = parser.parse_args()

    if args.out.exists() and not args.keep:
        cache = args.out / "cache"
        for child in args.out.iterdir():
            if child != cache:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    spec = load_nightly(args.recipe)
    cores = len(os.sched_getaffinity(0))
    halved = spec.model_copy(deep=True)
    halved.pipeline.runtime = RuntimeSettings(threads=max(1, cores // 2))
    progress = Progress.to_stderr()
    nights = [("first", spec)] + [(f"rerun {i}", spec) for i in range(1, args.reruns + 1)] + [("half threads", halved)]
    rows, planted = [], None
    for index, (kind, recipe) in enumerate(nights):
        report = run_nightly(recipe, out=args.out, label=f"night-{index:02d}", progress=progress)
        latency = [f for f in report.findings if f.kind == "latency" and f.change is not None]
        judged = sum("not judged yet" not in f.message for f in latency)
        flagged = report.regressions
        worst = max(latency, key=lambda f: f.change, default=None)
        rows.append((report.label, kind, len(report.cells), judged, sum(c.status == "failed" for c in report.cells),
                     sum(f.kind == "latency" for f in flagged), sum(f.kind != "latency" for f in flagged),
                     np.median([abs(f.change) for f in latency]) if latency else None, worst,
                     report.seconds))  # fmt: skip
        if kind == "half threads":
            planted = report

    matrix = spec.matrix
    print(f"\nrecipe {spec.name} ({', '.join(matrix.models)} x {', '.join(matrix.precisions)} on "
          f"{', '.join(matrix.devices)}); {cores} cores here; half threads = {max(1, cores // 2)}\n")  # fmt: skip
    print("| night | kind | cells | latency judged | failed | latency flags | other flags | median abs change "
          "| largest change (interval) | s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, kind, cells, judged, failed, lat_flags, other, median, worst, seconds in rows:
        worst_text = "" if worst is None else (
            f"{100 * worst.change:+.1f}% {worst.model} {worst.precision} "
            f"({worst.interval[0]:.3f}-{worst.interval[1]:.3f})"
        )  # fmt: skip
        median_text = "" if median is None else f"{100 * median:.1f}%"
        print(f"| {label} | {kind} | {cells} | {judged} | {failed} | {lat_flags} | {other} | {median_text} "
              f"| {worst_text} | {seconds:.0f} |")  # fmt: skip
    reruns = rows[1 : 1 + args.reruns]
    false_alarms = sum(row[5] + row[6] for row in reruns)
    cells, judged = sum(row[2] for row in reruns), sum(row[3] for row in reruns)
    print(f"\nfalse alarms in {len(reruns)} identical reruns: {false_alarms} flags over {cells} cells "
          f"({judged} latency comparisons judged; the first nights build the history)")  # fmt: skip
    if planted is not None:
        print("\n| planted night cell | p50 ms | baseline ms | change | interval | rank p | flagged | what changed |")
        print("|---|---|---|---|---|---|---|---|")
        for f in planted.findings:
            if f.kind == "latency" and f.change is not None:
                print(f"| {f.model} {f.precision} | {f.current:.3f} | {f.baseline:.3f} | {100 * f.change:+.1f}% | "
                      f"{f.interval[0]:.3f}-{f.interval[1]:.3f} | {f.p_value:.1g} | {'yes' if f.flagged else 'no'} | "
                      f"{'; '.join(f.changes)} |")  # fmt: skip
        caught = sum(f.flagged for f in planted.findings if f.kind == "latency")
        total = sum(1 for f in planted.findings if f.kind == "latency" and f.change is not None)
        print(f"\nplanted slowdown flagged in {caught} of {total} cells; pages under {args.out}/night-*/night.html")


if __name__ == "__main__":
    main()
