"""Accuracy of an artifact, computed through the runtime that ships it (never through torch): top-k on a split,
the holdout top-1 that compression decisions use, and parity/agreement between two sets of logits.

(Named ``accuracy``, not ``evaluate``: ``edgeflow.evaluate`` is the public function, and a submodule of that
name would replace it on the package the moment it was imported.)"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from pydantic import BaseModel

from edgeflow.artifact import Artifact
from edgeflow.backends.base import Compiled, RuntimeSettings
from edgeflow.data import ImageDataset, spread_indices
from edgeflow.errors import ShapeError


class AccuracyStats(BaseModel):
    """Top-k accuracy (fractions in 0..1) on one split."""

    top1: float
    top5: float | None  # None when there are 5 classes or fewer
    samples: int
    split: str
    runtime: str
    per_class_top1: list[float | None] = []  # by label; None for a label the split has no image of

    @property
    def worst_class(self) -> tuple[int, float] | None:
        """The label with the lowest top-1, and that top-1 (None before per-class figures were kept)."""
        scored = [(top1, label) for label, top1 in enumerate(self.per_class_top1) if top1 is not None]
        return (min(scored)[1], min(scored)[0]) if scored else None


def collect_logits(
    compiled: Compiled, dataset: ImageDataset, *, max_samples: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Run every image (or ``max_samples`` of them, each class's share: :func:`edgeflow.data.spread_indices`)
    through ``compiled``; logits and labels."""
    count = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    if count == 0:
        raise ShapeError("the evaluation split is empty")
    batch_size = compiled.input_shape[0]
    expected = tuple(compiled.input_shape[1:])
    first_shape = tuple(dataset[0][0].shape)
    if first_shape != expected:
        raise ShapeError(f"the data gives images of shape {first_shape} but the model takes {expected}")
    usable = count - count % batch_size  # a static-batch model takes whole batches only
    if usable == 0:
        raise ShapeError(f"the model takes batches of {batch_size} but only {count} images were given")
    logits, labels = [], []
    for batch, batch_labels in image_batches(dataset, max_samples=usable, batch_size=batch_size):
        logits.append(compiled.run(batch).reshape(batch_size, -1))
        labels.append(batch_labels)
    return np.concatenate(logits), np.concatenate(labels)


def image_batches(
    dataset: ImageDataset, *, max_samples: int | None = None, batch_size: int = 64
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``max_samples`` images (all by default; a subset keeps each class's share: a folder's split is sorted by
    class) as float32 arrays in batches, with their labels."""
    chosen = spread_indices(dataset, max_samples)
    for start in range(0, len(chosen), batch_size):
        items = [dataset[index] for index in chosen[start : start + batch_size]]
        images = np.stack([image.numpy() for image, _ in items]).astype(np.float32, copy=False)
        yield images, np.asarray([int(label) for _, label in items])


def topk_accuracy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float | None]:
    top1 = float(np.mean(logits.argmax(axis=1) == labels))
    if logits.shape[1] <= 5:
        return top1, None
    top5_indices = np.argpartition(-logits, 5, axis=1)[:, :5]
    top5 = float(np.mean((top5_indices == labels[:, None]).any(axis=1)))
    return top1, top5


def accuracy_from_logits(logits: np.ndarray, labels: np.ndarray, *, split: str, runtime: str) -> AccuracyStats:
    num_classes = logits.shape[1]
    if labels.max() >= num_classes:
        raise ShapeError(f"the model has {num_classes} outputs but the data has label {int(labels.max())}")
    top1, top5 = topk_accuracy(logits, labels)
    hits = logits.argmax(axis=1) == labels
    per_class = [float(np.mean(hits[labels == label])) if np.any(labels == label) else None
                 for label in range(int(labels.max()) + 1)]  # fmt: skip
    return AccuracyStats(
        top1=top1, top5=top5, samples=int(labels.size), split=split, runtime=runtime, per_class_top1=per_class
    )


class MappedAccuracyStats(AccuracyStats):
    """A model with more outputs than the data has classes, scored through a class map: ``top1``/``top5`` over
    the outputs the classes map to, ``top1_all_outputs`` over every output (a pick outside them is wrong)."""

    top1_all_outputs: float
    outputs: int


def check_outputs(logits: np.ndarray, *, num_classes: int, data: str) -> None:
    """A model's outputs must be the data's classes: a 1,000-output model scored on 10 folders would give a
    number that means nothing, so it is an error, not a figure."""
    if logits.shape[1] != num_classes:
        raise ShapeError(
            f"the model has {logits.shape[1]} outputs but {data} has {num_classes} classes: its top-1 on them "
            "would mean nothing without a map from its outputs to these classes"
        )


def evaluate_compiled(
    compiled: Compiled,
    dataset: ImageDataset,
    *,
    split: str = "test",
    max_samples: int | None = None,
    num_classes: int | None = None,
    data: str = "the data",
    output_indices: list[int] | None = None,
    class_names: list[str] | None = None,
    mapped_by: str = "the class map",
) -> AccuracyStats:
    """Top-k of ``compiled`` on ``dataset``; with ``num_classes`` its outputs must be exactly the data's classes,
    unless ``output_indices`` (from a class map or labels file, ``mapped_by``) says which output each class is:
    a model with other outputs too is then scored over the outputs its classes map to."""
    logits, labels = collect_logits(compiled, dataset, max_samples=max_samples)
    if output_indices is not None and output_indices != list(range(logits.shape[1])):
        return _mapped_accuracy(
            logits, labels, output_indices, split=split, runtime=compiled.backend, data=data,
            class_names=class_names, mapped_by=mapped_by,
        )  # fmt: skip
    if num_classes is not None:
        check_outputs(logits, num_classes=num_classes, data=data)
    return accuracy_from_logits(logits, labels, split=split, runtime=compiled.backend)


def _mapped_accuracy(
    logits: np.ndarray,
    labels: np.ndarray,
    output_indices: list[int],
    *,
    split: str,
    runtime: str,
    data: str,
    class_names: list[str] | None = None,
    mapped_by: str = "the class map",
) -> MappedAccuracyStats:
    outputs = logits.shape[1]
    beyond = [position for position, index in enumerate(output_indices) if index >= outputs]
    if beyond:
        position = max(beyond, key=output_indices.__getitem__)
        name = f"class {class_names[position]!r}" if class_names is not None else "a class"
        raise ShapeError(
            f"{mapped_by} sends {name} of {data} to output {output_indices[position]} but the model has "
            f"{outputs} outputs (0 to {outputs - 1})"
        )
    indices = np.asarray(output_indices)
    mapped = accuracy_from_logits(logits[:, indices], labels, split=split, runtime=runtime)
    every = float(np.mean(logits.argmax(axis=1) == indices[labels]))
    return MappedAccuracyStats(**mapped.model_dump(), top1_all_outputs=every, outputs=outputs)


def holdout_top1(artifact: Artifact, dataset: ImageDataset) -> float:
    """Top-1 on the holdout split, executed in f32 so that bf16 noise does not enter budget decisions."""
    from edgeflow.backends import get_backend, host_runtime

    compiled = get_backend(host_runtime(artifact)).compile(
        artifact, settings=RuntimeSettings(execution_precision="f32")
    )
    return evaluate_compiled(compiled, dataset, split="holdout").top1


class ParityStats(BaseModel):
    """How closely one artifact reproduces a reference (torch, or the float artifact) on the same inputs."""

    reference: str
    runtime: str
    samples: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    cosine_similarity: float  # mean over samples of the cosine between the two output vectors
    outputs: str = "logits"  # what was compared: "logits", or "probabilities" when the outputs are a softmax


class HostBuildStats(BaseModel):
    """The same artifact scored on the same test images by this host's build of the runtime, beside the
    device's: a device's build (an ARM one: its int8 kernels are not x86's) can round differently."""

    runtime: str  # this host's runtime and version, and its machine
    top1: float  # on this host
    device_top1: float  # on the device (the report's figure)
    agreement: float  # top-1 agreement between the device's and this host's outputs
    images: int


def wilson_interval(successes: int, count: int, *, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default): where a top-1 or an agreement measured on
    ``count`` images may truly lie. On a few hundred images it is wide: 338 of 341 (99.12%) is 97.4% to 99.7%."""
    if count <= 0:
        raise ValueError("an interval needs at least one image")
    share = successes / count
    centre = (share + z * z / (2 * count)) / (1 + z * z / count)
    half = z * np.sqrt(share * (1 - share) / count + z * z / (4 * count * count)) / (1 + z * z / count)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def measure_parity(reference: np.ndarray, candidate: np.ndarray, *, reference_name: str, runtime: str) -> ParityStats:
    """Compare two stacks of outputs (N x classes) computed on the same inputs, like with like: when one side
    is probabilities (a model ending in a softmax) and the other logits, the logits are turned into
    probabilities first; the figures then say they are over probabilities."""
    reference = reference.astype(np.float64)
    candidate = candidate.astype(np.float64)
    kinds = {are_probabilities(reference), are_probabilities(candidate)}
    if kinds == {True, False}:
        reference, candidate = (softmax(v) if not are_probabilities(v) else v for v in (reference, candidate))
    diff = np.abs(reference - candidate)
    agreement = float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1)))
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    cosine = np.sum(reference * candidate, axis=1) / np.where(norms == 0, 1.0, norms)
    return ParityStats(
        reference=reference_name,
        runtime=runtime,
        samples=int(reference.shape[0]),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        top1_agreement=agreement,
        cosine_similarity=float(cosine.mean()),
        outputs="probabilities" if True in kinds else "logits",
    )


def are_probabilities(outputs: np.ndarray) -> bool:
    """Rows that are all in [0, 1] and sum to 1 (within 0.05: an int8 softmax's outputs are steps of 1/256): a
    softmax's output, not logits."""
    return bool(
        outputs.size and outputs.min() >= -1e-6 and outputs.max() <= 1 + 1e-6
        and np.allclose(outputs.sum(axis=1), 1.0, atol=0.05)
    )  # fmt: skip


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
