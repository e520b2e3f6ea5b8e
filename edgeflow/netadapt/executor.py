"""How the independent proposals of one iteration are evaluated: in this process by default.

An executor takes a function and its tasks and yields ``(task, result)`` pairs as they finish, in
any order; the search records each one as it arrives, so a distributed executor (a process pool,
Ray, a job queue) only has to implement :meth:`Executor.map`. Tasks and results are plain data
(names, actions, numbers), and the function is a module-level callable, so both can be shipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar

Task = TypeVar("Task")
Result = TypeVar("Result")


class Executor(Protocol):
    def map(self, function: Callable[[Task], Result], tasks: Iterable[Task]) -> Iterator[tuple[Task, Result]]: ...


class InProcessExecutor:
    """Evaluates the tasks one after another in this process (a 2-core machine has nothing to spare)."""

    def map(self, function: Callable[[Task], Result], tasks: Iterable[Task]) -> Iterator[tuple[Task, Result]]:
        for task in tasks:
            yield task, function(task)
