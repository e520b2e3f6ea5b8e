"""Pydantic base for declared inputs, and YAML loading whose errors name the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from edgeflow.errors import ConfigError, UnknownNameError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
Spec = TypeVar("Spec", bound="StrictModel")


class StrictModel(BaseModel):
    """Base for every declared input: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=False, protected_namespaces=())


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each bad key (dotted path) and what is wrong with it."""
    parts = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown key '{location}'")
        elif location:
            parts.append(f"key '{location}': {message}")
        else:
            parts.append(message)
    return "; ".join(parts)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into a ConfigError naming the file."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc.__class__.__name__}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return data


def parse_spec(spec_type: type[Spec], data: dict[str, Any], *, source: str) -> Spec:
    """Validate ``data`` as ``spec_type``; errors name ``source`` and the bad keys."""
    try:
        return spec_type.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc)}") from None


def find_named_file(name_or_path: str, *, folder: str, kind: str) -> Path:
    """Resolve a built-in YAML by name (``folder/<name>.yaml``) or a path to the user's own file."""
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"} or candidate.parent != Path("."):
        if not candidate.is_file():
            raise ConfigError(f"{kind} file not found: {candidate}")
        return candidate
    builtin = PROJECT_ROOT / folder / f"{name_or_path}.yaml"
    if builtin.is_file():
        return builtin
    known = ", ".join(list_named_files(folder)) or "none"
    raise UnknownNameError(f"unknown {kind} {name_or_path!r} (built-in: {known}; or give a path to a .yaml file)")


def list_named_files(folder: str) -> list[str]:
    return sorted(path.stem for path in (PROJECT_ROOT / folder).glob("*.yaml"))
