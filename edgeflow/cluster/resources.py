"""The Ray resources a farm node declares: one ``device:<name>`` unit for each device it reaches."""

from __future__ import annotations

PREFIX = "device:"
# A cluster ``--ray auto`` starts for one run reaches this machine's CPU, and nothing else.
LOCAL_DEVICES = ("cpu",)


def device_resource(name: str) -> str:
    return f"{PREFIX}{name}"


def node_resources(devices: list[str] | tuple[str, ...]) -> dict[str, float]:
    """The custom resources a node reaching ``devices`` declares: one of each."""
    return {device_resource(name): 1 for name in devices}
