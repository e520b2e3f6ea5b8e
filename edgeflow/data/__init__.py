"""Data sets: built-in digits and digits-hard, ImageFolder directories, splits and calibration subsets."""

from edgeflow.data.load import list_datasets, load_data
from edgeflow.data.splits import DataSplits, ImageDataset, calibration_subset, make_loader, spread_indices

__all__ = [
    "DataSplits",
    "ImageDataset",
    "calibration_subset",
    "list_datasets",
    "load_data",
    "make_loader",
    "spread_indices",
]
