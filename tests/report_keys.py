"""The key tree of a JSON document: what a reader of report.json depends on, without the figures."""

from __future__ import annotations

from typing import Any


def key_tree(value: Any) -> Any:
    """Dicts become {key: subtree}; a list becomes {"[]": the union of its items' trees}; leaves become "".

    Two reports of the same recipe written by different code have equal trees exactly when every key a
    reader might look up is where it was.
    """
    if isinstance(value, dict):
        return {key: key_tree(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        merged: Any = ""
        for item in value:
            merged = _union(merged, key_tree(item))
        return {"[]": merged}
    return ""


def _union(left: Any, right: Any) -> Any:
    if isinstance(left, dict) and isinstance(right, dict):
        return {key: _union(left.get(key, ""), right.get(key, "")) for key in sorted(set(left) | set(right))}
    return left if isinstance(left, dict) else right


def differences(before: Any, after: Any, path: str = "") -> list[str]:
    """Paths present in one tree and not the other."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return [] if isinstance(before, dict) == isinstance(after, dict) else [f"{path or '/'}: shape changed"]
    found = [f"{path}/{key}: only before" for key in sorted(set(before) - set(after))]
    found += [f"{path}/{key}: only after" for key in sorted(set(after) - set(before))]
    for key in sorted(set(before) & set(after)):
        found += differences(before[key], after[key], f"{path}/{key}")
    return found
