"""Export to ONNX and IR keeps the numbers (parity) and the fp32 weights; writes are atomic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeflow.accuracy import measure_parity
from edgeflow.export.onnx import export_onnx
from edgeflow.export.openvino import convert_to_openvino
from edgeflow.io import staged_dir
from edgeflow.profiling.cost import artifact_cost


def test_parity_statistics() -> None:
    reference = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
    candidate = np.array([[0.9, 0.0], [0.0, 1.0], [0.0, 1.0]])
    stats = measure_parity(reference, candidate, reference_name="torch", runtime="x")
    assert stats.max_abs_diff == pytest.approx(2.0)
    assert stats.top1_agreement == pytest.approx(2 / 3)
    assert stats.samples == 3


def test_onnx_and_ir_files(tiny_artifacts) -> None:
    onnx_artifact, ir = tiny_artifacts["onnx"], tiny_artifacts["openvino"]
    assert onnx_artifact.input_shape == (1, 3, 16, 16)
    assert ir.files[1].suffix == ".bin" and ir.files[1].exists()
    # fp32 weights stay fp32 (OpenVINO's save_model would halve them by default)
    params = artifact_cost(ir).params
    assert ir.files[1].stat().st_size >= 4 * params
    assert not list(ir.path.parent.glob(".*"))  # no temporary files left beside them


def test_export_failure_leaves_nothing(tmp_path: Path) -> None:
    import torch

    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("cannot trace me")

    with pytest.raises(RuntimeError):
        export_onnx(Broken(), input_shape=(1, 3, 8, 8), path=tmp_path / "broken.onnx")
    assert list(tmp_path.iterdir()) == []


def test_staged_dir_replaces_only_on_success(tmp_path: Path) -> None:
    final = tmp_path / "out"
    with staged_dir(final) as stage:
        (stage / "a.txt").write_text("first")
    assert (final / "a.txt").read_text() == "first"
    with pytest.raises(ValueError), staged_dir(final) as stage:
        (stage / "a.txt").write_text("second")
        raise ValueError("run failed half-way")
    assert (final / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_converting_a_corrupt_onnx_is_a_clear_error(tmp_path: Path) -> None:
    from edgeflow.artifact import Artifact
    from edgeflow.errors import ModelLoadError

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ModelLoadError, match="bad.onnx"):
        convert_to_openvino(Artifact(format="onnx", path=bad), path=tmp_path / "bad.xml")
    assert not (tmp_path / "bad.xml").exists()
