"""The built-in tasks as a catalog, known without importing them (torch): where each class is, the
metrics it measures (with their direction) and its primary one. Config composition and the
package's loader read it (repro.tasks), and so do the tasks themselves (repro.tasks.<name>), which
the loader imports by the path named here: so it sits below both."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricSpec:
    """One metric a task measures on val and test (logged as val/<name>, test/<name>)."""

    name: str
    higher_is_better: bool
    meaning: str  # one line for help texts and reports
    range: float | None = None  # the metric's full range (100 for %, 1 for fractions); None: open

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"


LOSS = MetricSpec("loss", False, "the task's training loss, averaged over the split")


@dataclass(frozen=True)
class TaskSpec:
    """What is known of a built-in task without importing it (torch): where its class is, its
    metrics, and the primary one (compared with the trivial baseline)."""

    path: str  # "module:Class"
    metrics: tuple[MetricSpec, ...]
    primary: str


BUILTIN: dict[str, TaskSpec] = {
    "classification": TaskSpec(
        "repro.tasks.classification:Classification",
        (
            LOSS,
            MetricSpec("acc", True, "accuracy, % of examples", 100.0),
            MetricSpec("f1", True, "macro-averaged F1 over the classes, %", 100.0),
        ),
        "acc",
    ),
    "regression": TaskSpec(
        "repro.tasks.regression:Regression",
        (
            LOSS,
            MetricSpec("mse", False, "mean squared error"),
            MetricSpec("rmse", False, "root mean squared error"),
            MetricSpec("mae", False, "mean absolute error"),
            MetricSpec("r2", True, "coefficient of determination R²", 1.0),
        ),
        "mse",
    ),
    "sequence": TaskSpec(
        "repro.tasks.sequence:Sequence",
        (
            LOSS,
            MetricSpec("acc", True, "accuracy over labelled positions, %", 100.0),
            MetricSpec("ppl", False, "perplexity, exp(loss per position)"),
            MetricSpec("bpt", False, "bits per token (bits per character for a character model)"),
        ),
        "loss",
    ),
    "ranking": TaskSpec(
        "repro.tasks.ranking:Ranking",
        (
            LOSS,
            MetricSpec("map", True, "mean average precision over queries", 1.0),
            MetricSpec("mrr", True, "mean reciprocal rank of the first relevant item", 1.0),
        ),
        "map",
    ),
}
