"""Per-position classification (language models, taggers): logits (B, T, V), labels (B, T) with an
ignore index where nothing is predicted (padding)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F

from repro.data.batch import Batch, model_inputs
from repro.tasks.base import Baseline, InitLoss, Task
from repro.tasks.catalog import BUILTIN
from repro.verdict import Check

IGNORE_INDEX = -100  # as torch's cross_entropy: positions labelled so are not predicted


class Sequence(Task):
    """A class per position: the model returns logits (B, T, V) (no softmax), the batch's "label"
    is (B, T) long with ids in 0..V-1 (V = the datamodule's num_classes, e.g. the vocabulary of
    a language model) and IGNORE_INDEX (-100) where nothing is predicted (padding). The loss is
    the cross-entropy per labelled position (nats); perplexity and bits per token follow from it."""

    name = "sequence"
    metrics = BUILTIN["sequence"].metrics
    primary = BUILTIN["sequence"].primary
    baseline_name = "unigram frequencies of the training targets"
    unit_score = "minus the loss per position"
    unit = "sequence"
    output_contract = "logits of shape (B, T, V)"
    ignore_index = IGNORE_INDEX

    # ---- outputs, loss, metrics -----------------------------------------------------------------
    def check_output(self, out: Any, batch: Batch) -> str | None:
        problem = super().check_output(out, batch)
        if problem:
            return problem
        y = batch["label"]
        expected = (*y.shape, self.num_classes)
        if tuple(out.shape) != expected:
            return f"logits shape {tuple(out.shape)} != expected (B, T, V) = {expected}"
        return None

    def outputs_logits(self, out: torch.Tensor) -> bool:
        return True

    def _flat(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return out.reshape(-1, out.shape[-1]), y.reshape(-1)

    def loss(self, out: torch.Tensor, batch: Batch) -> torch.Tensor:
        logits, y = self._flat(out, batch["label"])
        return F.cross_entropy(logits, y, ignore_index=self.ignore_index)

    def loss_sum(self, out: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed over the labelled positions, which are the units (a subclass with a loss of
        its own must sum its own: positions, not sequences, are what the loss averages)."""
        logits, y = self._flat(out, batch["label"])
        total = F.cross_entropy(logits.double(), y, ignore_index=self.ignore_index, reduction="sum")
        return total, (y != self.ignore_index).sum().double()

    def make_metrics(self) -> dict[str, Any]:
        from torchmetrics.classification import MulticlassAccuracy
        from torchmetrics.text import Perplexity

        return {
            "acc": MulticlassAccuracy(
                self.num_classes, average="micro", ignore_index=self.ignore_index
            ),
            "ppl": Perplexity(ignore_index=self.ignore_index).set_dtype(torch.float64),
        }

    def update_metrics(self, metrics: dict[str, Any], out: torch.Tensor, batch: Batch) -> None:
        logits, y = self._flat(out, batch["label"])
        metrics["acc"].update(logits.argmax(-1), y)
        metrics["ppl"].update(out.double(), batch["label"])

    def finish_metrics(self, computed: dict[str, float], loss: float) -> dict[str, float]:
        ppl = computed["ppl"]
        return {"loss": loss, "acc": 100.0 * computed["acc"], "ppl": ppl, "bpt": math.log2(ppl)}

    def _hits(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep = y != self.ignore_index
        return ((out.argmax(-1) == y) & keep).sum(), keep.sum()

    def step_metrics(self, out: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        hits, n = self._hits(out, batch["label"])
        return {"acc": hits.float() / n.clamp(min=1) * 100}

    def step_progress(self, out: torch.Tensor, batch: Batch) -> float | None:
        hits, n = self._hits(out, batch["label"])
        return float(hits) / max(int(n), 1)

    def overfit_floor(self, batch: Batch) -> float:
        """What a left-to-right model that memorised the batch still pays, per labelled position:
        at each position, sequences that agree on their inputs so far but differ in the label
        (a language model cannot tell which of its sequences it reads before their tokens do:
        about ln B nats per sequence). The entropy of those labels, summed, over the positions.
        For a model that reads both directions (a tagger) this is an upper bound, often 0."""
        y = batch["label"]
        b, t_max = y.shape[:2]
        seqs = [
            v.reshape(b, t_max, -1).double()
            for v in model_inputs(batch).values()
            if v.dim() >= 2 and v.shape[:2] == (b, t_max)
        ]
        steps = torch.cat(seqs, -1).tolist() if seqs else [[[]] * t_max] * b  # (B, T, F)
        labels = y.tolist()
        prefix = [0] * b  # an id per distinct input prefix seen so far
        ids: dict[tuple, int] = {}
        total, positions = 0.0, 0
        for t in range(t_max):
            groups: dict[int, Counter] = {}
            for i in range(b):
                key = (prefix[i], *steps[i][t])
                prefix[i] = ids.setdefault(key, len(ids) + 1)
                label = labels[i][t]
                if label != self.ignore_index:
                    groups.setdefault(prefix[i], Counter())[label] += 1
            for counts in groups.values():
                n = sum(counts.values())
                total -= sum(k * math.log(k / n) for k in counts.values())
                positions += n
        return total / positions if positions else 0.0

    # ---- per-unit scores and the baseline -------------------------------------------------------
    def collect(self, out: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        y = batch["label"]
        nll = F.cross_entropy(
            out.double().reshape(-1, out.shape[-1]),
            y.reshape(-1),
            ignore_index=self.ignore_index,
            reduction="none",
        ).reshape(y.shape)  # (B, T), 0 where ignored
        return {"nll": nll.reshape(len(y), -1).sum(1), "tokens": (y != self.ignore_index).sum(1)}

    def unit_scores(self, collected: dict[str, torch.Tensor]) -> torch.Tensor:
        """Minus each sequence's mean loss per labelled position (NaN: nothing labelled)."""
        tokens = collected["tokens"].double()
        return torch.where(tokens > 0, -collected["nll"] / tokens.clamp(min=1), math.nan)

    def fit_baseline(self, train_labels: list[torch.Tensor]) -> Baseline | None:
        """Every position predicted by the training targets' unigram frequencies (add-one)."""
        flat = torch.cat([torch.as_tensor(y).reshape(-1) for y in train_labels])
        flat = flat[flat != self.ignore_index].long()
        counts = torch.bincount(flat, minlength=self.num_classes).double() + 1.0
        logits = torch.log(counts / counts.sum())  # (V,)
        return lambda batch: logits.to(batch["label"].device).expand(*batch["label"].shape, -1)

    # ---- predictions and invariances ------------------------------------------------------------
    def _positions(self, batch: Batch, i: int, length: int) -> torch.Tensor:
        """The positions of example i that are predicted: its labelled ones (all when none is)."""
        keep = batch["label"][i] != self.ignore_index  # (T,)
        return keep.nonzero().flatten() if keep.any() else torch.arange(length)

    def describe(self, out: torch.Tensor, batch: Batch) -> list[dict[str, Any]]:
        """At each predicted position (labelled, else every one): the most probable id and its
        probability (the datamodule's present_prediction may turn ids into tokens)."""
        probs = torch.softmax(out.detach().double(), -1).cpu()  # (B, T, V)
        described = []
        for i in range(len(probs)):
            p, ids = probs[i][self._positions(batch, i, probs.shape[1]).cpu()].max(-1)
            described.append({"predicted": ids.tolist(), "probability": p.tolist()})
        return described

    def prediction_change(
        self, out: torch.Tensor, other: torch.Tensor, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Changed: another id wins at some predicted position; change: the mean total variation
        distance between the two distributions over the predicted positions."""
        p, q = torch.softmax(out.double(), -1), torch.softmax(other.double(), -1)  # (B, T, V)
        changed, change = [], []
        for i in range(len(p)):
            at = self._positions(batch, i, p.shape[1]).to(p.device)
            changed.append(bool((p[i, at].argmax(-1) != q[i, at].argmax(-1)).any()))
            change.append(float(0.5 * (p[i, at] - q[i, at]).abs().sum(-1).mean()))
        return torch.tensor(changed), torch.tensor(change, dtype=torch.float64)

    # ---- gates ----------------------------------------------------------------------------------
    def init_loss(self, batch: Batch) -> InitLoss | None:
        v = self.num_classes
        return InitLoss(
            math.log(v),
            math.log(v),
            f"a model that starts unsure gives each of the {v} classes 1/{v} at every position",
            f"ln({v})",
        )

    def label_checks(self, dm, st) -> list[Check]:
        return [check_target_vocabulary(dm, self, st.sample_examples, st.max_oov_rate)]


def check_target_vocabulary(dm, task: Sequence, sample: int, max_rate: float) -> Check:
    """Target ids lie in 0..V-1 (or the ignore index), and the val/test targets are (mostly)
    ones the training targets contain: a target the model never saw in training cannot be
    predicted, so a high rate means mismatched vocabularies or tokenisation between splits."""
    from repro.data.digest import sample_indices

    name = "targets in range and seen in training"
    v = task.num_classes
    counts: dict[str, Counter] = {}
    bad: dict[str, list[int]] = {}
    for s in ("train", "val", "test"):
        ds = dm.datasets[s]
        c: Counter = Counter()
        for i in sample_indices(len(ds), sample if s != "train" else max(sample, len(ds))):
            y = torch.as_tensor(ds[i]["label"]).reshape(-1).tolist()
            c.update(t for t in y if t != task.ignore_index)
        counts[s] = c
        out = sorted(t for t in c if not 0 <= t < v)
        if out:
            bad[s] = out[:5]
    if bad:
        return Check(
            name,
            False,
            f"target ids outside 0..{v - 1} (and not the ignore index {task.ignore_index}): "
            f"{bad}; label padding with {task.ignore_index}, and make num_classes the vocabulary size",
            {"bad": bad},
        )
    seen = set(counts["train"])
    rates = {
        s: sum(n for t, n in counts[s].items() if t not in seen) / max(sum(counts[s].values()), 1)
        for s in ("val", "test")
    }
    ev = {"unseen_rate": {s: round(r, 4) for s, r in rates.items()}, "max": max_rate}
    desc = ", ".join(f"{s} {100 * r:.2f}%" for s, r in rates.items())
    worst = max(rates, key=rates.get)
    if rates[worst] > max_rate:
        return Check(
            name,
            False,
            f"{desc} of the target tokens never occur in the training targets (max "
            f"{100 * max_rate:g}%): the splits use different vocabularies or tokenisation; build "
            "one vocabulary on train and map unknowns to one id",
            ev,
        )
    return Check(
        name, True, f"target tokens unseen in training: {desc} (max {100 * max_rate:g}%)", ev
    )
