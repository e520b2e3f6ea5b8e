"""A classifier that any per-tensor INT8 scheme provably breaks: the known-outcome case of the budget tests."""

from __future__ import annotations

import torch
from torch import nn

from edgeflow.data import ImageDataset

OUTLIER = 1e5  # the constant unit that stretches the readout's input range


class OutlierNet(nn.Module):
    """A nearest-centroid classifier, built (not trained), that any INT8 scheme provably breaks.

    ``scores`` has one unit per class, x . m_c - |m_c|^2 / 2 for the mean m_c of the class's train images,
    rescaled into [1, 11] on the train split, and an 11th unit that is the constant ``OUTLIER``; ``readout``
    copies the ten class units to the logits and ignores the 11th. In float the argmax is the nearest class
    mean (~0.92 holdout top-1 on digits at 8 px). INT8 quantizes the readout's input (the ReLU output) with one
    scale per tensor; its range is [0, 1e5], a step of at least 1e5 / 255 = 392, so every class unit rounds
    to 0 and every image gets the same logits: one class for all, top-1 at most the largest class share.
    Reverting the readout to float restores the float predictions.
    """

    def __init__(self, train: ImageDataset) -> None:
        super().__init__()
        images = torch.stack([image for image, _ in train]).flatten(1)
        means = torch.stack([images[train.labels == c].mean(0) for c in range(10)])
        bias = -(means * means).sum(1) / 2
        raw = images @ means.T + bias
        scale = 10 / (raw.max() - raw.min())
        self.scores = nn.Linear(images.shape[1], 11)
        self.readout = nn.Linear(11, 10)
        with torch.no_grad():
            self.scores.weight.zero_()
            self.scores.weight[:10] = scale * means
            self.scores.bias.copy_(torch.cat([(bias - raw.min()) * scale + 1, torch.tensor([OUTLIER])]))
            self.readout.weight.zero_()
            self.readout.weight[:, :10] = torch.eye(10)
            self.readout.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(torch.relu(self.scores(x.flatten(1))))
