"""Latency where no device is attached: estimates, always labelled so (``measured: false``).

* :mod:`edgeflow.latency.roofline` from the descriptor's published peak compute and bandwidth;
* :mod:`edgeflow.latency.table` from a lookup table of blocks measured on the device beforehand
  (``edgeflow devices calibrate``).
"""

from edgeflow.latency.estimate import LatencyEstimate

__all__ = ["LatencyEstimate"]
