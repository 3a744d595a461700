"""Single-label classification: logits (B, C), an integer label per example, cross-entropy."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from repro.data.batch import Batch
from repro.tasks.base import Baseline, InitLoss, Task
from repro.tasks.catalog import BUILTIN
from repro.verdict import Check


def check_classes(label_counts: dict[str, dict[int, int]], num_classes: int) -> Check:
    """Every class 0..C-1 appears in every split, and no label lies outside that range."""
    missing = {
        s: sorted(set(range(num_classes)) - {c for c, n in counts.items() if n > 0})
        for s, counts in label_counts.items()
    }
    missing = {s: m for s, m in missing.items() if m}
    bad = {
        s: sorted(c for c in counts if not 0 <= c < num_classes)
        for s, counts in label_counts.items()
    }
    bad = {s: b for s, b in bad.items() if b}
    if bad:
        return Check(
            "every class in every split",
            False,
            f"labels outside 0..{num_classes - 1}: {bad}",
            {"bad_labels": bad},
        )
    if missing:
        desc = "; ".join(f"{s} lacks class {m}" for s, m in missing.items())
        return Check("every class in every split", False, desc, {"missing": missing})
    return Check(
        "every class in every split", True, f"all {num_classes} classes in every split", {}
    )


class Classification(Task):
    """One class per example: the model returns logits (B, C) (no softmax: the loss applies it),
    the batch's "label" is (B,) long in 0..C-1 (C = the datamodule's num_classes)."""

    name = "classification"
    metrics = BUILTIN["classification"].metrics
    primary = BUILTIN["classification"].primary
    baseline_name = "the most frequent training class"
    unit_score = "accuracy (1 or 0)"
    output_contract = "logits of shape (B, C)"

    # ---- raw examples ---------------------------------------------------------------------------
    def check_example(self, example: Mapping[str, Any], where: str) -> None:
        y = example.get("label") if isinstance(example, Mapping) else None
        if not _is_int(y) or y < 0:
            raise self._bad_label(where, "an integer 'label' >= 0 (the class index)", example)

    def stratum(self, example: Mapping[str, Any]) -> Hashable | None:
        return int(example["label"])

    # ---- outputs, loss, metrics -----------------------------------------------------------------
    def check_output(self, out: Any, batch: Batch) -> str | None:
        problem = super().check_output(out, batch)
        if problem:
            return problem
        expected = (int(batch["label"].shape[0]), self.num_classes)
        if tuple(out.shape) != expected:
            return f"logits shape {tuple(out.shape)} != expected (B, C) = {expected}"
        return None

    def outputs_logits(self, out: torch.Tensor) -> bool:
        return True

    def loss(self, out: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(out, batch["label"])

    def loss_sum(self, out: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        if type(self).loss is not Classification.loss:  # a subclass with a loss of its own
            return super().loss_sum(out, batch)
        y = batch["label"]
        total = F.cross_entropy(out.double(), y, reduction="sum")
        return total, torch.tensor(float(len(y)), dtype=torch.float64, device=out.device)

    def make_metrics(self) -> dict[str, Any]:
        from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

        c = self.num_classes
        return {
            "acc": MulticlassAccuracy(c, average="micro", validate_args=False),
            "f1": MulticlassF1Score(c, average="macro", validate_args=False),
        }

    def update_metrics(self, metrics: dict[str, Any], out: torch.Tensor, batch: Batch) -> None:
        pred = out.argmax(-1)
        for m in metrics.values():
            m.update(pred, batch["label"])

    def finish_metrics(self, computed: dict[str, float], loss: float) -> dict[str, float]:
        return {"loss": loss, **{k: 100.0 * v for k, v in computed.items()}}

    def step_metrics(self, out: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        return {"acc": (out.argmax(-1) == batch["label"]).float().mean() * 100}

    def step_progress(self, out: torch.Tensor, batch: Batch) -> float | None:
        return float((out.argmax(-1) == batch["label"]).float().mean())

    # ---- per-unit scores and the baseline -------------------------------------------------------
    def collect(self, out: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        return {"correct": (out.argmax(-1) == batch["label"]).double()}

    def unit_scores(self, collected: dict[str, torch.Tensor]) -> torch.Tensor:
        return collected["correct"]

    def fit_baseline(self, train_labels: list[torch.Tensor]) -> Baseline | None:
        """Always the most frequent training class (its logits: the training class frequencies)."""
        counts = torch.bincount(
            torch.stack([torch.as_tensor(y).reshape(()) for y in train_labels]).long(),
            minlength=self.num_classes,
        ).double()
        logits = torch.log((counts + 1e-3) / (counts.sum() + 1e-3 * len(counts)))  # (C,)
        return lambda batch: logits.to(batch["label"].device).expand(len(batch["label"]), -1)

    # ---- predictions and invariances ------------------------------------------------------------
    def placeholder_label(self, example: Mapping[str, Any]) -> dict[str, Any]:
        return {**example, "label": 0} if example.get("label") is None else dict(example)

    def names(self) -> list[str]:
        """A name per class: the datamodule's class_names, else the class index as text."""
        c = self.num_classes or 0
        return self.class_names if len(self.class_names) == c else [str(i) for i in range(c)]

    def describe(self, out: torch.Tensor, batch: Batch) -> list[dict[str, Any]]:
        """The most probable class by name, and every class's probability (softmax of the logits)."""
        names = self.names()
        probs = torch.softmax(out.detach().double(), -1).cpu()  # (B, C)
        return [
            {
                "prediction": names[int(p.argmax())],
                "probabilities": dict(zip(names, p.tolist(), strict=True)),
            }
            for p in probs
        ]

    def prediction_change(
        self, out: torch.Tensor, other: torch.Tensor, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Changed: another class wins; change: the total variation distance between the two
        class distributions (half the summed |difference| of the probabilities, 0..1)."""
        p, q = torch.softmax(out.double(), -1), torch.softmax(other.double(), -1)  # (B, C)
        return p.argmax(-1) != q.argmax(-1), 0.5 * (p - q).abs().sum(-1)

    # ---- gates ----------------------------------------------------------------------------------
    def init_loss(self, batch: Batch) -> InitLoss | None:
        c = self.num_classes
        return InitLoss(
            math.log(c),
            math.log(c),
            f"a classifier that starts unsure gives each of the {c} classes 1/{c}",
            f"ln({c})",
        )

    def label_classes(self) -> int | None:
        return self.num_classes

    def label_summary(self, examples: list[Mapping[str, Any]]) -> dict[str, Any]:
        counts = Counter(int(ex["label"]) for ex in examples)
        return {"label_counts": {str(k): v for k, v in sorted(counts.items())}}

    def label_checks(self, dm, st) -> list[Check]:
        counts = {s: dict(Counter(int(ex["label"]) for ex in dm.splits[s])) for s in dm.splits}
        return [check_classes(counts, self.num_classes)]


def _is_int(y: Any) -> bool:
    if isinstance(y, bool):
        return False
    if isinstance(y, int):
        return True
    if isinstance(y, torch.Tensor):
        return y.dim() == 0 and not y.is_floating_point() and y.dtype != torch.bool
    return type(y).__name__ in ("int64", "int32", "int16", "int8")  # numpy integers
