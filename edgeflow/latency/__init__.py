"""Latency where no device is attached: estimates, always labelled so (``measured: false``).

* :mod:`edgeflow.latency.roofline` from the descriptor's published peak compute and bandwidth;
* :mod:`edgeflow.latency.table` from a lookup table of blocks (:mod:`~edgeflow.latency.units`) measured on
  the device beforehand with a :class:`~edgeflow.latency.timer.Timer`, fitted on whole models
  (:mod:`edgeflow.targets.calibration`, ``edgeflow devices calibrate``). The NetAdapt search estimates its
  candidates with the same table; this package never imports the search.
"""

from edgeflow.latency.estimate import LatencyEstimate

__all__ = ["LatencyEstimate"]
