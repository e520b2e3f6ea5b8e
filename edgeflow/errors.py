"""Exceptions for mistakes a user can fix. The CLI prints them as one line and exits with code 2."""


class EdgeflowError(Exception):
    """Base class: a problem with the user's input or environment, with a message they can act on."""


class UnknownNameError(EdgeflowError):
    """A model, device, recipe, backend or data set name that is not registered."""


class ConfigError(EdgeflowError):
    """A recipe or device file that is missing, unreadable or invalid."""


class ModelLoadError(EdgeflowError):
    """A model file that is missing, truncated, corrupt or not what it claims to be."""


class ShapeError(EdgeflowError):
    """An input shape or resolution a model cannot take."""


class DataError(EdgeflowError):
    """A data set that is missing, empty or malformed."""


class OutputError(EdgeflowError):
    """An output location that cannot be written."""


class RuntimeUnavailableError(EdgeflowError):
    """A runtime (backend) that is not installed or cannot run the artifact here."""


class DeviceError(EdgeflowError):
    """A device that cannot be reached, refuses us, lacks a runtime, or whose command failed or hung."""

    def __init__(self, device: str, step: str, message: str) -> None:
        super().__init__(f"device {device}: {step}: {message}")
        self.device, self.step = device, step


def first_line(exc: BaseException, *, limit: int | None = 300) -> str:
    """The first line of an exception's text (libraries raise multi-line ones), or its class name when it has
    none, cut at ``limit`` characters: what a one-line error quotes of it."""
    lines = str(exc).strip().splitlines()
    text = lines[0].strip() if lines else type(exc).__name__
    return text if limit is None else text[:limit]
