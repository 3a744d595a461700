"""`repro stage` as one library call: run the stage (after the cheap stages it needs), print its
verdict and the paper's milestones, and return the command's exit code.

The command line (repro/cli.py) and the warm worker's child (repro/dev/child.py) both run a stage
through `run_and_report`; what differs between them is passed in: their consoles, and from the
worker the datamodule it keeps warm and the `worker` field of the record (repro.runner.WarmStart).
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from repro.progression import milestones
from repro.project import Project
from repro.runner import WarmStart, run_stage

INTERRUPTED = "Interrupted: the run is recorded as interrupted (see `repro log`)."


def run_and_report(
    project: Project,
    paper: str,
    stage: str,
    overrides: list[str],
    force: bool,
    console: Console,
    err_console: Console,
    warm: WarmStart | None = None,
) -> int:
    """Run `stage` and report it; the exit code: 0 passed, 1 failed, 130 interrupted (the run is
    recorded as interrupted). A refusal or a bad config raises (repro.errors.ReproError)."""
    try:
        run = run_stage(project, paper, stage, overrides, force=force, console=console, warm=warm)
    except KeyboardInterrupt:
        err_console.print(INTERRUPTED)
        return 130
    return report_finished(console, project, run)


def report_finished(console: Console, project: Project, run) -> int:
    """Print a finished run's verdict, where its record is, why it is no milestone (when it is
    not) and the paper's milestones; the exit code: 0 when it passed, else 1."""
    from repro.display import print_status, print_verdict

    print_verdict(console, run.record)
    console.print(f"run record: {run.dir.relative_to(project.root)}", markup=False)
    note = experiment_note(run.record)
    if note:
        console.print(f"[yellow]{escape(note)}[/yellow]")
    print_status(console, run.paper, milestones(project, run.paper))
    return 0 if run.record.status == "passed" else 1


def experiment_note(record) -> str | None:  # record: repro.records.record.Record
    """Why a run does not count as a milestone, when it does not."""
    why = []
    if record.overrides:
        why.append(f"overrides {' '.join(record.overrides)}")
    if record.forced:
        why.append(f"--force past {', '.join(record.skipped_prerequisites or [])}")
    if not why:
        return None
    return (
        f"this run used {' and '.join(why)}: an experiment around the milestones, which it does "
        "not change (the table below is the paper's base config)"
    )
