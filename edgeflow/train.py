"""Training and fine-tuning on a data split, with a progress bar."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch
from pydantic import BaseModel
from torch import nn

from edgeflow.data import DataSplits, ImageDataset, make_loader
from edgeflow.progress import Progress
from edgeflow.recipe import Recipe, TrainConfig

if TYPE_CHECKING:
    from edgeflow.models.source import ModelSource


class TrainStats(BaseModel):
    epochs: int
    steps: int
    final_loss: float
    holdout_top1: float | None
    seconds: float


def _distillation(logits: torch.Tensor, teacher: nn.Module, images: torch.Tensor, temperature: float) -> torch.Tensor:
    with torch.no_grad():
        targets = nn.functional.log_softmax(teacher.eval()(images) / temperature, dim=1)
    student = nn.functional.log_softmax(logits / temperature, dim=1)
    return nn.functional.kl_div(student, targets, reduction="batchmean", log_target=True) * temperature**2


@torch.no_grad()
def accuracy(model: nn.Module, dataset: ImageDataset, *, batch_size: int = 128) -> float:
    """Top-1 of the torch model on a split; used for choices during training, never reported as test."""
    model.eval()
    correct = 0
    for images, labels in make_loader(dataset, batch_size=batch_size, shuffle=False):
        correct += int((model(images).argmax(dim=1) == labels).sum())
    return correct / max(1, len(dataset))


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, dataset: ImageDataset, *, batch_size: int, batches: int = 20, seed: int = 0
) -> None:
    """Recompute batch-norm running statistics as a plain average over training batches.

    torchvision's MobileNetV3 and EfficientNet use a BN momentum of 0.01, so after a short training
    run the running statistics still mostly hold their initial values and the model in eval mode
    predicts near chance. Averaging over ``batches`` batches with the final weights fixes that.
    """
    norms = [layer for layer in model.modules() if isinstance(layer, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative moving average
    model.train()
    for index, (images, _labels) in enumerate(make_loader(dataset, batch_size=batch_size, shuffle=True, seed=seed)):
        if index >= batches:
            break
        model(images)
    for layer, momentum in zip(norms, momenta, strict=True):
        layer.momentum = momentum
    model.eval()


def train(
    model: nn.Module,
    train_set: ImageDataset,
    *,
    config: TrainConfig,
    holdout: ImageDataset | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    bn_batches: int = 20,
    teacher: nn.Module | None = None,
    distill_weight: float = 0.0,
    temperature: float = 2.0,
) -> TrainStats:
    """Train ``model`` in place with AdamW and a one-cycle schedule; returns what happened.

    With a ``teacher`` (e.g. the network before pruning) and ``distill_weight`` > 0 the loss mixes in
    knowledge distillation: ``(1 - w) x cross-entropy + w x T^2 x KL(teacher || student)`` at
    temperature ``T`` (Hinton et al., 2015), which recovers a pruned network faster than labels alone.
    """
    torch.manual_seed(seed)
    start = time.perf_counter()
    loader = make_loader(train_set, batch_size=config.batch_size, shuffle=True, seed=seed)
    total_steps = config.epochs * len(loader)
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    loss_value = float("nan")
    steps = 0
    if total_steps > 0:
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total_steps)
        criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        progress = progress or Progress.silent()
        with progress.task("train", total=total_steps) as advance:
            model.train()
            while steps < total_steps:
                for images, labels in loader:
                    optimizer.zero_grad(set_to_none=True)
                    logits = model(images)
                    loss = criterion(logits, labels)
                    if teacher is not None and distill_weight > 0:
                        loss = (1 - distill_weight) * loss + distill_weight * _distillation(
                            logits, teacher, images, temperature
                        )
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    steps += 1
                    loss_value = float(loss.detach())
                    advance(1, f"loss {loss_value:.3f}")
                    if steps >= total_steps:
                        break
    if steps > 0:
        recalibrate_batchnorm(model, train_set, batch_size=config.batch_size, batches=bn_batches, seed=seed)
    model.eval()
    holdout_top1 = accuracy(model, holdout) if holdout is not None else None
    return TrainStats(
        epochs=config.epochs,
        steps=steps,
        final_loss=loss_value,
        holdout_top1=holdout_top1,
        seconds=time.perf_counter() - start,
    )


def train_if_needed(
    source: ModelSource, splits: DataSplits, *, recipe: Recipe, progress: Progress
) -> TrainStats | None:
    """Train ``source`` on ``splits.train`` with the recipe's training when it has no weights yet."""
    if source.trained or source.module is None:
        return None
    progress.stage(f"train {source.name} on {splits.name} ({recipe.train.epochs} epochs): it has no weights")
    stats = train(
        source.module,
        splits.train,
        config=recipe.train,
        holdout=splits.holdout,
        seed=recipe.seed,
        progress=progress,
    )
    source.trained = True
    return stats
