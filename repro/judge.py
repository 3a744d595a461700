"""`repro judge`: re-apply the current targets (and the full stage's other judgements) to a full
run's recorded metrics, without training; the new verdict is its own record, linked to the run."""

from __future__ import annotations

from dataclasses import replace

from rich.console import Console

from repro.errors import GateRefused
from repro.project import Project


def judge_run(project: Project, paper: str, run_id: str | None, console: Console):
    """Judge the full run `run_id` (default: the paper's newest full run that has metrics) with
    the current config; returns the new Run (stage full, links.judged = the run judged)."""
    from repro.config import compose
    from repro.envinfo import env_info
    from repro.fingerprint import fingerprint
    from repro.gates.full import judge, target_results
    from repro.gates.metrics import FullMetrics, load_metrics, to_record
    from repro.gitstate import git_state
    from repro.notebook import append_entry, format_entry
    from repro.records import create_run
    from repro.tasks import task_facts
    from repro.verdict import Verdict

    old = _judged_run(project, paper, run_id)
    metrics = load_metrics(FullMetrics, old.record)
    resolved = compose(project, old.paper, list(old.record.get("overrides") or []))
    specs, primary = task_facts(resolved.cfg.paper.task, project, old.paper)
    checks = judge(
        resolved.cfg,
        metrics.per_seed,
        metrics.dataset,
        specs,
        primary,
        metrics.trivial,
        metrics.majority,
        metrics.eval_sizes,
        metrics.invariances,
    )
    metrics = replace(metrics, targets=target_results(checks))
    verdict = Verdict.from_checks("full", checks, {"judged_run": old.id}, metrics)
    # The training is the old run's: its fingerprint, with the judgement's inputs of today.
    fp = dict(old.record.get("fingerprint") or {})
    fp["judged"] = fingerprint(resolved, project.paper_dir(old.paper), [])["judged"]
    run = create_run(
        project.runs_dir,
        old.paper,
        "full",
        config=resolved.config,
        overrides=list(old.record.get("overrides") or []),
        provenance=resolved.provenance,
        defaults=resolved.defaults(),
        forced=bool(old.record.get("forced")),
        fingerprint=fp,
        git=git_state(project.root),
        env=env_info(),
        links={"judged": old.id},
    )
    status = "passed" if verdict.passed else "failed"
    try:
        with run.guard():  # the record ends finished, interrupted or error, never running
            run.finish(verdict.to_dict(), status, metrics=to_record(metrics))
    finally:
        append_entry(project.notes_dir, old.paper, format_entry(run.record))
    console.print(
        f"judged run {old.id} again with the current targets: new verdict in run {run.id}"
    )
    return run


def _judged_run(project: Project, paper: str, run_id: str | None):
    from repro.gates.metrics import FullMetrics, load_metrics
    from repro.records import list_runs, load_run

    if run_id:
        run = load_run(project.runs_dir, run_id)
        if run.stage != "full":
            raise GateRefused(
                f"run {run.id}: expected a full run to judge, found a {run.stage} run"
            )
        if load_metrics(FullMetrics, run.record) is None:
            raise GateRefused(
                f"run {run.id}: expected recorded full-stage metrics, found none "
                f"(status {run.effective_status}); only a finished full run can be judged"
            )
        return run
    for run in list_runs(project.runs_dir, paper, "full"):
        if load_metrics(FullMetrics, run.record) is not None:
            return run
    raise GateRefused(f"paper '{paper}': no finished full run to judge (see `repro log -s full`)")


__all__ = ["judge_run"]
