"""A night on a Ray device farm: every cell a Ray task on the node that declares its device.

Each cell runs ``optimize`` on that node in a folder of its own, packs the folder and returns it with its record;
this process, the driver, unpacks it into the night's staging folder and records the cell in the history as it
comes back (the only writer of either). A cell whose worker dies (killed, out of memory, its node lost) is run
once more; if that dies too, the cell is recorded as failed with the reason and the night goes on. A device no
node declares fails its cells with one line saying so. Then each device's cells are timed again in turn with one
another, on that device's node (:func:`time_in_turn_on_farm`), as a night in one process does.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from edgeflow.cluster.executor import TaskPlace
from edgeflow.cluster.farm import FarmStats, device_options, running_tasks, status
from edgeflow.cluster.session import require_ray
from edgeflow.cluster.target import unpack_artifacts
from edgeflow.errors import ConfigError, first_line
from edgeflow.nightly.cells import CellJob, CellResult, run_cell, time_cells_in_turn
from edgeflow.nightly.config import NightlySpec
from edgeflow.nightly.history import CellRecord
from edgeflow.progress import Progress

ATTEMPTS = 2  # a cell whose worker dies is run once more


@dataclass
class FarmCell:
    """What a cell's task sends back: its record, seconds, its folder packed, and where it ran."""

    record: CellRecord
    seconds: float
    packed: bytes
    artifact: str | None  # the artifact's path inside the cell folder
    node: str


def farm_cell(spec: NightlySpec, job: CellJob, *, weights: bytes | None) -> FarmCell:
    """The body of a cell's Ray task: the cell in a temporary folder of this node, packed for the driver."""
    with tempfile.TemporaryDirectory(prefix="edgeflow-cell-") as folder:
        if weights is not None and job.checkpoint is not None:
            local = Path(folder) / job.checkpoint.name
            local.write_bytes(weights)
            job = replace(job, checkpoint=local)
        cells = Path(folder) / "cells"
        record, seconds, _device, artifact = run_cell(spec, job, folder=cells, progress=Progress.silent())
        cell_folder = Path(folder) / "cells" / job.name
        inside = str(artifact.relative_to(cell_folder)) if artifact is not None and artifact.exists() else None
        return FarmCell(
            record=record, seconds=seconds, packed=_pack(cell_folder), artifact=inside, node=str(TaskPlace.here())
        )


def run_cells_on_farm(
    jobs: list[CellJob], spec: NightlySpec, *, folder: Path, progress: Progress
) -> Iterator[CellResult]:
    """Run ``jobs`` as Ray tasks across the farm; yield each cell as it finishes (its folder in ``folder``)."""
    ray = require_ray()
    farm = status(activity=False)
    progress.stage(_describe(farm))
    remote = ray.remote(farm_cell)
    weights = {}  # each model's trained file, in the object store once
    running: dict = {}
    with progress.task("cells on the farm", total=len(jobs)) as advance:
        for job in jobs:
            try:
                options = device_options(job.device, farm=farm)
            except ConfigError as exc:  # the night goes on with the devices the farm has
                advance(1, f"{job.name}: failed ({exc})")
                yield _failed(job, str(exc))
                continue
            if job.checkpoint is not None and job.checkpoint not in weights:
                weights[job.checkpoint] = ray.put(job.checkpoint.read_bytes())
            reference = _submit(remote, spec, job, options=options, weights=weights.get(job.checkpoint))
            running[reference] = (job, options, 1)
        hosts = {node.node_id: f"{node.address}/{node.node_id[:8]}" for node in farm.nodes}
        try:
            yield from _collect(ray, running, remote=remote, spec=spec, weights=weights, hosts=hosts, folder=folder,
                                advance=advance, progress=progress)  # fmt: skip
        finally:  # the driver stopped early (an error, Ctrl-C): nothing of this night left running
            for reference in running:
                ray.cancel(reference, force=True)


def _collect(ray, running: dict, *, remote, spec: NightlySpec, weights: dict, hosts: dict, folder: Path, advance,
             progress: Progress) -> Iterator[CellResult]:  # fmt: skip
    """Each cell as it comes back (retried once when its worker died), until none is left running."""
    while running:
        done, _ = ray.wait(list(running), num_returns=1, timeout=3.0)
        if not done:  # nothing finished: say what runs where, and what waits
            advance(0, _activity(running, hosts))
            for reference, job in _stranded(running):  # their device's node left: Ray would wait forever
                running.pop(reference)
                ray.cancel(reference, force=True)
                advance(1, f"{job.name}: failed")
                yield _failed(job, f"the node that declared {job.device.name} left the farm")
            continue
        job, options, attempt = running.pop(done[0])
        try:
            cell: FarmCell = ray.get(done[0])
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.LocalRayletDiedError, ray.exceptions.ObjectLostError,
                ray.exceptions.OwnerDiedError, ray.exceptions.OutOfMemoryError) as exc:  # fmt: skip
            reason = _first_line(exc)
            if attempt < ATTEMPTS:
                progress.stage(f"cell {job.name}: its worker died ({reason}); running it once more")
                reference = _submit(remote, spec, job, options=options, weights=weights.get(job.checkpoint))
                running[reference] = (job, options, attempt + 1)
                continue
            advance(1, f"{job.name}: failed")
            yield _failed(job, f"its worker died in both attempts ({reason})")
            continue
        except ray.exceptions.RayError as exc:
            advance(1, f"{job.name}: failed")
            yield _failed(job, f"Ray could not run it: {_first_line(exc)}")
            continue
        cell.record.detail["node"] = cell.node
        if attempt > 1:
            cell.record.detail["attempts"] = attempt
        unpack_artifacts(cell.packed, folder / job.name)
        artifact = folder / job.name / cell.artifact if cell.artifact else None
        advance(1, f"{job.name}: {cell.record.status} on {cell.node.split(' ')[0]}")
        yield cell.record, cell.seconds, job.device, artifact


def time_on_node(spec: NightlySpec, cells: list[tuple[CellRecord, str]], *, packed: bytes) -> list[CellRecord]:
    """The body of a device's timing task: its cells' artifacts unpacked here and timed in turn."""
    from edgeflow.device import DeviceSpec

    with tempfile.TemporaryDirectory(prefix="edgeflow-timing-") as folder:
        unpack_artifacts(packed, Path(folder))
        results = []
        for record, (artifact, device_json) in cells:
            device = DeviceSpec.model_validate_json(device_json)
            results.append((record, 0.0, device, Path(folder) / artifact))
        time_cells_in_turn(results, spec, progress=Progress.silent())
        node = str(TaskPlace.here())
        for record, *_ in results:
            record.detail["timing_node"] = node
        return [record for record, *_ in results]


def time_in_turn_on_farm(cells: list[CellResult], spec: NightlySpec, *, progress: Progress) -> list[CellRecord]:
    """Each device's measured cells timed again in turn on the node that declares it (one task per device,
    holding the device, and the whole node when the device is its CPU); the cells' records updated in place."""
    ray = require_ray()
    farm: FarmStats = status(activity=False)
    by_device: dict[str, list[int]] = {}
    for index, (cell, _seconds, device, artifact) in enumerate(cells):
        if cell.status == "ok" and cell.measured and device.is_local and artifact is not None:
            by_device.setdefault(device.name, []).append(index)
    if not by_device:
        return []
    progress.stage(f"time the cells in turn on their devices' nodes ({', '.join(by_device)})")
    remote = ray.remote(time_on_node)
    references = {}
    for name, indices in by_device.items():
        device, root = cells[indices[0]][2], _cells_folder(cells[indices[0]][3])
        shipped = [(cells[i][0], (str(cells[i][3].relative_to(root)), cells[i][2].model_dump_json())) for i in indices]
        packed = _pack_files(root, [cells[i][3] for i in indices])
        try:
            options = device_options(device, farm=farm)
        except ConfigError as exc:  # its node left since its cells ran: they keep their own timing
            for index in indices:
                cells[index][0].detail["timing"] = f"its own timing loop (timing in turn failed: {exc})"
            continue
        task = remote.options(**options, max_retries=1, name=f"time {name} in turn")
        references[task.remote(spec, shipped, packed=packed)] = indices
    updated = []
    while references:
        done, _ = ray.wait(list(references), num_returns=1, timeout=3.0)
        if not done:  # a device whose node left meanwhile: its timing would wait forever
            declared = status(activity=False).devices()
            for reference in [ref for ref, indices in references.items() if cells[indices[0]][2].name not in declared]:
                ray.cancel(reference, force=True)
                for index in references.pop(reference):
                    cells[index][0].detail["timing"] = "its own timing loop (its device's node left the farm)"
            continue
        indices = references.pop(done[0])
        try:
            records = ray.get(done[0])
        except ray.exceptions.RayError as exc:
            for index in indices:
                cells[index][0].detail["timing"] = f"its own timing loop (timing in turn failed: {_first_line(exc)})"
            continue
        for index, record in zip(indices, records, strict=True):
            old = cells[index]
            cells[index] = (record, old[1], old[2], old[3])
            updated.append(record)
    return updated


def _stranded(running: dict) -> list[tuple[object, CellJob]]:
    """The cells waiting for a device no alive node declares any more (its node was lost mid-night)."""
    declared = status(activity=False).devices()
    return [(reference, job) for reference, (job, _options, _attempt) in running.items()
            if job.device.name not in declared]  # fmt: skip


def _activity(running: dict, hosts: dict[str, str]) -> str:
    """``running on <node>: <cell>, ...; N queued``, from Ray's state API (counts only without it)."""
    now = running_tasks()
    if now is None:
        return f"{len(running)} in flight"
    names = {f"cell {job.name}" for job, _options, _attempt in running.values()}
    busy = [f"{name[len('cell ') :]} on {hosts.get(node, node[:8])}" for name, node in now.items() if name in names]
    queued = len(running) - len(busy)
    return "running " + (", ".join(sorted(busy)) or "none") + (f"; {queued} queued" if queued else "")


def _submit(remote, spec: NightlySpec, job: CellJob, *, options: dict, weights):
    """Start ``job``'s task (never retried by Ray: the caller retries it once, knowing why it died)."""
    return remote.options(**options, max_retries=0, name=f"cell {job.name}").remote(spec, job, weights=weights)


def _failed(job: CellJob, reason: str) -> CellResult:
    record = CellRecord(
        model=job.model, device=job.device.name, precision=job.precision, backend=job.backend, status="failed",
        error=reason,
    )  # fmt: skip
    return record, 0.0, job.device, None


def _describe(farm: FarmStats) -> str:
    alive = [node for node in farm.nodes if node.alive]
    devices = ", ".join(f"{name} on {node.address}" for name, node in sorted(farm.devices().items())) or "none"
    return f"farm at {farm.address}: {len(alive)} nodes; devices {devices}"


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc, limit=None)}"


def _pack(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        if folder.exists():
            archive.add(folder, arcname=".")
    return buffer.getvalue()


def _pack_files(root: Path, artifacts: list[Path]) -> bytes:
    """The artifacts (an OpenVINO IR with its .bin) under ``root``, packed with their paths below it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for artifact in artifacts:
            for path in (artifact, artifact.with_suffix(".bin")):
                if path.exists() and (path == artifact or artifact.suffix == ".xml"):
                    archive.add(path, arcname=str(path.relative_to(root)))
    return buffer.getvalue()


def _cells_folder(artifact: Path) -> Path:
    """The night's ``cells`` folder an artifact lies under."""
    for parent in artifact.parents:
        if parent.name == "cells":
            return parent
    raise ValueError(f"{artifact} is not in a cells folder")
