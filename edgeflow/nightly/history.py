"""History of nightly runs in one SQLite file.

* Versioned schema (``PRAGMA user_version``); a file from a newer edgeflow is refused, never migrated down.
* Safe with concurrent writers: WAL journal, a busy timeout, and each write in one ``BEGIN IMMEDIATE``
  transaction. A crash in the middle of a write leaves the last committed state (SQLite's journal).
* A run is inserted when it starts and marked finished at the end; cells are committed as they finish
  (their figures updated once the night's cells are timed again in turn), so a crashed night keeps what
  it measured but is never used as a baseline.
* Raw latency samples are kept (float64 milliseconds in a BLOB per cell), not only summaries.
* A file that is not a readable SQLite database is reported and left untouched.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeflow.errors import EdgeflowError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    label TEXT NOT NULL,
    started TEXT NOT NULL,
    finished TEXT,
    recipe_name TEXT NOT NULL,
    recipe_hash TEXT NOT NULL,
    recipe_json TEXT NOT NULL,
    environment_json TEXT NOT NULL
);
CREATE TABLE cells (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    model TEXT NOT NULL,
    device TEXT NOT NULL,
    precision TEXT NOT NULL,
    backend TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    error TEXT,
    measured INTEGER NOT NULL DEFAULT 0,
    p50_ms REAL,
    p90_ms REAL,
    top1 REAL,
    test_images INTEGER,
    size_bytes INTEGER,
    model_hash TEXT,
    artifact_hash TEXT,
    runtime_version TEXT,
    detail_json TEXT NOT NULL DEFAULT '{}',
    samples BLOB,
    UNIQUE (run_id, model, device, precision)
);
CREATE INDEX cells_by_key ON cells (model, device, precision, backend);
"""


class HistoryError(EdgeflowError):
    """The history file cannot be used (not a database, damaged, or from a newer edgeflow)."""


@dataclass
class CellRecord:
    """One cell of one night: its figures, or the error that stopped it."""

    model: str
    device: str
    precision: str
    backend: str
    status: str  # "ok" or "failed"
    error: str | None = None
    measured: bool = False
    p50_ms: float | None = None
    p90_ms: float | None = None
    top1: float | None = None
    test_images: int | None = None
    size_bytes: int | None = None
    model_hash: str | None = None
    artifact_hash: str | None = None
    runtime_version: str | None = None
    detail: dict = field(default_factory=dict)  # slowest layers, estimate, artifact path, ...
    samples: np.ndarray | None = None  # raw latencies, ms

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.model, self.device, self.precision, self.backend)

    @property
    def emulated(self) -> bool:
        """Its latency was timed under an emulator of the device (``detail["emulated"]``): never compared."""
        return bool(self.detail.get("emulated"))

    @property
    def noisy(self) -> bool:
        """Its latency was timed while other processes kept the device busy (``detail["noisy"]``)."""
        return bool(self.detail.get("noisy"))


@dataclass
class RunRecord:
    id: int
    label: str
    started: str
    finished: str | None
    recipe_name: str
    recipe_hash: str
    recipe: dict
    environment: dict


class History:
    """The SQLite history file; open with :meth:`open` (creates it when missing)."""

    def __init__(self, connection: sqlite3.Connection, path: Path):
        self._connection, self.path = connection, path

    @classmethod
    def open(cls, path: str | Path) -> History:
        path = Path(path)
        if path.exists() and not path.is_file():
            raise HistoryError(f"history {path} is not a file")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, timeout=60, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise HistoryError(f"cannot open history {path}: {exc}") from None
        history = cls(connection, path)
        try:
            history._prepare()
        except sqlite3.DatabaseError as exc:
            connection.close()
            raise HistoryError(
                f"history {path} is not a readable edgeflow history ({exc}); it was left as it is: "
                "move it away or give another file with --history"
            ) from None
        return history

    def _prepare(self) -> None:
        connection = self._connection
        version = connection.execute("PRAGMA user_version").fetchone()[0]  # reads the header: fails on junk
        check = connection.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"integrity check: {check}")
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"schema version {version} is newer than this edgeflow's {SCHEMA_VERSION}")
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA foreign_keys=ON")
        if version == 0:
            with self._write() as cursor:
                tables = cursor.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if cursor.execute("PRAGMA user_version").fetchone()[0] == 0:  # not made by a concurrent writer
                    if tables:
                        raise sqlite3.DatabaseError("it holds tables but no edgeflow schema version")
                    for statement in filter(str.strip, _SCHEMA.split(";")):
                        cursor.execute(statement)
                    cursor.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def _write(self, step: str | None = None) -> Iterator[sqlite3.Cursor]:
        """One write transaction; all of it is committed, or none of it. With ``step``, an SQLite failure
        (locked past the timeout, disk full) is a HistoryError naming the file and the step."""
        try:
            cursor = self._connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                if self._connection.in_transaction:
                    cursor.execute("ROLLBACK")
                raise
            if self._connection.in_transaction:
                cursor.execute("COMMIT")
        except sqlite3.Error as exc:
            if step is None:
                raise
            raise HistoryError(f"history {self.path}: could not {step}: {exc}") from None

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    # writes
    def start_run(self, *, label: str, started: str, recipe_name: str, recipe_hash: str, recipe: dict,
                  environment: dict) -> int:  # fmt: skip
        with self._write("record the night's start") as cursor:
            cursor.execute(
                "INSERT INTO runs (label, started, recipe_name, recipe_hash, recipe_json, environment_json) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (label, started, recipe_name, recipe_hash, json.dumps(recipe, sort_keys=True),
                 json.dumps(environment, sort_keys=True)),
            )  # fmt: skip
            return int(cursor.lastrowid)

    def add_cell(self, run_id: int, cell: CellRecord) -> None:
        samples = None if cell.samples is None else np.asarray(cell.samples, dtype="<f8").tobytes()
        with self._write(f"record the cell {'/'.join(cell.key)}") as cursor:
            cursor.execute(
                "INSERT INTO cells (run_id, model, device, precision, backend, status, error, measured, p50_ms, "
                "p90_ms, top1, test_images, size_bytes, model_hash, artifact_hash, runtime_version, detail_json, "
                "samples) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, cell.model, cell.device, cell.precision, cell.backend, cell.status, cell.error,
                 int(cell.measured), cell.p50_ms, cell.p90_ms, cell.top1, cell.test_images, cell.size_bytes,
                 cell.model_hash, cell.artifact_hash, cell.runtime_version, json.dumps(cell.detail, sort_keys=True),
                 samples),
            )  # fmt: skip

    def update_timing(self, run_id: int, cell: CellRecord) -> None:
        """Replace a recorded cell's latency figures (after the night's cells were timed again in turn)."""
        samples = None if cell.samples is None else np.asarray(cell.samples, dtype="<f8").tobytes()
        with self._write(f"update the cell {'/'.join(cell.key)}") as cursor:
            cursor.execute(
                "UPDATE cells SET p50_ms = ?, p90_ms = ?, samples = ?, detail_json = ? WHERE run_id = ? AND "
                "model = ? AND device = ? AND precision = ?",
                (cell.p50_ms, cell.p90_ms, samples, json.dumps(cell.detail, sort_keys=True), run_id, cell.model,
                 cell.device, cell.precision),
            )  # fmt: skip

    def finish_run(self, run_id: int, *, finished: str) -> None:
        with self._write("mark the night finished") as cursor:
            cursor.execute("UPDATE runs SET finished = ? WHERE id = ?", (finished, run_id))

    # reads
    def run(self, run_id: int) -> RunRecord:
        row = self._connection.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise HistoryError(f"no run {run_id} in {self.path}")
        return _run(row)

    def finished_runs(self, *, before: int | None = None, limit: int | None = None) -> list[RunRecord]:
        """Finished runs, newest first (``before``: only runs older than this id)."""
        query = "SELECT * FROM runs WHERE finished IS NOT NULL"
        arguments: list = []
        if before is not None:
            query += " AND id < ?"
            arguments.append(before)
        query += " ORDER BY id DESC"
        if limit is not None:
            query += " LIMIT ?"
            arguments.append(limit)
        return [_run(row) for row in self._connection.execute(query, arguments)]

    def cells(self, run_id: int) -> list[CellRecord]:
        rows = self._connection.execute("SELECT * FROM cells WHERE run_id = ? ORDER BY id", (run_id,))
        return [_cell(row) for row in rows]

    def cell_history(
        self, key: tuple[str, str, str, str], *, before: int, limit: int
    ) -> list[tuple[RunRecord, CellRecord]]:  # noqa: E501
        """The cell ``key`` in finished runs older than ``before``, newest first."""
        rows = self._connection.execute(
            "SELECT runs.*, cells.* FROM cells JOIN runs ON runs.id = cells.run_id WHERE runs.finished IS NOT NULL "
            "AND runs.id < ? AND model = ? AND device = ? AND precision = ? AND backend = ? "
            "ORDER BY runs.id DESC LIMIT ?",
            (before, *key, limit),
        )
        width = len(_RUN_COLUMNS)
        return [(_run(row[:width]), _cell(row[width:])) for row in rows]

    def count(self, table: str) -> int:
        if table not in {"runs", "cells"}:
            raise ValueError(table)
        return int(self._connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


_RUN_COLUMNS = ("id", "label", "started", "finished", "recipe_name", "recipe_hash", "recipe_json", "environment_json")


def _run(row) -> RunRecord:
    id_, label, started, finished, recipe_name, recipe_hash, recipe_json, environment_json = row
    return RunRecord(
        id=id_, label=label, started=started, finished=finished, recipe_name=recipe_name, recipe_hash=recipe_hash,
        recipe=json.loads(recipe_json), environment=json.loads(environment_json),
    )  # fmt: skip


def _cell(row) -> CellRecord:
    (_id, _run_id, model, device, precision, backend, status, error, measured, p50, p90, top1, images, size,
     model_hash, artifact_hash, runtime_version, detail_json, samples) = row  # fmt: skip
    return CellRecord(
        model=model, device=device, precision=precision, backend=backend, status=status, error=error,
        measured=bool(measured), p50_ms=p50, p90_ms=p90, top1=top1, test_images=images, size_bytes=size,
        model_hash=model_hash, artifact_hash=artifact_hash, runtime_version=runtime_version,
        detail=json.loads(detail_json), samples=None if samples is None else np.frombuffer(samples, dtype="<f8"),
    )  # fmt: skip
