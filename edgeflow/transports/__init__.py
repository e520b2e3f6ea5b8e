"""How edgeflow reaches a device: local subprocesses, SSH (OpenSSH client) or ADB."""

from __future__ import annotations

from edgeflow.device import DeviceSpec
from edgeflow.transports.base import CommandResult, Transport


def open_transport(device: DeviceSpec) -> Transport:
    """The transport the device's descriptor names (connection details already resolved)."""
    if device.transport == "ssh":
        from edgeflow.transports.ssh import SshTransport

        return SshTransport(device)
    if device.transport == "adb":
        from edgeflow.transports.adb import AdbTransport

        return AdbTransport(device)
    from edgeflow.transports.local import LocalTransport

    return LocalTransport(device)


__all__ = ["CommandResult", "Transport", "open_transport"]
