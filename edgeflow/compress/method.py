"""The interface of a quantization method: one declaration each (its name, the backends it builds artifacts for,
its own config model, one call), registered in :data:`edgeflow.compress.METHODS`.

A method module ends with its declaration (``edgeflow/compress/ort_quantize.py`` has two)::

    class MyStatic(QuantizationMethod):
        name = "my-static"
        backends = ("my-runtime",)
        config = MyStaticConfig  # QuantizeOptions and the keys it reads

        def quantize(self, job: QuantizeJob) -> tuple[Artifact, QuantizationStats]:
            return my_quantizer(job.base, calibration=job.splits.train, config=job.config, path=job.path)

``auto`` is a policy over the registered methods (:func:`edgeflow.compress.auto_methods`): the backend's
default first, then every other method that serves it, cheapest :attr:`QuantizationMethod.tier` first.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from edgeflow.artifact import Artifact
from edgeflow.config import StrictModel

if TYPE_CHECKING:
    from edgeflow.backends.base import RuntimeSettings
    from edgeflow.compress.stats import QuantizationStats
    from edgeflow.data import DataSplits
    from edgeflow.progress import Progress


class QuantizeOptions(StrictModel):
    """What every quantization method reads: how many calibration images, and the holdout budget."""

    subset_size: int = Field(default=300, ge=1, description="calibration images from the train split")
    max_drop: float = Field(
        default=0.01, ge=0, le=1, description="largest top-1 drop (fraction) on the holdout split, vs float"
    )


class GateOptions(StrictModel):
    """Methods that can keep squeeze-and-excitation gates in float."""

    squeeze_excitation: Literal["int8", "float"] = Field(
        default="int8",
        description="squeeze-and-excitation gates (found in the graph: pool, 1x1 convolutions, sigmoid, multiply): "
        "quantized like the rest, or kept in float: "
        "their INT8 rounding scales whole channels, so float gates agree more with the float model, but they hold "
        "a third of MobileNetV3's weights, so the file grows (the Imagenette reports in reports/ have both)",
    )


class FloatLayerOptions(StrictModel):
    """Methods that can keep chosen weighted layers in float (mixed precision)."""

    float_layers: list[str] = Field(
        default=[],
        description="weighted layers (convolutions, matrix products) kept in float, by their node name in the "
        "float ONNX, e.g. /features/features.1/block/block.1/fc1/Conv; edgeflow's mixed precision chooses them "
        "from the sensitivity it measures (edgeflow.mixed_precision)",
    )


class PerChannelOptions(StrictModel):
    """Methods that can scale weights per output channel or per tensor."""

    per_channel: bool = Field(default=True, description="per-channel weight scales (ort-static)")


@dataclass
class QuantizeJob:
    """Everything a method may read: the float artifact, the data, its config, where to write, and the torch
    model and device settings for the methods that need them."""

    base: Artifact
    splits: DataSplits
    config: Any  # the method's own config model
    path: Path
    seed: int = 0
    module: Any = None  # the torch model (None for an ONNX input)
    input_shape: tuple[int, ...] | None = None
    progress: Progress | None = None
    settings: RuntimeSettings | None = None  # the device's runtime settings, for methods that time candidates
    onnx: Artifact | None = None  # the float ONNX ``base`` was built from (layers are named by it: float_layers)


class QuantizationMethod(ABC):
    """A way of building an INT8 artifact from a float one."""

    name: ClassVar[str]
    #: the backends whose INT8 artifacts it builds
    backends: ClassVar[tuple[str, ...]]
    #: its own settings: a recipe's ``quantize:`` naming it may set these keys and no others
    config: ClassVar[type[StrictModel]]
    #: where ``auto`` tries it among a backend's methods after the default, cheapest first (0: post-training,
    #: 1: post-training with an accuracy loop, 2: training); None: ``auto`` never tries it
    tier: ClassVar[int | None] = 0
    #: it quantizes the torch model, not a float file (an ONNX input cannot use it)
    needs_module: ClassVar[bool] = False
    #: the kinds of unit (:data:`edgeflow.compress.layers.UNIT_KINDS`) whose nodes its config's ``float_layers``
    #: can keep in float (mixed precision); empty: it keeps none
    float_units: ClassVar[tuple[str, ...]] = ()

    def attempts(self, config: Any) -> list[tuple[str, dict[str, Any]]]:
        """The tries this method stands for under ``config``, as (label, config update): one, unless a setting
        asks for a search (``ort-static``'s ``calibrate_method: auto`` is one try per calibration)."""
        return [(self.name, {})]

    @abstractmethod
    def quantize(self, job: QuantizeJob) -> tuple[Artifact, QuantizationStats]:
        """The INT8 artifact, written to ``job.path``, and what was done."""

    def own_config(self, settings: StrictModel) -> Any:
        """This method's config, read from a recipe's ``quantize:`` settings (which may hold other methods' keys
        under ``auto``)."""
        fields = self.config.model_fields
        return self.config.model_validate({key: getattr(settings, key) for key in fields if hasattr(settings, key)})
