"""Training and fine-tuning on a data split, with a progress bar."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import torch
from pydantic import BaseModel, Field
from torch import nn

from edgeflow.data import DataSplits, ImageDataset, make_loader
from edgeflow.data.augment import AugmentedImages
from edgeflow.errors import ConfigError
from edgeflow.models.head import head_parameters
from edgeflow.progress import Progress
from edgeflow.recipe import FinetuneConfig, TrainConfig

if TYPE_CHECKING:
    from edgeflow.source import ModelSource


class TrainStats(BaseModel):
    """What training did: from random weights, or fine-tuning pretrained ones (``started_from``)."""

    epochs: int
    steps: int
    final_loss: float
    holdout_top1: float | None
    seconds: float
    started_from: str = Field(default="random weights", description="what the weights were before training")
    head_epochs: int = Field(default=0, description="fine-tuning: epochs of the new head alone, before ``epochs``")
    new_head: bool = Field(default=False, description="the weights' classifier was replaced for the data's classes")
    resolution: int | None = Field(default=None, description="input side trained at, where it differs from the model's")

    def describe(self) -> str:
        """One line for reports: how the model came to be."""
        if self.started_from == "random weights":
            return f"trained from random weights, {self.epochs} epochs"
        head = f"new head ({self.head_epochs} epochs), then " if self.new_head else ""
        side = f" at {self.resolution} px" if self.resolution else ""
        return f"fine-tuned from {self.started_from}: {head}the whole network {self.epochs} epochs{side}"


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
    parameters: list[nn.Parameter] | None = None,
    frozen_batchnorm: bool | tuple[str, ...] = False,
) -> TrainStats:
    """Train ``model`` in place with AdamW and the config's schedule (one-cycle, or warm-up + cosine), with
    random-resized crops and flips where ``config.augment`` says, channels-last and bf16 autocast where it asks;
    returns what happened. An epoch line with the time left is printed when epochs are long.

    With a ``teacher`` (e.g. the network before pruning) and ``distill_weight`` > 0 the loss mixes in
    knowledge distillation: ``(1 - w) x cross-entropy + w x T^2 x KL(teacher || student)`` at
    temperature ``T`` (Hinton et al., 2015), which recovers a pruned network faster than labels alone.

    ``parameters`` trains only those (the others keep their values and take no gradient: a frozen backbone costs
    its forward pass only); ``frozen_batchnorm`` keeps every batch-norm layer's statistics as they are (or those
    of the layers whose names start with one of its prefixes: the layers run as in inference; their scale and
    shift still train when in ``parameters``) and skips the recalibration after training.
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
        trainable = list(model.parameters()) if parameters is None else list(parameters)
        chosen = {id(parameter) for parameter in trainable}
        requires = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
        for parameter, _ in requires:
            parameter.requires_grad_(id(parameter) in chosen)
        optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
        length = [total_steps]  # the schedule's length: cut to the epochs that fit in config.minutes
        schedule = _schedule(optimizer, config, total_steps=length, per_epoch=per_epoch)
        criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        progress = progress or Progress.silent()
        epoch = 0
        with progress.task("train", total=total_steps) as advance:
            _train_mode(model, frozen_batchnorm=frozen_batchnorm)
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
                if config.minutes is not None and epoch == 1 and config.schedule == "cosine":
                    fit = max(1, int(config.minutes * 60 / (time.perf_counter() - start)))
                    if fit * per_epoch < total_steps:
                        total_steps = length[0] = fit * per_epoch
                        progress.stage(f"{fit} epochs fit in {config.minutes:g} min: training stops there")
                if config.max_steps is None and per_epoch >= 20 and steps < total_steps:  # an ETA line, for logs too
                    elapsed = time.perf_counter() - start
                    progress.stage(
                        f"epoch {epoch}/{math.ceil(total_steps / per_epoch)}: loss {loss_value:.3f}, "
                        f"{elapsed / 60:.1f} min, about {elapsed / steps * (total_steps - steps) / 60:.1f} min left"
                    )
        if config.channels_last:
            model.to(memory_format=torch.contiguous_format)
        for parameter, required in requires:
            parameter.requires_grad_(required)
    if steps > 0 and not frozen_batchnorm:
        recalibrate_batchnorm(model, train_set, batch_size=config.batch_size, batches=bn_batches, seed=seed)
    model.eval()
    holdout_top1 = accuracy(model, holdout) if holdout is not None else None
    return TrainStats(
        epochs=math.ceil(steps / per_epoch) if config.minutes is not None and steps else config.epochs,
        steps=steps,
        final_loss=loss_value,
        holdout_top1=holdout_top1,
        seconds=time.perf_counter() - start,
    )


def under(name: str, prefixes: tuple[str, ...]) -> bool:
    """``name`` (a dotted layer or parameter name) is one of ``prefixes`` or inside one: ``features.1`` holds
    ``features.1.0.weight``, not ``features.10.weight``."""
    return any(name == prefix or name.startswith(prefix.rstrip(".") + ".") for prefix in prefixes)


def _train_mode(model: nn.Module, *, frozen_batchnorm: bool | tuple[str, ...]) -> None:
    model.train()
    if frozen_batchnorm:
        for name, layer in model.named_modules():
            frozen = frozen_batchnorm is True or under(name, frozen_batchnorm)
            if frozen and isinstance(layer, nn.modules.batchnorm._BatchNorm):
                layer.eval()


def _schedule(optimizer, config: TrainConfig, *, total_steps: list[int], per_epoch: int):
    """One-cycle (the digits default), or linear warm-up over ``warmup_epochs`` then cosine decay to zero over
    ``total_steps[0]`` steps (read at each step: a time budget may shorten it after the first epoch)."""
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total_steps[0])
    warmup = min(total_steps[0] - 1, round(config.warmup_epochs * per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total_steps[0] - warmup))))

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


def finetune(
    model: nn.Module,
    train_set: ImageDataset,
    *,
    config: FinetuneConfig,
    new_head: bool,
    started_from: str,
    holdout: ImageDataset | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> TrainStats:
    """Fine-tune pretrained weights in place, the way transfer learning is done: when the head is new, the head
    alone first (the backbone frozen: its forward pass only), then the whole network (less the ``freeze``
    prefixes) at the config's lower rate; batch-norm statistics frozen or trained as the config says."""
    names = [name for name, _ in model.named_parameters()]  # a wrong prefix fails before any training
    unknown = [prefix for prefix in config.freeze if not any(under(name, (prefix,)) for name in names)]
    if unknown:
        tops = sorted({name.split(".")[0] for name in names})
        raise ConfigError(f"finetune.freeze: {unknown[0]!r} names no layer of the model; its layers start with "
                          f"{', '.join(tops[:8])}")  # fmt: skip
    start = time.perf_counter()
    progress = progress or Progress.silent()
    images = _at_side(train_set, config.resolution)
    frozen = config.batchnorm == "frozen"
    steps, loss = 0, float("nan")
    if new_head and config.head_epochs > 0:
        progress.stage(f"fine-tune: the new head alone, {config.head_epochs} epochs (backbone frozen)")
        head = train(
            model, images, config=config.phase("head"), seed=seed, progress=progress, parameters=head_parameters(model),
            frozen_batchnorm=True,
        )  # fmt: skip
        steps, loss = head.steps, head.final_loss
    if config.epochs > 0:
        trainable = [p for name, p in model.named_parameters() if not under(name, tuple(config.freeze))]
        progress.stage(
            f"fine-tune: the whole network, {config.epochs} epochs at lr {config.lr:g}"
            + (f", {len(trainable)} of {len(list(model.parameters()))} tensors" if config.freeze else "")
        )
        whole = train(
            model, images, config=config.phase("all"), seed=seed + 1, progress=progress, parameters=trainable,
            frozen_batchnorm=frozen or tuple(config.freeze), bn_batches=20,
        )  # fmt: skip
        steps, loss = steps + whole.steps, whole.final_loss
    model.eval()
    return TrainStats(
        epochs=config.epochs,
        steps=steps,
        final_loss=loss,
        holdout_top1=accuracy(model, holdout) if holdout is not None else None,
        seconds=time.perf_counter() - start,
        started_from=started_from,
        head_epochs=config.head_epochs if new_head else 0,
        new_head=new_head,
        resolution=config.resolution if images is not train_set else None,
    )


def _at_side(dataset: ImageDataset, side: int | None) -> ImageDataset:
    """``dataset``'s stored images served at ``side`` x ``side`` (training at a smaller side than the model's)."""
    if side is None or (dataset.preprocess.height, dataset.preprocess.width) == (side, side):
        return dataset
    spec = dataset.preprocess.model_copy(update={"size": (side, side)})
    return ImageDataset(dataset.images, dataset.labels, preprocess=spec, sources=dataset.sources, boxes=dataset.boxes)


def train_if_needed(
    source: ModelSource,
    splits: DataSplits,
    *,
    train_config: TrainConfig,
    finetune_config: FinetuneConfig,
    seed: int,
    progress: Progress,
) -> TrainStats | None:
    """Train ``source`` on ``splits.train``: from random weights with a recipe's ``train`` section when it has
    none; fine-tuned with its ``finetune`` section when its weights' head was replaced for the data's classes (or
    when ``finetune.when`` is ``always``). Example: ``train_if_needed(source, splits, train_config=recipe.train,
    finetune_config=recipe.finetune, seed=recipe.seed, progress=progress)``."""
    if source.module is None:
        return None
    if not source.trained:
        budget = f", at most {train_config.minutes:g} min" if train_config.minutes is not None else ""
        progress.stage(
            f"train {source.name} on {splits.name} ({train_config.epochs} epochs{budget}): it has no weights"
        )
        stats = train(
            source.module,
            splits.train,
            config=train_config,
            holdout=splits.holdout,
            seed=seed,
            progress=progress,
        )
        source.trained = True
        return stats
    when = finetune_config.when
    if when == "never" or (when == "auto" and not source.new_head):
        return None
    classes = f"{splits.num_classes} classes" + (", new head" if source.new_head else "")
    progress.stage(f"fine-tune {source.name} from {source.weights} on {splits.name} ({classes})")
    return finetune(
        source.module,
        splits.train,
        config=finetune_config,
        new_head=source.new_head,
        started_from=source.weights or source.name,
        holdout=splits.holdout,
        seed=seed,
        progress=progress,
    )
