"""A small explicit registry: names map to objects or to lazy ``"module:attr"`` import paths.

Example:
    >>> reg = Registry[int]("number")
    >>> reg.register("one", 1)
    >>> reg.get("one")
    1
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from typing import Generic, TypeVar

from edgeflow.errors import UnknownNameError

T = TypeVar("T")


def load_entry(path: str):
    """The object at a lazy ``"module:attr"`` import path."""
    module_name, attr = path.split(":", 1)
    return getattr(importlib.import_module(module_name), attr)


class Registry(Generic[T]):
    """Maps names to entries. Duplicate names raise; unknown names raise with close matches."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, entry: T | str, *, aliases: tuple[str, ...] = ()) -> None:
        """Register ``entry`` (an object, or a lazy ``"module:attr"`` string) under ``name``."""
        for key in (name, *aliases):
            if key in self._entries or key in self._aliases:
                raise ValueError(f"duplicate {self.kind} name {key!r}")
        self._entries[name] = entry
        for alias in aliases:
            self._aliases[alias] = name

    def resolve(self, name: str) -> str:
        """The canonical name for ``name`` or one of its aliases."""
        key = name.strip().lower()
        if key in self._aliases:
            return self._aliases[key]
        if key in self._entries:
            return key
        close = difflib.get_close_matches(key, [*self._entries, *self._aliases], n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UnknownNameError(f"unknown {self.kind} {name!r}{hint}")

    def get(self, name: str) -> T:
        canonical = self.resolve(name)
        entry = self._entries[canonical]
        if isinstance(entry, str) and ":" in entry:
            entry = load_entry(entry)
            self._entries[canonical] = entry
        return entry  # type: ignore[return-value]

    def aliases_of(self, name: str) -> list[str]:
        return sorted(a for a, target in self._aliases.items() if target == name)

    def names(self, *, ordered: bool = False) -> list[str]:
        """The registered names, sorted (``ordered``: in registration order)."""
        return list(self._entries) if ordered else sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        try:
            self.resolve(name)
        except UnknownNameError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
