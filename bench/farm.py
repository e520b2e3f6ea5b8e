"""The farm against one process, on this machine, timed in turn in one run.

1. A nightly of 3 models x 2 precisions over 2 devices: in this process, one cell after another, then on a
   farm of two Ray nodes on 127.0.0.1 (one CPU each, each declaring one of the devices: two copies of this
   machine's CPU, ``cpu-a`` and ``cpu-b``, so every timing holds its node). Wall times and their ratio.
2. A NetAdapt search on measured latency (lookup table timed on this CPU), in this process and with its
   proposals as Ray tasks on the two nodes: wall times, and whether they chose the same proposals.
3. What the README's 20-device estimate rests on: each cell's seconds (host work, and the timing part of it),
   the driver's seconds per cell (unpack its folder, record it in the history), the history's bytes per cell.

    .venv/bin/python bench/farm.py [--report reports/farm-cpu.md]

Both ways share the machine's 2 cores, so the farm cannot be faster than the cores allow: the figures say
what distributing costs and what it buys here, not what 20 devices would.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from edgeflow.environment import cpu_description
from edgeflow.io import write_text

MODELS = ["mobilenet_v3_small", "mobilenet_v2", "resnet18"]
PRECISIONS = ["fp32", "int8"]
DEVICES = ["cpu-a", "cpu-b"]


def device_files(folder: Path) -> list[Path]:
    """Two devices that are this machine's CPU under two names (each farm node declares one)."""
    base = yaml.safe_load(Path("devices/cpu.yaml").read_text())
    paths = []
    for name in DEVICES:
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**base, "name": name, "description": f"this CPU, as {name}"}))
        paths.append(path)
    return paths


def night_recipe(folder: Path, devices: list[Path]) -> Path:
    data = {
        "kind": "nightly", "name": "farm-bench", "description": "3 models x 2 precisions x 2 devices",
        "pipeline": {
            "model": {"resolution": 32}, "train": {"epochs": 1, "batch_size": 32, "max_steps": 20},
            "quantize": {"subset_size": 64}, "profile": {"warmup": 10, "iterations": 2000, "max_seconds": 2},
            "evaluate": {"max_samples": 200}, "layer_inferences": 10,
        },
        "matrix": {"models": MODELS, "devices": [str(path) for path in devices], "precisions": PRECISIONS},
        "timing": {"rounds": 3, "seconds_per_round": 0.5},
    }  # fmt: skip
    path = folder / "night.yaml"
    path.write_text(json.dumps(data))
    return path


def search_recipe() -> dict:
    return {
        "name": "farm-bench-search", "data": "digits", "seed": 0, "model": {"resolution": 48},
        "train": {"epochs": 2, "batch_size": 64, "lr": 0.003},
        "variants": [{"name": "openvino-fp32", "backend": "openvino"}],
        "profile": {"warmup": 5, "iterations": 200, "max_seconds": 0.3}, "evaluate": {"max_samples": 300},
        "search": {
            "latency_ratio": 0.5, "initial_step": 0.04, "screen_top_k": 4, "holdout_samples": 120,
            "short_term": {"steps": 30, "batch_size": 32, "bn_batches": 4},
            "long_term": {"steps": 30, "batch_size": 32, "bn_batches": 4}, "max_iterations": 3,
            "measure": "screened",
            "profile": {"warmup": 3, "iterations": 100, "max_seconds": 0.1, "min_iterations": 10},
        },
    }  # fmt: skip


def start_farm():
    """Two Ray nodes on 127.0.0.1, one CPU each, with the resources ``edgeflow farm join`` declares."""
    from ray.cluster_utils import Cluster

    from edgeflow.cluster.resources import node_resources
    from edgeflow.cluster.session import keep_loopback, use_token_auth

    keep_loopback()
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))
    os.environ["RAY_AUTH_MODE"] = "token"
    use_token_auth()
    common = {"node_ip_address": "127.0.0.1", "num_cpus": 1}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={**common, "include_dashboard": False, "resources": node_resources(DEVICES[:1])},
    )
    cluster.add_node(**common, resources=node_resources(DEVICES[1:]))
    return cluster


def driver_cost(night: Path, history: Path) -> dict:
    """Seconds the driver spends per cell (unpack a packed cell folder, record the cell) and history bytes."""
    from edgeflow.cluster.target import unpack_artifacts
    from edgeflow.nightly.farm import _pack
    from edgeflow.nightly.history import History

    cells = sorted((night / "cells").iterdir())
    with History.open(history) as store:
        runs = store.finished_runs()
        records = [cell for run in runs for cell in store.cells(run.id)]
    packed = [_pack(folder) for folder in cells]
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        for number, data in enumerate(packed):
            unpack_artifacts(data, Path(scratch) / f"cell-{number}")
        unpack = (time.perf_counter() - started) / len(packed)
        with History.open(Path(scratch) / "history.sqlite") as store:
            run_id = store.start_run(label="x", started="now", recipe_name="x", recipe_hash="x", recipe={},
                                     environment={})  # fmt: skip
            started = time.perf_counter()
            for record in records:
                store.add_cell(run_id, record)
            record_seconds = (time.perf_counter() - started) / len(records)
    return {
        "cells": len(records),
        "packed_kib": statistics.median(len(data) for data in packed) / 1024,
        "unpack_s": unpack,
        "record_s": record_seconds,
        "history_bytes_per_cell": history.stat().st_size / max(1, len(records)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=Path("reports/farm-cpu.md"))
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--quick", action="store_true", help="one model, one precision, no search (a dry run)")
    args = parser.parse_args()
    if args.quick:
        del MODELS[1:], PRECISIONS[1:]
        args.skip_search = True

    import edgeflow
    from edgeflow.nightly import run_nightly
    from edgeflow.progress import Progress
    from edgeflow.recipe import Recipe

    work = Path(tempfile.mkdtemp(prefix="edgeflow-farm-bench-"))
    progress = Progress.to_stderr()
    try:
        devices = device_files(work)
        recipe = night_recipe(work, devices)
        os.environ["EDGEFLOW_CACHE"] = str(work / "latency-cache")
        # the models are trained once (in the first night's cache) and shared, so both nights time the same
        started = time.perf_counter()
        here = run_nightly(recipe, out=work / "here", label="here", progress=progress)
        here_s = time.perf_counter() - started
        cluster = start_farm()
        try:
            shutil.copytree(work / "here" / "cache", work / "farm" / "cache")
            started = time.perf_counter()
            there = run_nightly(recipe, out=work / "farm", label="farm", ray=cluster.address, progress=progress)
            farm_s = time.perf_counter() - started
            searches = {}
            if not args.skip_search:
                for name, ray in (("in this process", None), ("Ray, 2 workers", cluster.address)):
                    started = time.perf_counter()
                    report = edgeflow.search("mobilenet_v3_small", recipe=Recipe.model_validate(search_recipe()),
                                             out=work / f"search-{'ray' if ray else 'here'}", ray=ray,
                                             progress=progress)  # fmt: skip
                    searches[name] = (time.perf_counter() - started, report)
        finally:
            import ray

            ray.shutdown()
            cluster.shutdown()
        cost = driver_cost(work / "farm" / "farm", work / "farm" / "history.sqlite")
        lines = table(here, there, here_s=here_s, farm_s=farm_s, searches=searches, cost=cost)
        write_text(args.report, "\n".join(lines) + "\n")
        print("\n".join(lines))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def table(here, there, *, here_s: float, farm_s: float, searches: dict, cost: dict) -> list[str]:
    cpu = cpu_description()
    lines = [
        "# The farm against one process (Ray on 127.0.0.1)",
        "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {cpu['name']}, {cpu['logical_cores']} cores "
        f"({', '.join(cpu['isa'])}); host {socket.gethostname()}.",
        "Command: `.venv/bin/python bench/farm.py`",
        "",
        f"Nightly: {len(MODELS)} models x {len(PRECISIONS)} precisions x {len(DEVICES)} devices (two names for "
        "this CPU, one per farm node of 1 CPU); digits at 32 px, the models trained once and shared.",
        "",
        "| run | wall s | cells ok | cell seconds (median) | ratio to one process |",
        "|---|---|---|---|---|",
    ]
    for name, report, seconds in (("one process, in turn", here, here_s), ("farm, 2 nodes", there, farm_s)):
        ok = sum(cell.status == "ok" for cell in report.cells)
        median = statistics.median(cell.seconds for cell in report.cells)
        lines.append(f"| {name} | {seconds:.1f} | {ok}/{len(report.cells)} | {median:.1f} | {here_s / seconds:.2f}x |")
    nodes = sorted({cell.node.split(", pid")[0] + ")" for cell in there.cells if cell.node})
    lines += ["", f"Farm cells ran on: {'; '.join(nodes)}."]
    if searches:
        lines += [
            "",
            "NetAdapt, mobilenet_v3_small on digits at 48 px, lookup table timed on this CPU, 3 iterations:",
            "",
            "| search | wall s | iterations | chosen | start -> final p50 ms (in turn) |",
            "|---|---|---|---|---|",
        ]
        for name, (seconds, report) in searches.items():
            chosen = ", ".join(iteration.chosen for iteration in report.iterations)
            start, final = report.point("start"), report.point("netadapt")
            lines.append(f"| {name} | {seconds:.1f} | {len(report.iterations)} | {chosen} | "
                         f"{start.p50_in_turn_ms:.3f} -> {final.p50_in_turn_ms:.3f} |")  # fmt: skip
        (a, first), (b, second) = searches.values()
        same = [i.chosen for i in first.iterations] == [i.chosen for i in second.iterations]
        lines += ["", f"Same proposals chosen: {'yes' if same else 'no (timings on a shared host differ)'}."]
    lines += [
        "",
        "What the 20-device estimate rests on (the driver's share of a farm cell, measured on this night's cells):",
        "",
        "| figure | value |",
        "|---|---|",
        f"| a cell's folder, packed (median) | {cost['packed_kib']:.0f} KiB |",
        f"| driver: unpack a cell folder | {1000 * cost['unpack_s']:.1f} ms |",
        f"| driver: record a cell in the history | {1000 * cost['record_s']:.1f} ms |",
        f"| history growth per cell (raw samples kept) | {cost['history_bytes_per_cell'] / 1024:.1f} KiB |",
    ]
    return lines


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
