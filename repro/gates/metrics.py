"""Each gate's typed summary, as recorded in a run's `metrics`: what status, report, forecast and
display read. Cheap to import (no torch), so readers of records never load a gate's code.

`load_metrics(cls, record)` reads one back; a record written by another version of repro whose
metrics do not fit gives None, and the reader says the figure is unavailable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from repro.config.typed import from_dict
from repro.errors import ConfigError
from repro.speed_sample import SpeedSample

if TYPE_CHECKING:
    from repro.records.record import Record

M = TypeVar("M")


@dataclass(frozen=True)
class DataMetrics:
    sizes: dict[str, int]  # examples per split: train, val, test
    num_classes: int | None  # classes or vocabulary of the task; None: a task without classes
    official_split: bool
    data_files: list[str]  # what the paper's data comes from (part of the data fingerprint)
    task: str | None = None  # paper.task (records before tasks: a classifier's)


@dataclass(frozen=True)
class ShapesMetrics:
    init_loss: float | None  # None when the forward pass failed or gave the wrong shape
    ln_c: float | None  # ln C of a classifier (None for other tasks)
    trainable_params: int
    total_params: int
    expected_loss: float | None = None  # what the task expects at init (None: it states none)
    task: str | None = None


@dataclass(frozen=True)
class OverfitMetrics:
    initial_loss: float | None
    final_loss: float | None
    min_loss: float | None
    steps: int  # steps taken (forward passes measured)
    passed_at_step: int | None
    steps_per_s: float  # median full step (forward + backward + optimizer) on the fixed batch
    batch_size: int
    lr: float
    speed: SpeedSample | None = None  # the forecast's input (None: not measured)


@dataclass(frozen=True)
class TargetResult:
    """One paper number against ours (mean over seeds)."""

    name: str
    metric: str
    paper: float
    tolerance: float
    ours_mean: float | None
    ours_std: float | None
    n_seeds: int
    gap: float | None  # ours - paper
    label: str  # REPRODUCED | WITHIN TOLERANCE | NOT REPRODUCED | NOT MEASURED
    where: str | None = None
    spread: float | None = None  # the paper's own spread, when it states one


@dataclass(frozen=True)
class FullMetrics:
    seeds: list[int]
    per_seed: list[dict[str, float]]  # val/test metrics of each seed's best checkpoint
    mean: dict[str, float]
    std: dict[str, float | None]
    targets: list[TargetResult]
    lr_by_seed: dict[str, float]  # the learning rate each seed trained with
    epochs: int  # summed over seeds
    train_seconds: float
    dataset: str | None = None
    baseline: dict[str, Any] | None = None  # {"name": spec, "metrics": {...}}
    # Records before tasks: % of val and test examples in their split's most frequent class
    majority: dict[str, float] = field(default_factory=dict)
    eval_sizes: dict[str, int] = field(default_factory=dict)  # examples of val and test
    task: str | None = None  # paper.task (None: a record before tasks, a classifier's)
    # The task's trivial baseline: {"name", "unit", "metrics": {"val/acc": ...}, "comparisons":
    # {split: Comparison as a dict}} (None: the task has none, or a record before tasks)
    trivial: dict[str, Any] | None = None
    # Declared invariances measured on the test split (repro/gates/invariance.py): [{"transform",
    # "exact", "where", "per_seed": [{"n", "changed", "mean_change", ...}]}]; None: records before
    invariances: list[dict[str, Any]] | None = None
    # The preflight (repro/gates/preflight.py): steps, seconds, val metric vs the trivial
    # baseline's, the paired comparison; {"skipped": why} when skipped; None: records before
    preflight: dict[str, Any] | None = None


@dataclass(frozen=True)
class VariantRow:
    variant: str
    overrides: str
    ours: float | None
    std: float | None
    n: int
    paper: float | None
    delta: float | None  # ours - first row's ours


@dataclass(frozen=True)
class ExperimentsMetrics:
    metric: str
    jobs: int
    failed: int
    rows: list[VariantRow] = field(default_factory=list)


def to_record(metrics: Any) -> dict[str, Any]:
    """A metrics dataclass as the plain dict stored in record.json ({} for None)."""
    return asdict(metrics) if metrics is not None else {}


def load_metrics(cls: type[M], record: Record) -> M | None:
    """The record's metrics as `cls`, or None when absent or written in another shape."""
    data = record.metrics
    if not data:
        return None
    try:
        return from_dict(cls, data, "metrics")
    except ConfigError:
        return None
