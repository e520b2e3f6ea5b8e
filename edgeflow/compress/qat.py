"""Quantization-aware training with NNCF on the torch model, exported to int8 OpenVINO IR.

``nncf.quantize`` on an ``nn.Module`` (NNCF 3.x's function-hook backend) traces one calibration image,
attaches fake-quantize hooks with calibrated ranges and returns a trainable module (no torch.fx, no
``nncf.strip``: its native format needs torchao). A short fine-tune lets the weights and the quantizer
ranges adapt to rounding. OpenVINO's PyTorch frontend turns the hooks into FakeQuantize operations;
folding the weight FakeQuantizes then stores int8 weights, as NNCF's PTQ of an IR does.

NNCF builds a C++ extension for its quantizers on first use (cached under ~/.cache/torch_extensions).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import nn

from edgeflow.artifact import Artifact
from edgeflow.backends.openvino import read_model, runtime_message
from edgeflow.compress.method import QuantizationMethod, QuantizeJob
from edgeflow.compress.nncf_ptq import MIN_CALIBRATION_SAMPLES, NncfPtqConfig, ignored_scope, quiet_nncf
from edgeflow.compress.stats import QuantizationStats, layer_precisions, summarize
from edgeflow.config import StrictModel
from edgeflow.data import DataSplits, calibration_subset, make_loader
from edgeflow.errors import (
    ConfigError,
    DataError,
    EdgeflowError,
    OutputError,
    RuntimeUnavailableError,
    ShapeError,
)
from edgeflow.export.openvino import save_openvino
from edgeflow.progress import Progress

NOT_QUANTIZED = "not quantized by NNCF's CNN patterns"


class QatConfig(StrictModel):
    """Quantization-aware fine-tuning with NNCF on the torch model: a few epochs at a small learning rate."""

    epochs: int = Field(default=2, ge=0)
    lr: float = Field(default=1e-4, gt=0)
    batch_size: int = Field(default=32, ge=1)
    max_steps: int | None = Field(default=None, ge=1)


class NncfQatConfig(NncfPtqConfig):
    """NNCF's quantization-aware training: its PTQ settings, then fine-tuning."""

    qat: QatConfig = QatConfig()


# Activations whose outputs go negative (as in quantize.py, by torch module type): mixed preset for them.
_NEGATIVE_ACTIVATIONS = (nn.Hardswish, nn.SiLU, nn.GELU, nn.ELU, nn.PReLU, nn.Mish, nn.Softplus, nn.SELU)


def quantization_aware_training(
    module: nn.Module,
    *,
    splits: DataSplits,
    config: NncfQatConfig,
    input_shape: tuple[int, ...],
    path: Path,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[Artifact, QuantizationStats]:
    """Quantize a copy of ``module`` with NNCF, fine-tune it on the train split, save int8 IR at ``path``.

    Calibration and fine-tuning use ``splits.train``; the holdout top-1 of the exported IR (OpenVINO,
    f32 execution) is recorded in the summary. ``module`` itself is never modified.

    Args:
        module: the trained float model.
        splits: train (calibration, fine-tuning) and holdout (reported in the summary) splits.
        config: preset, subset size, ignored scope, and ``config.qat`` (epochs, lr, batch size, max steps).
        input_shape: the fixed input shape of the exported IR, e.g. ``(1, 3, 224, 224)``.
        path: where the IR (``.xml`` + ``.bin``) is written.
        seed: seed of the calibration subset, the data order and torch's RNG.
        progress: shows a ``qat`` task per fine-tuning step.

    Raises:
        ConfigError: NNCF's torch backend cannot quantize this model, or quantized none of its layers.
        RuntimeUnavailableError: NNCF's CPU extension could not be built in time.
        ShapeError: the images do not fit ``input_shape``.
        DataError: too few calibration images.
        OutputError: ``path`` is not an ``.xml`` path.
    """
    import nncf

    if path.suffix != ".xml":
        raise OutputError(f"QAT writes OpenVINO IR; give a .xml path, not {path.name}")
    input_shape = tuple(int(dim) for dim in input_shape)
    sample_shape = (1, *tuple(splits.train[0][0].shape))
    if len(input_shape) != 4 or sample_shape[1:] != input_shape[1:]:
        raise ShapeError(f"training images have shape {sample_shape} but QAT was asked for {input_shape}")
    name = type(module).__name__
    qat = config.qat
    torch.manual_seed(seed)

    subset = calibration_subset(splits.train, size=config.subset_size, seed=seed)
    if len(subset) < min(config.subset_size, MIN_CALIBRATION_SAMPLES):
        raise DataError(
            f"calibration needs at least {min(config.subset_size, MIN_CALIBRATION_SAMPLES)} images; "
            f"the train split has {len(subset)}"
        )
    dataset = nncf.Dataset(subset, lambda item: item[0].unsqueeze(0))
    settings: dict[str, Any] = {
        "preset": _resolve_preset(module, config),
        "model_type": config.model_type,
        "subset_size": len(subset),
        "fast_bias_correction": True,  # the only mode NNCF's torch backend has
        "ignored_scope": config.ignored_scope.model_dump(),
    }
    arguments: dict[str, Any] = {
        "preset": nncf.QuantizationPreset(settings["preset"]),
        "subset_size": len(subset),
    }
    if config.model_type == "transformer":
        arguments["model_type"] = nncf.ModelType.TRANSFORMER
    if config.float_layers:
        raise ConfigError(
            "quantize.float_layers: nncf-qat trains the torch model, whose layers NNCF names otherwise; "
            "keep layers in float with nncf-ptq or nncf-accuracy-control"
        )
    scope = ignored_scope(config)
    if scope is not None:
        arguments["ignored_scope"] = scope

    with quiet_nncf(), _nncf_errors(name):
        # Copy first: eval() on the caller's module would change its mode.
        quantized = nncf.quantize(copy.deepcopy(module).eval(), dataset, **arguments)
    with quiet_nncf(), _extension_timeout():
        steps, final_loss = _fine_tune(quantized, splits, config, seed=seed, progress=progress or Progress.silent())
    settings.update(epochs=qat.epochs, steps=steps, lr=qat.lr, batch_size=qat.batch_size)
    ov_model = _convert(quantized, input_shape=input_shape, name=name)
    if not layer_precisions(ov_model)[0]:
        raise ConfigError(f"NNCF quantized none of the layers of {name}; use nncf-ptq or keep it in float")
    save_openvino(ov_model, path=path)

    result = Artifact(
        format="openvino", path=path, precision="int8", input_shape=input_shape,
        lineage=[f"nncf-qat(preset={settings['preset']}, steps={steps}, lr={qat.lr})"],
    )  # fmt: skip
    notes = [f"final fine-tuning loss {final_loss:.4f}"] if steps else ["no fine-tuning steps: PTQ in torch only"]
    if not config.fast_bias_correction:
        notes.append("fast_bias_correction=false ignored: NNCF's torch backend has fast bias correction only")
    summary = summarize(
        read_model(result), method="nncf-qat", settings=settings, reason=NOT_QUANTIZED,
        holdout_top1_quantized=_holdout_top1(result, splits), notes=notes,
    )  # fmt: skip
    return result, summary


def _resolve_preset(module: nn.Module, config: NncfQatConfig) -> str:
    """``auto``: mixed when the model has activation modules that go negative (h-swish, SiLU, GELU...)."""
    if config.preset not in ("auto", "fastest"):
        return config.preset
    negative = any(isinstance(layer, _NEGATIVE_ACTIVATIONS) for layer in module.modules())
    return "mixed" if negative else "performance"


def _fine_tune(
    model: nn.Module, splits: DataSplits, config: NncfQatConfig, *, seed: int, progress: Progress
) -> tuple[int, float]:
    """AdamW at a constant small learning rate; batch-norm statistics stay frozen.

    Frozen statistics keep the activation ranges NNCF calibrated consistent with what the network
    computes; weight decay is off because it would also shrink the learned quantizer ranges.
    """
    qat = config.qat
    loader = make_loader(splits.train, batch_size=qat.batch_size, shuffle=True, seed=seed)
    total = qat.epochs * len(loader)
    if qat.max_steps is not None:
        total = min(total, qat.max_steps)
    model.eval()
    if total == 0:
        return 0, float("nan")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=qat.lr, weight_decay=0.0)
    criterion = nn.CrossEntropyLoss()
    _train_mode(model)
    steps, loss_value = 0, float("nan")
    with progress.task("qat", total=total) as advance:
        while steps < total:
            for images, labels in loader:
                optimizer.zero_grad(set_to_none=True)
                loss = criterion(model(images), labels)
                loss.backward()
                optimizer.step()
                steps += 1
                loss_value = float(loss.detach())
                advance(1, f"loss {loss_value:.3f}")
                if steps >= total:
                    break
    model.eval()
    return steps, loss_value


def _train_mode(model: nn.Module) -> None:
    model.train()
    for layer in model.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.eval()


def _convert(model: nn.Module, *, input_shape: tuple[int, ...], name: str):
    """An ``openvino.Model`` with a fixed input shape; weight FakeQuantizes folded into int8 constants."""
    import openvino as ov
    from openvino._offline_transformations import compress_quantize_weights_transformation

    model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # TorchScript tracing warns about NNCF's quantizers (".item()" calls, and a trace check whose outputs
        # differ by about one quantization step): expected; the exported IR is evaluated on the holdout split.
        warnings.simplefilter("ignore")
        try:
            ov_model = ov.convert_model(model, example_input=torch.zeros(input_shape), input=[input_shape])
        except Exception as exc:
            raise ConfigError(f"OpenVINO cannot convert the QAT model {name}: {runtime_message(exc)}") from None
    compress_quantize_weights_transformation(ov_model)
    return ov_model


def _holdout_top1(artifact: Artifact, splits: DataSplits) -> float:
    """Top-1 of the exported IR on the holdout split, through edgeflow's OpenVINO backend in f32."""
    from edgeflow.accuracy import evaluate_compiled
    from edgeflow.backends.base import RuntimeSettings
    from edgeflow.backends.openvino import OpenVINOBackend

    compiled = OpenVINOBackend().compile(artifact, settings=RuntimeSettings(execution_precision="f32"))
    return evaluate_compiled(compiled, splits.holdout, split="holdout").top1


@contextlib.contextmanager
def _nncf_errors(name: str) -> Iterator[None]:
    """A failure inside NNCF's torch backend becomes a ConfigError that names the model."""
    with _extension_timeout():
        try:
            yield
        except EdgeflowError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"NNCF's torch backend cannot quantize {name} for QAT: {runtime_message(exc)}; "
                "use nncf-ptq on the exported model instead"
            ) from exc


@contextlib.contextmanager
def _extension_timeout() -> Iterator[None]:
    """NNCF compiles a C++ extension on first use and gives up after NNCF_EXTENSION_LOAD_TIMEOUT seconds."""
    from nncf.torch.extensions import ExtensionLoaderTimeoutException

    try:
        yield
    except ExtensionLoaderTimeoutException:
        raise RuntimeUnavailableError(
            "NNCF could not build its torch CPU extension in time; set NNCF_EXTENSION_LOAD_TIMEOUT=600 "
            "(seconds) and run again"
        ) from None


class NncfQat(QuantizationMethod):
    """Quantization-aware fine-tuning of the torch model with NNCF, exported as int8 IR."""

    name = "nncf-qat"
    backends = ("openvino",)
    config = NncfQatConfig
    tier = 2
    needs_module = True

    def quantize(self, job: QuantizeJob) -> tuple[Artifact, QuantizationStats]:
        if job.module is None:
            raise ConfigError("quantization-aware training needs a torch model, not ONNX")
        return quantization_aware_training(
            job.module, splits=job.splits, config=job.config, input_shape=job.input_shape, path=job.path,
            seed=job.seed, progress=job.progress,
        )  # fmt: skip
