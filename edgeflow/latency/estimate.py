"""What an estimated latency is: one number, how it was made, from what. Never mixed with a measurement."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class LatencyEstimate(BaseModel):
    """A latency predicted for a device, not timed on it."""

    ms: float = Field(description="estimated latency of one inference at batch 1, in milliseconds")
    method: Literal["roofline", "lookup-table"]
    measured: Literal[False] = False
    device: str
    precision: str
    detail: str = ""  # layers counted, bound, table coverage
    source: str = ""  # the peak figures' source, or the table file
