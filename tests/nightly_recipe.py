"""A tiny nightly recipe for the tests (one epoch of a few steps at 32 px, short timing)."""

from __future__ import annotations

from pathlib import Path

import yaml

HOSTILE = "<script>window.__injected = 1</script><b id='injected'>bold</b>"


def nightly_recipe(
    folder: Path, *, models: list[str], threads: int | None = None, precisions=("fp32", "int8"), **extra
) -> Path:
    data = {
        "kind": "nightly",
        "name": "tiny-night",
        "description": f"tiny cells for the tests {HOSTILE}",
        "pipeline": {
            "model": {"resolution": 32},
            "train": {"epochs": 1, "batch_size": 32, "max_steps": 4},
            "quantize": {"subset_size": 16},
            "profile": {"warmup": 2, "iterations": 30, "max_seconds": 1},
            "evaluate": {"max_samples": 32},
            "layer_inferences": 3,
            "runtime": None if threads is None else {"threads": threads},
        },
        "matrix": {"models": models, "devices": ["cpu"], "precisions": list(precisions), "arch": "mobilenet_v3_small"},
        "timing": {"rounds": 2, "seconds_per_round": 0.2},
        "slowest_layers": 4,
        **extra,
    }
    path = folder / f"nightly-{threads}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
