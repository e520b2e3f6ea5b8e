"""Export: torch -> ONNX (:mod:`~edgeflow.export.onnx`), the float ONNX every variant starts from, and one module
per runtime whose float artifact is made another way (each backend names its exporter: ``Backend.exporter``).
Parity with torch is measured by :func:`edgeflow.accuracy.measure_parity`."""
