"""ExecuTorch programs (``.pte``) for phones: the float torch module lowered to XNNPACK, and a runner that
executes a ``.pte`` with ExecuTorch's own runtime (to check it gives the model's answers).

ExecuTorch is optional (``pip install edgeflow[executorch]``); :func:`executorch_available` says whether it
is here. Only float programs are written: ExecuTorch's int8 path (PT2E quantization) is not wired in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgeflow.errors import ModelLoadError, first_line
from edgeflow.io import atomic_path


def executorch_available() -> bool:
    try:
        import executorch.exir  # noqa: F401
        import executorch.runtime  # noqa: F401
    except Exception:  # an install without its native parts is as good as none
        return False
    return True


def export_pte(module: torch.nn.Module, *, input_shape: tuple[int, ...], path: Path) -> Path:
    """``module`` (float, eval) exported with torch.export and lowered to XNNPACK, written to ``path``."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    example = (torch.zeros(input_shape),)
    try:
        exported = torch.export.export(module.eval(), example)
        program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch()
    except Exception as exc:  # torch.export refuses some Python control flow: say so, in one line
        raise ModelLoadError(f"ExecuTorch could not export the model: {first_line(exc)}") from None
    with atomic_path(path) as temporary:
        temporary.write_bytes(program.buffer)
    return path


def run_pte(path: Path, batch: np.ndarray) -> np.ndarray:
    """Logits of ``batch`` (N images, one at a time) from the ``.pte`` through ExecuTorch's runtime."""
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")
    outputs = [method.execute([torch.from_numpy(np.ascontiguousarray(image[None]))])[0] for image in batch]
    return np.concatenate([output.numpy().reshape(1, -1) for output in outputs])
