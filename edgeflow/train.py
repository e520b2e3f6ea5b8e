"""Training and fine-tuning on a data split, with a progress bar."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import torch
from pydantic import BaseModel
from torch import nn

from edgeflow.data import DataSplits, ImageDataset, make_loader
from edgeflow.data.augment import AugmentedImages
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
    """Train ``model`` in place with AdamW and the config's schedule (one-cycle, or warm-up + cosine), with
    random-resized crops and flips where ``config.augment`` says, channels-last and bf16 autocast where it asks;
    returns what happened. An epoch line with the time left is printed when epochs are long.

    With a ``teacher`` (e.g. the network before pruning) and ``distill_weight`` > 0 the loss mixes in
    knowledge distillation: ``(1 - w) x cross-entropy + w x T^2 x KL(teacher || student)`` at
    temperature ``T`` (Hinton et al., 2015), which recovers a pruned network faster than labels alone.
    """
    torch.manual_seed(seed)
    start = time.perf_counter()
    images = train_set
    if config.augment is not None:
        augment = config.augment
        images = AugmentedImages(
            train_set, scale=augment.crop_scale, ratio=augment.crop_ratio, flip=augment.flip, seed=seed
        )
    loader = make_loader(images, batch_size=config.batch_size, shuffle=True, seed=seed)
    per_epoch = len(loader)
    total_steps = config.epochs * per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    loss_value = float("nan")
    steps = 0
    if total_steps > 0:
        autocast = _bf16_autocast(config.bf16)
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        schedule = _schedule(optimizer, config, total_steps=total_steps, per_epoch=per_epoch)
        criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        progress = progress or Progress.silent()
        epoch = 0
        with progress.task("train", total=total_steps) as advance:
            model.train()
            while steps < total_steps:
                if isinstance(images, AugmentedImages):
                    images.set_epoch(epoch)
                for batch, labels in loader:
                    if config.channels_last:
                        batch = batch.contiguous(memory_format=torch.channels_last)
                    optimizer.zero_grad(set_to_none=True)
                    with autocast():
                        logits = model(batch)
                        loss = criterion(logits.float(), labels)
                        if teacher is not None and distill_weight > 0:
                            loss = (1 - distill_weight) * loss + distill_weight * _distillation(
                                logits.float(), teacher, batch, temperature
                            )
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    steps += 1
                    loss_value = float(loss.detach())
                    advance(1, f"loss {loss_value:.3f}")
                    if steps >= total_steps:
                        break
                epoch += 1
                if config.max_steps is None and per_epoch >= 20 and steps < total_steps:  # an ETA line, for logs too
                    elapsed = time.perf_counter() - start
                    progress.stage(
                        f"epoch {epoch}/{math.ceil(total_steps / per_epoch)}: loss {loss_value:.3f}, "
                        f"{elapsed / 60:.1f} min, about {elapsed / steps * (total_steps - steps) / 60:.1f} min left"
                    )
        if config.channels_last:
            model.to(memory_format=torch.contiguous_format)
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


def _schedule(optimizer, config: TrainConfig, *, total_steps: int, per_epoch: int):
    """One-cycle (the digits default), or linear warm-up over ``warmup_epochs`` then cosine decay to zero."""
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total_steps)
    warmup = min(total_steps - 1, round(config.warmup_epochs * per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _bf16_autocast(enabled: bool):
    """bfloat16 autocast on the CPU where it has bf16 instructions; elsewhere f32 (bf16 emulated is slower)."""
    import contextlib

    if not enabled:
        return contextlib.nullcontext
    from edgeflow.environment import host_has_bf16

    if not host_has_bf16():
        return contextlib.nullcontext
    return lambda: torch.autocast("cpu", dtype=torch.bfloat16)


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
