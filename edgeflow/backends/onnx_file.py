"""The ONNX file format, which several runtimes read (ONNX Runtime, OpenVINO's ONNX frontend, TensorRT's parser):
loading and checking a file once, before any of them sees it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeflow.errors import ModelLoadError, first_line
from edgeflow.io import describe_os_error


def load_onnx(path: str | Path) -> Any:
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
