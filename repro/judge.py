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
    from repro.config.compose import compose
    from repro.envinfo import env_info
    from repro.fingerprint import fingerprint
    from repro.gates.metrics import to_record
    from repro.gitstate import git_state
    from repro.notebook import format_entry
    from repro.records import create_run
    from repro.runner import append_line

    old = _judged_run(project, paper, run_id)
    resolved = compose(project, old.paper, list(old.record.overrides or []))
    verdict, metrics = judged_verdict(project, old, resolved)
    # The training is the old run's: its fingerprint, with the judgement's inputs of today.
    fp = old.record.fingerprint.to_dict() if old.record.fingerprint else {}
    fp["judged"] = fingerprint(resolved, project.paper_dir(old.paper), [])["judged"]
    run = create_run(
        project.runs_dir,
        old.paper,
        "full",
        config=resolved.config,
        overrides=list(old.record.overrides or []),
        provenance=resolved.provenance,
        defaults=resolved.defaults(),
        forced=old.record.forced,
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
        run.unlock()
        append_line(project, old.paper, format_entry(run.record))
    console.print(
        f"judged run {old.id} again with the current targets: new verdict in run {run.id}"
    )
    return run


def judged_verdict(project: Project, old, resolved):
    """(the verdict, the metrics with their targets re-judged) of a recorded full run under the
    current config. A check the record lacks the numbers for is not measured, never passed."""
    from repro.gates.full import judge, target_results
    from repro.gates.metrics import FullMetrics, load_metrics
    from repro.tasks import task_facts
    from repro.verdict import Check, Verdict

    metrics = load_metrics(FullMetrics, old.record)
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
        preflight=metrics.preflight,
    )
    checks = carried_checks(old.record) + checks
    metrics = replace(metrics, targets=target_results(checks))
    unjudged = not_judged(metrics)
    why = f"run {old.id} has no split sizes recorded (written by an earlier repro)"
    checks += [Check.not_measured(name, why) for name in unjudged]
    evidence: dict = {"judged_run": old.id} | ({"not_judged": unjudged} if unjudged else {})
    return Verdict.from_checks("full", checks, evidence, metrics), metrics


def carried_checks(record) -> list:
    """The recorded run's checks that do not depend on the targets, kept as they were measured:
    the paper's slow tests, run before it trained."""
    from repro.gates.paper_tests import SLOW_TESTS
    from repro.verdict import Check

    checks = (record.verdict.checks if record.verdict else None) or []
    return [
        Check(
            c.name, bool(c.passed), c.reason or "", dict(c.evidence or {}), c.measured is not False
        )
        for c in checks
        if c.name == SLOW_TESTS
    ]


def not_judged(metrics) -> list[str]:
    """The full stage's checks that a record lacks the numbers for: the majority-class checks
    of a run recorded before repro kept the split sizes (a run since tasks keeps its trivial
    baseline's comparisons instead)."""
    if (metrics.trivial or {}).get("comparisons") or (metrics.eval_sizes and metrics.majority):
        return []
    return [f"{s} beats the majority class" for s in ("val", "test") if f"{s}/acc" in metrics.mean]


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
