"""The timing loop's settings, shared by recipes, the search and ``edgeflow profile``."""

from __future__ import annotations

from pydantic import Field

from edgeflow.config import StrictModel


class ProfileConfig(StrictModel):
    """The timing loop: warm-up, then iterations bounded by count and by time."""

    warmup: int = Field(default=10, ge=0)
    iterations: int = Field(default=200, ge=1, description="stop after this many timed runs ...")
    max_seconds: float = Field(default=10.0, gt=0, description="... or after this many seconds")
    min_iterations: int = Field(default=10, ge=1, description="time at least this many runs")
