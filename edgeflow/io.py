"""Atomic writes: a temporary name in the same folder, renamed into place only when complete."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeflow.errors import OutputError


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
        for sidecar in (temporary.with_suffix(".bin"),):
            sidecar.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def ensure_writable_dir(folder: Path) -> None:
    """Create ``folder`` if needed and check that files can be created in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {folder}: {exc.strerror or exc}") from None
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {folder} is not writable")


@contextlib.contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Build a whole output folder under a temporary name, then swap it in place of ``final``.

    Nothing is left behind if the block fails; an earlier ``final`` is replaced only on success.
    """
    final = Path(final)
    ensure_writable_dir(final.parent)
    if final.exists() and not final.is_dir():
        raise OutputError(f"output path {final} exists and is not a folder")
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.staging-"))
    try:
        yield staging
        if final.exists():
            retired = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old-"))
            final.replace(retired / "previous")
            staging.replace(final)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.replace(final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
