"""INT8 post-training quantization with NNCF, calibrated on the train split.

OpenVINO IR in, IR out; or ONNX in, QDQ ONNX out (the format TensorRT and mobile runtimes consume).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from edgeflow.artifact import Artifact
from edgeflow.backends import get_backend, host_runtime
from edgeflow.backends.base import RuntimeSettings
from edgeflow.backends.openvino import read_model, static_input_shape
from edgeflow.compress.method import FloatLayerOptions, GateOptions, QuantizationMethod, QuantizeJob, QuantizeOptions
from edgeflow.compress.squeeze_excitation import find_gates, node_names
from edgeflow.compress.stats import QuantizationStats, summarize
from edgeflow.config import StrictModel
from edgeflow.data import DataSplits, ImageDataset, calibration_subset
from edgeflow.data.splits import image_stacks
from edgeflow.errors import ConfigError, DataError, ShapeError
from edgeflow.export.openvino import save_openvino
from edgeflow.profiling.loop import ProfileConfig

_QUANTIZED_OPS = {"FakeQuantize", "FakeConvert"}
# Activations whose outputs go negative: symmetric (performance) activation ranges waste half their codes.
_NEGATIVE_ACTIVATIONS = {"HSwish", "Swish", "Gelu", "Elu", "PRelu", "Mish", "SoftPlus", "Selu"}
MIN_CALIBRATION_SAMPLES = 8


class IgnoredScopeConfig(StrictModel):
    """Layers NNCF must leave in float: exact node names, regular expressions, or op types."""

    names: list[str] = []
    patterns: list[str] = []
    types: list[str] = []


class NncfPtqConfig(QuantizeOptions, GateOptions, FloatLayerOptions):
    """NNCF post-training quantization (OpenVINO IR, or QDQ ONNX from an ONNX)."""

    preset: Literal["auto", "performance", "mixed", "fastest"] = Field(
        default="auto",
        description="auto: mixed (asymmetric activations) when the model has h-swish/swish/GELU-like "
        "activations that go negative, else performance (symmetric); fastest (nncf-ptq): quantize with "
        "both, keep those within max_drop on the holdout split, time them on the device, keep the fastest",
    )
    model_type: Literal["cnn", "transformer"] = "cnn"
    ignored_scope: IgnoredScopeConfig = IgnoredScopeConfig()
    fast_bias_correction: bool = True


def is_quantized(model) -> bool:
    """True when an OpenVINO model already carries quantization (FakeQuantize or int8 weights)."""
    from edgeflow.compress.stats import layer_precisions

    if any(op.get_type_name() in _QUANTIZED_OPS for op in model.get_ordered_ops()):
        return True
    quantized, _ = layer_precisions(model)
    return bool(quantized)


def is_quantized_ir(artifact: Artifact) -> bool:
    """Whether an IR (or an ONNX read through OpenVINO) carries quantization."""
    return is_quantized(read_model(artifact))


def resolve_preset(model, config: NncfPtqConfig) -> str:
    """``auto`` (and ``fastest``, when one preset must be named): mixed (asymmetric activations) for
    h-swish/swish/GELU networks, else performance."""
    if config.preset not in ("auto", "fastest"):
        return config.preset
    kinds = {op.get_type_name() for op in model.get_ordered_ops()}
    return "mixed" if kinds & _NEGATIVE_ACTIVATIONS else "performance"


@contextlib.contextmanager
def quiet_nncf() -> Iterator[None]:
    """NNCF logs per step and imports torch's C++ extension helper, which warns about CUDA."""
    quiet = [logging.getLogger(name) for name in ("nncf", "torch.utils.cpp_extension")]
    previous = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(quiet, previous, strict=True):
            logger.setLevel(level)


def calibration_dataset(
    dataset: ImageDataset, *, size: int, input_shape: tuple[int, ...], seed: int, input_name: str | None = None
):
    """An ``nncf.Dataset`` of images from the train split in the model's batch size, checked against its input.

    With ``input_name`` each item is a feed dict, as NNCF's ONNX backend expects.
    """
    import nncf

    subset = calibration_subset(dataset, size=size, seed=seed)
    if len(subset) < min(size, MIN_CALIBRATION_SAMPLES):
        raise DataError(
            f"calibration needs at least {min(size, MIN_CALIBRATION_SAMPLES)} images; the train split has {len(subset)}"
        )
    batches = image_stacks(subset, input_shape=input_shape, what="calibration")

    def transform(array):
        return {input_name: array} if input_name is not None else array

    return nncf.Dataset(batches, transform), len(subset)


def ignored_scope(config: NncfPtqConfig, *, gates: list[str] | None = None, chosen: list[str] | None = None):
    """NNCF's ignored scope: the recipe's, plus ``gates`` and ``chosen`` (node names kept in float)."""
    import nncf

    scope = config.ignored_scope
    names = list(dict.fromkeys([*scope.names, *(gates or []), *(chosen or [])]))
    if not (names or scope.patterns or scope.types):
        return None
    return nncf.IgnoredScope(names=names, patterns=scope.patterns, types=scope.types, validate=False)


def float_gates(model, config: NncfPtqConfig) -> list[list[str]]:
    """The squeeze-and-excitation gates of an OpenVINO ``model`` that stay in float, by friendly name (those
    hold the ONNX node names too, so the names serve NNCF's ONNX backend as well)."""
    return find_gates(model) if config.squeeze_excitation == "float" else []


def float_layer_names(model, config: NncfPtqConfig, *, onnx: Path | None = None) -> list[str]:
    """``config.float_layers`` (float ONNX node names) as NNCF names them: for NNCF's ONNX backend (``onnx``, the
    file it quantizes) the ONNX names with their companions, as ort-static keeps them
    (:func:`edgeflow.compress.layers.onnx_float_nodes`); in an OpenVINO ``model``, the friendly name,
    ``<name>/WithoutBiases`` where OpenVINO split a convolution's or matrix product's bias off.

    Raises:
        ConfigError: a name that is no node of the model.
    """
    if not config.float_layers:
        return []
    if onnx is not None:
        from edgeflow.backends.onnx_file import load_onnx
        from edgeflow.compress.layers import onnx_float_nodes

        return onnx_float_nodes(load_onnx(onnx).graph, list(config.float_layers))
    names = {op.get_friendly_name() for op in model.get_ops()}
    found = []
    for layer in config.float_layers:
        match = next((name for name in (f"{layer}/WithoutBiases", layer) if name in names), None)
        if match is None:
            raise ConfigError(f"quantize.float_layers: {layer!r} is not a layer of the model")
        found.append(match)
    return found


def nncf_settings(model, config: NncfPtqConfig, *, subset: int, gates: list[list[str]]) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "preset": resolve_preset(model, config),
        "model_type": config.model_type,
        "subset_size": subset,
        "fast_bias_correction": config.fast_bias_correction,
        "squeeze_excitation": config.squeeze_excitation,
    }
    if config.squeeze_excitation == "float":
        settings["float_gates"] = len(gates)
    if config.float_layers:
        settings["float_layers"] = list(config.float_layers)
    scope = config.ignored_scope
    if scope.names or scope.patterns or scope.types:
        settings["ignored_scope"] = scope.model_dump()
    return settings


def nncf_quantize_arguments(
    settings: dict[str, Any], config: NncfPtqConfig, *, gates: list[list[str]], chosen: list[str] = ()
) -> dict[str, Any]:
    import nncf

    arguments: dict[str, Any] = {
        "preset": nncf.QuantizationPreset(settings["preset"]),
        "subset_size": settings["subset_size"],
        "fast_bias_correction": settings["fast_bias_correction"],
    }
    if config.model_type == "transformer":
        arguments["model_type"] = nncf.ModelType.TRANSFORMER
    scope = ignored_scope(config, gates=node_names(gates), chosen=list(chosen))
    if scope is not None:
        arguments["ignored_scope"] = scope
    return arguments


def quantize_nncf(
    artifact: Artifact, *, calibration: ImageDataset, config: NncfPtqConfig, path: Path, seed: int = 0
) -> tuple[Artifact, QuantizationStats]:
    """NNCF PTQ. An ``.xml`` ``path`` gives OpenVINO IR; an ``.onnx`` one (from an ONNX artifact) QDQ ONNX."""
    import nncf

    model = read_model(artifact)
    if is_quantized(model):
        raise ShapeError(f"{artifact.path} is already quantized; give the float model")
    shape = static_input_shape(
        model.inputs[0].get_partial_shape(), source=str(artifact.path), given=artifact.input_shape
    )
    input_name = model.inputs[0].get_any_name() if path.suffix == ".onnx" else None
    dataset, subset = calibration_dataset(
        calibration, size=config.subset_size, input_shape=shape, seed=seed, input_name=input_name
    )
    gates = float_gates(model, config)
    chosen = float_layer_names(model, config, onnx=Path(artifact.path) if path.suffix == ".onnx" else None)
    settings = nncf_settings(model, config, subset=subset, gates=gates)
    arguments = nncf_quantize_arguments(settings, config, gates=gates, chosen=chosen)
    with quiet_nncf():
        if path.suffix == ".onnx":
            quantized_onnx = _quantize_onnx_proto(artifact, dataset, arguments)
            _save_onnx(quantized_onnx, path)
            quantized_view = read_model(Artifact(format="onnx", path=path))
            result_format = "onnx"
        else:
            quantized_view = nncf.quantize(model, dataset, **arguments)
            save_openvino(quantized_view, path=path)
            result_format = "openvino"
    summary = summarize(
        quantized_view, method="nncf-ptq", settings=settings,
        reason="not quantized by NNCF's CNN patterns (e.g. a layer whose input is not quantizable)",
        gates=node_names(gates), chosen=chosen,
    )  # fmt: skip
    result = Artifact(
        format=result_format, path=path, precision="int8", input_shape=shape,
        lineage=[*artifact.lineage, f"nncf-ptq(preset={settings['preset']}, subset={subset})"],
    )  # fmt: skip
    return result, summary


def _quantize_onnx_proto(artifact: Artifact, dataset, arguments: dict[str, Any]):
    import nncf
    import onnx

    if artifact.format != "onnx":
        raise ShapeError(f"NNCF builds QDQ ONNX from an ONNX artifact, not from {artifact.format}")
    proto = onnx.load(str(artifact.path))
    return nncf.quantize(proto, dataset, **arguments)


def _save_onnx(proto, path: Path) -> None:
    import onnx

    from edgeflow.io import atomic_path

    with atomic_path(path) as temporary:
        onnx.save(proto, str(temporary))


# --- The fastest preset ------------------------------------------------------------------------------
# NNCF PTQ with the preset chosen by measurement: the fastest on the device among those within the budget.
#
# Which activation scheme is fastest depends on the CPU and runtime, not on the network alone: on an
# AMX Xeon, MobileNetV3 quantized with the ``performance`` preset (symmetric activations) ran 0.98-1.08x
# the speed of OpenVINO's bf16 default while ``mixed`` (asymmetric, the textbook choice for h-swish) ran
# 0.91-0.97x.
# So both are built, each is judged on the holdout split, and those within ``max_drop`` are timed in
# turn on the device's runtime (interleaved rounds, median of the per-round p50s); the fastest is kept,
# unless another within the budget runs within ``SAME_SPEED`` of it (timing noise on a shared CPU) and is more
# accurate on holdout: then that one. On Imagenette's MobileNetV3 (bench/int8_imagenette.py, 2026-12-02) the two
# presets ran 2% apart (mixed 0.870 ms, performance 0.853 ms) and performance was 0.15 points more accurate on
# holdout; in an earlier run, mixed ran 3.4% faster and was 0.3 points less accurate on test.

PRESETS = ("mixed", "performance")
TIMING_ROUNDS = 3
SAME_SPEED = 0.05  # p50s closer than this fraction are the same speed: accuracy decides
_TIMING = ProfileConfig(warmup=10, iterations=100_000, max_seconds=1.0, min_iterations=20)


def quantize_fastest_preset(
    artifact: Artifact,
    *,
    splits: DataSplits,
    config: NncfPtqConfig,
    path: Path,
    seed: int,
    settings: RuntimeSettings | None = None,
) -> tuple[Artifact, QuantizationStats]:
    """NNCF PTQ with each preset; the fastest (measured with ``settings``) within ``config.max_drop``
    (:func:`choose_preset`: accuracy decides between presets of the same speed).

    When no preset meets the budget, the most accurate is kept and the summary says so.
    """
    from edgeflow.accuracy import holdout_top1

    float_top1 = holdout_top1(artifact, splits.holdout)
    candidates: dict[str, tuple[Artifact, QuantizationStats, float]] = {}
    for preset in PRESETS:
        attempt = config.model_copy(update={"preset": preset})
        candidate_path = path.with_name(f"{path.stem}.{preset}{path.suffix}")
        quantized, summary = quantize_nncf(
            artifact, calibration=splits.train, config=attempt, path=candidate_path, seed=seed
        )
        candidates[preset] = (quantized, summary, holdout_top1(quantized, splits.holdout))
    top1s = {preset: top1 for preset, (_, _, top1) in candidates.items()}
    within = within_budget(top1s, float_top1=float_top1, max_drop=config.max_drop)
    latency = _time_in_turn({preset: candidates[preset][0] for preset in within}, settings) if len(within) > 1 else {}
    chosen, why = choose_preset(top1s, latency, float_top1=float_top1, max_drop=config.max_drop)
    notes = []
    for preset, (_, _, top1) in candidates.items():
        timing = f", p50 {latency[preset]:.3f} ms (measured)" if preset in latency else ""
        notes.append(
            f"preset {preset}: holdout top-1 {100 * top1:.2f}% (float {100 * float_top1:.2f}%){timing}"
            + (f" <- kept, {why}" if preset == chosen else "")
        )
    for preset, (quantized, _, _) in candidates.items():
        if preset != chosen:
            quantized.remove()
    quantized, summary, top1 = candidates[chosen]
    quantized.move_to(path)
    settings_record = {
        **summary.settings,
        "preset_choice": {
            preset: {"holdout_top1": top1_, "p50_ms": latency.get(preset), "measured": preset in latency}
            for preset, (_, _, top1_) in candidates.items()
        },
    }
    summary = summary.model_copy(
        update={
            "settings": settings_record,
            "holdout_top1_float": float_top1,
            "holdout_top1_quantized": top1,
            "notes": [*summary.notes, *notes],
        }
    )
    return quantized, summary


def within_budget(top1: dict[str, float], *, float_top1: float, max_drop: float) -> list[str]:
    """The presets whose holdout top-1 is at most ``max_drop`` below ``float_top1``."""
    return [preset for preset in top1 if float_top1 - top1[preset] <= max_drop + 1e-9]


def choose_preset(
    top1: dict[str, float], latency: dict[str, float], *, float_top1: float, max_drop: float
) -> tuple[str, str]:
    """The preset kept, and why: the fastest within ``max_drop`` of ``float_top1`` on holdout, or one within
    ``SAME_SPEED`` of its p50 that is more accurate; the most accurate when none is within the budget."""
    within = within_budget(top1, float_top1=float_top1, max_drop=max_drop)
    if not within:
        return max(top1, key=top1.__getitem__), "no preset within the budget: the most accurate"
    if len(within) == 1:
        return within[0], "the only preset within the budget"
    fastest = min(within, key=latency.__getitem__)
    same_speed = [preset for preset in within if latency[preset] <= latency[fastest] * (1 + SAME_SPEED)]
    best = max(same_speed, key=lambda preset: (top1[preset], preset == fastest))
    if best == fastest:
        return fastest, "fastest within the budget"
    return best, f"within {100 * SAME_SPEED:.0f}% of the fastest and more accurate"


def _time_in_turn(artifacts: dict[str, Artifact], settings: RuntimeSettings | None) -> dict[str, float]:
    """Median over rounds of each artifact's p50 (ms), the artifacts timed in turn in every round."""
    from edgeflow.profiling.in_turn import time_in_turn

    compiled = {}
    for name, artifact in artifacts.items():
        compiled[name] = get_backend(host_runtime(artifact)).compile(artifact, settings=settings or RuntimeSettings())
    return time_in_turn(compiled, rounds=TIMING_ROUNDS, config=_TIMING).medians()


class NncfPtq(QuantizationMethod):
    """NNCF post-training quantization; ``preset: fastest`` builds both presets and keeps the one that runs
    fastest on the device within the budget (:func:`quantize_fastest_preset`)."""

    name = "nncf-ptq"
    float_units = ("layer", "gate", "add")
    backends = ("openvino", "onnxruntime")
    config = NncfPtqConfig

    def quantize(self, job: QuantizeJob) -> tuple[Artifact, QuantizationStats]:
        if job.config.preset == "fastest":
            return quantize_fastest_preset(
                job.base, splits=job.splits, config=job.config, path=job.path, seed=job.seed, settings=job.settings
            )
        return quantize_nncf(job.base, calibration=job.splits.train, config=job.config, path=job.path, seed=job.seed)
