"""Local transport: the device is this machine; commands run as subprocesses, files are copied."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from edgeflow.errors import DeviceError
from edgeflow.targets.transport import Transport


class LocalTransport(Transport):
    @property
    def address(self) -> str:
        return "local"

    def _command(self, argv: list[str]) -> list[str]:
        return list(argv)

    def put(self, local: Path, remote: str, *, step: str) -> None:
        try:
            shutil.copyfile(local, remote)
        except OSError as exc:
            raise DeviceError(self.device.name, step, f"cannot copy {local} to {remote}: {exc.strerror}") from None

    def get(self, remote: str, local: Path, *, step: str) -> None:
        try:
            shutil.copyfile(remote, local)
        except OSError as exc:
            raise DeviceError(self.device.name, step, f"cannot copy {remote} to {local}: {exc.strerror}") from None

    def workdir(self) -> str:
        return tempfile.gettempdir()
