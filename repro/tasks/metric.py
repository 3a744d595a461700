"""One metric a task measures, with its direction: the catalog (repro.tasks) and the tasks
themselves (repro.tasks.base) both name metrics this way, so it sits below both."""

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
