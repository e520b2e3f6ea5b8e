"""SSH transport through the OpenSSH client: host keys verified, never auto-accepted; no password prompts.

Files travel over the same connection as ``cat`` with the path quoted, so no path is ever parsed by a
remote shell unquoted (scp's legacy protocol did).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from edgeflow.device import DeviceSpec, SshSpec
from edgeflow.errors import DeviceError
from edgeflow.targets.transport import CommandResult, Transport


class SshTransport(Transport):
    def __init__(self, device: DeviceSpec) -> None:
        super().__init__(device)
        spec = device.ssh or SshSpec()
        if not spec.host:
            raise DeviceError(
                device.name, "connect",
                "no host given: set ssh.host in the device file, EDGEFLOW_SSH_HOST, or --host user@host[:port]",
            )  # fmt: skip
        if spec.key and not Path(spec.key).expanduser().is_file():
            raise DeviceError(device.name, "connect", f"key file not found: {spec.key}")
        if spec.known_hosts and not Path(spec.known_hosts).expanduser().is_file():
            raise DeviceError(device.name, "connect", f"known_hosts file not found: {spec.known_hosts}")
        self.spec = spec

    @property
    def address(self) -> str:
        user = f"{self.spec.user}@" if self.spec.user else ""
        return f"{user}{self.spec.host}:{self.spec.port}"

    def options(self) -> list[str]:
        spec = self.spec
        options = [
            "-o", "BatchMode=yes",  # a missing key fails instead of prompting for a password
            "-o", "StrictHostKeyChecking=yes",  # an unknown or changed host key fails
            "-o", f"ConnectTimeout={spec.connect_timeout_s}",
            "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
            "-o", "LogLevel=ERROR",
            "-p", str(spec.port),
        ]  # fmt: skip
        if spec.known_hosts:
            options += ["-o", f"UserKnownHostsFile={os.path.expanduser(spec.known_hosts)}"]
        if spec.key:
            options += ["-i", os.path.expanduser(spec.key), "-o", "IdentitiesOnly=yes"]
        if spec.user:
            options += ["-l", spec.user]
        return options

    def _command(self, argv: list[str]) -> list[str]:
        # ssh joins its arguments into one line for the remote shell: quote every word ourselves.
        return ["ssh", *self.options(), "--", self.spec.host, shlex.join(argv)]

    def _diagnose(self, result: CommandResult) -> str | None:
        if result.returncode != 255:  # ssh's own failures exit with 255; others are the remote command's
            return None
        text = result.stderr
        host = f"{self.spec.host} port {self.spec.port}"
        if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
            known = self.spec.known_hosts or "~/.ssh/known_hosts"
            return (
                f"the host key of {host} is unknown or has changed; check its fingerprint, then add it to "
                f"{known} (ssh-keyscan -p {self.spec.port} {self.spec.host})"
            )
        if "Permission denied" in text or "Too many authentication failures" in text:
            return f"{self.address} refused the login (wrong user or key: {self.spec.key or 'the SSH agent/~/.ssh'})"
        for marker in ("Connection refused", "timed out", "Could not resolve", "No route to host", "unreachable"):
            if marker in text:
                return f"cannot reach {host}: {marker.lower()}"
        return f"ssh to {self.address} failed: {text.strip().splitlines()[-1] if text.strip() else 'exit 255'}"

    def put(self, local: Path, remote: str, *, step: str) -> None:
        script = f"cat > {shlex.quote(remote)}"
        self.run(["sh", "-c", script], step=step, timeout=self.command_timeout, stdin=Path(local).read_bytes())

    def get(self, remote: str, local: Path, *, step: str) -> None:
        result = self.run(["cat", "--", remote], step=step, timeout=self.command_timeout, binary=True)
        Path(local).write_bytes(result.stdout)

    def workdir(self) -> str:
        return self.spec.workdir.rstrip("/") or "/"

    @property
    def short_timeout(self) -> float:
        return float(self.spec.connect_timeout_s + 30)

    @property
    def command_timeout(self) -> float:
        return float(self.spec.command_timeout_s)
