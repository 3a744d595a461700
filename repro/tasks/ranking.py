"""Ranking (answer selection, retrieval): items grouped by a query, each scored by the model;
MAP and MRR over the queries."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from repro.data.batch import Batch
from repro.tasks.base import Baseline, InitLoss, Task
from repro.tasks.catalog import BUILTIN
from repro.verdict import Check


def scores_of(out: torch.Tensor) -> torch.Tensor:
    """(B,) ranking scores: the output itself, (B, 1) squeezed, or for two-class logits (B, 2)
    the log-odds of the relevant class (BiMPM scores a question-answer pair that way)."""
    if out.dim() == 2 and out.shape[1] == 2:
        return out[:, 1] - out[:, 0]
    return out.reshape(-1)


class Ranking(Task):
    """Items grouped by a query: a raw example has a relevance "label" (0 or 1) and the "group" it
    belongs to (the query id, a string or an integer); the encoded batch carries "label" (B,)
    and "group" (B,) long (an integer per query, never passed to the model). The model scores
    each item: (B,) or (B, 1) scores (binary cross-entropy on them), or two-class logits (B, 2)
    (cross-entropy; the score is the log-odds of "relevant"). Metrics rank every query's items by
    score. Queries stay whole: repro's own split divides queries, not items, and a query in two
    splits fails the data gate."""

    name = "ranking"
    metrics = BUILTIN["ranking"].metrics
    primary = BUILTIN["ranking"].primary
    baseline_name = "random order within each query (seeded)"
    unit_score = "average precision"
    unit = "query"
    output_contract = "a score per item, (B,) or (B, 1), or two-class logits (B, 2)"

    # ---- raw examples ---------------------------------------------------------------------------
    def check_example(self, example: Mapping[str, Any], where: str) -> None:
        y = example.get("label") if isinstance(example, Mapping) else None
        if isinstance(y, bool) or y not in (0, 1):
            raise self._bad_label(where, "a relevance 'label' of 0 or 1", example)
        g = example.get("group")
        if not isinstance(g, str | int) or isinstance(g, bool):
            raise self._bad_label(
                where, "a 'group' (the query id, a string or an integer) beside the label", example
            )

    def group(self, example: Mapping[str, Any]) -> Hashable | None:
        return example["group"]

    def split_units(self, examples: list[Mapping[str, Any]]) -> int:
        return len({ex["group"] for ex in examples})

    # ---- outputs, loss, metrics -----------------------------------------------------------------
    def check_output(self, out: Any, batch: Batch) -> str | None:
        problem = super().check_output(out, batch)
        if problem:
            return problem
        if "group" not in batch:
            return (
                f"the batch has no 'group' (keys {sorted(batch)}): collate must return each "
                "item's query id as an integer tensor 'group'"
            )
        n = len(batch["label"])
        if tuple(out.shape) not in ((n,), (n, 1), (n, 2)):
            return f"output shape {tuple(out.shape)}: expected {self.output_contract} with B = {n}"
        return None

    def outputs_logits(self, out: torch.Tensor) -> bool:
        return out.dim() == 2 and out.shape[1] == 2

    def saturates(self, out: torch.Tensor) -> bool:
        return True  # scores go through a sigmoid (binary cross-entropy), logits a softmax

    def loss(self, out: torch.Tensor, batch: Batch) -> torch.Tensor:
        y = batch["label"]
        if self.outputs_logits(out):
            return F.cross_entropy(out, y.long())
        return F.binary_cross_entropy_with_logits(scores_of(out), y.to(out.dtype))

    def make_metrics(self) -> dict[str, Any]:
        from torchmetrics.retrieval import RetrievalMAP, RetrievalMRR

        return {
            "map": RetrievalMAP(empty_target_action="skip"),
            "mrr": RetrievalMRR(empty_target_action="skip"),
        }

    def update_metrics(self, metrics: dict[str, Any], out: torch.Tensor, batch: Batch) -> None:
        s, y, g = scores_of(out).double(), batch["label"] > 0, batch["group"].long()
        for m in metrics.values():
            m.update(s, y, indexes=g)

    # ---- per-unit scores and the baseline -------------------------------------------------------
    def collect(self, out: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        return {
            "score": scores_of(out).detach().double(),
            "label": batch["label"].long(),
            "group": batch["group"].long(),
        }

    def unit_scores(self, collected: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each query's average precision (NaN for a query without a relevant item)."""
        from torchmetrics.functional.retrieval import retrieval_average_precision

        s, y, g = collected["score"], collected["label"] > 0, collected["group"]
        out = []
        for q in torch.unique(g):
            mine = g == q
            out.append(
                float(retrieval_average_precision(s[mine], y[mine])) if y[mine].any() else math.nan
            )
        return torch.tensor(out, dtype=torch.float64)

    def fit_baseline(self, train_labels: list[torch.Tensor]) -> Baseline | None:
        """Random scores from a generator seeded here: a random order within each query."""
        g = torch.Generator().manual_seed(0)
        return lambda batch: torch.rand(len(batch["label"]), generator=g, dtype=torch.float64)

    # ---- predictions and invariances ------------------------------------------------------------
    def placeholder_label(self, example: Mapping[str, Any]) -> dict[str, Any]:
        """Relevance 0 when absent; an item without a query joins one query, "" (a score does
        not depend on its query id: the id is never the model's input)."""
        out = dict(example)
        if out.get("label") is None:
            out["label"] = 0
        if out.get("group") is None:
            out["group"] = ""
        return out

    def describe(self, out: torch.Tensor, batch: Batch) -> list[dict[str, Any]]:
        """Each item's score (what its query's items are ranked by: the output, or the log-odds
        of "relevant" for two-class logits) and the probability of relevance it implies."""
        s = scores_of(out.detach()).double().cpu()  # (B,)
        return [{"score": float(v), "probability": float(torch.sigmoid(v))} for v in s]

    def prediction_change(
        self, out: torch.Tensor, other: torch.Tensor, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Changed: the item crosses probability 1/2 of relevance; change: |difference| of that
        probability."""
        p, q = torch.sigmoid(scores_of(out).double()), torch.sigmoid(scores_of(other).double())
        return (p > 0.5) != (q > 0.5), (p - q).abs()

    # ---- gates ----------------------------------------------------------------------------------
    def init_loss(self, batch: Batch) -> InitLoss | None:
        return InitLoss(
            math.log(2),
            math.log(2),
            "a scorer that starts unsure gives each item probability 1/2 of being relevant",
            "ln(2)",
        )

    def label_classes(self) -> int | None:
        return 2

    def label_summary(self, examples: list[Mapping[str, Any]]) -> dict[str, Any]:
        groups = {ex["group"] for ex in examples}
        return {
            "queries": len(groups),
            "items": len(examples),
            "relevant": sum(int(ex["label"]) for ex in examples),
        }

    def label_checks(self, dm, st) -> list[Check]:
        return [check_queries_disjoint(dm.splits), check_queries_answerable(dm.splits)]


def check_queries_disjoint(splits: dict[str, list[Mapping[str, Any]]]) -> Check:
    """No query has items in two splits: a query seen in training is leaked into its test items."""
    name = "queries disjoint across splits"
    owners: dict[Hashable, set[str]] = defaultdict(set)
    for s, examples in splits.items():
        for ex in examples:
            owners[ex["group"]].add(s)
    shared = Counter("&".join(sorted(v)) for v in owners.values() if len(v) > 1)
    if shared:
        example = next(q for q, v in owners.items() if len(v) > 1)
        desc = ", ".join(f"{k}: {n}" for k, n in sorted(shared.items()))
        return Check(
            name,
            False,
            f"queries with items in two splits ({desc}; e.g. {str(example)[:60]!r}): the model "
            "sees a test query in training; split by query (repro's own split does when the "
            "task is ranking)",
            {"shared": dict(shared)},
        )
    n = {s: len({ex["group"] for ex in examples}) for s, examples in splits.items()}
    return Check(name, True, "queries per split " + ", ".join(f"{s} {k}" for s, k in n.items()), n)


def check_queries_answerable(splits: dict[str, list[Mapping[str, Any]]]) -> Check:
    """Every val/test query has a relevant item: MAP and MRR are undefined for one that has none
    (torchmetrics would skip it silently)."""
    name = "every evaluated query has a relevant item"
    empty = {}
    for s in ("val", "test"):
        relevant: dict[Hashable, int] = defaultdict(int)
        for ex in splits[s]:
            relevant[ex["group"]] += int(ex["label"])
        bad = [q for q, r in relevant.items() if r == 0]
        if bad:
            empty[s] = (len(bad), len(relevant), str(bad[0])[:60])
    if empty:
        desc = "; ".join(f"{s}: {n} of {t} queries (e.g. {q!r})" for s, (n, t, q) in empty.items())
        return Check(
            name,
            False,
            f"queries without a relevant item ({desc}): MAP and MRR cannot score them; drop "
            "them when loading val and test (the standard WikiQA and TREC-QA evaluations do)",
            {"without_relevant": {s: v[0] for s, v in empty.items()}},
        )
    return Check(name, True, "every val and test query has at least one relevant item", {})
