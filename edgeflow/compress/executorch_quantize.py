"""ExecuTorch's own INT8: PT2E quantization of the torch model with XNNPACK's quantizer (symmetric int8
activations, per-channel int8 weights), calibrated on train images, then lowered to XNNPACK like the float
program (:mod:`edgeflow.export.executorch`). It quantizes the torch model, not a file: a ``.pte`` cannot be
quantized after the fact."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

import torch

from edgeflow.artifact import Artifact
from edgeflow.compress.layers import module_name
from edgeflow.compress.method import (
    FloatLayerOptions,
    PerChannelOptions,
    QuantizationMethod,
    QuantizeJob,
    QuantizeOptions,
)
from edgeflow.compress.stats import CHOSEN_REASON, FloatLayer, QuantizationStats
from edgeflow.data import calibration_subset
from edgeflow.data.splits import image_stacks
from edgeflow.errors import ConfigError, ModelLoadError, first_line
from edgeflow.export.executorch import program_cost, write_program

_WEIGHTED = {"conv2d", "linear", "conv1d", "conv_transpose2d"}


class ExecuTorchPt2eConfig(QuantizeOptions, PerChannelOptions, FloatLayerOptions):
    """PT2E with ExecuTorch's XNNPACK quantizer."""


def quantize_pt2e(job: QuantizeJob) -> tuple[Artifact, QuantizationStats]:
    """The torch model quantized by PT2E (XNNPACKQuantizer), calibrated on ``subset_size`` train images, lowered
    to an int8 XNNPACK ``.pte`` at ``job.path``."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    config: ExecuTorchPt2eConfig = job.config
    shape = tuple(job.input_shape)
    example = (torch.zeros(shape),)
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=config.per_channel))
    kept = float_modules(job.module, config.float_layers)
    if kept:  # XNNPACKQuantizer takes no "no config" per module: its filter leaves these modules' nodes unannotated
        quantizer.set_filter_function(_outside(kept))
    images = image_stacks(calibration_subset(job.splits.train, size=config.subset_size, seed=job.seed),
                          input_shape=shape, what="calibration")  # fmt: skip
    with _quiet():
        try:
            graph = torch.export.export(job.module.eval(), example).module()
            prepared = prepare_pt2e(graph, quantizer)
            with torch.no_grad():
                for batch in images:
                    prepared(torch.from_numpy(batch))
            converted = convert_pt2e(prepared)
            exported = torch.export.export(converted, example)
        except Exception as exc:
            raise ModelLoadError(
                f"ExecuTorch's PT2E quantizer could not quantize the model: {first_line(exc)}"
            ) from None
        quantized = _quantized_layers(converted)
        cost = program_cost(job.base) if job.base.format == "executorch" else None
        write_program(exported, path=job.path, int8=True, cost=cost)
    summary = QuantizationStats(
        method="executorch-pt2e",
        settings={
            "quantizer": "XNNPACKQuantizer (symmetric)",
            "per_channel": config.per_channel,
            "calibration_images": len(images) * shape[0],
            **({"float_layers": list(config.float_layers)} if config.float_layers else {}),
        },  # fmt: skip
        quantized_layers=quantized,
        float_layers=[
            FloatLayer(name=name, type=type(job.module.get_submodule(name)).__name__, reason=CHOSEN_REASON)
            for name in kept
        ],
    )
    artifact = Artifact(format="executorch", path=job.path, precision="int8", input_shape=shape,
                        lineage=[*job.base.lineage, "executorch-pt2e int8 (XNNPACKQuantizer)"])  # fmt: skip
    return artifact, summary


def float_modules(module: torch.nn.Module, float_layers: list[str]) -> list[str]:
    """The torch modules ``float_layers`` (float ONNX node names, or module names) came from.

    Raises:
        ConfigError: a name that leads to no module of the model.
    """
    names = []
    for layer in float_layers:
        name = module_name(layer) if layer.startswith("/") else layer
        try:
            module.get_submodule(name)
        except AttributeError:
            raise ConfigError(f"quantize.float_layers: {layer!r} is not a layer of the model") from None
        names.append(name)
    return names


def _outside(modules: list[str]):
    """A node filter: True for nodes that come from none of ``modules`` (by the exported graph's module stack)."""

    def keep(node) -> bool:
        stack = node.meta.get("nn_module_stack") or {}
        paths = [str(value[0]) for value in stack.values()]
        return not any(path == name or path.startswith(name + ".") for path in paths for name in modules)

    return keep


def _quantized_layers(graph_module: torch.fx.GraphModule) -> int:
    """Convolutions and linear layers whose weight comes through a dequantize node."""
    count = 0
    for node in graph_module.graph.nodes:
        name = getattr(node.target, "__name__", str(node.target)).split(".")[0]
        if node.op == "call_function" and name in _WEIGHTED and len(node.args) > 1:
            weight = node.args[1]
            source = getattr(weight, "target", None)
            if source is not None and "dequantize" in getattr(source, "__name__", str(source)):
                count += 1
    return count


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


class ExecuTorchPt2e(QuantizationMethod):
    """ExecuTorch's PT2E quantization with its XNNPACK quantizer, on the torch model."""

    name = "executorch-pt2e"
    float_units = ("layer", "gate")
    backends = ("executorch",)
    config = ExecuTorchPt2eConfig
    needs_module = True

    def quantize(self, job: QuantizeJob) -> tuple[Artifact, QuantizationStats]:
        return quantize_pt2e(job)
