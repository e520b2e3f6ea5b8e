"""Tests for edgeflow.models.checkpoint.load_weights: user checkpoints as training scripts save them.

Each file is written by the library that writes such files (torch.save, safetensors, DataParallel, torch.compile,
torch's AveragedModel, timm's ModelEmaV3 and CheckpointSaver layout), never by hand-made bytes.
"""

from __future__ import annotations

import argparse
import re
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeflow.errors import ModelLoadError
from edgeflow.models import create_model
from edgeflow.models.checkpoint import (
    EMA_STATE_DICT_KEYS,
    STATE_DICT_KEYS,
    LoadedWeights,
    classifier_weight_key,
    load_checkpoint,
    load_weights,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
LITE1 = SHARED / "models" / "efficientnet-lite1" / "efficientnet-lite1-77cc7160.pth"


pytestmark = pytest.mark.usefixtures("no_downloads")  # conftest: anything fetching weights fails loudly


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """One SGD step on random images: the weights, batch-norm statistics and optimizer state all move."""
    model.train()
    loss = model(torch.randn(2, 3, 32, 32)).logsumexp(dim=1).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


@pytest.fixture(scope="module")
def trained() -> dict:
    """mobilenet_v3_small (10 classes) after one step, its optimizer, and an EMA of it (torch's AveragedModel)
    whose weights differ from the plain ones."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_model("mobilenet_v3_small", num_classes=10)
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.5), use_buffers=True)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        ema.update_parameters(model)  # the first update copies; the second averages
        _train_step(model, optimizer)
        ema.update_parameters(model)
    model.eval()
    plain, averaged = model.state_dict(), ema.module.state_dict()
    assert not torch.equal(plain["classifier.3.weight"], averaged["classifier.3.weight"])
    return {"model": model, "optimizer": optimizer, "ema": ema, "plain": plain, "averaged": averaged}


def _holds(loaded: LoadedWeights, state_dict: dict[str, torch.Tensor]) -> bool:
    ours = loaded.module.state_dict()
    return ours.keys() == state_dict.keys() and all(torch.equal(ours[k], state_dict[k]) for k in ours)


def _plain_load(path: Path, state_dict: dict[str, torch.Tensor], *, arch: str = "mobilenet_v3_small") -> None:
    loaded = load_weights(path, arch=arch)
    assert _holds(loaded, state_dict)
    assert (loaded.origin, loaded.outputs, loaded.new_head, loaded.notes) == (path.name, 10, False, [])
    assert not loaded.module.training


@pytest.mark.parametrize(
    ("name", "zip_format"), [("model.pt", True), ("pytorch_model.bin", True), ("legacy.pth", False)]
)
def test_bare_state_dict_in_each_torch_format(tmp_path: Path, trained: dict, name: str, zip_format: bool) -> None:
    path = tmp_path / name
    torch.save(trained["plain"], path, _use_new_zipfile_serialization=zip_format)
    assert zipfile.is_zipfile(path) == zip_format  # the legacy file is a pre-1.6 pickle, not a zip
    _plain_load(path, trained["plain"])


@pytest.mark.parametrize("key", ["state_dict", "model", "model_state_dict", "net", "weights"])
def test_training_checkpoint_with_optimizer_and_epoch_beside(tmp_path: Path, trained: dict, key: str) -> None:
    assert key in STATE_DICT_KEYS
    path = tmp_path / "checkpoint.pth"
    optimizer = trained["optimizer"].state_dict()  # tensors (momentum buffers) nested in dicts: never taken
    torch.save({"epoch": 7, key: trained["plain"], "optimizer": optimizer, "best_acc1": torch.tensor(71.2)}, path)
    loaded = load_weights(path, arch="mobilenet_v3_small")
    assert _holds(loaded, trained["plain"])
    assert loaded.notes == [f"weights under [{key!r}]"]


@pytest.mark.parametrize("key", ["state_dict_ema", "model_ema", "ema_state_dict", "ema"])
def test_ema_weights_are_preferred_to_plain_ones(tmp_path: Path, trained: dict, key: str) -> None:
    assert key in EMA_STATE_DICT_KEYS
    both = tmp_path / "both.pth"
    torch.save({"state_dict": trained["plain"], key: trained["averaged"], "epoch": 3}, both)
    loaded = load_weights(both, arch="mobilenet_v3_small")
    assert _holds(loaded, trained["averaged"])
    assert loaded.notes == [f"EMA weights under [{key!r}], preferred to the plain ones under ['state_dict']"]
    alone = tmp_path / "alone.pth"
    torch.save({key: trained["averaged"]}, alone)
    assert load_weights(alone, arch="mobilenet_v3_small").notes == [f"EMA weights under [{key!r}]"]


def test_torch_averaged_model_saved_whole(tmp_path: Path, trained: dict) -> None:
    """AveragedModel's own state_dict: the model under "module." and its update count "n_averaged" beside."""
    path = tmp_path / "ema.pt"
    torch.save({"model": trained["plain"], "model_ema": trained["ema"].state_dict()}, path)
    loaded = load_weights(path, arch="mobilenet_v3_small")
    assert _holds(loaded, trained["averaged"])
    assert loaded.notes == [
        "EMA weights under ['model_ema'], preferred to the plain ones under ['model']",
        "AveragedModel's 'n_averaged' dropped",
        "'module.' prefix stripped (DataParallel/DDP/AveragedModel)",
    ]


def test_timm_train_script_checkpoint(tmp_path: Path) -> None:
    """The layout of timm's CheckpointSaver: state_dict and state_dict_ema (ModelEmaV3), optimizer, and the
    script's argparse.Namespace as "args" (plain data, allowed; code still is not)."""
    pytest.importorskip("timm", reason="timm is not installed (pip install -e .)")
    from timm.utils import ModelEmaV3, get_state_dict, unwrap_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_model("timm:mobilenetv3_small_050", num_classes=10)
        model_ema = ModelEmaV3(model, decay=0.5)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        _train_step(model, optimizer)
        model_ema.update(model)
    args = argparse.Namespace(model="mobilenetv3_small_050", lr=0.1, epochs=1, mean=None, model_ema=True)
    save_state = {
        "epoch": 0,
        "arch": args.model,
        "state_dict": get_state_dict(model, unwrap_model),
        "optimizer": optimizer.state_dict(),
        "version": 2,
        "args": args,
        "state_dict_ema": get_state_dict(model_ema, unwrap_model),
        "metric": 12.5,
    }
    path = tmp_path / "checkpoint-0.pth.tar"
    torch.save(save_state, path)
    loaded = load_weights(path, arch="timm:mobilenetv3_small_050", num_classes=10)
    assert not torch.equal(model.classifier.weight, model_ema.module.classifier.weight)
    assert _holds(loaded, model_ema.module.state_dict())
    assert loaded.notes == ["EMA weights under ['state_dict_ema'], preferred to the plain ones under ['state_dict']"]


@pytest.mark.parametrize(
    ("layout", "note"),
    [
        (lambda sd: {"model": {"module": sd}, "epoch": 1}, "weights under ['model']['module']"),
        (lambda sd: {"net": {"state_dict": sd, "meta": {"epoch": 1}}}, "weights under ['net']['state_dict']"),
        (lambda sd: {"model_ema": {"module": sd, "decay": 0.99}}, "EMA weights under ['model_ema']['module']"),
    ],
    ids=["module", "timm-style", "ema"],
)
def test_nested_model_checkpoint(tmp_path: Path, trained: dict, layout, note: str) -> None:
    path = tmp_path / "nested.pth"
    torch.save(layout(trained["plain"]), path)
    loaded = load_weights(path, arch="mobilenet_v3_small")
    assert _holds(loaded, trained["plain"])
    assert loaded.notes == [note]


@pytest.mark.parametrize(
    ("wrap", "notes"),
    [
        (nn.DataParallel, ["'module.' prefix stripped (DataParallel/DDP/AveragedModel)"]),
        (torch.compile, ["'_orig_mod.' prefix stripped (torch.compile)"]),
        (
            lambda model: nn.DataParallel(torch.compile(model)),
            [
                "'module.' prefix stripped (DataParallel/DDP/AveragedModel)",
                "'_orig_mod.' prefix stripped (torch.compile)",
            ],
        ),
        (lambda model: nn.ModuleDict({"backbone": model}), ["'backbone.' prefix stripped"]),
        (lambda model: nn.ModuleDict({"net": nn.ModuleDict({"body": model})}), ["'net.body.' prefix stripped"]),
        (
            lambda model: nn.DataParallel(nn.ModuleDict({"net": model})),
            ["'module.' prefix stripped (DataParallel/DDP/AveragedModel)", "'net.' prefix stripped"],
        ),
    ],
    ids=["DataParallel", "torch.compile", "both", "backbone", "two-levels", "DataParallel+net"],
)
def test_wrapper_prefixes(tmp_path: Path, trained: dict, wrap, notes: list[str]) -> None:
    wrapped = wrap(trained["model"]).state_dict()
    assert list(wrapped) != list(trained["plain"])
    path = tmp_path / "wrapped.pt"
    torch.save(wrapped, path)
    loaded = load_weights(path, arch="mobilenet_v3_small")
    assert _holds(loaded, trained["plain"])
    assert loaded.notes == notes


class _LitClassifier(nn.Module):
    """What a LightningModule holding its network as ``self.model`` saves: every key starts with "model."."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model


def test_pytorch_lightning_checkpoint(tmp_path: Path, trained: dict) -> None:
    checkpoint = {  # the layout of Lightning's Trainer.save_checkpoint
        "epoch": 4,
        "global_step": 500,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": _LitClassifier(trained["model"]).state_dict(),
        "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 4}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_acc'}": {"best_model_score": torch.tensor(0.9)}},
        "optimizer_states": [trained["optimizer"].state_dict()],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": {"lr": 0.1, "num_classes": 10},
    }
    path = tmp_path / "epoch=4-step=500.ckpt"
    torch.save(checkpoint, path)
    loaded = load_weights(path, arch="mobilenet_v3_small")
    assert _holds(loaded, trained["plain"])
    assert loaded.notes == ["weights under ['state_dict']", "'model.' prefix stripped"]


def test_safetensors_file_is_never_unpickled(tmp_path: Path, trained: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file(trained["plain"], path)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a safetensors file went to torch.load")

    monkeypatch.setattr(torch, "load", refuse)
    _plain_load(path, trained["plain"])
    prefixed = tmp_path / "ddp.safetensors"
    save_file(nn.DataParallel(trained["model"]).state_dict(), prefixed)
    assert load_weights(prefixed, arch="mobilenet_v3_small").notes == [
        "'module.' prefix stripped (DataParallel/DDP/AveragedModel)"
    ]
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="cut.safetensors is not a readable safetensors file"):
        load_weights(truncated, arch="mobilenet_v3_small")


def test_new_head_for_other_classes(tmp_path: Path, trained: dict) -> None:
    path = tmp_path / "ten.pt"
    torch.save(trained["plain"], path)
    loaded = load_weights(path, arch="mobilenet_v3_small", num_classes=3)
    assert (loaded.outputs, loaded.new_head, loaded.module.classifier[3].out_features) == (10, True, 3)
    assert not loaded.module.training
    ours = loaded.module.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in trained["plain"].items() if not k.startswith("classifier.3."))
    same = load_weights(path, arch="mobilenet_v3_small", num_classes=10)
    assert (same.outputs, same.new_head) == (10, False) and _holds(same, trained["plain"])
    assert _holds(same, load_checkpoint(path, arch="mobilenet_v3_small").state_dict())

    squeeze = create_model("squeezenet1_1", num_classes=5)  # a 1x1 Conv2d head
    torch.save({"model_state_dict": squeeze.state_dict(), "epoch": 2}, tmp_path / "squeeze.pth")
    loaded = load_weights(tmp_path / "squeeze.pth", arch="squeezenet1_1", num_classes=2)
    assert (loaded.outputs, loaded.new_head, loaded.module.classifier[1].out_channels) == (5, True, 2)
    assert torch.equal(loaded.module.features[0].weight, squeeze.features[0].weight)
    assert classifier_weight_key("squeezenet1_1") == "classifier.1.weight"


def _other_names(key: str) -> str:
    """Another implementation's name for ``key``: every module renamed, the last part kept
    (``features.0.1.running_var`` -> ``_features_0_1.running_var``), as efficientnet_pytorch names timm's."""
    layer, _, last = key.rpartition(".")
    return f"_{layer.replace('.', '_')}.{last}"


def test_other_names_matched_by_order_and_shape(tmp_path: Path, trained: dict) -> None:
    source = dict(trained["plain"])
    source["features.0.1.num_batches_tracked"] = torch.tensor(5)  # counters follow their layer
    path = tmp_path / "other.pth"
    torch.save({_other_names(k): v for k, v in source.items()}, path)
    loaded = load_weights(path, arch="mobilenet_v3_small")
    assert _holds(loaded, source)
    assert loaded.notes == [
        f"{len(source)} tensors matched by order and shape from other names "
        "(e.g. _features_0_0.weight -> features.0.0.weight)"
    ]


def test_mapping_by_order_refuses_any_disagreement(tmp_path: Path, trained: dict) -> None:
    renamed = [(_other_names(k), v) for k, v in trained["plain"].items()]
    tensors = sum(not k.endswith("num_batches_tracked") for k, _ in renamed)  # counters are not paired
    swapped = tmp_path / "swapped.pth"  # the conv and its batch-norm's weight in the wrong order
    torch.save(dict([renamed[1], renamed[0], *renamed[2:]]), swapped)
    with pytest.raises(
        ModelLoadError,
        match=re.escape(
            f"its names differ from the model's, and its {tensors} tensors taken in order break at tensor 0: "
            "checkpoint _features_0_1.weight (16,) vs model features.0.0.weight (16, 3, 3, 3); check --arch"
        ),
    ):
        load_weights(swapped, arch="mobilenet_v3_small")

    last_part = tmp_path / "beta.pth"  # same shapes, but a bias where the model has a weight
    torch.save({k.replace("_features_0_1.weight", "_features_0_1.gamma"): v for k, v in renamed}, last_part)
    with pytest.raises(ModelLoadError, match=r"break at tensor 1: checkpoint _features_0_1\.gamma \(16,\) vs model "):
        load_weights(last_part, arch="mobilenet_v3_small")

    fewer = tmp_path / "fewer.pth"  # one tensor short: nothing to pair by order; the names are reported
    torch.save(dict(renamed[:-1]), fewer)
    with pytest.raises(
        ModelLoadError,
        match=rf"does not match mobilenet_v3_small at width 1: {tensors} keys missing \(e\.g\. features\.0\.0\.weight "
        rf"\(16, 3, 3, 3\)\), {tensors - 1} unexpected \(e\.g\. _features_0_0\.weight \(16, 3, 3, 3\)\); check --arch",
    ):
        load_weights(fewer, arch="mobilenet_v3_small")


def test_shape_mismatch_names_first_tensor_both_sides(tmp_path: Path, trained: dict) -> None:
    path = tmp_path / "wide.pt"
    state = dict(trained["plain"])
    state["features.1.block.0.0.weight"] = torch.zeros(24, 1, 3, 3)
    torch.save(state, path)
    with pytest.raises(
        ModelLoadError,
        match=re.escape(
            "0 keys missing, 0 unexpected, first shape mismatch features.1.block.0.0.weight: checkpoint "
            "(24, 1, 3, 3) vs model (16, 1, 3, 3); check --arch and --width"
        ),
    ):
        load_weights(path, arch="mobilenet_v3_small")


def test_whole_pickled_module_is_refused(tmp_path: Path, trained: dict) -> None:
    path = tmp_path / "whole.pt"
    torch.save(trained["model"], path)  # pickles torchvision's classes: loading would run their code
    with pytest.raises(ModelLoadError, match=r"whole.pt is not a weights-only checkpoint \(it pickles torchvision"):
        load_weights(path, arch="mobilenet_v3_small")


def test_real_efficientnet_lite1_from_efficientnet_pytorch() -> None:
    """Real ImageNet weights in efficientnet_pytorch's names (legacy pickle, ../shared) load into timm's
    tf_efficientnet_lite1 by order; with other classes the backbone is kept and the head is new."""
    if not LITE1.is_file():
        pytest.skip(f"the shared EfficientNet-Lite1 weights are missing: {LITE1}")
    pytest.importorskip("timm", reason="timm is not installed (pip install -e .)")
    source = torch.load(LITE1, map_location="cpu", weights_only=True)
    loaded = load_weights(LITE1, arch="timm:tf_efficientnet_lite1")
    assert (loaded.origin, loaded.outputs, loaded.new_head) == ("efficientnet-lite1-77cc7160.pth", 1000, False)
    assert loaded.notes == [
        "386 tensors matched by order and shape from other names (e.g. _conv_stem.weight -> conv_stem.weight)"
    ]
    ours = loaded.module.state_dict()
    assert len(ours) == len(source) == 386
    assert all(torch.equal(ours[mine], source[theirs]) for mine, theirs in zip(ours, source, strict=True))
    retargeted = load_weights(LITE1, arch="timm:tf_efficientnet_lite1", num_classes=10)
    assert (retargeted.outputs, retargeted.new_head, retargeted.module.classifier.out_features) == (1000, True, 10)
    assert torch.equal(retargeted.module.conv_head.weight, source["_conv_head.weight"])
