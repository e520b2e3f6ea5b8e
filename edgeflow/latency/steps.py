"""Which channel counts a runtime's kernels favour, measured on the device: the step NetAdapt keeps channels in.

ONNX Runtime's INT8 convolutions on this CPU ran a block expanded to 56 channels 1.5x slower per multiply-add
than at 48 or 64 (reports/int8-channel-steps-cpu.md), while OpenVINO's and XNNPACK's ran every multiple of 8
alike: a step is a property of a runtime and precision, so it is measured, never assumed.

A probe network (a stem, then inverted-residual blocks expanded to ``C`` channels, a classifier) is built for
every ``C`` from 4 to 12 times the recipe's ``channel_divisor``, as the search's target builds its file (INT8 by
its method), and all of them are timed in turn on the device. A step ``2s`` is favoured over ``s`` when the
widths that are multiples of ``s`` but not of ``2s`` cost, per multiply-add, more than ``1 + margin`` times the
mean of their two neighbours (the median over such widths); the step doubles while it is favoured.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path

import torch
from pydantic import BaseModel
from torch import nn

from edgeflow.errors import ConfigError
from edgeflow.io import write_json
from edgeflow.latency.timer import Timer

#: a width in between costs at least this much more per multiply-add than its neighbours: the larger step wins
STEP_MARGIN = 0.10
PROBE_BLOCKS = 3
PROBE_CHANNELS = 32  # the blocks' input and output channels
MAX_PROBE_SIDE = 128


class StepProbe(nn.Module):
    """A stem (3 -> 32, stride 2), ``PROBE_BLOCKS`` inverted-residual blocks 32 -> ``width`` (1x1) -> depthwise 3x3
    -> 32 (1x1), pooling and a classifier: most of its multiply-adds are at ``width`` channels."""

    def __init__(self, width: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(width)
        channels = PROBE_CHANNELS
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.BatchNorm2d(channels), nn.ReLU())
        self.blocks = nn.Sequential(*[nn.Sequential(
            nn.Conv2d(channels, width, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, groups=width), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, channels, 1), nn.BatchNorm2d(channels),
        ) for _ in range(PROBE_BLOCKS)])  # fmt: skip
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10))
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))

    @staticmethod
    def block_macs(width: int, *, side: int) -> int:
        """Multiply-adds of the blocks at ``side // 2``: two 1x1 convolutions 32 <-> C and a depthwise 3x3 each."""
        return PROBE_BLOCKS * (side // 2) ** 2 * width * (2 * PROBE_CHANNELS + 9)


class ChannelStepStats(BaseModel):
    """The measured probe and the step chosen from it."""

    divisor: int  # the smallest step (the recipe's channel_divisor)
    step: int  # the step the search keeps channels in
    side: int  # the probe's input side
    widths: list[int]
    p50_ms: list[float]  # per width, the median over the rounds timed in turn
    per_mmac_us: list[float]  # p50 per million multiply-adds of the blocks
    ratios: dict[str, float]  # per larger step tried: the in-between widths' cost per multiply-add / their neighbours'
    margin: float
    rounds: int
    context: str  # device, runtime, precision, method: what the figures depend on

    def describe(self) -> str:
        tried = ", ".join(f"step {step}: in-between widths cost {ratio:.2f}x" for step, ratio in self.ratios.items())
        return f"channel step {self.step} (measured on a probe at widths {self.widths[0]}-{self.widths[-1]}; {tried})"


def favoured_step(
    per_mac: dict[int, float], *, divisor: int, margin: float = STEP_MARGIN
) -> tuple[int, dict[int, float]]:
    """The step the measured costs per multiply-add favour, and the ratio found for every larger step tried.

    Starting at ``divisor``: a step ``2s`` is taken when the widths that are multiples of ``s`` but not of ``2s``
    (with both neighbours ``w - s`` and ``w + s`` measured) cost more than ``1 + margin`` times their neighbours'
    mean, as the median over them.
    """
    step, ratios = divisor, {}
    while True:
        larger = 2 * step
        between = [
            width for width in per_mac
            if width % step == 0 and width % larger != 0 and width - step in per_mac and width + step in per_mac
        ]  # fmt: skip
        if not between:
            return step, ratios
        ratio = statistics.median(
            per_mac[width] / ((per_mac[width - step] + per_mac[width + step]) / 2) for width in between
        )
        ratios[larger] = ratio
        if ratio < 1 + margin:
            return step, ratios
        step = larger


def block_cost_per_mac(widths: list[int], p50: list[float], *, side: int) -> list[float]:
    """Each width's p50 less the probe's fixed time (stem, head, the call: the intercept of a straight line
    fitted through p50 against the blocks' multiply-adds, kept between 0 and 95% of the fastest), per million
    multiply-adds of the blocks. Without it the fixed time, spread over the MACs, pulls every ratio toward 1."""
    import numpy as np

    macs = np.array([StepProbe.block_macs(width, side=side) for width in widths], dtype=np.float64)
    times = np.array(p50, dtype=np.float64)
    intercept, _slope = np.linalg.lstsq(np.stack([np.ones_like(macs), macs], axis=1), times, rcond=None)[0]
    fixed = float(np.clip(intercept, 0.0, 0.95 * times.min()))
    return [1e6 * (ms - fixed) / mac for ms, mac in zip(times, macs, strict=True)]


def probe_widths(divisor: int) -> list[int]:
    """4 to 12 times ``divisor``: odd multiples of ``divisor``, of twice and of four times it, each between two
    measured neighbours."""
    return [divisor * k for k in range(4, 13)]


def measure_channel_step(
    timer: Timer, *, divisor: int, side: int, rounds: int = 5, cache: Path | None = None
) -> ChannelStepStats:
    """The probe at every width of :func:`probe_widths`, built as ``timer`` builds files (the search's target),
    timed in turn on the device; the step :func:`favoured_step` chooses. Kept in ``cache`` (a folder) per device,
    runtime, precision, method, divisor and side."""
    if divisor < 1:
        raise ConfigError(f"channel_divisor must be at least 1, got {divisor}")
    side = min(side, MAX_PROBE_SIDE)
    context = timer.context()
    path = None
    if cache is not None:
        digest = hashlib.sha256(f"{context}|{divisor}|{side}|{STEP_MARGIN}|{rounds}".encode()).hexdigest()[:16]
        path = Path(cache) / f"channel-steps-{timer.device.name}-{timer.backend}-{timer.precision}-{digest}.json"
        if path.exists():
            try:
                return ChannelStepStats.model_validate(json.loads(path.read_text()))
            except (OSError, ValueError):
                pass  # a damaged cache entry is measured again
    widths = probe_widths(divisor)
    shape = (1, 3, side, side)
    medians = timer.time_in_turn({str(width): StepProbe(width) for width in widths}, shape, rounds=rounds)
    p50 = [medians[str(width)] for width in widths]
    per_mmac = block_cost_per_mac(widths, p50, side=side)
    step, ratios = favoured_step(dict(zip(widths, per_mmac, strict=True)), divisor=divisor)
    stats = ChannelStepStats(
        divisor=divisor, step=step, side=side, widths=widths, p50_ms=p50, per_mmac_us=[1e3 * v for v in per_mmac],
        ratios={str(key): round(value, 4) for key, value in ratios.items()}, margin=STEP_MARGIN, rounds=rounds,
        context=context,
    )  # fmt: skip
    if path is not None:
        write_json(path, stats.model_dump(mode="json"))
    return stats
