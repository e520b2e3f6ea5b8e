"""Which model output each class folder is: a labels file (one class a line, line number = output index) or a
class map (a TSV of folder name and output index, a header row allowed: Imagenette's ``classes.tsv`` is one).

Both read into a :class:`ClassMap`, ``{folder name: output index}`` that knows which file it came from (errors
name it). A map that names exactly the folders, as outputs 0 to n-1, relabels the data; one that names outputs
without a folder (10 folders of a 1,000-output model, or one folder of a labels file's two) keeps the folders as
the classes and records which output each one is, so accuracy is scored over those outputs
(:mod:`edgeflow.accuracy`).
"""

from __future__ import annotations

from pathlib import Path

from edgeflow.errors import DataError


class ClassMap(dict[str, int]):
    """Folder name -> model output index, with ``source``: where it was read from, as messages name it
    (``labels.txt``, ``classes.tsv``, ``the labels model.onnx carries``)."""

    def __init__(self, mapping: dict[str, int] | None = None, *, source: str) -> None:
        super().__init__(mapping or {})
        self.source = source

    def describe_names(self, *, limit: int = 8) -> str:
        """The names in output order, the first ``limit`` of many: ``a, b`` or ``a, b, ... (1000 in all)``."""
        names = sorted(self, key=self.__getitem__)
        if len(names) <= limit:
            return ", ".join(names)
        return f"{', '.join(names[:limit])}, ... ({len(names)} in all)"


def read_labels(path: str | Path) -> ClassMap:
    """A labels file: the class on line ``i`` (from 0) is output ``i``; blank lines at the end are ignored."""
    lines = _read_lines(path, kind="labels file")
    while lines and not lines[-1].strip():
        lines.pop()
    mapping = ClassMap(source=str(path))
    for number, line in enumerate(lines):
        name = line.strip()
        if not name:
            raise DataError(f"labels file {path}, line {number + 1}: empty (every output needs its class name)")
        if name in mapping:
            raise DataError(f"labels file {path}, line {number + 1}: {name!r} is already on line {mapping[name] + 1}")
        mapping[name] = number
    if not mapping:
        raise DataError(f"labels file {path} names no class")
    return mapping


def read_class_map(path: str | Path) -> ClassMap:
    """A class map: tab-separated ``folder<TAB>output index[<TAB>anything]``; a first row whose second column is
    not a number is a header."""
    mapping = ClassMap(source=str(path))
    for number, line in enumerate(_read_lines(path, kind="class map"), start=1):
        if not line.strip():
            continue
        columns = line.rstrip("\n").split("\t")
        if len(columns) < 2:
            raise DataError(f"class map {path}, line {number}: expected 'folder<TAB>output index', got {line!r}")
        name, index = columns[0].strip(), columns[1].strip()
        if not index.lstrip("-").isdigit():
            if number == 1 and not mapping:
                continue  # the header row
            raise DataError(f"class map {path}, line {number}: output index {index!r} is not a whole number")
        if int(index) < 0:
            raise DataError(f"class map {path}, line {number}: output index {index} is negative")
        if name in mapping:
            raise DataError(f"class map {path}, line {number}: folder {name!r} is mapped twice")
        mapping[name] = int(index)
    if not mapping:
        raise DataError(f"class map {path} maps no folder")
    taken: dict[int, str] = {}
    for name, index in mapping.items():
        if index in taken:
            raise DataError(f"class map {path}: {taken[index]!r} and {name!r} are both output {index}")
        taken[index] = name
    return mapping


def read_class_order(*, labels: str | Path | None = None, class_map: str | Path | None = None) -> ClassMap | None:
    """The mapping a labels file or a class map gives (one of them at most), or None."""
    if labels is not None and class_map is not None:
        raise DataError("give a labels file or a class map, not both")
    if labels is not None:
        return read_labels(labels)
    return read_class_map(class_map) if class_map is not None else None


def _read_lines(path: str | Path, *, kind: str) -> list[str]:
    try:
        return Path(path).expanduser().read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{kind} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{kind} {path} cannot be read: {exc}") from None
