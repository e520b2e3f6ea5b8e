"""The device's state around a timing: read on this host (Linux's /proc and /sys), with a real process
spinning beside the timing to disturb it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeflow.profiling import host_state
from edgeflow.profiling.in_turn import time_in_turn
from edgeflow.profiling.loop import ProfileConfig, time_inference

pytestmark = pytest.mark.skipif(not Path("/proc/stat").exists(), reason="the host's CPU counters need Linux's /proc")

SPIN = "import time\nend = time.time() + 60\nwhile time.time() < end: pass\n"


def _sleep(seconds: float):
    def timing() -> float:
        time.sleep(seconds)
        return seconds

    return timing


def _spin(count: int) -> list[subprocess.Popen]:
    processes = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(count)]
    time.sleep(0.3)  # let them start spinning
    return processes


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.kill()
        process.wait()


# Half the cores spinning (at most 4): other processes take about half the host's CPU time (0.25 at worst).
SPINNERS = min(4, max(1, (os.cpu_count() or 2) // 2))


@pytest.fixture
def spinner():
    """Other processes keeping cores busy while the test times (stopped at the test's end)."""
    processes = _spin(SPINNERS)
    yield processes
    _stop(processes)


def test_state_reads_the_load_and_the_cores_of_this_host() -> None:
    now = host_state.state()
    assert now["cpus"] >= 1 and now["load_1m"] is not None and now["load_1m"] >= 0
    for key in ("cpu_mhz", "temperature_c"):  # exposed or not, depending on the machine: a number or None
        assert now[key] is None or now[key] > 0
    assert set(now) == {"load_1m", "cpus", "cpu_mhz", "governor", "temperature_c"}


def test_a_spinning_process_disturbs_the_timing_which_is_retried_then_flagged_noisy(spinner) -> None:
    """Half the cores spinning take about half the host's CPU time: above a busy share of 0.1. The timing is
    run again once, then kept and flagged."""
    result, seen = host_state.watched(_sleep(0.5), busy_share=0.1, retries=1)
    assert result == 0.5 and seen["attempts"] == 2 and seen["noisy"] is True
    assert seen["others_cpu_share"] > 0.1
    assert seen["before"]["cpus"] >= 1 and seen["after"]["load_1m"] is not None


def test_the_timing_process_own_work_is_not_counted_as_others() -> None:
    """The timed process spinning itself (as a runtime's inference does) is its own work: a share of the
    others measured over it stays below what a spinner beside it takes."""

    def spin() -> int:
        end, count = time.perf_counter() + 0.5, 0
        while time.perf_counter() < end:
            count += 1
        return count

    _, quiet = host_state.watched(spin, busy_share=1.0, retries=0)
    if quiet["others_cpu_share"] > 0.3:  # no room left for the spinners to show: nothing to tell apart
        pytest.skip(f"this host is busy with other work: {quiet['others_cpu_share']:.2f} of its CPU time went to "
                    "other processes while only the test's own spin ran")  # fmt: skip
    spinners = _spin(SPINNERS)
    try:
        _, busy = host_state.watched(spin, busy_share=1.0, retries=0)
    finally:
        _stop(spinners)
    assert quiet["attempts"] == busy["attempts"] == 1 and quiet["noisy"] is busy["noisy"] is False
    assert busy["others_cpu_share"] > quiet["others_cpu_share"] + 0.1


def test_a_timing_records_the_state_and_in_turn_counts_the_noisy_rounds(mobilenet_artifacts, spinner) -> None:
    from edgeflow.backends import get_backend
    from edgeflow.backends.base import RuntimeSettings

    compiled = get_backend("onnxruntime").compile(mobilenet_artifacts["onnx"], settings=RuntimeSettings(threads=1))
    config = ProfileConfig(warmup=2, iterations=1000, max_seconds=0.3, min_iterations=5, busy_share=0.1)
    latency = time_inference(compiled, config=config)
    assert latency.state is not None and latency.state.attempts == 2 and latency.noisy
    assert latency.state.others_cpu_share > 0.1
    assert latency.model_dump()["state"]["noisy"] is True  # in report.json and the history
    timed = time_in_turn({"a": compiled, "b": compiled}, rounds=2, config=config)
    assert timed.noisy_rounds == {"a": 2, "b": 2} and timed.noisy
    never = config.model_copy(update={"busy_share": 1.0})
    calm = time_in_turn({"a": compiled}, rounds=2, config=never)
    assert calm.noisy_rounds == {"a": 0} and not calm.noisy
