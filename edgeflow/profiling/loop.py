"""The timing loop, and its settings (shared by recipes, the search and ``edgeflow profile``).

The loop binds the input once and calls the runtime's own inference entry point between two
``perf_counter_ns`` reads, so what it adds per iteration is a list append and a clock read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from edgeflow.config import StrictModel
from edgeflow.profiling.host_state import BUSY_RETRIES, BUSY_SHARE, watched
from edgeflow.profiling.stats import LatencyStats

if TYPE_CHECKING:
    from edgeflow.backends.base import Compiled


class ProfileConfig(StrictModel):
    """The timing loop: warm-up, then iterations bounded by count and by time."""

    warmup: int = Field(default=10, ge=0)
    iterations: int = Field(default=200, ge=1, description="stop after this many timed runs ...")
    max_seconds: float = Field(default=10.0, gt=0, description="... or after this many seconds")
    min_iterations: int = Field(default=10, ge=1, description="time at least this many runs")
    busy_share: float = Field(
        default=BUSY_SHARE, gt=0, le=1,
        description="other processes taking more than this share of the device's CPU time during a timing "
        "disturb it: it is run again, and flagged noisy if it stays disturbed",
    )  # fmt: skip
    busy_retries: int = Field(default=BUSY_RETRIES, ge=0, description="runs again of a disturbed timing")


def time_runner(run_once: Callable[[], object], *, config: ProfileConfig) -> tuple[np.ndarray, int]:
    """Time ``run_once``: the first (cold) call, warm-up, then a loop bounded by count and time.

    Returns the per-iteration samples in nanoseconds and the cold latency in nanoseconds.
    """
    clock = time.perf_counter_ns
    start = clock()
    run_once()
    cold_ns = clock() - start
    for _ in range(config.warmup):
        run_once()
    budget_ns = int(config.max_seconds * 1e9)
    minimum = min(config.min_iterations, config.iterations)
    samples = np.empty(config.iterations, dtype=np.int64)
    count = 0
    loop_start = clock()
    while count < config.iterations:
        before = clock()
        run_once()
        after = clock()
        samples[count] = after - before
        count += 1
        if count >= minimum and after - loop_start >= budget_ns:
            break
    return samples[:count], cold_ns


def time_inference(compiled: Compiled, *, config: ProfileConfig, seed: int = 0) -> LatencyStats:
    """Time ``compiled`` on a random input of its shape (values do not change a CNN's latency), watching the
    host: a run other processes disturbed is run again, and flagged noisy if it stays disturbed. The cold
    latency is the first run's."""
    batch = np.random.default_rng(seed).standard_normal(compiled.input_shape).astype(np.float32)
    run_once = compiled.bind(batch)
    colds: list[int] = []

    def timing() -> np.ndarray:
        samples, cold_ns = time_runner(run_once, config=config)
        colds.append(cold_ns)
        return samples

    samples, seen = watched(timing, busy_share=config.busy_share, retries=config.busy_retries)
    return LatencyStats.from_samples(
        samples, cold_ns=colds[0], warmup=config.warmup, batch=compiled.input_shape[0], state=seen
    )
