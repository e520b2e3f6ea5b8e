"""NetAdapt: shrink a trained network step by step until its latency on the device meets a budget.

Each iteration sets a target (the current latency minus a step that decays from iteration to
iteration) and makes one proposal per prunable channel group and per removable block:

1. *size*: for a group, the largest channel count (a multiple of the channel step: the recipe's divisor, or
   the larger step the device's kernels favour, measured: :mod:`edgeflow.latency.steps`) whose latency meets
   the target, by the oracle; the channels kept are those with the largest L2 norm. A group that cannot
   reach the target, or a block whose removal does not, is skipped.
2. *screen*: holdout top-1 right after the change, with batch-norm statistics recomputed.
3. *short-term fine-tune* the ``screen_top_k`` best, then score them on the holdout split (never test).

The best proposal (by accuracy, or by accuracy lost per millisecond saved) becomes the next model.
With the lookup table, the screened proposals are also timed whole on the device, and the table's
figures are scaled by the median of measured / table over the models timed so far (``recalibrate``).
Every proposal is recorded in the state as it finishes, so a killed search resumes where it was, and
every random choice is seeded from (seed, iteration, proposal), so the resumed search ends where an
uninterrupted one would.
"""

from __future__ import annotations

import copy
import statistics
import time
import zlib
from contextlib import closing
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from edgeflow.data import DataSplits, spread_indices
from edgeflow.io import json_digest
from edgeflow.latency.steps import measure_channel_step
from edgeflow.latency.table import LookupTable, cache_folder
from edgeflow.latency.timer import Timer
from edgeflow.netadapt import space
from edgeflow.netadapt.executor import Executor, InProcessExecutor
from edgeflow.netadapt.oracle import MeasuredOracle, calibration_models
from edgeflow.netadapt.state import Checkpoint, IterationRecord, ProposalRecord, SearchState, table_scale
from edgeflow.progress import Progress
from edgeflow.recipe import FineTuneConfig, SearchConfig, TrainConfig
from edgeflow.train import accuracy, recalibrate_batchnorm, train


def derived_seed(seed: int, *parts: object) -> int:
    """A seed that depends only on ``seed`` and ``parts`` (not on what ran before): resumable randomness."""
    return zlib.crc32(repr((seed, *parts)).encode()) & 0x7FFFFFFF


def finetune(
    model: nn.Module, splits: DataSplits, config: FineTuneConfig, *, seed: int, teacher: nn.Module | None = None
) -> None:
    """``config.steps`` AdamW steps on the train split (one-cycle schedule), then batch-norm recomputed (kept
    as they are with ``config.batchnorm`` frozen).

    With ``config.distill`` > 0 the ``teacher`` (the starting model) is distilled into ``model``.
    """
    frozen = config.batchnorm == "frozen"
    if config.steps == 0:
        if not frozen:
            recalibrate_batchnorm(
                model, splits.train, batch_size=config.batch_size, batches=config.bn_batches, seed=seed
            )
        model.eval()  # as after the steps
        return
    settings = TrainConfig(
        epochs=10**6, batch_size=config.batch_size, lr=config.lr, max_steps=config.steps, augment=config.augment,
        channels_last=config.channels_last,
    )  # fmt: skip
    train(
        model, splits.train, config=settings, seed=seed, bn_batches=config.bn_batches,
        teacher=teacher if config.distill > 0 else None, distill_weight=config.distill, temperature=config.temperature,
        frozen_batchnorm=frozen,
    )  # fmt: skip


@dataclass
class Search:
    """One NetAdapt search; :meth:`run` goes on from whatever ``checkpoint`` holds."""

    start: nn.Module  # the trained starting model (never changed)
    input_shape: tuple[int, ...]
    splits: DataSplits
    config: SearchConfig
    oracle: LookupTable | MeasuredOracle
    timer: Timer  # measures candidates on the device
    checkpoint: Checkpoint
    state: SearchState
    seed: int = 0
    arch: str | None = None  # registry architecture of the starting model, when known
    executor: Executor = InProcessExecutor()
    progress: Progress = Progress.silent()

    def __post_init__(self) -> None:
        self.example = torch.zeros(self.input_shape)
        holdout = self.splits.holdout
        count = self.config.holdout_samples
        # each class's share, not the first ``count`` of a class-sorted folder
        self.holdout = Subset(holdout, spread_indices(holdout, count)) if count else holdout
        self._current: nn.Module | None = None
        self._reference = None  # the starting model compiled for the device, timed beside candidates
        cost = self.oracle.cost  # a resumed search goes on counting from what the checkpoint holds
        cost.measurements += self.state.oracle_measurements
        cost.seconds += self.state.oracle_seconds
        cost.noisy += self.state.oracle_noisy

    # ----- models ---------------------------------------------------------------------------------
    def model_after(self, iterations: int) -> nn.Module:
        """The chosen model after ``iterations`` iterations, rebuilt from the starting model."""
        model = copy.deepcopy(self.start)
        if iterations == 0:
            return model.eval()
        space.replay(model, [record.action for record in self.state.iterations[:iterations]], self.example)
        self.checkpoint.load_weights(self.state.iterations[iterations - 1].weights, model)
        return model.eval()

    def current(self) -> nn.Module:
        if self._current is None:
            self._current = self.model_after(len(self.state.iterations))
        return self._current

    @property
    def recalibrated(self) -> bool:
        """Whether the table's figures are scaled by what the device measured (``SearchConfig.recalibrate``)."""
        return isinstance(self.oracle, LookupTable) and self.config.recalibrate

    def start_latency(self) -> float:
        """What a ratio budget and the steps are fractions of: measured when recalibrated, else the oracle's."""
        return self.state.start_measured_ms if self.recalibrated else self.state.start_estimate_ms

    def scale(self) -> float:
        """The factor the table's figures are multiplied by: measured / table over the models measured so far.

        Timed alone, blocks add up to a figure that is right in shape but not in level for every model the
        search reaches; each model the search times whole says by how much, and the median over them keeps
        one noisy timing (on a shared host, a round can run 25% slow) from moving every estimate after it.
        """
        return table_scale(self.state) if self.recalibrated else 1.0

    def current_table(self) -> float:
        """The lookup table's own figure for the current model (the oracle's, without a table)."""
        last = self.state.iterations[-1] if self.state.iterations else None
        if last is None:
            return self.state.start_estimate_ms
        return last.table_ms if last.table_ms is not None else last.estimate_ms

    def current_latency(self) -> float:
        return self.scale() * self.current_table()

    def estimate(self, model: nn.Module) -> tuple[float, float | None]:
        """(the latency decisions use, the lookup table's own figure or None) for a candidate."""
        latency = self.oracle.latency(model.eval(), self.input_shape)
        if not isinstance(self.oracle, LookupTable):
            return latency, None
        return self.scale() * latency, latency

    @property
    def channel_step(self) -> int:
        """Kept channel counts are multiples of this: the measured step, else the recipe's divisor."""
        steps = self.state.channel_steps
        return steps.step if steps is not None else self.config.channel_divisor

    def current_holdout(self) -> float:
        return self.state.iterations[-1].holdout_top1 if self.state.iterations else self.state.start_holdout_top1

    def measure(self, model: nn.Module) -> dict[str, float]:
        """``model`` timed whole on the device in turn with the starting model, ``measure_rounds`` rounds:
        its median p50 (``measured_ms``), the start's (``reference_ms``), and the median over rounds of
        its p50 / the start's in the same round (``ratio_to_start``), which drift within a round cancels."""
        started = time.perf_counter()
        if self._reference is None:
            self._reference = self.timer.compile_module(self.start, self.input_shape)
        rounds = self.timer.rounds_in_turn(
            {"model": model, "reference": self._reference}, self.input_shape, rounds=self.config.measure_rounds
        )
        self.state.device_measurements += 1
        self.state.device_seconds += time.perf_counter() - started
        ratios = [ms / reference for ms, reference in zip(rounds["model"], rounds["reference"], strict=True)]
        return {
            "measured_ms": statistics.median(rounds["model"]),
            "reference_ms": statistics.median(rounds["reference"]),
            "ratio_to_start": statistics.median(ratios),
        }

    def _save(self) -> None:
        if hasattr(self, "_clock"):
            self.state.elapsed_seconds = time.perf_counter() - self._clock
        self.state.oracle_measurements = self.oracle.cost.measurements
        self.state.oracle_seconds = self.oracle.cost.seconds
        self.state.oracle_noisy = self.oracle.cost.noisy
        self.checkpoint.save(self.state)

    # ----- the loop -------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Time and score the starting model once; fit the lookup table (when it is the oracle) on it; measure
        the channel step (``channel_step: measured``)."""
        if self.config.channel_step == "measured" and self.state.channel_steps is None:
            self.progress.stage("measure which channel counts the device's kernels favour (a probe, timed in turn)")
            self.state.channel_steps = measure_channel_step(
                self.timer, divisor=self.config.channel_divisor, side=self.input_shape[-1],
                rounds=self.config.compare_rounds, cache=cache_folder(),
            )  # fmt: skip
            self.progress.stage(self.state.channel_steps.describe())
            self._save()
        if self.state.start_estimate_ms is not None:
            if isinstance(self.oracle, LookupTable):
                self.oracle.fitted = self.state.table_fit
            return
        model = self.current()
        if isinstance(self.oracle, LookupTable):
            # The start is timed among the calibration models; candidates timed later beside it are
            # brought back to the host's speed of that moment (report.table_errors).
            self.progress.stage("fit the lookup table on calibration models timed in turn on the device")
            fitted = self.oracle.fit(
                model, self.input_shape, calibration=lambda: calibration_models(model, self.input_shape),
                rounds=self.config.compare_rounds,
            )  # fmt: skip
            self.state.table_fit = fitted
            self.state.start_measured_ms = next(
                point.measured_ms for point in fitted.calibration if point.name == "start"
            )
        else:
            self.progress.stage("time the starting model")
            started = time.perf_counter()
            self.state.start_measured_ms = self.timer.time_module(model, self.input_shape)
            self.state.device_measurements += 1
            self.state.device_seconds += time.perf_counter() - started
        self.state.start_estimate_ms = self.oracle.latency(model, self.input_shape)
        self.state.start_holdout_top1 = accuracy(model, self.splits.holdout)
        self.state.budget_ms = self.config.budget(self.start_latency())
        self._save()

    def run(self) -> SearchState:
        self._clock = time.perf_counter() - self.state.elapsed_seconds  # resumed searches add to the time
        self.prepare()
        while self.state.phase == "search":
            reason = self._stop_reason()
            if reason:
                self.state.stop_reason, self.state.phase = reason, "long-term"
                self._save()
                break
            self._iteration()
            self._save()
        long_term = self.config.long_term.model_dump(mode="json")
        if self.state.phase == "done" and self.state.long_term != long_term:
            # the long-term fine-tuning is not in the fingerprint: a finished search resumed with other steps, rate
            # or distillation fine-tunes its chosen model again, from the weights its last iteration left
            self.progress.stage("the long-term fine-tuning differs from the one that made the final model: redo it")
            self.state.phase = "long-term"
            self._clock += self.state.long_term_seconds  # the search's time counts one long-term fine-tuning
        if self.state.phase == "long-term":
            self.progress.stage(f"long-term fine-tune ({self.config.long_term.steps} steps)")
            started = time.perf_counter()
            model = copy.deepcopy(self.current())
            finetune(
                model, self.splits, self.config.long_term, seed=derived_seed(self.seed, "long-term"), teacher=self.start
            )
            # named by the fine-tuning that made it: the file the saved state names is never overwritten, so a
            # kill before the state below is written leaves the state true to its files
            previous = self.state.final_weights
            self.state.final_weights = self.checkpoint.save_weights(f"final-{json_digest(long_term)}.pt", model)
            self.state.long_term = long_term
            self.state.long_term_seconds = time.perf_counter() - started
            self.state.phase = "done"
            self._save()
            if previous not in (None, self.state.final_weights):
                self.checkpoint.remove(previous)
        return self.state

    def final_model(self) -> nn.Module:
        model = self.model_after(len(self.state.iterations))
        self.checkpoint.load_weights(self.state.final_weights, model)
        return model.eval()

    def _stop_reason(self) -> str | None:
        budget = self.state.budget_ms
        latency = self.current_latency()
        if latency <= budget:
            kind = "measured" if self.oracle.measured else "estimated"
            if self.recalibrated:
                kind += f", table x {self.scale():.3f} from the device's measurements"
            count = len(self.state.iterations)
            return f"budget met: {latency:.3f} ms ({kind}) <= {budget:.3f} ms after {count} iterations"
        if len(self.state.iterations) >= self.config.max_iterations:
            return f"stopped after {self.config.max_iterations} iterations without meeting the budget"
        if self.state.stop_reason:
            return self.state.stop_reason
        return None

    def _target(self, shrink: int = 0) -> float:
        """This iteration's target: the current latency minus the decayed step (halved ``shrink`` times),
        and never below the budget: a last step cut past it gives accuracy away for latency nobody asked for
        (one run ended at 0.53 of the start's latency for a 0.57 budget, 1.2 points of test top-1 down)."""
        index = len(self.state.iterations)
        fraction = self.config.initial_step * self.config.step_decay**index / 2**shrink
        if self.recalibrated:
            # The cut is sized in the table's own figures (a fraction of the start's, taken off the current
            # model's): which proposals reach it then does not hang on a measurement's noise.
            cut = fraction * self.state.start_estimate_ms / self.current_table()
            target = self.current_latency() * (1 - cut)
        else:
            target = self.current_latency() - fraction * self.start_latency()
        return max(target, self.state.budget_ms)

    def _iteration(self) -> None:
        """One NetAdapt iteration; when no proposal reaches the target, retry with half the step (twice)."""
        for shrink in range(3):
            if self.state.pending_shrink > shrink:
                continue
            self.state.pending_shrink = shrink
            if self._proposals(self._target(shrink)):
                return
            self.state.pending, self.state.pending_shrink = [], shrink + 1
            self._save()
        self.state.pending_shrink = 0
        self.state.stop_reason = "no proposal reaches the target, even with a quarter of the step"

    def _proposals(self, target: float) -> bool:
        index = len(self.state.iterations)
        model = self.current()
        names = [f"prune {group.name}" for group in space.prunable_groups(model, self.example, min_channels=1)]
        if self.config.remove_blocks:
            names += [f"remove-block {block}" for block in space.removable_blocks(model)]
        done = {record.name for record in self.state.pending}
        self.progress.stage(
            f"iteration {index + 1}: target {target:.3f} ms (now {self.current_latency():.3f}, "
            f"budget {self.state.budget_ms:.3f}); {len(names)} proposals"
        )
        work = self._work(index)
        with self.progress.task(f"iteration {index + 1} proposals", total=len(names)) as advance:
            advance(len(done), "")
            sized = []
            for name in names:  # sizing asks the oracle (which may time blocks on the device): here, in turn
                if name in done:
                    continue
                record = _size(self, name, target=target)
                if record.skipped is None:
                    sized.append(record)
                    continue
                self.state.pending.append(record)
                self._save()
                advance(1, _note(record))
            with closing(self.executor.map(partial(screen_proposal, work), sized)) as screened:
                for record, (top1, seconds) in screened:
                    record.zero_shot_top1, record.seconds = top1, record.seconds + seconds
                    self.state.pending.append(record)
                    self._save()
                    advance(1, _note(record))
        order = {name: position for position, name in enumerate(names)}
        self.state.pending.sort(key=lambda record: order.get(record.name, len(order)))  # whatever finished first
        if self.config.measure == "proposals":  # timed after the screening, when nothing else runs beside them
            for record in self.state.pending:
                if record.skipped is None and record.measured_ms is None:
                    for key, value in self.measure(self._proposal_model(record, index, weights=False)).items():
                        setattr(record, key, value)
                    self._save()
        candidates = [record for record in self.state.pending if record.skipped is None]
        if not candidates:
            return False
        ranked = sorted(candidates, key=lambda record: (-record.zero_shot_top1, record.name))
        chosen_k = ranked[: self.config.screen_top_k] if self.config.screen_top_k else ranked
        todo = [record for record in chosen_k if record.holdout_top1 is None]
        with self.progress.task(f"iteration {index + 1} short-term fine-tune", total=len(chosen_k)) as advance:
            advance(len(chosen_k) - len(todo), "")
            with closing(self.executor.map(partial(short_term_proposal, work), todo)) as tuned_ones:
                for record, tuned in tuned_ones:
                    self.checkpoint.save_weights(_proposal_file(index, record.name)[len("weights/") :], tuned.weights)
                    record.holdout_top1, record.seconds = tuned.holdout_top1, record.seconds + tuned.seconds
                    self._save()
                    advance(1, f"{record.name}: holdout {100 * tuned.holdout_top1:.1f}%")
        if self.config.measure == "screened":
            for record in chosen_k:
                if record.measured_ms is None:
                    for key, value in self.measure(self._proposal_model(record, index, weights=False)).items():
                        setattr(record, key, value)
                    self._save()
        best = self._select(chosen_k)
        model = self._proposal_model(best, index)
        if best.measured_ms is not None:
            timing = {"measured_ms": best.measured_ms, "reference_ms": best.reference_ms}
            timing["ratio_to_start"] = best.ratio_to_start
        else:
            timing = self.measure(model)
        weights = self.checkpoint.save_weights(f"iteration-{index + 1:03d}.pt", model)
        self.state.iterations.append(
            IterationRecord(
                index=index + 1,
                target_ms=target,
                chosen=best.name,
                action=best.action,
                estimate_ms=best.estimate_ms,
                table_ms=best.table_ms,
                **timing,
                holdout_top1=best.holdout_top1,
                weights=weights,
                proposals=self.state.pending,
                seconds=sum(record.seconds for record in self.state.pending),
            )
        )
        for record in chosen_k:
            self.checkpoint.remove(_proposal_file(index, record.name))
        self.state.pending, self.state.pending_shrink = [], 0
        self._current = model.eval()
        self.progress.stage(
            f"iteration {index + 1}: chose {best.action.describe()}: {best.estimate_ms:.3f} ms estimated, "
            f"{timing['measured_ms']:.3f} ms measured, holdout {100 * best.holdout_top1:.2f}%"
        )
        return True

    def _work(self, index: int) -> ProposalWork:
        return ProposalWork(
            current=self.current(), start=self.start, input_shape=self.input_shape, splits=self.splits,
            screen_holdout=self.holdout, short_term=self.config.short_term, seed=self.seed, index=index,
        )  # fmt: skip

    def _proposal_model(self, record: ProposalRecord, index: int, *, weights: bool = True) -> nn.Module:
        model = copy.deepcopy(self.current())
        space.apply(model, record.action, self.example)
        if weights:
            self.checkpoint.load_weights(_proposal_file(index, record.name), model)
        return model.eval()

    def _select(self, records: list[ProposalRecord]) -> ProposalRecord:
        if self.config.selection == "accuracy":
            return max(records, key=lambda record: (record.holdout_top1, -record.estimate_ms))
        now_ms, now_top1 = self.current_latency(), self.current_holdout()

        def lost_per_ms(record: ProposalRecord) -> float:
            return (now_top1 - record.holdout_top1) / max(1e-6, now_ms - record.estimate_ms)

        return min(records, key=lambda record: (lost_per_ms(record), record.name))


def _note(record: ProposalRecord) -> str:
    if record.skipped:
        return f"{record.name}: skipped"
    return f"{record.name}: {record.estimate_ms:.3f} ms, holdout {100 * record.zero_shot_top1:.1f}% before tuning"


def _proposal_file(index: int, name: str) -> str:
    return f"weights/proposal-{index + 1:03d}-{zlib.crc32(name.encode()):08x}.pt"


def _size(search: Search, name: str, *, target: float) -> ProposalRecord:
    """Size one proposal with the oracle: its action and latency, or why it is skipped."""
    started = time.perf_counter()
    kind, _, target_name = name.partition(" ")
    current = search.current()
    if kind == "remove-block":
        action = space.Action(kind="remove-block", target=target_name)
        _model, estimate, table = _changed(search, current, action)
        skipped = "does not reach the target" if estimate > target else None
        return ProposalRecord(
            name=name, action=action, estimate_ms=estimate, table_ms=table, skipped=skipped,
            seconds=time.perf_counter() - started,
        )  # fmt: skip
    found = _largest_keep(search, current, target_name, target)
    if found is None:
        return ProposalRecord(name=name, skipped="cannot reach the target", seconds=time.perf_counter() - started)
    action, _model, estimate, table, channels = found
    return ProposalRecord(
        name=name, action=action, channels=channels, estimate_ms=estimate, table_ms=table,
        seconds=time.perf_counter() - started,
    )  # fmt: skip


@dataclass(frozen=True)
class ProposalWork:
    """What screening and short-term fine-tuning need of an iteration, and nothing more: plain data another
    process (a Ray task) can take, while the search, its oracle, its timer and its state stay with the driver."""

    current: nn.Module  # the model the iteration starts from
    start: nn.Module  # the distillation teacher
    input_shape: tuple[int, ...]
    splits: DataSplits
    screen_holdout: Dataset  # the holdout images proposals are screened on (``holdout_samples``)
    short_term: FineTuneConfig
    seed: int
    index: int  # the iteration (0-based): part of every seed

    def proposal(self, record: ProposalRecord) -> nn.Module:
        model = copy.deepcopy(self.current)
        space.apply(model, record.action, torch.zeros(self.input_shape))
        return model


@dataclass(frozen=True)
class TunedProposal:
    holdout_top1: float
    seconds: float
    weights: dict[str, torch.Tensor]  # the fine-tuned state dict, for the driver to keep


def screen_proposal(work: ProposalWork, record: ProposalRecord) -> tuple[float, float]:
    """Holdout top-1 of a sized proposal right after the change, batch-norm recomputed (unless the short-term
    fine-tuning keeps it frozen); and the seconds."""
    started = time.perf_counter()
    model = work.proposal(record)
    if work.short_term.batchnorm != "frozen":
        recalibrate_batchnorm(
            model, work.splits.train, batch_size=work.short_term.batch_size, batches=work.short_term.bn_batches,
            seed=derived_seed(work.seed, work.index, record.name, "bn"),
        )  # fmt: skip
    return accuracy(model, work.screen_holdout), time.perf_counter() - started


def short_term_proposal(work: ProposalWork, record: ProposalRecord) -> TunedProposal:
    """Short-term fine-tune one screened proposal: its holdout top-1, the seconds, and its weights."""
    started = time.perf_counter()
    model = work.proposal(record)
    finetune(
        model, work.splits, work.short_term, seed=derived_seed(work.seed, work.index, record.name), teacher=work.start
    )
    top1 = accuracy(model, work.splits.holdout)
    return TunedProposal(holdout_top1=top1, seconds=time.perf_counter() - started, weights=model.state_dict())


def _changed(search: Search, current: nn.Module, action: space.Action) -> tuple[nn.Module, float, float | None]:
    model = copy.deepcopy(current)
    space.apply(model, action, search.example)
    return (model, *search.estimate(model))


def _largest_keep(
    search: Search, current: nn.Module, group: str, target: float
) -> tuple[space.Action, nn.Module, float, float | None, list[int]] | None:
    """Binary search for the most channels whose latency meets ``target`` (latency falls with channels)."""
    channels = space.out_channels(current.get_submodule(group))
    divisor = search.channel_step
    floor = -(-max(search.config.min_channels, divisor) // divisor) * divisor  # the least multiple of the step
    options = [keep for keep in range(floor, channels, divisor)]
    if not options:
        return None
    cache: dict[int, tuple[space.Action, nn.Module, float, float | None]] = {}
    ranking = space.l2_ranking(current, search.example, group)

    def probe(keep: int) -> tuple[space.Action, nn.Module, float, float | None]:
        if keep not in cache:
            action = space.keep_action(group, ranking, keep)
            cache[keep] = (action, *_changed(search, current, action))
        return cache[keep]

    if probe(options[0])[2] > target:
        return None
    low, high = 0, len(options) - 1  # options[low] meets the target; find the largest index that does
    while low < high:
        middle = (low + high + 1) // 2
        if probe(options[middle])[2] <= target:
            low = middle
        else:
            high = middle - 1
    action, model, estimate, table = probe(options[low])
    return action, model, estimate, table, [channels, options[low]]


__all__ = ["ProposalWork", "Search", "derived_seed", "finetune", "screen_proposal", "short_term_proposal"]
