"""What the farm tests share: a free port on 127.0.0.1, and the edgeflow CLI run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys

from loopback_sshd import _free_port as free_port  # noqa: F401  (one home for a free loopback port)


def edgeflow(*arguments: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgeflow.cli", *arguments], capture_output=True, text=True, timeout=timeout,
        env={**os.environ},
    )  # fmt: skip
