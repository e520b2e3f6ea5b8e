"""Model sources: torchvision's classifiers, timm's, MobileNet v1, pretrained weights by name, local checkpoints
and ONNX files.

Example:
    >>> from edgeflow.models import create_model, model_info
    >>> model_info("mobilenetv3").name
    'mobilenet_v3_large'
    >>> model = create_model("mobilenet_v1", num_classes=10, width=0.5)
"""

from edgeflow.backends.onnx_file import load_onnx
from edgeflow.models._registry import (
    ModelEntry,
    ModelInfo,
    check_resolution,
    count_parameters,
    create_model,
    list_models,
    model_info,
    register_model,
)
from edgeflow.models.checkpoint import LoadedWeights, load_checkpoint, load_weights

__all__ = [
    "LoadedWeights",
    "ModelEntry",
    "ModelInfo",
    "check_resolution",
    "count_parameters",
    "create_model",
    "list_models",
    "load_checkpoint",
    "load_onnx",
    "load_weights",
    "model_info",
    "register_model",
]
