"""Peak resident memory while an artifact loads and while it runs (Linux's resettable high-water mark)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel


class MemoryStats(BaseModel):
    """Resident memory of this process, in MiB: before loading, and peaks added by loading and running."""

    rss_before_mb: float
    load_peak_mb: float | None  # peak RSS while reading and compiling, above rss_before
    run_peak_mb: float | None  # peak RSS while running, above rss_before
    method: str


@dataclass
class MemoryProbe:
    """Tracks peak RSS with Linux's resettable high-water mark (``/proc/self/clear_refs``)."""

    rss_before_kb: int = 0
    peaks_kb: dict[str, int] = field(default_factory=dict)
    available: bool = True

    @staticmethod
    def _read(key: str) -> int:
        match = re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text())
        return int(match.group(1)) if match else 0

    def _reset_peak(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.available = False

    def start(self) -> None:
        self._reset_peak()
        self.rss_before_kb = self._read("VmRSS")

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._reset_peak()
        try:
            yield
        finally:
            self.peaks_kb[name] = self._read("VmHWM")

    def stats(self) -> MemoryStats:
        def above(name: str) -> float | None:
            if not self.available or name not in self.peaks_kb:
                return None
            return round(max(0, self.peaks_kb[name] - self.rss_before_kb) / 1024, 2)

        return MemoryStats(
            rss_before_mb=round(self.rss_before_kb / 1024, 2),
            load_peak_mb=above("load"),
            run_peak_mb=above("run"),
            method="linux VmHWM reset per phase" if self.available else "unavailable",
        )
