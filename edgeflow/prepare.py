"""Get a model and its data ready: build or load it, load the data set at its resolution, train if needed."""

from __future__ import annotations

from edgeflow.data import DataSplits, load_data
from edgeflow.errors import DataError
from edgeflow.model_source import ModelSource, looks_like_file, resolve_model
from edgeflow.models import check_resolution, model_info
from edgeflow.progress import Progress
from edgeflow.recipe import Recipe
from edgeflow.train import TrainStats, train


def load_model_and_data(model: str, *, arch: str | None, data: str, recipe: Recipe) -> tuple[ModelSource, DataSplits]:
    """A file fixes its own class count; a registry model is built for the data set's classes."""
    if looks_like_file(model):
        default = model_info(arch).default_resolution if arch else None
        resolution = recipe.model.input_side(default) if default else recipe.model.resolution
        source = resolve_model(model, arch=arch, width=recipe.model.width, resolution=resolution)
        splits = load_data(data, resolution=source.resolution, seed=recipe.seed)
        if source.num_classes is not None and source.num_classes != splits.num_classes:
            raise DataError(f"{model} predicts {source.num_classes} classes but {data} has {splits.num_classes}")
        return source, splits
    info = model_info(model)
    resolution = recipe.model.input_side(info.default_resolution) or info.default_resolution
    check_resolution(info.name, resolution)  # before spending time on data
    splits = load_data(data, resolution=resolution, seed=recipe.seed)
    source = resolve_model(model, num_classes=splits.num_classes, width=recipe.model.width, resolution=resolution)
    return source, splits


def train_if_needed(source: ModelSource, splits: DataSplits, recipe: Recipe, progress: Progress) -> TrainStats | None:
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
