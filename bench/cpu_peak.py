"""Peak figures of this machine's CPU for devices/cpu.yaml (roofline estimates): the best of 3 runs of a
2048x2048 matrix product in OpenVINO executed in f32 and in bf16 (GFLOP/s), and of a 256 MiB copy (GB/s,
read + write).

    .venv/bin/python bench/cpu_peak.py
"""

from __future__ import annotations

import time

import numpy as np


def matmul_gflops(side: int, precision: str) -> float:
    import openvino as ov
    import openvino.opset13 as ops

    left = ops.parameter([side, side], np.float32)
    right = ops.constant(np.random.default_rng(0).random((side, side), dtype=np.float32))
    model = ov.Model([ops.matmul(left, right, False, False)], [left])
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
    request = ov.Core().compile_model(model, "CPU", config).create_infer_request()
    batch = np.random.default_rng(1).random((side, side), dtype=np.float32)
    for _ in range(3):
        request.infer({0: batch})
    times = []
    for _ in range(15):
        started = time.perf_counter()
        request.infer({0: batch})
        times.append(time.perf_counter() - started)
    return 2 * side**3 / float(np.median(times)) / 1e9


def copy_gbs() -> float:
    source = np.ones(64 * 2**20, dtype=np.float32)
    target = np.empty_like(source)
    times = []
    for _ in range(9):
        started = time.perf_counter()
        np.copyto(target, source)
        times.append(time.perf_counter() - started)
    return 2 * source.nbytes / float(np.median(times)) / 1e9


def main() -> None:
    runs = [(matmul_gflops(2048, "f32"), matmul_gflops(2048, "bf16"), copy_gbs()) for _ in range(3)]
    print("| run | f32 GFLOP/s | bf16 GFLOP/s | copy GB/s |\n|---|---|---|---|")
    for index, (f32, bf16, gbs) in enumerate(runs, 1):
        print(f"| {index} | {f32:.1f} | {bf16:.1f} | {gbs:.2f} |")
    best = [max(column) for column in zip(*runs, strict=True)]
    print(f"| best | {best[0]:.1f} | {best[1]:.1f} | {best[2]:.2f} |")


if __name__ == "__main__":
    main()
