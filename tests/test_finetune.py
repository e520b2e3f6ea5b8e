"""Fine-tuning weights to the user's classes: the head alone first with the backbone frozen, then the whole
network; batch-norm statistics frozen or trained; a time budget; and the pipeline's choices (a new head when the
weights' classes are not the data's, no fine-tuning when they are unless asked, photo defaults)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import edgeflow
from edgeflow.data import load_data
from edgeflow.errors import DataError
from edgeflow.models import create_model
from edgeflow.models.head import head_layer_name
from edgeflow.recipe import PHOTO_TRAIN, FinetuneConfig, TrainConfig, load_recipe
from edgeflow.train import finetune, train

ARCH = "mobilenet_v3_small"


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", resolution=32, seed=0)


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], model: torch.nn.Module) -> set[str]:
    return {key for key, value in model.state_dict().items() if not torch.equal(before[key], value)}


def test_head_phase_trains_the_head_alone(digits) -> None:
    torch.manual_seed(0)
    model = create_model(ARCH, num_classes=10)
    before = _snapshot(model)
    config = FinetuneConfig(head_epochs=1, epochs=0, max_steps=3, augment=None, channels_last=False)
    stats = finetune(model, digits.train, config=config, new_head=True, started_from="test weights")
    head = head_layer_name(model)
    assert _changed(before, model) == {f"{head}.weight", f"{head}.bias"}  # batch-norm statistics too stay
    assert stats.steps == 3 and stats.new_head and stats.head_epochs == 1
    assert all(parameter.requires_grad for parameter in model.parameters())  # given back as they were


@pytest.mark.parametrize("batchnorm", ["frozen", "train"])
def test_whole_network_phase_and_batchnorm_statistics(digits, batchnorm: str) -> None:
    torch.manual_seed(0)
    model = create_model(ARCH, num_classes=10)
    before = _snapshot(model)
    config = FinetuneConfig(
        head_epochs=1, epochs=1, max_steps=2, augment=None, batchnorm=batchnorm, freeze=["features.0"],
        channels_last=False,
    )  # fmt: skip
    stats = finetune(model, digits.train, config=config, new_head=False, started_from="test weights")
    changed = _changed(before, model)
    assert stats.head_epochs == 0 and stats.steps == 2  # no head phase for a head that is not new
    assert "features.1.block.0.0.weight" in changed  # a backbone convolution trained
    assert not any(key.startswith("features.0.") for key in changed)  # frozen by prefix, statistics included
    statistics = {key for key in changed if key.endswith(("running_mean", "running_var"))}
    assert bool(statistics) == (batchnorm == "train")


def test_time_budget_cuts_the_epochs(digits) -> None:
    model = create_model(ARCH, num_classes=10)
    config = TrainConfig(epochs=5, batch_size=256, schedule="cosine", minutes=1e-6)
    stats = train(model, digits.train, config=config)
    per_epoch = -(-len(digits.train) // 256)
    assert (stats.epochs, stats.steps) == (1, per_epoch)


def _quick(**finetune: object):
    """The quick recipe with one variant (ONNX Runtime fp32) and two fine-tuning steps a phase."""
    recipe = load_recipe("quick").model_copy(deep=True)
    recipe.finetune = FinetuneConfig(
        head_epochs=1, epochs=1, max_steps=2, augment=None, channels_last=False, **finetune
    )  # fmt: skip
    recipe.variants = [variant for variant in recipe.variants if variant.name == "onnxruntime-fp32"]
    return recipe


def _checkpoint(tmp_path: Path, classes: int) -> Path:
    torch.manual_seed(1)
    path = tmp_path / f"colleague-{classes}.pt"
    torch.save({"state_dict": create_model(ARCH, num_classes=classes).state_dict(), "epoch": 3}, path)
    return path


def test_checkpoint_of_other_classes_gets_a_new_head_and_is_fine_tuned(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path, classes=5)
    out = tmp_path / "run"
    report = edgeflow.optimize(str(path), arch=ARCH, recipe=_quick(), out=out)
    assert report.model.new_head and report.model.num_classes == 10
    assert report.model.weights == f"{path.name} (5 classes)"
    assert report.model.weights_notes == ["weights under ['state_dict']"]
    assert report.training.started_from == f"{path.name} (5 classes)" and report.training.new_head
    assert report.notes[0].startswith(f"fine-tuned from {path.name} (5 classes): new head (1 epochs)")
    labels = (out / "bundle" / "labels.txt").read_text().split()
    assert labels == report.data["classes"] and len(labels) == 10  # the user's classes, not the weights'
    written = json.loads((out / "report.json").read_text())
    assert written["model"]["new_head"] and written["training"]["started_from"].startswith(path.name)
    assert "Started from" in (out / "report.md").read_text()
    assert all(len(v.accuracy.per_class_top1) == 10 for v in report.variants)


def test_checkpoint_of_the_data_classes_is_fine_tuned_only_when_asked(tmp_path: Path) -> None:
    from edgeflow.progress import Progress
    from edgeflow.source import load_model_and_data
    from edgeflow.train import train_if_needed

    path = _checkpoint(tmp_path, classes=10)

    def run(recipe):
        source, splits = load_model_and_data(str(path), arch=ARCH, data="digits", recipe=recipe)
        training = train_if_needed(source, splits, train_config=recipe.train, finetune_config=recipe.finetune,
                                   seed=recipe.seed, progress=Progress.silent())  # fmt: skip
        return source, training

    kept, training = run(_quick())
    assert training is None and not kept.new_head  # 10 outputs taken as the 10 classes
    tuned, training = run(_quick(when="always"))
    assert training.started_from == f"{path.name} (10 classes)" and not training.new_head and not tuned.new_head
    renewed, training = run(_quick(head="new"))
    assert renewed.new_head and training.new_head and training.head_epochs == 1


def test_never_fine_tuning_other_classes_is_refused(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path, classes=5)
    with pytest.raises(DataError, match="predicts 5 classes but digits has 10 and finetune.when is never"):
        edgeflow.optimize(str(path), arch=ARCH, recipe=_quick(when="never"), out=tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_photo_defaults_replace_the_digits_training() -> None:
    default = load_recipe("default")
    photos = default.for_photos(pretrained=True)
    assert photos.model.resolution is None and photos.model.weights == "DEFAULT"
    assert photos.train == PHOTO_TRAIN and photos.train.augment is not None and photos.finetune == FinetuneConfig()
    assert photos.variants == default.variants
    assert default.for_photos(pretrained=False).model.weights is None  # mobilenet_v1: random weights, photo training
    written_for_photos = default.model_copy(update={"data": "../shared/data/clothing-small-160"})
    assert written_for_photos.for_photos(pretrained=True) is written_for_photos
