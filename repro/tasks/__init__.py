"""The paper's task: what the model predicts, hence its loss, metrics, baseline and label checks.

This package's top level is torch-free: it is the catalog (repro/tasks/catalog.py) that config
composition reads (a target or an early-stopping monitor must name a metric the task measures). The tasks themselves
live in `repro.tasks.<name>` (they import torch); `load_task_class` imports one when a gate runs.

A paper picks a task with `paper.task` in its config: one of BUILTIN's names, or its own class
in `papers/<paper>/task.py` written as "papers.<paper>.task:<Class>" (a subclass of
repro.tasks.base.Task; see repro/paper.py for the whole contract).
"""

from __future__ import annotations

from repro.errors import ConfigError, PaperError
from repro.tasks.catalog import BUILTIN, LOSS, MetricSpec, TaskSpec

__all__ = [  # the catalog's names are handed on from repro/tasks/catalog.py
    "BUILTIN",
    "LOSS",
    "SPLIT_PREFIXES",
    "MetricSpec",
    "TaskSpec",
    "builtin_metrics",
    "check_metrics_config",
    "check_task_name",
    "is_builtin",
    "load_task_class",
    "metric_spec",
    "monitor_mode",
    "task_facts",
]
SPLIT_PREFIXES = ("train", "val", "test")


def is_builtin(task: str) -> bool:
    return task in BUILTIN


def builtin_metrics(task: str) -> dict[str, MetricSpec] | None:
    """{name: spec} of a built-in task; None for a paper's own task (known once imported)."""
    if task not in BUILTIN:
        return None
    return {m.name: m for m in BUILTIN[task].metrics}


def check_task_name(task: str, package: str) -> str:
    """A built-in name or "<package>.<module>:<Class>" of the paper's own package (papers.<p>);
    anything else is a ConfigError."""
    if task in BUILTIN:
        return task
    module, _, attr = task.partition(":")
    if module.startswith(f"{package}.") and attr.isidentifier():
        return task
    folder = package.replace(".", "/")
    raise ConfigError(
        f"paper.task: expected one of {sorted(BUILTIN)} or '{package}.task:<Class>' (the "
        f"paper's own Task subclass in {folder}/task.py), found {task!r}"
    )


def metric_spec(metric: str, specs: dict[str, MetricSpec], task: str, where: str) -> MetricSpec:
    """The spec of "<split>/<name>" (val/acc, test/map); a one-line ConfigError listing the valid
    names when the task measures no such metric."""
    split, _, name = metric.partition("/")
    if split in ("val", "test") and name in specs:
        return specs[name]
    valid = [f"{s}/{n}" for s in ("val", "test") for n in specs]
    raise ConfigError(
        f"{where}: expected a metric the {task} task measures, found {metric!r}; valid: "
        f"{', '.join(valid)}"
    )


def load_task_class(task: str, project, paper: str) -> type:
    """The Task class `task` names: a built-in one, or the paper's own (imported from its package)."""
    import importlib

    spec = BUILTIN[task].path if task in BUILTIN else task
    module, _, attr = spec.partition(":")
    if module.startswith("papers."):
        project.activate()
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise PaperError(f"paper.task: cannot import {spec!r}: {e}") from e
    from repro.tasks.base import Task

    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise PaperError(
            f"paper.task: expected {spec!r} to be a subclass of repro.tasks.base.Task (see "
            f"repro/paper.py), found {type(cls).__name__}"
        )
    return cls


def check_metrics_config(cfg, specs: dict[str, MetricSpec], task: str, describe=None) -> None:
    """Every metric the config names (targets, early stopping, the experiments table) is one the
    task measures, and a direction given beside it agrees with the metric's: a one-line
    ConfigError naming the key otherwise, before anything trains. `describe(key)` says where a
    key was set ("set on the command line")."""

    def where(key: str) -> str:
        said = describe(key.replace("[", ".").replace("]", "")) if describe else None
        return f"{key} ({said})" if said else key

    for i, t in enumerate(cfg.paper.targets):
        key = f"paper.targets[{i}]"
        spec = metric_spec(t.metric, specs, task, where(f"{key}.metric"))
        if t.higher_is_better is not None and t.higher_is_better != spec.higher_is_better:
            raise ConfigError(
                f"{where(f'{key}.higher_is_better')}: expected {spec.higher_is_better} for "
                f"{t.metric} ({spec.direction} for the {task} task), found {t.higher_is_better}; "
                "drop the key (the task gives the direction)"
            )
    es = cfg.trainer.early_stopping
    spec = metric_spec(es.monitor, specs, task, where("trainer.early_stopping.monitor"))
    want = "max" if spec.higher_is_better else "min"
    if es.mode is not None and es.mode != want:
        raise ConfigError(
            f"{where('trainer.early_stopping.mode')}: expected {want!r} for {es.monitor} "
            f"({spec.direction}), found {es.mode!r}; drop the key (null: the metric's direction)"
        )
    if cfg.paper.experiments is not None:
        metric_spec(cfg.paper.experiments.metric, specs, task, where("paper.experiments.metric"))


def monitor_mode(cfg, specs: dict[str, MetricSpec]) -> str:
    """ "min" or "max" for the early-stopping monitor: the config's, else the metric's direction."""
    es = cfg.trainer.early_stopping
    if es.mode is not None:
        return es.mode
    return "max" if specs[es.monitor.partition("/")[2]].higher_is_better else "min"


def task_facts(task: str, project, paper: str) -> tuple[dict[str, MetricSpec], str]:
    """(metric specs, primary metric) of a task: from the catalog for a built-in one (no torch),
    else from the paper's own class."""
    if task in BUILTIN:
        return builtin_metrics(task), BUILTIN[task].primary
    cls = load_task_class(task, project, paper)
    return cls.metric_specs(), cls.primary
