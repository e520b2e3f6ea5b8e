"""Progress display (rich) that the API accepts and the CLI turns on; silent by default."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

Advance = Callable[[int, str], None]


class Progress:
    """Reports stages and bounded tasks. ``Progress.silent()`` reports nothing."""

    def __init__(self, console: Console | None) -> None:
        self.console = console

    @classmethod
    def silent(cls) -> Progress:
        return cls(None)

    @classmethod
    def to_stderr(cls) -> Progress:
        return cls(Console(file=sys.stderr))

    def stage(self, message: str) -> None:
        if self.console is not None:
            self.console.print(f"[bold cyan]>[/] {message}", highlight=False)

    @contextlib.contextmanager
    def task(self, description: str, *, total: int) -> Iterator[Advance]:
        if self.console is None:
            yield lambda steps, note="": None
            return
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}"),
        )
        with RichProgress(*columns, console=self.console, transient=False) as bar:
            task_id = bar.add_task(description, total=total, note="")

            def advance(steps: int, note: str = "") -> None:
                bar.update(task_id, advance=steps, note=note)

            yield advance
