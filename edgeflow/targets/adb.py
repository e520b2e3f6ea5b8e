"""ADB transport: an Android phone through Android's `adb` (push, shell, pull).

`adb shell` hands its arguments to the phone's shell as one line, so every word is quoted here.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

from edgeflow.device import AdbSpec, DeviceSpec
from edgeflow.errors import DeviceError
from edgeflow.targets.transport import CommandResult, Transport


class AdbTransport(Transport):
    def __init__(self, device: DeviceSpec) -> None:
        super().__init__(device)
        self.spec = device.adb or AdbSpec()

    @property
    def address(self) -> str:
        return f"adb {self.spec.serial or '(the only attached device)'}"

    def _adb(self) -> list[str]:
        return ["adb", *(["-s", self.spec.serial] if self.spec.serial else [])]

    def _command(self, argv: list[str]) -> list[str]:
        return [*self._adb(), "shell", shlex.join(argv)]

    def _diagnose(self, result: CommandResult) -> str | None:
        text = result.stderr
        for marker in ("no devices/emulators found", "device offline", "unauthorized", "not found"):
            if marker in text and ("device" in text or "adb" in text):
                return f"{self.address}: {marker} (check `adb devices` and the phone's USB debugging prompt)"
        return None

    def _transfer(self, argv: list[str], *, step: str) -> None:
        result = self.run_local([*self._adb(), *argv], step=step)
        if result.returncode != 0:
            problem = self._diagnose(result) or (result.stderr.strip() or result.stdout.strip())[-300:]
            raise DeviceError(self.device.name, step, problem)

    def run_local(self, command: list[str], *, step: str, timeout: float | None = None) -> CommandResult:
        import subprocess

        timeout = self.command_timeout if timeout is None else timeout
        try:
            done = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise DeviceError(self.device.name, step, f"adb did not finish within {timeout:g} s") from None
        except FileNotFoundError:
            raise DeviceError(self.device.name, step, "adb is not installed on this machine") from None
        stdout, stderr = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
        return CommandResult(done.returncode, stdout, stderr)

    def state(self) -> str:
        """``adb get-state``: ``device`` when the phone is attached and authorized, else adb's own words."""
        try:
            done = self.run_local([*self._adb(), "get-state"], step="adb get-state", timeout=15)
        except DeviceError as exc:
            return f"adb failed: {exc}"
        text = (done.stdout.strip() or done.stderr.strip() or "no answer").splitlines()[-1]
        return text.removeprefix("error: ")

    def put(self, local: Path, remote: str, *, step: str) -> None:
        self._transfer(["push", str(local), remote], step=step)

    def get(self, remote: str, local: Path, *, step: str) -> None:
        self._transfer(["pull", remote, str(local)], step=step)

    def workdir(self) -> str:
        return self.spec.workdir.rstrip("/")

    @property
    def command_timeout(self) -> float:
        return float(self.spec.command_timeout_s)


def run_tool_on_phone(
    model: Path | None, *, device: DeviceSpec, tool: str, setting: str, commands: Callable[[str], list[list[str]]]
) -> list[str]:
    """Push ``model`` into a fresh work folder on the phone and run there each command ``commands`` builds for its
    path on the phone (a benchmark tool pushed once, named by ``adb.<setting>``); each run's output, stdout then
    stderr. A tool that is not on the phone is one line naming the setting that names it."""
    if model is None:
        raise DeviceError(device.name, "push the model", "the artifact has no file")
    transport = AdbTransport(device)
    outputs = []
    with transport.workspace() as folder:
        pushed = f"{folder}/{model.name}"
        transport.put(model, pushed, step=f"push {model.name}")
        for argv in commands(pushed):
            done = transport.run(argv, step=f"run {tool}", timeout=transport.command_timeout, check=False)
            if done.returncode == 127 or "not found" in done.stderr:
                missing = f"{argv[0]} is not on the phone (adb push it, or set adb.{setting})"
                raise DeviceError(device.name, f"run {tool}", missing)
            outputs.append(done.stdout + done.stderr)
    return outputs
