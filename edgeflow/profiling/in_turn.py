"""Time several compiled artifacts in turn: the one function behind every comparison of latencies here.

On a shared, noisy machine the host's speed drifts by tens of percent over minutes. Timing the artifacts
one after another within each round, round after round, and quoting the median over rounds compares
them under the same drift: a transient slowdown touches one round of every artifact, not all of one.
``optimize``'s fastest-preset choice, the search (its lookup table, its final comparison), device
calibration and the nightly all time through :func:`time_in_turn`. Its twin on a device is the
benchmark agent's ``in-turn`` command (``edgeflow/targets/agent.py``, standalone by design: it runs
where edgeflow is not installed).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edgeflow.profiling.loop import ProfileConfig, time_inference

if TYPE_CHECKING:
    from edgeflow.backends.base import Compiled


@dataclass
class InTurnStats:
    """Artifacts timed in turn: each one's p50 of every round (ms), its samples pooled over the rounds, and how
    many of its rounds stayed disturbed by other processes (kept, and said: see ``host_state.watched``)."""

    rounds_ms: dict[str, list[float]]
    samples_ms: dict[str, list[float]]
    failed: dict[str, str] = field(default_factory=dict)  # name -> why its timing stopped (tolerate_failures)
    noisy_rounds: dict[str, int] = field(default_factory=dict)

    @property
    def noisy(self) -> bool:
        return any(self.noisy_rounds.values())

    def medians(self) -> dict[str, float]:
        """Each artifact's median over rounds of its per-round p50 (ms)."""
        return {name: statistics.median(values) for name, values in self.rounds_ms.items() if values}


def time_in_turn(
    compiled: Mapping[str, Compiled],
    *,
    rounds: int,
    config: ProfileConfig,
    tolerate_failures: bool = False,
) -> InTurnStats:
    """Time ``compiled`` one after another, ``rounds`` times, each with the timing loop of ``config``.

    With ``tolerate_failures`` an artifact whose timing raises leaves the later rounds (the reason is in
    ``failed``) and the others go on; otherwise the error propagates.
    """
    active = dict(compiled)
    stats = InTurnStats(rounds_ms={name: [] for name in active}, samples_ms={name: [] for name in active})
    for _ in range(rounds):
        for name, model in list(active.items()):
            try:
                latency = time_inference(model, config=config)
            except Exception as exc:
                if not tolerate_failures:
                    raise
                stats.failed[name] = f"{type(exc).__name__}: {exc}"
                del active[name]
                continue
            stats.rounds_ms[name].append(latency.p50)
            stats.samples_ms[name].extend(latency.samples_ms or [])
            stats.noisy_rounds[name] = stats.noisy_rounds.get(name, 0) + latency.noisy
    return stats
