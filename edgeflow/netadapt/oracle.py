"""Latency oracles for the search: measure the whole candidate on the device (:class:`MeasuredOracle`), or
look its blocks up (:class:`edgeflow.latency.table.LookupTable`, fitted on :func:`calibration_models`).

Both count how many timings they made and how long those took, for the search report.
"""

from __future__ import annotations

from torch import nn

from edgeflow.latency.timer import Timer, TimerStats


class MeasuredOracle:
    """Times the whole candidate on the device: exact up to run-to-run noise, and the slowest oracle."""

    name = "measured"
    measured = True

    def __init__(self, timer: Timer) -> None:
        self.timer = timer

    @property
    def cost(self) -> TimerStats:
        return self.timer.cost

    def latency(self, model: nn.Module, input_shape: tuple[int, ...]) -> float:
        return self.timer.time_module(model, input_shape)


def calibration_models(start: nn.Module, input_shape: tuple[int, ...]) -> dict[str, nn.Module]:
    """The starting model, thinner copies (width 0.75, 0.5, 0.35) and copies without residual blocks
    (every other one, and all): the range of widths and depths a search moves through."""
    import copy

    import torch

    from edgeflow.netadapt import space

    example = torch.zeros(input_shape)
    models = {"start": copy.deepcopy(start).eval()}
    for width in (0.75, 0.5, 0.35):
        models[f"width-{width:g}"] = space.uniform_width(start, example, width)
    blocks = space.removable_blocks(start)
    for name, removed in (("half-the-blocks", blocks[::2]), ("no-blocks", blocks)):
        if removed:
            model = copy.deepcopy(start).eval()
            for block in removed:
                space.apply(model, space.Action(kind="remove-block", target=block), example)
            models[name] = model
    return models
