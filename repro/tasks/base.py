"""Task: the base class of everything that depends on what a paper's model predicts.

The gates are generic; they ask the paper's task for:
  - the contract of a raw example and of an output (what a label looks like; the output's shape),
  - the loss, and the metrics on val and test (torchmetrics), each with its direction,
  - the loss expected at initialisation, and why,
  - the trivial baseline, fitted on the training labels alone, and one score per *unit*
    (example, query, sequence) for the model and the baseline, which the full gate compares
    beyond chance,
  - the data checks that depend on labels, and how to split a dataset without an official split.

A paper whose task is not built in subclasses one of the built-in tasks (or this class) in
`papers/<paper>/task.py` and names it in its config as `paper.task: papers.<paper>.task:<Class>`.
Overriding `loss`, `metrics`/`make_metrics`/`update_metrics` and `fit_baseline` is usually all it
takes (tests/test_tasks.py has a pinball-loss regression written that way).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from repro.data.batch import Batch
from repro.errors import DataError
from repro.tasks.catalog import LOSS, MetricSpec
from repro.verdict import Check

Baseline = Callable[[Batch], torch.Tensor]  # a batch -> outputs shaped like the model's


@dataclass(frozen=True)
class InitLoss:
    """The loss a freshly initialised model should have, how far off still passes, and why."""

    value: float
    scale: float  # the tolerance is stage.shapes.init_loss_rel_tol x this
    why: str  # "ln(3): a classifier that starts unsure gives each of 3 classes 1/3"
    label: str  # how the value is written in the reason: "ln(3)", "mean(y²)"


@dataclass(frozen=True)
class Comparison:
    """The model against the trivial baseline on one split, unit by unit (paired)."""

    n: int  # units compared (examples, queries, sequences)
    model: float  # mean unit score of the model (higher is better)
    baseline: float  # the same for the baseline
    mean_diff: float  # mean of model - baseline, unit by unit
    sd_diff: float  # its standard deviation

    def margin(self, z: float) -> float:
        """What mean_diff must exceed: z standard errors of the paired difference."""
        return z * self.sd_diff / math.sqrt(self.n) if self.n else math.inf

    def beyond(self, z: float) -> bool:
        return self.n > 1 and self.mean_diff > self.margin(z)


def compare_units(model: torch.Tensor, baseline: torch.Tensor) -> Comparison:
    """Paired comparison of two (n,) unit-score vectors (NaN units, e.g. queries without a
    relevant item, are left out of both)."""
    keep = ~(torch.isnan(model) | torch.isnan(baseline))
    m, b = model[keep].double(), baseline[keep].double()
    d = m - b
    n = int(d.numel())
    sd = float(d.std()) if n > 1 else 0.0
    mean = lambda t: float(t.mean()) if n else math.nan  # noqa: E731
    return Comparison(n, mean(m), mean(b), mean(d), sd)


class Task:
    """What a paper's model predicts. Subclasses set the class attributes and the methods marked
    "required"; everything else has a default that fits most tasks."""

    name: ClassVar[str] = "task"
    metrics: ClassVar[tuple[MetricSpec, ...]] = (LOSS,)
    # The metric the trivial baseline is compared on, unit by unit (full, preflight).
    primary: ClassVar[str] = "loss"
    baseline_name: ClassVar[str] = "no baseline"
    unit: ClassVar[str] = "example"  # what unit_scores scores: example | query | sequence
    unit_score: ClassVar[str] = "minus the loss"  # what each unit's score is, in words
    # Names, in words, for the gates' reasons: "logits (B, C)", "a value per example"
    output_contract: ClassVar[str] = "a tensor with the batch as its first dimension"

    def __init__(self, num_classes: int | None = None, class_names: Sequence[str] = ()):
        self.num_classes = num_classes
        self.class_names = list(class_names)

    @classmethod
    def metric_specs(cls) -> dict[str, MetricSpec]:
        return {m.name: m for m in cls.metrics}

    @classmethod
    def spec(cls, name: str) -> MetricSpec:
        """The spec of "loss", "acc" or "val/acc"."""
        return cls.metric_specs()[name.rpartition("/")[2]]

    # ---- raw examples ---------------------------------------------------------------------------
    def check_example(self, example: Mapping[str, Any], where: str) -> None:
        """Raise DataError naming `where` when a raw example lacks the task's label or has one of
        the wrong type. Default: nothing is required of a raw example (encode makes the labels)."""

    def stratum(self, example: Mapping[str, Any]) -> Hashable | None:
        """The key repro's own split stratifies by (None: no stratification)."""
        return None

    def group(self, example: Mapping[str, Any]) -> Hashable | None:
        """Examples of one group (a ranking query) go to one split together (None: no groups)."""
        return None

    # ---- outputs, loss, metrics -----------------------------------------------------------------
    def check_output(self, out: Any, batch: Batch) -> str | None:
        """What is wrong with the model's output for this batch, in words; None when it fits."""
        n = int(batch["label"].shape[0])
        if not isinstance(out, torch.Tensor):
            return f"the model returned {type(out).__name__}, expected a tensor ({self.output_contract})"
        if out.dim() == 0 or out.shape[0] != n:
            return f"output shape {tuple(out.shape)}: expected {self.output_contract} with B = {n}"
        return None

    def outputs_logits(self, out: torch.Tensor) -> bool:
        """Whether the loss applies a softmax over the output's last dim (then outputs that are
        probabilities or log-probabilities are a bug the gates name)."""
        return False

    def saturates(self, out: torch.Tensor) -> bool:
        """Whether the loss squashes the output (a softmax, a sigmoid), so that a confident model
        drives it to 0 or 1: then the shapes gate stresses the model with a confident output
        (its loss and gradients must stay finite). Default: where the outputs are logits."""
        return self.outputs_logits(out)

    def loss(self, out: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Required: the training loss, a scalar averaged over the batch."""
        raise NotImplementedError(f"{type(self).__name__}.loss")

    def loss_sum(self, out: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of the loss over the batch's units, how many units), float64: evaluation adds
        these over the whole split before dividing, so the split's loss is exact."""
        n = batch["label"].shape[0]
        loss = self.loss(out.double(), batch) * n
        return loss, torch.tensor(float(n), dtype=torch.float64, device=out.device)

    def make_metrics(self) -> dict[str, Any]:
        """Fresh torchmetrics for one split, by metric name ("loss" is repro's own)."""
        return {}

    def update_metrics(self, metrics: dict[str, Any], out: torch.Tensor, batch: Batch) -> None:
        """Feed one batch to every metric of make_metrics()."""

    def finish_metrics(self, computed: dict[str, float], loss: float) -> dict[str, float]:
        """The split's metrics from the computed torchmetrics and the exact mean loss: scaled (%)
        and derived ones (rmse from mse) added. Default: as computed, plus the loss."""
        return {"loss": loss, **computed}

    def step_metrics(self, out: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        """Cheap metrics of one training step (logged as train/<name>). Default: none."""
        return {}

    def overfit_floor(self, batch: Batch) -> float:
        """The lowest mean loss any model can reach on `batch` by memorising it (the overfit
        gate's threshold adds it). Default 0: a model can fit any labels of distinct inputs."""
        return 0.0

    def step_progress(self, out: torch.Tensor, batch: Batch) -> float | None:
        """A fraction in [0, 1] the overfit gate may also pass on (accuracy on the subset), or
        None when the task has none."""
        return None

    # ---- per-unit scores: the model vs the trivial baseline -------------------------------------
    def collect(self, out: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        """A compact record of one batch's outputs (one row per example), concatenated over a split
        and handed to unit_scores. Default: each example's loss."""
        losses = [
            self.loss(out[i : i + 1], {k: v[i : i + 1] for k, v in batch.items()})
            for i in range(out.shape[0])
        ]
        return {"loss": torch.stack(losses).detach().double()}

    def unit_scores(self, collected: dict[str, torch.Tensor]) -> torch.Tensor:
        """One number per unit, higher is better, whose mean tracks the primary metric: the
        paired comparison with the baseline is made on these. NaN: a unit that cannot be scored.
        Default: minus each example's loss."""
        return -collected["loss"]

    def fit_baseline(self, train_labels: list[torch.Tensor]) -> Baseline | None:
        """The trivial predictor, fitted on the training labels alone (one tensor per example, as
        encode made them); None when the task has none."""
        return None

    # ---- using the trained model: predictions and invariances -----------------------------------
    def placeholder_label(self, example: Mapping[str, Any]) -> dict[str, Any]:
        """The raw example with a neutral label where it has none (`repro predict` reads inputs
        without labels), so that the paper's own encode and collate run on it unchanged; the
        label is never reported. Default: as given (a task whose encode makes its labels)."""
        return dict(example)

    def describe(self, out: torch.Tensor, batch: Batch) -> list[dict[str, Any]]:
        """One prediction per example of the batch, in the task's terms, as plain JSON values
        (what `repro predict` writes). Default: the example's raw output."""
        return [{"output": row.tolist()} for row in out.detach().double().cpu()]

    def prediction_change(
        self, out: torch.Tensor, other: torch.Tensor, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(changed (B,) bool: the prediction differs; change (B,) float64: by how much) between
        the outputs of a batch and of its transformed copy (a declared invariance). Default: any
        difference of the raw outputs, and its largest absolute value per example."""
        d = (out.detach().double() - other.detach().double()).abs().reshape(len(out), -1)
        change = d.max(1).values  # (B,)
        return change > 0, change

    # ---- the shapes gate ------------------------------------------------------------------------
    def init_loss(self, batch: Batch) -> InitLoss | None:
        """The loss expected from a freshly initialised model on `batch` (None: the task states
        none, and the check is not measured)."""
        return None

    # ---- the data gate ---------------------------------------------------------------------------
    def label_classes(self) -> int | None:
        """How many discrete label values a training batch's "label" takes (a class per value):
        the label-leak and probe checks of the data gate need discrete per-example labels; None
        (the default) leaves them unmeasured for this task."""
        return None

    def label_summary(self, examples: list[Mapping[str, Any]]) -> dict[str, Any]:
        """What the data gate records of one split's labels (counts, mean, queries ...)."""
        return {}

    def label_checks(self, dm, st) -> list[Check]:
        """The data gate's checks that depend on labels (dm is set up; st: stage.data)."""
        return []

    def split_units(self, examples: list[Mapping[str, Any]]) -> int:
        """How many units a split holds: what the split fractions are judged on (examples, or
        groups for a grouped task)."""
        return len(examples)

    # ---- helpers for subclasses -----------------------------------------------------------------
    def _bad_label(self, where: str, expected: str, example: Mapping[str, Any]) -> DataError:
        found = example.get("label", "<no 'label' key>")
        text = repr(found) if "label" in example else found
        keys = sorted(example) if isinstance(example, Mapping) else type(example).__name__
        return DataError(
            f"{where}: expected {expected} for the {self.name} task, found {str(text)[:80]} "
            f"(example keys: {keys}); fix load_examples(), or set paper.task to the paper's task"
        )


def as_probabilities_check(out: torch.Tensor, tol: float) -> dict[str, float]:
    """min/max of the outputs and how far rows are from summing to 1 (probabilities) or their
    exp from summing to 1 (log-probabilities), over the last dimension."""
    flat = out.detach().double().reshape(-1, out.shape[-1])
    return {
        "min": float(flat.min()),
        "max": float(flat.max()),
        "row_sum_gap": float((flat.sum(-1) - 1).abs().max()),
        "logsumexp_gap": float(torch.logsumexp(flat, -1).abs().max()),
        "spread": float(flat.std(-1).mean()) if flat.shape[-1] > 1 else 0.0,
    }
