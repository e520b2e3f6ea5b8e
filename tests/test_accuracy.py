"""Accuracy through the runtime: top-k arithmetic, and agreement with torch on the same images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeflow.accuracy import evaluate_compiled, topk_accuracy, wilson_interval
from edgeflow.backends import get_backend
from edgeflow.backends.base import RuntimeSettings
from edgeflow.data import load_data
from edgeflow.errors import ShapeError


def test_topk_by_hand() -> None:
    logits = np.array([[0.0, 1, 2, 3, 4, 5, 6], [6.0, 5, 4, 3, 2, 1, 0], [0.0, 1, 2, 3, 4, 5, 6]])
    labels = np.array([6, 4, 0])
    top1, top5 = topk_accuracy(logits, labels)
    assert top1 == pytest.approx(1 / 3)
    assert top5 == pytest.approx(2 / 3)  # label 4 ranks 5th in row 2; label 0 ranks last in row 3
    assert topk_accuracy(logits[:, :5], np.array([4, 4, 0]))[1] is None


def test_runtime_accuracy_matches_torch(mobilenet_artifacts) -> None:
    data = load_data("digits", resolution=32)
    compiled = get_backend("onnxruntime").compile(mobilenet_artifacts["onnx"], settings=RuntimeSettings())
    stats = evaluate_compiled(compiled, data.test, max_samples=40)
    assert stats.samples == 40 and stats.runtime == "onnxruntime" and stats.split == "test"
    images = torch.stack([data.test[i][0] for i in range(40)])
    labels = np.array([int(data.test[i][1]) for i in range(40)])
    with torch.inference_mode():
        expected = float((mobilenet_artifacts["module"](images).argmax(1).numpy() == labels).mean())
    assert stats.top1 == pytest.approx(expected, abs=1 / 40)


def test_data_of_wrong_size_is_refused(mobilenet_artifacts) -> None:
    compiled = get_backend("onnxruntime").compile(mobilenet_artifacts["onnx"], settings=RuntimeSettings())
    with pytest.raises(ShapeError, match=r"images of shape \(3, 48, 48\) but the model takes \(3, 32, 32\)"):
        evaluate_compiled(compiled, load_data("digits", resolution=48).test)


def test_the_wilson_interval_of_an_agreement_is_wide_on_a_few_hundred_images() -> None:
    # Wilson's own examples: none or all of 10 right
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    low, high = wilson_interval(338, 341)  # 99.12% of the clothing holdout: 99% cannot be told from 97.5%
    assert low < 0.975 < 0.99 < high < 1.0
    low, high = wilson_interval(3_885, 3_925)  # the same share of the Imagenette test split: within half a point
    assert high - low < 0.007
    with pytest.raises(ValueError, match="at least one image"):
        wilson_interval(0, 0)


def test_a_subset_of_a_class_sorted_split_keeps_every_class_share():
    """A folder's split is sorted by class: its first 30 images would be three classes. ``max_samples`` takes
    each class's share instead, in the set's order, the same images every time."""

    from edgeflow.accuracy import image_batches
    from edgeflow.data import ImageDataset, spread_indices

    labels = torch.arange(10).repeat_interleave(torch.tensor([12, 12, 12, 12, 12, 12, 12, 12, 12, 22]))
    images = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()
    data = ImageDataset(images, labels, resolution=4, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    chosen = spread_indices(data, 30)
    assert len(chosen) == 30 and chosen == sorted(chosen) and spread_indices(data, 30) == chosen
    counts = np.bincount(labels[chosen].numpy(), minlength=10)
    assert counts.min() >= 2 and counts[9] >= 4  # every class, the larger one about in proportion
    assert spread_indices(data, None) == spread_indices(data, 500) == list(range(len(labels)))
    seen = np.concatenate([batch_labels for _images, batch_labels in image_batches(data, max_samples=30)])
    assert np.array_equal(seen, labels[chosen].numpy())
