"""The Transport interface: run a command on a device, move files to and from it, clean up after."""

from __future__ import annotations

import contextlib
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeflow.artifact import Artifact
from edgeflow.backends.base import RuntimeSettings
from edgeflow.device import DeviceSpec
from edgeflow.errors import DeviceError
from edgeflow.profiling.loop import ProfileConfig


@dataclass
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


class Transport(ABC):
    """Where a device's commands run. Every remote path is an argument, never spliced into a shell line
    unquoted; every call has a timeout; failures raise :class:`DeviceError` naming the device and step."""

    def __init__(self, device: DeviceSpec) -> None:
        self.device = device

    @property
    @abstractmethod
    def address(self) -> str:
        """Where the device is, for messages (``user@host:port``, an adb serial, ``local``)."""

    @abstractmethod
    def _command(self, argv: list[str]) -> list[str]:
        """The local argv that runs ``argv`` on the device."""

    @abstractmethod
    def put(self, local: Path, remote: str, *, step: str) -> None:
        """Copy the local file ``local`` to the device path ``remote``."""

    @abstractmethod
    def get(self, remote: str, local: Path, *, step: str) -> None:
        """Copy the device file ``remote`` to ``local`` (written atomically by the caller's folder)."""

    def _diagnose(self, result: CommandResult) -> str | None:
        """A transport-level failure (unreachable, refused) read from a failed command, or None."""
        return None

    def run(self, argv: list[str], *, step: str, timeout: float, check: bool = True, stdin: bytes | None = None,
            binary: bool = False) -> CommandResult:  # fmt: skip
        """Run ``argv`` on the device; a non-zero exit raises unless ``check`` is false."""
        command = self._command(argv)
        try:
            completed = subprocess.run(command, input=stdin, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            hint = (
                " (command_timeout_s in the device file: raise it for a slow device)"
                if timeout == self.command_timeout
                else ""
            )
            raise DeviceError(
                self.device.name, step, f"no answer from {self.address} within {timeout:g} s{hint}"
            ) from None
        except FileNotFoundError:
            raise DeviceError(self.device.name, step, f"{command[0]} is not installed on this machine") from None
        stdout = completed.stdout if binary else completed.stdout.decode(errors="replace")
        result = CommandResult(completed.returncode, stdout, completed.stderr.decode(errors="replace"))
        if result.returncode != 0:
            problem = self._diagnose(result)
            if problem is not None:
                raise DeviceError(self.device.name, step, problem)
            if check:
                last = _last_line(result.stderr) or _last_line(result.stdout if not binary else "")
                raise DeviceError(
                    self.device.name, step, f"`{argv[0]}` failed on {self.address} (exit {result.returncode}): {last}"
                )
        return result

    @contextlib.contextmanager
    def workspace(self, *, step: str = "make a work folder") -> Iterator[str]:
        """A fresh folder on the device, removed afterwards whatever happens."""
        root = self.workdir()
        made = self.run(["mktemp", "-d", f"{root}/edgeflow.XXXXXXXX"], step=step, timeout=self.short_timeout)
        folder = made.stdout.strip()
        if not folder.startswith(f"{root}/edgeflow."):
            raise DeviceError(self.device.name, step, f"mktemp gave an unexpected folder {folder!r}")
        try:
            yield folder
        finally:
            self.run(["rm", "-rf", "--", folder], step="clean up the work folder", timeout=self.short_timeout,
                     check=False)  # fmt: skip

    def workdir(self) -> str:
        return "/tmp"

    @property
    def short_timeout(self) -> float:
        return 60.0

    @property
    def command_timeout(self) -> float:
        return 600.0


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no message"


@dataclass
class TimingRequest:
    """What a target is asked (:meth:`edgeflow.targets.target.Target.time`): time ``artifact`` with ``backend``
    on ``device`` (``settings``, else the device's), and, where the timer can, compute the logits of ``inputs``."""

    artifact: Artifact
    device: DeviceSpec
    backend: str
    precision: str
    profile: ProfileConfig
    settings: RuntimeSettings | None = None
    inputs: np.ndarray | None = None
