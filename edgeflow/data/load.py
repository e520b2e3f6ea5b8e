"""Load a data set by name (the built-in ones, registered lazily by import path) or a user's folder by path."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path

from edgeflow.data.image_folder import load_image_folder
from edgeflow.data.preprocess import PreprocessSpec
from edgeflow.data.splits import DataSplits
from edgeflow.errors import DataError, UnknownNameError
from edgeflow.registry import Registry

_BUILT_INS: Registry[Callable[..., DataSplits]] = Registry("data set")
_BUILT_INS.register("digits", "edgeflow.data.digits:load_digits")
_BUILT_INS.register("digits-hard", "edgeflow.data.digits:load_digits_hard", aliases=("digits_hard",))


def list_datasets() -> list[str]:
    """Names of the built-in data sets."""
    return _BUILT_INS.names()


def load_data(
    source: str,
    *,
    resolution: int,
    seed: int = 0,
    class_map: dict[str, int] | None = None,
    preprocess: PreprocessSpec | None = None,
    split: str = "all",
) -> DataSplits:
    """Load a built-in data set by name, or an ImageFolder directory by path.

    A built-in name wins over a same-named folder in the working directory; write ``./digits`` for the
    folder.

    Args:
        source: ``"digits"``, ``"digits-hard"`` or a directory with one subfolder per class (or with
            ``train/``, ``test/`` and optionally ``val/`` or ``holdout/`` subfolders).
        resolution: side of the square images the splits return.
        seed: seed of every split and random choice; the same seed gives identical tensors.
        class_map: folder name -> model output index (:mod:`edgeflow.data.classes`), for a directory.
        preprocess: how images become the model's input (:mod:`edgeflow.data.preprocess`); its size wins over
            ``resolution``.
        split: ``train``, ``holdout`` or ``test``: a directory's other splits come back empty, their images
            never opened (what scoring one split needs; a built-in set comes back whole); ``all``: every split.

    Raises:
        UnknownNameError: ``source`` is neither a built-in name nor an existing path.
        DataError: the resolution or seed is invalid, or the directory is missing or malformed.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise DataError(f"resolution must be a positive integer, got {resolution!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise DataError(f"seed must be an integer from 0 to 2**32 - 1, got {seed!r}")
    source = str(source)
    if source.strip().lower() in _BUILT_INS:
        splits = _BUILT_INS.get(source)(resolution=resolution, seed=seed, preprocess=preprocess)
        if class_map is not None and class_map != {name: index for index, name in enumerate(splits.class_names)}:
            raise DataError(
                f"a class map or labels file maps folders of images; {source} is a built-in data set whose classes "
                f"are {', '.join(splits.class_names)} in that order"
            )
        return splits
    if _looks_like_path(source):
        return load_image_folder(
            source, resolution=resolution, seed=seed, class_map=class_map, preprocess=preprocess, split=split
        )
    close = difflib.get_close_matches(source.strip().lower(), list_datasets(), n=2)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UnknownNameError(
        f"unknown data set {source!r}{hint}; built-in data sets are "
        f"{', '.join(list_datasets())}, or give the path of an ImageFolder directory"
    )


def is_builtin(source: str) -> bool:
    """``source`` names a built-in data set (not a folder of the user's images)."""
    return str(source).strip().lower() in _BUILT_INS


def _looks_like_path(source: str) -> bool:
    return Path(source).expanduser().exists() or "/" in source or "\\" in source or source[:1] in ("~", ".")


def load_data_for_input(
    source: str,
    *,
    input_shape: tuple[int, ...],
    preprocess: PreprocessSpec | None = None,
    seed: int = 0,
    class_map: dict[str, int] | None = None,
    split: str = "all",
) -> DataSplits:
    """The data read for a compiled model's input (N x 3 x H x W, or N x H x W x 3 with ``layout: nhwc``); only
    ``split``'s images of a directory (:func:`load_data`)."""
    nhwc = preprocess is not None and preprocess.layout == "nhwc"
    size = tuple(input_shape[1:3]) if nhwc else tuple(input_shape[2:4])
    if preprocess is not None and preprocess.size is not None and tuple(preprocess.size) != size:
        raise DataError(
            f"the preprocessing's size {list(preprocess.size)} differs from the model's input {list(size)} (H, W)"
        )
    spec = (preprocess or PreprocessSpec()).model_copy(update={"size": size})
    return load_data(source, resolution=size[0], seed=seed, class_map=class_map, preprocess=spec, split=split)
