"""Loading user model files: PyTorch checkpoints (weights only, never code) and ONNX models."""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from edgeflow.errors import ModelLoadError, first_line
from edgeflow.io import describe_os_error
from edgeflow.models._registry import create_model, model_info

if TYPE_CHECKING:
    import onnx

#: Keys under which training scripts commonly nest the state_dict.
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict")
#: Prefixes added by DataParallel/DistributedDataParallel and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Auxiliary classifier heads torchvision builds only in training; edgeflow's models have none.
_AUX_HEADS = ("aux1.", "aux2.", "AuxLogits.")
# torchvision's DenseNet checkpoints predate the module renaming "norm.1" -> "norm1" (see densenet.py).
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)
_UNSAFE_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def load_checkpoint(path: str | Path, *, arch: str, width: float = 1.0, num_classes: int | None = None) -> nn.Module:
    """Build ``arch`` and load a local PyTorch checkpoint into it, never unpickling code.

    The file is read with ``torch.load(..., weights_only=True)``. It may hold a bare state_dict or a dict
    with one under ``state_dict``, ``model`` or ``model_state_dict``; a ``module.`` prefix is stripped.

    Args:
        path: The ``.pt``/``.pth`` file.
        arch: Registered model name (see ``list_models``).
        width: Width multiplier the checkpoint was trained with.
        num_classes: Classifier size; None infers it from the checkpoint's classifier weight.

    Returns:
        The model with the checkpoint's weights, in eval mode.

    Raises:
        ModelLoadError: the file is missing, corrupt, carries code, or does not match ``arch``/``width``.
    """
    path = Path(path)
    info = model_info(arch)  # an unknown name fails before the file is read
    state_dict = _strip_prefixes(_find_state_dict(_read(path), path))
    if info.family == "densenet":
        state_dict = {_DENSENET_OLD_KEY.sub(r"\1\2", key): value for key, value in state_dict.items()}
    state_dict = {key: value for key, value in state_dict.items() if not key.startswith(_AUX_HEADS)}
    if num_classes is None:
        head = state_dict.get(classifier_weight_key(info.name, width=width))
        # Without a classifier weight the checkpoint cannot match; build any head and report the mismatch.
        num_classes = int(head.shape[0]) if head is not None and head.dim() >= 1 else 1000
    model = create_model(info.name, num_classes=num_classes, width=width)
    _check_match(model, state_dict, path=path, arch=info.name, width=width)
    model.load_state_dict(state_dict, strict=False)
    return model.eval()


def _read(path: Path) -> object:
    if not path.is_file():
        where = " (it is a directory)" if path.is_dir() else ""
        raise ModelLoadError(f"checkpoint {path} not found{where}")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path} is empty; expected a PyTorch checkpoint saved with torch.save")
    try:
        with warnings.catch_warnings():
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


def _find_state_dict(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(loaded, Mapping):
        if loaded and all(isinstance(value, torch.Tensor) for value in loaded.values()):
            return dict(loaded)
        for key in STATE_DICT_KEYS:
            nested = loaded.get(key)
            if isinstance(nested, Mapping) and nested:
                tensors = {k: v for k, v in nested.items() if isinstance(v, torch.Tensor)}
                if tensors:
                    return tensors
        keys = ", ".join(map(str, list(loaded)[:8])) or "none"
        raise ModelLoadError(
            f"{path} holds no state_dict (top-level keys: {keys}); expected tensors, or a dict with one "
            f"under {', '.join(STATE_DICT_KEYS)}"
        )
    raise ModelLoadError(f"{path} holds a {type(loaded).__name__}, not a state_dict; save model.state_dict()")


def _strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    stripped = {}
    for key, value in state_dict.items():
        for prefix in WRAPPER_PREFIXES:
            key = key.removeprefix(prefix)
        stripped[key] = value
    return stripped


def classifier_weight_key(arch: str, *, width: float = 1.0) -> str:
    """State-dict key of the classifier weight of ``arch`` (e.g. ``classifier.3.weight``)."""
    sentinel = 7919  # a prime no layer of a real network has as its width
    try:
        with torch.device("meta"):  # no memory, no init cost
            probe = create_model(arch, num_classes=sentinel, width=width)
    except (RuntimeError, NotImplementedError):
        probe = create_model(arch, num_classes=sentinel, width=width)
    keys = [name for name, p in probe.named_parameters() if name.endswith("weight") and p.shape[0] == sentinel]
    return keys[-1]


def _check_match(model: nn.Module, state_dict: dict[str, torch.Tensor], *, path: Path, arch: str, width: float) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    mismatch = next(
        (
            f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
            for k, v in expected.items()
            if k in state_dict and state_dict[k].shape != v.shape
        ),
        None,
    )
    if missing or unexpected or mismatch:
        details = f"{len(missing)} keys missing (e.g. {missing[0]})" if missing else "0 keys missing"
        details += f", {len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else ", 0 unexpected"
        if mismatch:
            details += f", first shape mismatch {mismatch}"
        raise ModelLoadError(f"{path} does not match {arch} at width {width:g}: {details}; check --arch and --width")


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Load and validate an ONNX model with exactly one input.

    Raises:
        ModelLoadError: the file is missing, not a valid ONNX model, or has not exactly one input.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"ONNX model {path} not found" + (" (it is a directory)" if path.is_dir() else ""))
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(str(path))  # by path, so models over 2 GB with external data work
    except OSError as error:  # the system refused to read it (permission, too many open files): not the file's fault
        raise ModelLoadError(f"cannot read {describe_os_error(error, path=path)}") from None
    except Exception as error:  # protobuf and checker errors mean "not a usable ONNX file"
        raise ModelLoadError(f"{path} is not a valid ONNX model: {first_line(error, limit=200)}") from None
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelLoadError(
            f"{path} has {len(inputs)} inputs ({', '.join(inputs) or 'none'}); edgeflow needs a model with "
            "exactly one image input"
        )
    return model
