"""Export: torch -> ONNX (:mod:`~edgeflow.export.onnx`) -> OpenVINO IR (:mod:`~edgeflow.export.openvino`),
ExecuTorch programs (:mod:`~edgeflow.export.executorch`) and the ship bundle (:mod:`~edgeflow.report.bundle`).
Parity with torch is measured by :func:`edgeflow.accuracy.measure_parity`."""
