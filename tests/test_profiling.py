"""The timing loop, statistics, memory probe and graph-based cost counting."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from edgeflow.profiling.cost import artifact_cost
from edgeflow.profiling.loop import ProfileConfig, time_runner
from edgeflow.profiling.memory import MemoryProbe
from edgeflow.profiling.stats import LatencyStats


def test_statistics_from_known_samples() -> None:
    samples_ns = np.array([1, 2, 3, 4, 100], dtype=np.int64) * 1_000_000
    stats = LatencyStats.from_samples(samples_ns, cold_ns=50_000_000, warmup=3, batch=1)
    assert stats.p50 == pytest.approx(3.0)
    assert stats.min == 1.0 and stats.max == 100.0 and stats.mean == pytest.approx(22.0)
    assert stats.cold == 50.0 and stats.iterations == 5 and stats.warmup == 3
    assert stats.throughput_fps == pytest.approx(1000 / 22.0)
    assert stats.p90 > stats.p50 and stats.p99 >= stats.p90


def test_loop_bounded_by_count() -> None:
    calls = []
    samples, cold = time_runner(lambda: calls.append(1), config=ProfileConfig(warmup=4, iterations=25, max_seconds=60))
    assert len(samples) == 25 and len(calls) == 1 + 4 + 25 and cold > 0


def test_loop_bounded_by_time_and_timing_is_real() -> None:
    config = ProfileConfig(warmup=0, iterations=10_000, max_seconds=0.2, min_iterations=3)
    samples, _ = time_runner(lambda: time.sleep(0.01), config=config)
    assert 3 <= len(samples) <= 25  # ~0.2 s of 10 ms calls (a sleep is never shorter than asked)
    # a loaded host oversleeps, it never undersleeps: the floor is exact, the ceiling only catches a unit error
    assert 10.0 <= np.median(samples) / 1e6 < 50.0


def test_minimum_iterations_even_past_time() -> None:
    config = ProfileConfig(warmup=0, iterations=100, max_seconds=0.001, min_iterations=5)
    samples, _ = time_runner(lambda: time.sleep(0.002), config=config)
    assert len(samples) == 5


def test_memory_probe_sees_an_allocation() -> None:
    import ctypes
    import ctypes.util
    import gc

    # earlier tests' objects (models, runtimes) freed during the phases would lower the RSS under the block:
    # free them, and hand the freed heap back to the system, before the RSS the phases are measured from
    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc:
        ctypes.CDLL(libc).malloc_trim(0)
    probe = MemoryProbe()
    probe.start()
    with probe.phase("load"):
        loaded = np.ones(64 * 2**20 // 8)  # 64 MiB touched while "loading"
    with probe.phase("run"):
        running = np.ones(128 * 2**20 // 8)  # 128 MiB more while "running"
    stats = probe.stats()
    del loaded, running
    if not probe.available:
        pytest.skip("peak RSS cannot be reset on this kernel")
    # other threads of earlier tests' runtimes may hand memory back between start() and the phase (seen once:
    # 44 MiB above the start for this 64 MiB block, after 20 MiB were released): half the block is the floor
    assert stats.load_peak_mb >= 32
    # both blocks above the RSS before loading (192 MiB), less the same 32 MiB others may hand back (seen: 181)
    assert stats.run_peak_mb >= 64 + 128 - 32 and stats.run_peak_mb > stats.load_peak_mb + 64


def test_cost_of_tiny_net_matches_hand_count(tiny_artifacts) -> None:
    # conv: output 8 x 8 x 8 (16 px, stride 2), 3 x 3 x 3 per output -> 512 * 27 = 13824; fc: 8 x 10 = 80
    for artifact in tiny_artifacts.values():
        cost = artifact_cost(artifact)
        assert cost.macs == 13824 + 80
        # conv weights 216 + folded bias 8, fc weights 80 + bias 10
        assert cost.params == 216 + 8 + 80 + 10


def test_cost_of_mobilenet_close_to_torch_count(mobilenet_artifacts) -> None:
    from edgeflow.models import count_parameters

    cost = artifact_cost(mobilenet_artifacts["openvino"])
    module = mobilenet_artifacts["module"]
    # Export folds each batch norm (weight and bias per channel) into one bias per channel.
    folded = sum(layer.num_features for layer in module.modules() if isinstance(layer, torch.nn.BatchNorm2d))
    assert cost.params == count_parameters(module) - folded
    assert cost.macs > 0


def test_interleaved_rounds_time_every_model_each_round(tiny_artifacts) -> None:
    from edgeflow.backends import get_backend
    from edgeflow.backends.base import RuntimeSettings
    from edgeflow.profiling.in_turn import time_in_turn

    compiled = {
        runtime: get_backend(runtime).compile(tiny_artifacts[key], settings=RuntimeSettings())
        for runtime, key in (("openvino", "openvino"), ("onnxruntime", "onnx"))
    }
    config = ProfileConfig(warmup=2, iterations=50, max_seconds=0.02, min_iterations=5)
    rounds = time_in_turn(compiled, rounds=3, config=config).rounds_ms
    assert set(rounds) == {"openvino", "onnxruntime"}
    assert all(len(values) == 3 and all(value > 0 for value in values) for values in rounds.values())


def test_onnx_graph_cost_matches_the_openvino_count(tiny_artifacts) -> None:
    """The ONNX-side counter (for graphs OpenVINO cannot convert) counts what the OpenVINO one counts."""
    from edgeflow.profiling.cost import count_onnx_cost

    assert count_onnx_cost(tiny_artifacts["onnx"].path) == artifact_cost(tiny_artifacts["onnx"])
