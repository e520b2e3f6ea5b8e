"""Loading user model files: checkpoints as training scripts save them (weights only, never code) and ONNX models."""

from __future__ import annotations

import argparse
import contextlib
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from edgeflow.data.preprocess import PreprocessSpec
from edgeflow.errors import ModelLoadError, first_line
from edgeflow.io import describe_os_error
from edgeflow.models._registry import create_model, model_info
from edgeflow.models.head import replace_head

if TYPE_CHECKING:
    pass


@dataclass
class LoadedWeights:
    """Weights loaded into their architecture, with what the pipeline and the report need to know of them.

    Attributes:
        module: The model, in eval mode; its head has ``num_classes`` outputs when a new head was asked for.
        origin: What the weights are, for reports: the file's name, ``torchvision
            MobileNet_V3_Large_Weights.IMAGENET1K_V2``, ``timm efficientnet_b0.ra_in1k``.
        outputs: How many classes the weights' own head predicts (1000 for ImageNet weights).
        new_head: The weights' head was replaced by a freshly initialised one for other classes.
        categories: The class of each of the weights' own outputs, where the weights say (torchvision's meta).
        notes: How the tensors were found and matched, one phrase each ("EMA weights under ['state_dict_ema']",
            "'module.' prefix stripped (DataParallel/DDP/AveragedModel)", "386 tensors matched by order and
            shape from other names (e.g. _conv_stem.weight -> conv_stem.weight)").
        preprocess: The weights' own input pipeline (torchvision's transforms, timm's pretrained_cfg), when known.
    """

    module: nn.Module
    origin: str
    outputs: int
    new_head: bool = False
    categories: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    preprocess: PreprocessSpec | None = None


#: Keys under which training scripts commonly nest the state_dict (with optimizer state, epoch... beside it).
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "net", "weights")
#: Keys under which training scripts keep an exponential moving average of the weights (timm's train script saves
#: ``state_dict_ema`` beside ``state_dict``). Preferred to the plain weights, as timm does: they are the better ones.
EMA_STATE_DICT_KEYS = ("state_dict_ema", "model_ema", "ema_state_dict", "ema")
#: Prefixes added by DataParallel/DistributedDataParallel and torch.compile, and who adds them.
WRAPPER_PREFIXES = {"module.": "DataParallel/DDP/AveragedModel", "_orig_mod.": "torch.compile"}
# torch.optim.swa_utils.AveragedModel (torch's EMA) keeps its update count beside the model's "module." tensors.
_AVERAGED_COUNT = "n_averaged"
# A wrapper's own state_dict nests the model's one level down: {"module": state_dict}.
_WRAPPER_KEYS = ("module",)
# How deep a state_dict may sit in a checkpoint: {"model_ema": {"module": {...}}} is two levels.
_MAX_DEPTH = 3
# Batch-norm's step counter: torch versions and implementations disagree on having it; it is ignored in matching.
_COUNTER = "num_batches_tracked"
# Auxiliary classifier heads torchvision builds only in training; edgeflow's models have none.
_AUX_HEADS = ("aux1.", "aux2.", "AuxLogits.")
# torchvision's DenseNet checkpoints predate the module renaming "norm.1" -> "norm1" (see densenet.py).
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)
_UNSAFE_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
# Plain data classes training scripts pickle beside the weights, allowed to weights_only's unpickler: timm's train
# script saves its argparse.Namespace as "args". They hold values only; building them runs no code of the file.
_DATA_CLASSES = (argparse.Namespace,)
# A classifier size no layer of a real network has as its width: marks the head of a probe model.
_SENTINEL_CLASSES = 7919


def load_checkpoint(path: str | Path, *, arch: str, width: float = 1.0, num_classes: int | None = None) -> nn.Module:
    """Build ``arch`` and load a local checkpoint into it, never unpickling code: ``load_weights(...).module``.

    Raises:
        ModelLoadError: the file is missing, corrupt, carries code, or does not match ``arch``/``width``.
    """
    return load_weights(path, arch=arch, width=width, num_classes=num_classes).module


def load_weights(path: str | Path, *, arch: str, width: float = 1.0, num_classes: int | None = None) -> LoadedWeights:
    """Build ``arch`` and load a user's checkpoint into it as it comes, never unpickling code.

    The file is a ``.safetensors`` file or a torch file (zip or legacy pickle, read with ``weights_only=True``):
    a bare state_dict, or a training checkpoint with one under ``state_dict``, ``model``, ``model_state_dict``,
    ``net`` or ``weights`` (EMA weights under ``state_dict_ema``, ``model_ema``, ``ema_state_dict`` or ``ema``
    are preferred), possibly one level further under ``module``. Prefixes of wrappers (``module.``,
    ``_orig_mod.``) are stripped, as is any one prefix every key shares (``model.`` of PyTorch Lightning) when
    that makes the names match. Weights of another implementation of the architecture, with other names but the
    same tensors in the same order, are matched by order when every shape and every last name part agrees.

    Args:
        path: The checkpoint (``.pt``, ``.pth``, ``.ckpt``, ``.bin``, ``.safetensors``).
        arch: Registered model name (see ``list_models``), e.g. ``timm:tf_efficientnet_lite1``.
        width: Width multiplier the checkpoint was trained with.
        num_classes: Classifier size wanted; None keeps the checkpoint's own head. Another size loads every
            tensor, then replaces the head by a freshly initialised one of ``num_classes`` outputs.

    Returns:
        The model in eval mode, with the file's name as origin, its head size as outputs, and notes on how the
        tensors were found and matched.

    Raises:
        ModelLoadError: the file is missing, corrupt, carries code, or does not match ``arch``/``width``.

    Example:
        >>> loaded = load_weights("ckpt.pth", arch="mobilenet_v3_small", num_classes=3)  # doctest: +SKIP
        >>> loaded.outputs, loaded.new_head, loaded.notes  # doctest: +SKIP
        (1000, True, ["EMA weights under ['state_dict_ema'], preferred to the plain ones under ['state_dict']"])
    """
    path = Path(path)
    info = model_info(arch)  # an unknown name fails before the file is read
    notes: list[str] = []
    state_dict = _find_state_dict(_read(path), path=path, notes=notes)
    expected_keys, head_key = _probe_keys(info.name, width=width)
    state_dict, order = _match_names(state_dict, expected_keys=expected_keys, family=info.family, notes=notes)
    head = state_dict.get(head_key)
    # Without a classifier weight the checkpoint cannot match; build any head and report the mismatch.
    outputs = int(head.shape[0]) if head is not None and head.dim() >= 1 else (num_classes or 1000)
    model = create_model(info.name, num_classes=outputs, width=width)
    if order is None:
        _check_match(model, state_dict, path=path, arch=info.name, width=width)
    else:
        _check_order(model, state_dict, order=order, path=path, arch=info.name, width=width)
    model.load_state_dict(state_dict, strict=False)
    new_head = num_classes is not None and num_classes != outputs
    if new_head:
        replace_head(model, num_classes=num_classes)
    return LoadedWeights(module=model.eval(), origin=path.name, outputs=outputs, new_head=new_head, notes=notes)


def _read(path: Path) -> object:
    if not path.is_file():
        where = " (it is a directory)" if path.is_dir() else ""
        raise ModelLoadError(f"checkpoint {path} not found{where}")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path} is empty; expected a PyTorch checkpoint saved with torch.save")
    if path.suffix.lower() == ".safetensors":
        return _read_safetensors(path)
    allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    try:
        with warnings.catch_warnings(), allow(list(_DATA_CLASSES)) if allow else contextlib.nullcontext():
            warnings.simplefilter("ignore", UserWarning)  # pickle-protocol chatter; failures raise below
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt files; all mean "unreadable"
        message = str(error)
        unsafe = _UNSAFE_GLOBAL.search(message)
        if unsafe:
            raise ModelLoadError(
                f"{path} is not a weights-only checkpoint (it pickles {unsafe.group(1)}); refusing to "
                "unpickle code or arbitrary objects: re-save just the state_dict with torch.save"
            ) from None
        reason = "not a PyTorch zip or pickle file"
        if isinstance(error, RuntimeError) and message.strip():
            reason = message.strip().splitlines()[0].split(". ")[0][:160]
        raise ModelLoadError(
            f"{path} is not a readable PyTorch checkpoint (truncated, corrupt or another format): {reason}"
        ) from None


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file  # timm's dependency; imported only for these files

    try:
        return load_file(path, device="cpu")
    except OSError as error:
        raise ModelLoadError(f"cannot read {describe_os_error(error, path=path)}") from None
    except Exception as error:  # SafetensorError and header parse errors: the file is not what it claims
        raise ModelLoadError(
            f"{path} is not a readable safetensors file (truncated or corrupt): {first_line(error, limit=160)}"
        ) from None


def _find_state_dict(loaded: object, *, path: Path, notes: list[str]) -> dict[str, torch.Tensor]:
    """The tensors of ``loaded``: itself, or the dict under one of the usual keys, EMA weights first."""
    if not isinstance(loaded, Mapping):
        raise ModelLoadError(f"{path} holds a {type(loaded).__name__}, not a state_dict; save model.state_dict()")
    found = _locate(loaded, keys=(*EMA_STATE_DICT_KEYS, *STATE_DICT_KEYS, *_WRAPPER_KEYS))
    if found is None:
        keys = ", ".join(map(str, list(loaded)[:8])) or "none"
        raise ModelLoadError(
            f"{path} holds no state_dict (top-level keys: {keys}); expected tensors, or a dict with them under "
            f"{', '.join(STATE_DICT_KEYS)} or (EMA weights) {', '.join(EMA_STATE_DICT_KEYS)}"
        )
    tensors, where = found
    if not where:
        return tensors
    if not any(key in EMA_STATE_DICT_KEYS for key in where):
        notes.append(f"weights under {_subscript(where)}")
        return tensors
    plain = _locate(loaded, keys=(*STATE_DICT_KEYS, *_WRAPPER_KEYS))
    also = f", preferred to the plain ones under {_subscript(plain[1])}" if plain and plain[1] else ""
    notes.append(f"EMA weights under {_subscript(where)}{also}")
    return tensors


def _locate(
    mapping: Mapping, *, keys: tuple[str, ...], depth: int = 0
) -> tuple[dict[str, torch.Tensor], list[str]] | None:
    """The first state_dict in ``mapping`` (a dict of tensors, beside no dicts) trying ``keys`` in order at each
    level, and the keys that lead to it; None when there is none."""
    tensors = {key: value for key, value in mapping.items() if isinstance(value, torch.Tensor)}
    if tensors and not any(isinstance(value, Mapping) for value in mapping.values()):
        return {str(key): value for key, value in tensors.items()}, []
    if depth < _MAX_DEPTH:
        for key in keys:
            nested = mapping.get(key)
            if isinstance(nested, Mapping) and nested:
                found = _locate(nested, keys=keys, depth=depth + 1)
                if found is not None:
                    return found[0], [key, *found[1]]
    return None


def _subscript(where: list[str]) -> str:
    return "".join(f"[{key!r}]" for key in where)


def _match_names(
    state_dict: dict[str, torch.Tensor], *, expected_keys: tuple[str, ...], family: str, notes: list[str]
) -> tuple[dict[str, torch.Tensor], list[tuple[str, str]] | None]:
    """Rename the checkpoint's tensors to the model's names, noting each step.

    Tries the names as they are (wrapper prefixes stripped), then with each prefix every key shares stripped;
    failing both, pairs the tensors by order when there are as many as the model has. Returns the renamed
    tensors and, for a mapping by order, its (file name, model name) pairs for ``_check_order``.
    """
    state_dict = _strip_wrappers(state_dict, notes=notes)
    wanted = [key for key in expected_keys if not _is_counter(key)]
    as_is, as_is_notes = _legacy_names(state_dict, family=family)
    candidates = [("", as_is, as_is_notes)]
    candidates += [
        (prefix, *_legacy_names({key[len(prefix) :]: value for key, value in state_dict.items()}, family=family))
        for prefix in _common_prefixes(list(state_dict))
    ]
    for prefix, renamed, legacy_notes in candidates:
        if all(key in renamed for key in wanted):
            notes.extend([f"{prefix!r} prefix stripped"] if prefix else [])
            notes.extend(legacy_notes)
            return renamed, None
    found = [key for key in as_is if not _is_counter(key)]
    if len(found) != len(wanted):
        notes.extend(as_is_notes)
        return as_is, None  # _check_match names what is missing
    order = list(zip(found, wanted, strict=True))
    renamed = {model_key: as_is[file_key] for file_key, model_key in order}
    # Counters follow their layer: "_bn0.num_batches_tracked" goes where "_bn0.running_var" went.
    layers = {file_key.rpartition(".")[0]: model_key.rpartition(".")[0] for file_key, model_key in order}
    expected = set(expected_keys)
    for key, value in as_is.items():
        layer = layers.get(key.rpartition(".")[0])
        if _is_counter(key) and layer is not None and f"{layer}.{_COUNTER}" in expected:
            renamed[f"{layer}.{_COUNTER}"] = value
    example = next(f"{a} -> {b}" for a, b in order if a != b)
    notes.extend(as_is_notes)
    notes.append(f"{len(renamed)} tensors matched by order and shape from other names (e.g. {example})")
    return renamed, order


def _strip_wrappers(state_dict: dict[str, torch.Tensor], *, notes: list[str]) -> dict[str, torch.Tensor]:
    stripped, seen = {}, set()
    if _AVERAGED_COUNT in state_dict and any(key.startswith("module.") for key in state_dict):
        state_dict = {key: value for key, value in state_dict.items() if key != _AVERAGED_COUNT}
        notes.append(f"AveragedModel's {_AVERAGED_COUNT!r} dropped")
    for key, value in state_dict.items():
        while key.startswith(tuple(WRAPPER_PREFIXES)):  # DDP around a compiled model nests both
            prefix = next(p for p in WRAPPER_PREFIXES if key.startswith(p))
            seen.add(prefix)
            key = key[len(prefix) :]
        stripped[key] = value
    notes.extend(f"{prefix!r} prefix stripped ({by})" for prefix, by in WRAPPER_PREFIXES.items() if prefix in seen)
    return stripped


def _common_prefixes(keys: list[str]) -> list[str]:
    """Every dotted prefix all ``keys`` share, shortest first: ``["model.", "model.backbone."]``."""
    if not keys:
        return []
    parts = keys[0].split(".")[:-1]
    prefixes = [".".join(parts[: n + 1]) + "." for n in range(len(parts))]
    return [prefix for prefix in prefixes if all(key.startswith(prefix) for key in keys)]


def _legacy_names(state_dict: dict[str, torch.Tensor], *, family: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Drop torchvision's training-only auxiliary heads and rename DenseNet's pre-0.4 keys."""
    notes = []
    kept = {key: value for key, value in state_dict.items() if not key.startswith(_AUX_HEADS)}
    if len(kept) < len(state_dict):
        notes.append(f"{len(state_dict) - len(kept)} tensors of auxiliary training heads dropped")
    if family == "densenet":
        renamed = {_DENSENET_OLD_KEY.sub(r"\1\2", key): value for key, value in kept.items()}
        if list(renamed) != list(kept):
            notes.append("DenseNet's old names renamed ('norm.1' -> 'norm1')")
        kept = renamed
    return kept, notes


def _is_counter(key: str) -> bool:
    return key.rpartition(".")[2] == _COUNTER


@cache
def _probe_keys(arch: str, *, width: float) -> tuple[tuple[str, ...], str]:
    """The state_dict keys of ``arch`` in order, and the key of its classifier weight."""
    try:
        with torch.device("meta"):  # no memory, no init cost
            probe = create_model(arch, num_classes=_SENTINEL_CLASSES, width=width)
    except (RuntimeError, NotImplementedError):
        probe = create_model(arch, num_classes=_SENTINEL_CLASSES, width=width)
    heads = [
        name for name, p in probe.named_parameters() if name.endswith("weight") and p.shape[0] == _SENTINEL_CLASSES
    ]
    return tuple(probe.state_dict()), heads[-1]


def classifier_weight_key(arch: str, *, width: float = 1.0) -> str:
    """State-dict key of the classifier weight of ``arch`` (e.g. ``classifier.3.weight``)."""
    return _probe_keys(arch, width=width)[1]


def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


def _check_match(model: nn.Module, state_dict: dict[str, torch.Tensor], *, path: Path, arch: str, width: float) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not _is_counter(k)]
    unexpected = [k for k in state_dict if k not in expected and not _is_counter(k)]
    mismatch = next(
        (
            f"{k}: checkpoint {_shape(state_dict[k])} vs model {_shape(v)}"
            for k, v in expected.items()
            if k in state_dict and state_dict[k].shape != v.shape
        ),
        None,
    )
    if missing or unexpected or mismatch:
        details = (
            f"{len(missing)} keys missing (e.g. {missing[0]} {_shape(expected[missing[0]])})"
            if missing
            else "0 keys missing"
        )
        details += (
            f", {len(unexpected)} unexpected (e.g. {unexpected[0]} {_shape(state_dict[unexpected[0]])})"
            if unexpected
            else ", 0 unexpected"
        )
        if mismatch:
            details += f", first shape mismatch {mismatch}"
        raise ModelLoadError(f"{path} does not match {arch} at width {width:g}: {details}; check --arch and --width")


def _check_order(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor],
    *,
    order: list[tuple[str, str]],
    path: Path,
    arch: str,
    width: float,
) -> None:
    """Refuse a mapping by order unless every pair agrees in shape and in the last part of its name."""
    expected = model.state_dict()
    for position, (file_key, model_key) in enumerate(order):
        theirs, ours = state_dict[model_key], expected[model_key]
        if theirs.shape != ours.shape or file_key.rpartition(".")[2] != model_key.rpartition(".")[2]:
            raise ModelLoadError(
                f"{path} does not match {arch} at width {width:g}: its names differ from the model's, and its "
                f"{len(order)} tensors taken in order break at tensor {position}: checkpoint {file_key} "
                f"{_shape(theirs)} vs model {model_key} {_shape(ours)}; check --arch and --width"
            )
