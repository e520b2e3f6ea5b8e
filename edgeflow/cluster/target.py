"""A Ray worker of the farm as a place where work runs: the artifact's files are shipped to the node that declares
the device, and timed there by the target that node uses for it (this process's timing loop for its own CPU,
the benchmark agent for a device it reaches over SSH), logits included where that target computes them.

Registered in :data:`edgeflow.targets.target.TARGETS` as ``farm``; the farm must be joined (``edgeflow farm
join``) and reached (``ray.init``) first, as the nightly and the search on Ray do.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgeflow.artifact import Artifact
from edgeflow.cluster.session import require_ray
from edgeflow.device import DeviceSpec
from edgeflow.errors import ConfigError, EdgeflowError
from edgeflow.profiling.in_turn import InTurnStats
from edgeflow.profiling.loop import ProfileConfig
from edgeflow.profiling.stats import TimingStats
from edgeflow.targets.target import Target
from edgeflow.targets.transport import TimingRequest


class FarmTarget(Target):
    """The node of the farm that declares the device, through a Ray task holding the device's resource."""

    name = "farm"
    label = "a Ray worker of the farm"
    computes_logits = True  # as a node's own targets for its CPU and its SSH devices do (this process, the agent)

    def time(self, request: TimingRequest) -> TimingStats:
        packed, (artifact,) = pack_artifacts([request.artifact])
        return _on_node(request.device, _time_there, packed, replace(request, artifact=artifact))

    def time_in_turn(
        self, artifacts: dict[str, Artifact], *, device: DeviceSpec, backend: str, profile: ProfileConfig, rounds: int
    ) -> InTurnStats:
        packed, shipped = pack_artifacts(list(artifacts.values()))
        named = dict(zip(artifacts, shipped, strict=True))
        return _on_node(device, _in_turn_there, packed, (named, device, backend, profile, rounds))


def pack_artifacts(artifacts: list[Artifact]) -> tuple[bytes, list[Artifact]]:
    """The artifacts' files (an IR with its ``.bin``) in one tar, each under its own folder, and the artifacts
    as they are named inside it."""
    buffer, shipped = io.BytesIO(), []
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for index, artifact in enumerate(artifacts):
            for file in artifact.files:
                archive.add(file, arcname=f"{index}/{file.name}")
            shipped.append(replace(artifact, path=Path(f"{index}/{artifact.path.name}"), module=None))
    return buffer.getvalue(), shipped


def unpack_artifacts(packed: bytes, folder: Path) -> None:
    """Files packed by :func:`pack_artifacts` (or a night's cells) unpacked into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(packed)) as archive:
        archive.extractall(folder, filter="data")  # "data": no links out, no absolute paths


def _on_node(device: DeviceSpec, body, packed: bytes, argument: Any):
    from edgeflow.cluster.farm import device_options, status

    ray = require_ray()
    options = device_options(device, farm=status(activity=False))
    task = ray.remote(_unpacked).options(**options, max_retries=1, name=f"time on {device.name}")
    try:
        return ray.get(task.remote(body, packed, argument))
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, EdgeflowError):
            raise exc.cause from None
        raise ConfigError(f"the farm's node for {device.name} could not time it: {exc.cause}") from None


def _unpacked(body, packed: bytes, argument: Any):
    """The Ray task: the files unpacked in a folder of this node, then ``body`` with their paths there."""
    with tempfile.TemporaryDirectory(prefix="edgeflow-farm-") as folder:
        unpack_artifacts(packed, Path(folder))
        return body(Path(folder), argument)


def _node_target(device: DeviceSpec, backend: str) -> Target:
    """The target this node uses for ``device`` (never the farm again)."""
    from edgeflow.targets.run import timing_plan
    from edgeflow.targets.target import get_target

    plan, why = timing_plan(device, backend)
    if plan == "estimate":
        raise ConfigError(f"the farm's node for {device.name} cannot time it: {why}")
    return get_target(plan)


def _time_there(folder: Path, request: TimingRequest) -> TimingStats:
    request = replace(request, artifact=replace(request.artifact, path=folder / request.artifact.path))
    target = _node_target(request.device, request.backend)
    if request.inputs is not None and not target.computes_logits:
        raise ConfigError(f"{target.name} on the farm's node for {request.device.name} times only: no logits")
    return target.time(request)


def _in_turn_there(folder: Path, argument) -> InTurnStats:
    named, device, backend, profile, rounds = argument
    artifacts = {name: replace(artifact, path=folder / artifact.path) for name, artifact in named.items()}
    target = _node_target(device, backend)
    return target.time_in_turn(artifacts, device=device, backend=backend, profile=profile, rounds=rounds)
