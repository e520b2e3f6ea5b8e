"""A device farm on Ray: each node declares the devices it reaches as custom resources, one unit each.

``edgeflow farm join --address HEAD --devices jetson-orin-nano-1,pixel-8-a`` runs ``ray start`` on this machine
with ``device:jetson-orin-nano-1`` and ``device:pixel-8-a`` (one each); work that times or evaluates on a device
asks for its resource, so Ray runs it on the node that reaches the device, one at a time per device. A device
that is this node's own CPU is timed holding every CPU of the node (:func:`device_options`): no other task runs
there meanwhile. ``edgeflow farm status`` lists the nodes, their devices, and the tasks running on each.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

from edgeflow.cluster.resources import PREFIX, device_resource, node_resources
from edgeflow.cluster.session import (
    AUTH_MODE,
    check_reachable,
    connected,
    host_of,
    is_loopback,
    keep_loopback,
    require_ray,
    split_address,
)
from edgeflow.device import DeviceSpec, load_device
from edgeflow.errors import ConfigError, EdgeflowError


@dataclass
class NodeStats:
    node_id: str
    address: str
    alive: bool
    cpus: float
    devices: list[str]
    running: list[str] = field(default_factory=list)  # names of the tasks running there now


@dataclass
class FarmStats:
    address: str
    nodes: list[NodeStats]
    activity: str | None = None  # why running tasks are unknown, when they are

    def devices(self) -> dict[str, NodeStats]:
        """Each device an alive node declares, and that node."""
        return {device: node for node in self.nodes if node.alive for device in node.devices}

    def declaring(self, device: str) -> list[NodeStats]:
        """The alive nodes that declare ``device`` (one, on a farm set up right)."""
        return [node for node in self.nodes if node.alive and device in node.devices]


def join(
    devices: list[str],
    *,
    address: str | None = None,
    head: bool = False,
    port: int = 6379,
    node_ip: str | None = None,
    cpus: int | None = None,
) -> str:
    """Start Ray on this machine as a node of the farm at ``address`` (or as its ``head``), declaring
    ``devices`` (the names the matrices and searches give as ``--device``: a device file's ``name``, or one of
    ``edgeflow devices``); returns one line saying what joined."""
    if head == (address is not None):
        raise ConfigError("give --head or --address HEAD:PORT (one of them)")
    checked = [_device_name(name) for name in devices]
    if len(set(checked)) != len(checked):
        raise ConfigError(f"devices given twice: {', '.join(devices)}")
    command = [_ray_command(), "start", "--disable-usage-stats"]
    if address is None:
        command += ["--head", f"--port={port}"]
    else:
        split_address(address)
        check_reachable(address)
        command += [f"--address={address}"]
    if node_ip:
        command += [f"--node-ip-address={node_ip}"]
    if cpus is not None:
        command += [f"--num-cpus={cpus}"]
    command += ["--resources", json.dumps(node_resources(checked))]
    environment = _environment(address or node_ip)
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=180)
    except subprocess.TimeoutExpired:
        raise EdgeflowError("ray start did not finish within 3 minutes") from None
    if result.returncode != 0:
        last = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
        raise EdgeflowError(f"ray start failed: {last}")
    where = f"the head of a farm on port {port}" if head else f"a node of the farm at {address}"
    return f"joined as {where}, devices: {', '.join(checked) or 'none'}"


def leave() -> None:
    """Stop Ray on this machine (``ray stop``): its devices leave the farm."""
    try:
        result = subprocess.run([_ray_command(), "stop"], capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        raise EdgeflowError("ray stop did not finish within 2 minutes") from None
    if result.returncode != 0:
        last = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
        raise EdgeflowError(f"ray stop failed: {last}")


def status(*, activity: bool = True) -> FarmStats:
    """The farm this process is connected to: nodes, their devices and CPUs, and (``activity``) what runs on
    each."""
    ray = require_ray()
    nodes = []
    for node in ray.nodes():
        resources = node.get("Resources", {})
        nodes.append(
            NodeStats(
                node_id=node["NodeID"],
                address=node["NodeManagerAddress"],
                alive=bool(node["Alive"]),
                cpus=float(resources.get("CPU", 0)),
                devices=sorted(name[len(PREFIX) :] for name in resources if name.startswith(PREFIX)),
            )  # fmt: skip
        )
    unknown = None
    running = running_tasks() if activity else {}
    if running is None:
        unknown = "running tasks unknown (Ray's state API needs the dashboard, which this cluster runs without)"
    for name, node_id in (running or {}).items():
        for node in nodes:
            if node.node_id == node_id:
                node.running.append(name)
    context = ray.get_runtime_context()
    return FarmStats(address=context.gcs_address, nodes=nodes, activity=unknown)


def farm_status(address: str = "auto") -> FarmStats:
    """:func:`status` of the farm at ``address`` (``auto``: the one this machine runs; none is started)."""
    with connected(address, start=False):
        return status()


def running_tasks() -> dict[str, str] | None:
    """The tasks running now: name -> node id (Ray's state API); None where the cluster cannot say."""
    try:
        from ray.util.state import list_tasks

        tasks = list_tasks(filters=[("state", "=", "RUNNING")], timeout=10, raise_on_missing_output=False)
    except Exception:  # the state API lives in Ray's dashboard, which a cluster may run without
        return None
    return {task.name: task.node_id for task in tasks}


def device_options(device: DeviceSpec, *, farm: FarmStats) -> dict[str, Any]:
    """Ray task options for work timed on ``device``: its resource, and for a device that is the node's own
    CPU every CPU of that node (nothing else runs there while it is timed). A device no alive node declares
    is an error naming it."""
    nodes = farm.declaring(device.name)
    if len(nodes) > 1:  # Ray would take either: one device's cells timed on two machines, mixed in the history
        where = ", ".join(f"{node.address} ({node.node_id[:8]})" for node in nodes)
        raise ConfigError(f"device {device.name} is declared by {len(nodes)} nodes ({where}): one device, one node")
    node = nodes[0] if nodes else None
    if node is None:
        declared = ", ".join(sorted(farm.devices())) or "none"
        raise ConfigError(
            f"device {device.name}: no node of the farm declares it (declared: {declared}); "
            f"run `edgeflow farm join --devices {device.name}` on the machine that reaches it"
        )
    cpus = node.cpus if device.is_local else 1
    return {"resources": {device_resource(device.name): 1}, "num_cpus": cpus}


def _device_name(name: str) -> str:
    """A device file's name, or the name as given (a device of this farm edgeflow need not know by it)."""
    if name.endswith((".yaml", ".yml")):
        try:
            return load_device(name).name
        except EdgeflowError as exc:
            raise ConfigError(f"farm device {name!r}: {exc}") from None
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(f"farm device {name!r}: use letters, digits, '.', '_' and '-'")
    return name


def _ray_command() -> str:
    require_ray()
    import sys
    from pathlib import Path

    beside = Path(sys.executable).with_name("ray")
    found = str(beside) if beside.exists() else shutil.which("ray")
    if found is None:
        raise ConfigError("the ray command is not on PATH; pip install 'edgeflow[ray]'")
    return found


def _environment(host_port: str | None) -> dict[str, str]:
    import os

    host = host_of(host_port) if host_port else ""
    if host and is_loopback(host):
        keep_loopback()
    environment = dict(os.environ)
    # A farm runs code sent to it: it requires Ray's token (generated in ~/.ray/auth_token on the head when
    # missing; copy that file to each machine that joins, or set RAY_AUTH_TOKEN there).
    environment.setdefault(AUTH_MODE, "token")
    return environment
