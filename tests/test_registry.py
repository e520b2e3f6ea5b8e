from __future__ import annotations

import pytest

from edgeflow.errors import UnknownNameError
from edgeflow.registry import Registry


def test_register_get_alias_and_lazy_entry() -> None:
    registry: Registry[object] = Registry("thing")
    registry.register("path-join", "os.path:join", aliases=("join",))
    import os.path

    assert registry.get("JOIN") is os.path.join
    assert registry.names() == ["path-join"] and registry.aliases_of("path-join") == ["join"]
    assert "join" in registry and "nothing" not in registry


def test_duplicates_raise_and_unknown_suggests() -> None:
    registry: Registry[int] = Registry("number")
    registry.register("seven", 7)
    with pytest.raises(ValueError, match="duplicate"):
        registry.register("seven", 8)
    with pytest.raises(UnknownNameError, match="did you mean seven"):
        registry.get("sevn")
