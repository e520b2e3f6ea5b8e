"""Run independent tasks as Ray tasks across the cluster (:class:`RayExecutor`), yielding each as it finishes.

It implements :class:`edgeflow.netadapt.executor.Executor`: the function (with the plain data it closes over,
put in Ray's object store once per call, not once per task) runs on any node with CPUs to spare; the caller
records each result as it arrives, so a driver killed in the middle keeps everything that came back.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from edgeflow.cluster.session import require_ray
from edgeflow.errors import ConfigError, EdgeflowError, first_line

Task = TypeVar("Task")
Result = TypeVar("Result")


@dataclass
class TaskPlace:
    """Where one task ran: the node's id, host name and address, the worker's process id, and its seconds."""

    node: str
    host: str
    address: str
    pid: int
    seconds: float = 0.0

    @classmethod
    def here(cls, *, seconds: float = 0.0) -> TaskPlace:
        """The place of the Ray worker calling this."""
        import ray

        node = ray.get_runtime_context().get_node_id()
        return cls(node=node, host=socket.gethostname(), address=ray.util.get_node_ip_address(), pid=os.getpid(),
                   seconds=seconds)  # fmt: skip

    def __str__(self) -> str:
        return f"{self.host} ({self.address}, node {self.node[:8]}, pid {self.pid})"


@dataclass
class Placed:
    """A result and where it was computed."""

    value: Any
    place: TaskPlace


def run_placed(function: Callable[..., Any], argument: Any, *, threads: int) -> Placed:
    """Call ``function(argument)`` with ``threads`` torch threads and say where it ran (the Ray task body)."""
    import torch

    torch.set_num_threads(max(1, threads))
    started = time.perf_counter()
    value = function(argument)
    return Placed(value, TaskPlace.here(seconds=time.perf_counter() - started))


@dataclass
class RayExecutor:
    """Evaluates tasks as Ray tasks of ``cpus`` CPUs each (also the torch threads they use), retried
    ``retries`` times when their worker dies; a task that raises stops the map with its error."""

    cpus: int = 1
    retries: int = 1
    label: Callable[[Any], str] = str
    places: list[tuple[str, TaskPlace]] = field(default_factory=list)  # (task label, where), as they finished

    def map(self, function: Callable[[Task], Result], tasks: Iterable[Task]) -> Iterator[tuple[Task, Result]]:
        ray = require_ray()
        tasks = list(tasks)
        if not tasks:
            return
        largest = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]), default=0)
        if largest < self.cpus:  # Ray would hold the tasks forever
            raise ConfigError(f"no node of the Ray cluster has {self.cpus} CPUs for a task (the most: {largest:g})")
        shared = ray.put(function)
        remote = ray.remote(run_placed)
        pending = {
            remote.options(num_cpus=self.cpus, max_retries=self.retries, name=self.label(task)).remote(
                shared, task, threads=self.cpus
            ): task
            for task in tasks
        }
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                task = pending.pop(done[0])
                try:
                    placed = ray.get(done[0])
                except ray.exceptions.RayTaskError as exc:
                    cause = exc.cause if isinstance(exc.cause, Exception) else exc
                    if isinstance(cause, EdgeflowError):
                        raise cause from None
                    if isinstance(cause, ray.exceptions.RayError):  # a system failure inside, e.g. a lost object
                        raise _lost(self.label(task), cause) from None
                    raise
                except ray.exceptions.RayError as exc:  # its worker or node died in every attempt, out of memory
                    raise _lost(self.label(task), exc) from None
                self.places.append((self.label(task), placed.place))
                yield task, placed.value
        finally:
            for reference in pending:  # the caller stopped early (an error, a kill): nothing left running
                ray.cancel(reference, force=True)


def _lost(label: str, exc: BaseException) -> EdgeflowError:
    return EdgeflowError(
        f"{label}: Ray lost it ({type(exc).__name__}: {first_line(exc, limit=None)}); what finished is kept, "
        "go on with --resume"
    )
