"""Training-time augmentation and the photo-training options: random-resized crops inside the image at the
areas and ratios asked, flips, draws fixed by seed/epoch/index, the warm-up + cosine schedule, channels-last and
bf16 autocast training that runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeflow.data import load_data
from edgeflow.data.augment import AugmentConfig, AugmentedImages, crop_box
from edgeflow.data.preprocess import PreprocessSpec
from edgeflow.data.splits import ImageDataset
from edgeflow.errors import ConfigError
from edgeflow.recipe import TrainConfig
from edgeflow.train import _schedule, train


def test_crops_lie_inside_at_the_areas_and_ratios_asked() -> None:
    rng = np.random.default_rng(0)
    areas, ratios = [], []
    for _ in range(500):
        top, left, height, width = crop_box(60, 80, rng, scale=(0.2, 0.6), ratio=(0.75, 1.333))
        assert 0 <= top and top + height <= 60 and 0 <= left and left + width <= 80
        areas.append(height * width / 4800)
        ratios.append(width / height)
    assert 0.18 <= min(areas) and max(areas) <= 0.62 and np.std(areas) > 0.05  # rounding: a pixel either way
    assert 0.7 <= min(ratios) and max(ratios) <= 1.42
    # a ratio no crop can reach falls back to the centre crop of the nearest allowed ratio
    assert crop_box(10, 100, rng, scale=(1.0, 1.0), ratio=(1.0, 1.0)) == (0, 45, 10, 10)


def test_augmented_images_are_drawn_by_seed_epoch_and_index() -> None:
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.int64).remainder(256).to(torch.uint8).view(2, 3, 8, 8)
    dataset = ImageDataset(images, torch.tensor([0, 1]), resolution=8, mean=(0.5,) * 3, std=(0.5,) * 3)
    first, again = AugmentedImages(dataset, seed=3), AugmentedImages(dataset, seed=3)
    assert torch.equal(first[0][0], again[0][0]) and first[0][0].shape == (3, 8, 8) and first[1][1] == 1
    draws = set()
    for epoch in range(8):
        first.set_epoch(epoch)
        draws.add(first[0][0].numpy().tobytes())
    assert len(draws) > 4  # other crops and flips in other epochs
    flips = AugmentedImages(dataset, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=True, seed=0)
    seen = {bool(torch.equal(flips[0][0], dataset[0][0].flip(2))) for epoch in range(12) if not flips.set_epoch(epoch)}
    assert seen == {True, False}  # whole-image crops: each draw is the image or its mirror


def test_keep_ratio_pad_data_is_not_augmented() -> None:
    spec = PreprocessSpec(size=(4, 8), resize="keep_ratio_pad", mean=(0.5,) * 3, std=(0.5,) * 3)
    padded = ImageDataset(
        torch.zeros(1, 3, 4, 8, dtype=torch.uint8),
        torch.tensor([0]),
        preprocess=spec,
        boxes=torch.tensor([[0, 0, 4, 4]]),
    )
    with pytest.raises(ConfigError, match="keep_ratio_pad"):
        AugmentedImages(padded)


def test_cosine_schedule_warms_up_then_decays_to_zero() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    config = TrainConfig(lr=1.0, schedule="cosine", warmup_epochs=1)
    length = [40]
    schedule = _schedule(optimizer, config, total_steps=length, per_epoch=10)
    rates = []
    for _ in range(40):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:], strict=False)) and rates[-1] < 0.01
    optimizer.param_groups[0]["lr"] = 1.0
    schedule = _schedule(optimizer, config, total_steps=length, per_epoch=10)
    for _ in range(10):
        optimizer.step()
        schedule.step()
    length[0] = 20  # a time budget cut the run after its first epoch: the decay ends at step 20, not 40
    for _ in range(10):
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0)


def test_training_with_every_photo_option_runs() -> None:
    from torchvision.models import mobilenet_v3_small

    splits = load_data("digits", resolution=32)
    model = mobilenet_v3_small(num_classes=10)
    config = TrainConfig(
        epochs=1, batch_size=16, max_steps=4, schedule="cosine", warmup_epochs=0.1, label_smoothing=0.1,
        augment=AugmentConfig(), channels_last=True, bf16=True,
    )  # fmt: skip
    stats = train(model, splits.train, config=config, holdout=splits.holdout, seed=0, bn_batches=2)
    assert stats.steps == 4 and np.isfinite(stats.final_loss)
    assert next(model.parameters()).is_contiguous()  # handed back in the default layout
    with pytest.raises(ValueError, match="crop_scale"):
        AugmentConfig(crop_scale=(0.5, 0.2))
