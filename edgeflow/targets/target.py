"""The interface of a place where work runs (Olive calls it a system), and this process as one.

Each target times one artifact (:meth:`Target.time`), times several in turn where it can
(:meth:`Target.time_in_turn`: round after round, so a drifting host meets every artifact alike) and says
whether it computes logits with its timing (:attr:`Target.computes_logits`: else accuracy comes from a runtime
of this host reading the same file). They are registered in :data:`TARGETS` by import path, named by the plan
:func:`edgeflow.targets.run.timing_plan` chooses, and ``farm``: a Ray worker on the node that declares the device
(:mod:`edgeflow.cluster.target`), which times with the target that node uses. An estimate is not a target:
nothing runs (:func:`edgeflow.targets.run.run_on_device` makes it).

    >>> from edgeflow.targets.target import get_target
    >>> get_target("local").computes_logits
    True
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np

from edgeflow.artifact import Artifact
from edgeflow.backends import get_backend
from edgeflow.device import DeviceSpec
from edgeflow.profiling.in_turn import InTurnStats, time_in_turn
from edgeflow.profiling.loop import ProfileConfig
from edgeflow.profiling.profile import compile_and_time
from edgeflow.profiling.stats import TimingStats
from edgeflow.registry import Registry
from edgeflow.targets.transport import TimingRequest


class Target(ABC):
    """A place that runs and times artifacts."""

    name: ClassVar[str]
    #: how a message names it ("the benchmark agent on jetson")
    label: ClassVar[str]
    #: its timing returns the logits of the request's inputs, computed by the device's own runtime
    computes_logits: ClassVar[bool] = False

    @abstractmethod
    def time(self, request: TimingRequest) -> TimingStats:
        """Time ``request.artifact`` there (with the logits of ``request.inputs`` where :attr:`computes_logits`)."""

    def time_in_turn(
        self, artifacts: dict[str, Artifact], *, device: DeviceSpec, backend: str, profile: ProfileConfig, rounds: int
    ) -> InTurnStats:
        """Time ``artifacts`` one after another, ``rounds`` times; each one's p50 of every round (ms), by name."""
        raise NotImplementedError(f"{self.name} times one artifact at a time")


class Here(Target):
    """This process: the runtime compiled here, timed by the one timing loop and the one in-turn function."""

    name = "local"
    label = "this process"
    computes_logits = True

    def time(self, request: TimingRequest) -> TimingStats:
        compiled, timing = compile_and_time(
            request.artifact, device=request.device, backend=request.backend, config=request.profile,
            settings=request.settings,
        )  # fmt: skip
        if request.inputs is not None:
            batch = compiled.input_shape[0]
            rows = [
                compiled.run(request.inputs[start : start + batch]) for start in range(0, len(request.inputs), batch)
            ]
            timing.logits = np.concatenate(rows)
        return timing

    def time_in_turn(
        self, artifacts: dict[str, Artifact], *, device: DeviceSpec, backend: str, profile: ProfileConfig, rounds: int
    ) -> InTurnStats:
        runtime = get_backend(backend)
        compiled = {name: runtime.compile(artifact, settings=device.runtime) for name, artifact in artifacts.items()}
        return time_in_turn(compiled, rounds=rounds, config=profile)


TARGETS: Registry[type[Target]] = Registry("target")
TARGETS.register("local", "edgeflow.targets.target:Here")
TARGETS.register("agent", "edgeflow.targets.agent_client:AgentTarget")
TARGETS.register("trtexec", "edgeflow.targets.trtexec:TrtexecTarget")
TARGETS.register("perf_test", "edgeflow.targets.perf_test:PerfTestTarget")
TARGETS.register("benchmark_model", "edgeflow.targets.benchmark_model:BenchmarkModelTarget")
TARGETS.register("farm", "edgeflow.cluster.target:FarmTarget")  # a Ray worker on the device's node


def get_target(name: str) -> Target:
    """The target registered as ``name`` (a timing plan's name)."""
    return TARGETS.get(name)()


def file_names(artifacts: dict[str, Artifact]) -> dict[str, str]:
    """Each artifact's file name, by its name (what a remote in-turn timing keys its figures by)."""
    return {name: Path(artifact.path).name for name, artifact in artifacts.items()}
