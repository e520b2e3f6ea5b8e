"""What a search has done so far, written atomically after every step so ``--resume`` can go on.

A model is never pickled: the state records the actions applied to the starting model (replayed on
resume) and the weights as a ``state_dict`` file loaded with ``weights_only=True``. Weight files are
written before the state that names them, so a kill between the two leaves only an unused file.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch
from pydantic import BaseModel, ValidationError

from edgeflow.errors import ConfigError
from edgeflow.io import atomic_path, write_json
from edgeflow.latency.steps import ChannelStepStats
from edgeflow.latency.table import TableFit
from edgeflow.netadapt.space import Action

STATE_VERSION = 4


class ProposalRecord(BaseModel):
    """One proposal of one iteration: what it changed, its latency, its holdout accuracy."""

    name: str
    action: Action | None = None
    channels: list[int] | None = None  # [before, after] for a pruned group
    estimate_ms: float | None = None  # the oracle's figure (measured when the oracle is "measured")
    table_ms: float | None = None  # the lookup table's own figure, before anchoring on a measurement
    measured_ms: float | None = None  # timed on the device, when proposals are measured
    reference_ms: float | None = None  # the starting model, timed in turn with it (the host's drift)
    ratio_to_start: float | None = None  # median over rounds of its p50 / the start's p50 in the same round
    zero_shot_top1: float | None = None  # holdout top-1 right after the change (batch-norm recomputed)
    holdout_top1: float | None = None  # after short-term fine-tuning
    skipped: str | None = None  # why it was not a candidate
    seconds: float = 0.0


class IterationRecord(BaseModel):
    index: int
    target_ms: float
    chosen: str
    action: Action
    estimate_ms: float
    table_ms: float | None = None
    measured_ms: float | None
    reference_ms: float | None = None  # the starting model, timed in turn with the chosen one
    ratio_to_start: float | None = None
    holdout_top1: float
    weights: str
    proposals: list[ProposalRecord]
    seconds: float


class BaselineRecord(BaseModel):
    """A baseline model's fine-tuned weights, kept so that a resumed evaluation does not fine-tune it again."""

    weights: str
    long_term: dict  # the fine-tuning that made them: another one makes them again


class SearchState(BaseModel):
    version: int = STATE_VERSION
    fingerprint: str  # config, starting model and seed: resume refuses a different search
    phase: str = "search"  # search -> long-term -> done
    start_estimate_ms: float | None = None
    start_measured_ms: float | None = None
    start_holdout_top1: float | None = None
    table_fit: TableFit | None = None  # how the lookup table's blocks add up (when the oracle is the table)
    channel_steps: ChannelStepStats | None = None  # the measured channel step (channel_step: measured)
    target: dict | None = None  # the variant whose file the search timed (edgeflow.netadapt.run.search_target_record)
    budget_ms: float | None = None
    iterations: list[IterationRecord] = []
    pending: list[ProposalRecord] = []  # proposals of the unfinished iteration
    pending_shrink: int = 0  # how many times the unfinished iteration's step was halved
    stop_reason: str | None = None
    final_weights: str | None = None
    long_term: dict | None = None  # the long-term fine-tuning (FineTuneConfig) that made final_weights
    long_term_seconds: float = 0.0  # how long it took (in elapsed_seconds; a redo replaces it there)
    baselines: dict[str, BaselineRecord] = {}  # by point name (width-0.75, ...)
    oracle_measurements: int = 0
    oracle_seconds: float = 0.0
    oracle_noisy: int = 0  # oracle timings taken while other processes kept the device busy
    device_measurements: int = 0
    device_seconds: float = 0.0
    elapsed_seconds: float = 0.0


def drift_corrected(record: ProposalRecord | IterationRecord, start_measured_ms: float) -> float | None:
    """A whole-model timing at the host's speed when the search began: its ratio to the starting model
    timed in the same rounds, times the start's latency then (a shared host drifts by tens of percent)."""
    if record.measured_ms is None:
        return None
    if record.ratio_to_start is not None:
        return record.ratio_to_start * start_measured_ms
    if record.reference_ms:
        return record.measured_ms * start_measured_ms / record.reference_ms
    return record.measured_ms


def measured_candidates(state: SearchState) -> list[ProposalRecord]:
    """Every proposal of the finished iterations that was timed whole on the device. With ``measure:
    chosen`` only the chosen model is timed, and its timing is recorded on the iteration: it is copied
    onto the chosen proposal's record here."""
    records = []
    for iteration in state.iterations:
        measured = [record for record in iteration.proposals if record.measured_ms is not None]
        chosen = next((record for record in iteration.proposals if record.name == iteration.chosen), None)
        if chosen is not None and chosen.measured_ms is None and iteration.measured_ms is not None:
            timing = ("measured_ms", "reference_ms", "ratio_to_start")
            measured.append(chosen.model_copy(update={key: getattr(iteration, key) for key in timing}))
        records += measured
    return records


def table_scale(state: SearchState) -> float:
    """How much slower the device measured models than the lookup table said: the median of measured /
    table over the start and every model measured whole in the finished iterations (one per
    measurement, so one noisy timing moves it little). Recorded measurements only: a resumed search
    computes the same figure."""
    ratios = [state.start_measured_ms / state.start_estimate_ms]
    ratios += [
        drift_corrected(record, state.start_measured_ms) / record.table_ms
        for record in measured_candidates(state)
        if record.table_ms
    ]
    return float(statistics.median(ratios))


class Checkpoint:
    """The state file and weight files of one search, in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / "state.json"

    def exists(self) -> bool:
        return self.path.exists()

    def load(self, fingerprint: str, *, earlier: tuple[str, dict] | None = None) -> SearchState:
        """The saved state of the search whose fingerprint is ``fingerprint``. ``earlier``: the same search's
        fingerprint when it still held the long-term fine-tuning (states written before that left it), and that
        fine-tuning: such a state is taken, its final model recorded as made by it."""
        try:
            state = SearchState.model_validate(json.loads(self.path.read_text()))
        except (OSError, json.JSONDecodeError, ValidationError) as exc:
            raise ConfigError(f"cannot resume: {self.path} is unreadable ({str(exc).splitlines()[0]})") from None
        if state.version != STATE_VERSION:
            raise ConfigError(f"cannot resume: {self.path} has state version {state.version}, not {STATE_VERSION}")
        if earlier is not None and state.fingerprint == earlier[0]:
            state.fingerprint = fingerprint
            if state.phase == "done" and state.long_term is None:
                state.long_term = earlier[1]
        if state.fingerprint != fingerprint:
            raise ConfigError(
                f"cannot resume: {self.path} belongs to a search with another model, recipe or seed; "
                "start a new one in another folder, or run the same command"
            )
        return state

    def save(self, state: SearchState) -> None:
        write_json(self.path, state.model_dump(mode="json"))

    def save_weights(
        self, name: str, module: torch.nn.Module | dict[str, torch.Tensor], *, folder: str = "weights"
    ) -> str:
        """Keep ``module``'s weights (or a state dict) as ``folder/name``, written whole or not at all."""
        path = self.folder / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        weights = module if isinstance(module, dict) else module.state_dict()
        with atomic_path(path) as temporary:
            torch.save(weights, temporary)
        return str(path.relative_to(self.folder))

    def load_weights(self, name: str, module: torch.nn.Module) -> None:
        state_dict = torch.load(self.folder / name, map_location="cpu", weights_only=True)
        module.load_state_dict(state_dict)

    def remove(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)
