"""Nightly benchmark matrices with a history and noise-aware regression detection (``edgeflow nightly``)."""

from edgeflow.nightly.config import NightlySpec, load_nightly
from edgeflow.nightly.history import History, HistoryError
from edgeflow.nightly.report import NightReport
from edgeflow.nightly.run import run_nightly

__all__ = ["History", "HistoryError", "NightReport", "NightlySpec", "load_nightly", "run_nightly"]
