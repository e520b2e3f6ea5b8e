"""Where and how edgeflow writes.

* Files are written atomically (a temporary name in the same folder, renamed into place only when complete) and
  get the mode the user's umask gives, like any file the user's own programs write.
* An output folder is edgeflow's only if edgeflow made it: every folder it writes holds ``.edgeflow.json``, which
  lists the entries edgeflow wrote there. A folder edgeflow did not make is never emptied or replaced (a command
  that owns its folder refuses it; one that adds files to a folder never overwrites a file it did not write),
  and files a user added inside an edgeflow folder survive its replacement.
* An operating-system failure while writing (a full disk, a read-only filesystem, no permission, too many open
  files) is one :class:`~edgeflow.errors.OutputError` naming the file and the cause, also where a library's
  writer hides the errno behind its own exception.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from edgeflow.errors import EdgeflowError, OutputError, first_line

MARKER = ".edgeflow.json"
# The files edgeflow's reports leave behind, by which a folder written before the marker existed is still known
# as edgeflow's (only the entries the new output writes again are then replaced).
_EARLIER_SIGNS = ("report.json", "search.json", "night.json", "state/state.json", "history.sqlite")
# A library that writes through its own streams (torch.save, OpenVINO) raises its own exception on a full disk;
# a filesystem with less than this left is taken as the cause.
_FULL_BELOW = 16 << 20
_CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the filesystem",
    errno.EROFS: "read-only filesystem",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EMFILE: "too many open files (raise ulimit -n)",
    errno.ENFILE: "too many open files in the system",
    errno.EIO: "input/output error",
    errno.ENAMETOOLONG: "file name too long",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}


# Staging folders being built and the folder each becomes: a failure names the file the user will look for.
_STAGED: contextvars.ContextVar[tuple[tuple[Path, Path], ...]] = contextvars.ContextVar("staged", default=())


def file_mode() -> int:
    """The mode the user's umask gives a new file (0644 under the usual 022)."""
    return 0o666 & ~_umask()


def folder_mode() -> int:
    """The mode the user's umask gives a new folder (0755 under the usual 022)."""
    return 0o777 & ~_umask()


def _umask() -> int:
    with contextlib.suppress(OSError, ValueError):  # Linux >= 4.7 says it without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def describe_os_error(error: OSError, *, path: str | Path | None = None) -> str:
    """One line for an operating-system failure: the file (``path`` where given, else the error's own) and the
    cause in words."""
    cause = _CAUSES.get(error.errno) or (error.strerror or first_line(error)).lower()
    name = path if path is not None else error.filename
    return f"{_shown(Path(str(name)))}: {cause}" if name else cause


def os_refusal(path: str | Path) -> str | None:
    """Why the operating system will not let this process open ``path`` (a permission, too many open files), as
    :func:`describe_os_error` says it, or None: what to say where a library only reports it "cannot read" a file."""
    try:
        with open(path, "rb"):
            return None
    except OSError as exc:
        return describe_os_error(exc, path=path) if exc.errno in _CAUSES else None


def _shown(path: Path) -> Path:
    """``path`` under the name it will have once its staging folder is in place."""
    for staging, final in reversed(_STAGED.get()):
        with contextlib.suppress(ValueError):
            return _shown(final / path.relative_to(staging))
    return path


@contextlib.contextmanager
def _staging(staging: Path, final: Path) -> Iterator[None]:
    token = _STAGED.set((*_STAGED.get(), (staging, final)))
    try:
        yield
    finally:
        _STAGED.reset(token)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` (with the umask's mode) if the block succeeds."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    try:
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    except OSError as exc:
        raise OutputError(f"cannot write {describe_os_error(exc, path=path)}") from None
    os.close(handle)
    temporary = Path(name)
    try:
        with _failures_named(temporary, shown=path):
            yield temporary
            temporary.chmod(file_mode())  # mkstemp's 0600 would otherwise survive the rename
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


def check_output_folder(folder: str | Path, *, reading: Iterable[str | Path | None] = ()) -> None:
    """Refuse ``folder`` as the folder a command owns (it replaces it or fills it) before any work is done.

    Refused: the current folder or one that holds it (``.``, ``..``), the home folder or one that holds it
    (``~``, ``/``), a folder holding something the run reads (``reading``: the model, the data set, a labels
    file) or lying inside a data set, something that is not a folder, and an existing folder with entries that
    edgeflow did not make (told by what edgeflow leaves in its folders, not by the folder's name).

    Raises:
        OutputError: one line saying why and what to do.
    """
    given = Path(folder)
    resolved = given.expanduser().resolve()
    here, home = Path.cwd().resolve(), Path.home().resolve()
    if resolved == here or resolved in here.parents:
        raise OutputError(
            f"--out {folder} is the current folder or holds it; edgeflow replaces its output folder whole: "
            f"name a new folder (e.g. --out {given / 'edgeflow-out'})"
        )
    if resolved == home or resolved in home.parents:
        raise OutputError(f"--out {folder} is your home folder or holds it; name a new folder for edgeflow's output")
    for item in reading:
        path = Path(item).expanduser() if item is not None else None
        if path is None or not path.exists():
            continue  # a registry name (digits, mobilenet_v3_small) reads nothing on disk
        read = path.resolve()
        if read == resolved or resolved in read.parents:
            raise OutputError(f"--out {folder} holds {item}, which this run reads; choose another --out")
        if read.is_dir() and read in resolved.parents:
            raise OutputError(f"--out {folder} is inside {item}, which this run reads as data; choose another --out")
    if given.is_symlink() or (given.exists() and not given.is_dir()):
        raise OutputError(f"output path {folder} exists and is not a folder; choose another --out")
    owned = _owned(given) if given.is_dir() else None
    if given.is_dir() and (owned is None or not owned.made):
        foreign = [name for name in _listing(given) if owned is None or not owned.wrote(given, name)]
        if foreign:
            raise OutputError(
                f"{folder} holds files edgeflow did not write ({_named(foreign)}); edgeflow never empties or "
                "replaces a folder it did not make: choose a new --out (nothing was written)"
            )


def claim_folder(folder: str | Path, *, reading: Iterable[str | Path | None] = ()) -> Path:
    """Check ``folder`` (:func:`check_output_folder`) and create it, for a command that fills its folder in place
    over time (a resumable search, the nightly's history and nights); :func:`mark_folder` once it has written
    there. The entries it writes are named by the command; nothing else in the folder is ever removed."""
    folder = Path(folder)
    check_output_folder(folder, reading=reading)
    ensure_writable_dir(folder)
    return folder


def mark_folder(folder: str | Path) -> None:
    """Mark a folder a command filled in place as edgeflow's (until then its own files tell: state/state.json,
    history.sqlite)."""
    if not (Path(folder) / MARKER).exists():
        _write_marker(Path(folder), made=True, entries=None)


@contextlib.contextmanager
def staged_dir(final: Path, *, reading: Iterable[str | Path | None] = ()) -> Iterator[Path]:
    """Build a whole output folder under a temporary name, then put it in place of ``final`` in one step.

    ``final`` is checked first (:func:`check_output_folder`). On success the entries edgeflow wrote there
    before are replaced by the new ones, while any entry a user added (a note, a copied photo) is carried into
    the new folder; a user's entry the new output would replace is refused by name instead. Nothing is left
    behind if the block fails, and an earlier ``final`` is untouched then.
    """
    given, reading = Path(final), list(reading)
    check_output_folder(given, reading=reading)
    final = given.expanduser().resolve()  # 'a/b/..' is a, and its staging folder lies beside a, not in b
    ensure_writable_dir(final.parent)
    try:
        staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.staging-"))
    except OSError as exc:
        raise OutputError(f"cannot write {describe_os_error(exc, path=final)}") from None
    try:
        with _staging(staging, given), _failures_named(staging):
            yield staging
        check_output_folder(given, reading=reading)  # it may have changed during a long run
        try:
            _install(staging, final, shown=given)
        except OSError as exc:
            raise OutputError(f"cannot replace {describe_os_error(exc, path=given)}; it is as it was") from None
    finally:
        _discard(staging)


@contextlib.contextmanager
def staged_entries(folder: Path, *, names: Iterable[str] = ()) -> Iterator[Path]:
    """Build files under a temporary folder inside ``folder``, then move each into ``folder`` (for commands that
    add files to a folder: export, quantize). A file edgeflow wrote there before is replaced; one it did not
    write is never overwritten (refused by name, nothing moved: ``names``, the files the block will write, are
    checked before it runs). Other files in ``folder`` are left alone."""
    given = Path(folder)
    _refuse_clash(given, list(names))
    folder = given.expanduser().resolve()
    created = not folder.exists()
    ensure_writable_dir(folder)
    try:
        staging = Path(tempfile.mkdtemp(dir=folder, prefix=".edgeflow-staging-"))
    except OSError as exc:
        raise OutputError(f"cannot write {describe_os_error(exc, path=folder)}") from None
    placed = False
    try:
        with _staging(staging, given), _failures_named(staging):
            yield staging
            written = sorted(os.listdir(staging))
            owned = _refuse_clash(given, written)
            for name in written:
                (staging / name).replace(folder / name)
            if owned is None or owned.entries is not None:
                earlier = [name for name in (owned.entries or {}) if owned.wrote(folder, name)] if owned else []
                _write_marker(folder, made=created or bool(owned and owned.made), entries=[*earlier, *written])
            placed = True
    finally:
        _discard(staging)
        if created and not placed:  # a folder made for this run and left empty by its failure goes too
            with contextlib.suppress(OSError):
                folder.rmdir()


def _refuse_clash(folder: Path, names: list[str]) -> _Owned | None:
    """Refuse to write ``names`` into ``folder`` where one is a file edgeflow did not write; returns what
    edgeflow owns there."""
    owned = _owned(folder) if folder.is_dir() else None
    clash = [
        name for name in names
        if _exists(folder / name) and (owned is None or (owned.entries is not None and not owned.wrote(folder, name)))
    ]  # fmt: skip
    if clash:
        raise OutputError(
            f"{folder} already holds {_named(clash)}, which edgeflow did not write; move it away or choose "
            "another --out (nothing was written)"
        )
    return owned


def unused_path(path: Path, *, suffix: str = "") -> Path:
    """``path`` + ``suffix``, or the first of ``path-2``, ``path-3``, ... + ``suffix`` that does not exist: a name
    beside files that are never overwritten."""
    candidate, number = path.with_name(path.name + suffix), 1
    while _exists(candidate):
        number += 1
        candidate = path.with_name(f"{path.name}-{number}{suffix}")
    return candidate


def json_digest(data: Any, *, length: int = 16) -> str:
    """A short hex SHA-256 of ``data`` written as sorted JSON (what is not JSON, as its ``str``): the key of a cache
    or a resumable state, tied to everything in ``data``."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:length]


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Owned:
    """What edgeflow left in a folder: whether it made the folder, and each entry it wrote with the size and
    modification time a file had then (a file the user put under that name since is the user's). ``entries``
    None: not known (a folder filled in place, or written before the marker existed): then only the entries it
    writes again are its."""

    def __init__(self, *, made: bool, entries: dict[str, str | None] | None) -> None:
        self.made, self.entries = made, entries

    def wrote(self, folder: Path, name: str) -> bool:
        """Whether ``folder/name`` is still what edgeflow wrote there."""
        if self.entries is None or name not in self.entries:
            return False
        recorded = self.entries[name]
        return recorded is None or recorded == _fingerprint(folder / name)


def _owned(folder: Path) -> _Owned | None:
    """What edgeflow left in ``folder`` (None: nothing, it is not edgeflow's)."""
    marker = folder / MARKER
    if marker.is_file():
        try:
            data = json.loads(marker.read_text())
            made, entries = bool(data.get("made_here", True)), data.get("entries")
        except (OSError, ValueError, AttributeError):
            made, entries = True, None  # damaged: edgeflow's folder, but no entry is provably edgeflow's
        return _Owned(made=made, entries=entries if isinstance(entries, dict) else None)
    if any((folder / sign).is_file() for sign in _EARLIER_SIGNS):
        return _Owned(made=True, entries=None)
    return None


def _fingerprint(path: Path) -> str | None:
    """A file's size and modification time (what tells a file rewritten since); None for a folder or a link."""
    try:
        stats = path.lstat()
    except OSError:
        return "missing"
    return f"{stats.st_size}:{stats.st_mtime_ns}" if stat.S_ISREG(stats.st_mode) else None


def _write_marker(folder: Path, *, made: bool, entries: Iterable[str] | None) -> None:
    from edgeflow import __version__

    write_json(
        folder / MARKER,
        {
            "written_by": f"edgeflow {__version__}",
            "about": "what edgeflow wrote here: its next run replaces these entries (where the list is null, those "
            "it writes again) and never a file it did not write; a folder it did not make (made_here: false) is "
            "never replaced",
            "made_here": made,
            "entries": None if entries is None else {name: _fingerprint(folder / name) for name in sorted(entries)},
        },
    )


def _listing(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name != MARKER)


def _named(names: list[str], *, limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _install(staging: Path, final: Path, *, shown: Path) -> None:
    staging.chmod(folder_mode())  # mkdtemp's 0700 would hide a report folder from everyone else
    written = sorted(os.listdir(staging))
    _write_marker(staging, made=True, entries=written)
    if not final.is_dir():
        staging.rename(final)
        return
    owned = _owned(final)
    present = set(_listing(final))
    if owned is not None and owned.entries is not None:
        mine = {name for name in present if owned.wrote(final, name)}
    else:  # nothing known, or an empty folder: only what this run writes again is edgeflow's
        mine = present & set(written) if owned is not None else set()
    kept = sorted(present - mine)
    clash = [name for name in kept if name in written]
    if clash:
        raise OutputError(
            f"{shown} holds {_named(clash)}, which edgeflow did not write and this run would replace: move it "
            "away or choose another --out (the folder is as it was)"
        )
    for name in kept:  # the user's entries, linked (or copied) so that they are in the folder at every moment
        _link_tree(final / name, staging / name)
    old = _swap(staging, final)
    for name in os.listdir(old):  # anything the user added while the folders were swapped
        if name not in mine and name != MARKER and not _exists(final / name):
            (old / name).rename(final / name)
    shutil.rmtree(old, ignore_errors=True)


def _discard(folder: Path) -> None:
    """Remove a staging folder: an empty one by rmdir, which needs no file descriptor (a failure for too many
    open files still cleans up), else whole."""
    try:
        folder.rmdir()
    except FileNotFoundError:
        return
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)


def _link_tree(source: Path, target: Path) -> None:
    def link_or_copy(from_path: str, to_path: str) -> None:
        try:
            os.link(from_path, to_path, follow_symlinks=False)
        except OSError:
            shutil.copy2(from_path, to_path)

    if source.is_dir() and not source.is_symlink():
        shutil.copytree(source, target, symlinks=True, copy_function=link_or_copy)
    elif source.is_symlink():
        os.symlink(os.readlink(source), target)
    else:
        link_or_copy(str(source), str(target))


def _swap(new: Path, final: Path) -> Path:
    """Put folder ``new`` in place of folder ``final``: in one step where the system can (Linux's renameat2
    RENAME_EXCHANGE), else by two renames, the first undone if the second fails. Returns where the old folder is."""
    if _exchange(new, final):
        return new
    old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old-"))
    final.rename(old / "previous")
    try:
        new.rename(final)
    except OSError:
        (old / "previous").rename(final)
        shutil.rmtree(old, ignore_errors=True)
        raise
    return old


def _exchange(first: Path, second: Path) -> bool:
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_cwd, rename_exchange = -100, 2
    if renameat2(at_cwd, os.fsencode(first), at_cwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False  # this filesystem cannot exchange: two renames instead
    raise OSError(code, os.strerror(code), str(second))


@contextlib.contextmanager
def _failures_named(written: Path, *, shown: Path | None = None) -> Iterator[None]:
    """Turn an operating-system failure while writing ``written`` (a file, or a folder being filled) into one
    OutputError naming the file (``shown``: the file's name once in place) and the cause."""
    try:
        yield
    except EdgeflowError:
        raise
    except Exception as exc:
        failure = _write_failure(exc, written=written, shown=shown)
        if failure is None:
            raise
        raise failure from exc


def _write_failure(exc: Exception, *, written: Path, shown: Path | None) -> OutputError | None:
    def name() -> Path | None:  # the file being written: the one named, else the newest in the staging folder
        newest = shown if shown is not None else _newest_file(written) if written.is_dir() else written
        return None if newest is None else _shown(newest)

    if isinstance(exc, OSError) and exc.errno in _CAUSES:
        if exc.filename is not None and _is_within(Path(str(exc.filename)), written):
            return OutputError(f"cannot write {describe_os_error(exc, path=shown or _shown(Path(str(exc.filename))))}")
        if exc.filename is None and (known := name()) is not None:
            return OutputError(f"cannot write {describe_os_error(exc, path=known)}")
        return None  # a failure elsewhere (reading an input): the caller's own message, or the CLI's one line
    free = _free_bytes(written.parent)
    if free is not None and free < _FULL_BELOW and (known := name()) is not None:
        return OutputError(
            f"cannot write {known}: no space left on device ({free / 2**20:.1f} MiB free; {first_line(exc)})"
        )
    return None


def _newest_file(folder: Path) -> Path | None:
    newest, newest_time = None, -1
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                modified = os.lstat(os.path.join(root, name)).st_mtime_ns
                if modified >= newest_time:
                    newest, newest_time = Path(root) / name, modified
    return newest


def _free_bytes(folder: Path) -> int | None:
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def _is_within(path: Path, written: Path) -> bool:
    try:
        return path.resolve().is_relative_to(written.resolve())
    except OSError:
        return False
