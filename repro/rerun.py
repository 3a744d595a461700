"""Re-execute recorded runs: `repro rerun` (a new run linked to its source) and `--resume` (same
run, from its checkpoint)."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from repro.config.compose import compose
from repro.errors import GateRefused
from repro.paper_code import PaperCode
from repro.progression import current_fingerprint
from repro.project import Project
from repro.runner import data_files_now, execute, run_stage
from repro.storage import shown_path
from repro.terminal import SafeConsole


def rerun(
    project: Project,
    run_id: str,
    overrides: list[str] | None = None,
    console: Console | None = None,
    force: bool = False,
):
    """Re-execute a recorded run (same stage, paper and overrides, plus `overrides` appended).

    Returns (new run, changed) where `changed` names the fingerprint parts and files that differ
    between the old run and now (code, config or data changed since)."""
    from repro.records import load_run

    console = console or SafeConsole()
    old = load_run(project.runs_dir, run_id)
    if old.corrupt is not None:
        raise GateRefused(f"run {old.id} cannot be re-run: {old.corrupt}")
    paper, stage = old.paper, old.stage
    new_overrides = [*(old.record.overrides or []), *(overrides or [])]
    resolved = compose(project, paper, new_overrides)
    from repro.context import StageContext

    code = PaperCode.read(project.paper_dir(paper))  # what the re-run imports and records
    code.install()
    ctx = StageContext(project, paper, resolved, console, code=code)
    changed = _changed_since(old, ctx, "", "the re-run")
    run = run_stage(
        project,
        paper,
        stage,
        new_overrides,
        force=force or old.record.forced,
        console=console,
        links={"rerun_of": old.id},
        code=code,
    )
    from repro.diff import different_results

    unsteady = different_results(old.record, run.record) if not changed else []
    if unsteady:
        with run.writing():
            run.annex(nondeterministic={"rerun_of": old.id, "metrics": unsteady})
        console.print(
            f"[red]same fingerprint as run {old.id}, different results ({escape(', '.join(unsteady))}): "
            "the run is not deterministic; look for a set or dict iterated in preprocessing, "
            "data-loader workers or nondeterministic kernels (`repro diff` shows both)[/red]",
            highlight=False,
            soft_wrap=True,
        )
    return run, changed


def resumable_run(project: Project, paper: str, run_id: str | None = None):
    """The full run to resume: `run_id` (any status: take_for_resume checks it under the run's
    lock), or the newest interrupted/errored full run of `paper`."""
    from repro.records import list_runs, load_run

    if run_id:
        run = load_run(project.runs_dir, run_id)
        if run.stage != "full":
            raise GateRefused(
                f"run {run.id} is a '{run.stage}' run; only 'full' runs can be resumed"
            )
        return run  # its status is checked once it is locked (take_for_resume)
    for run in list_runs(project.runs_dir, paper, "full"):
        if run.effective_status in ("interrupted", "error") and run.corrupt is None:
            return run
    raise GateRefused(
        f"no interrupted or errored full run of '{paper}' to resume (see `repro log -s full`)"
    )


def resume_full(
    project: Project, paper: str, run_id: str | None = None, console: Console | None = None
):
    """Continue an interrupted full run in its own directory from each seed's last checkpoint."""
    from repro.context import StageContext

    console = console or SafeConsole()
    run = take_for_resume(resumable_run(project, paper, run_id))
    try:
        resolved = compose(project, run.paper, list(run.record.overrides or []))
        code = PaperCode.read(project.paper_dir(run.paper))
        code.install()  # the resumed part imports these bytes, and is checked against them
        ctx = StageContext(
            project,
            run.paper,
            resolved,
            console,
            forced=run.record.forced,
            code=code,
        )
        changed = _changed_since(run, ctx, " started", "the resumed part")
        run.reopen(changed)
    except BaseException:
        run.unlock()
        raise
    ctx.run, ctx.resume = run, True
    ckpts = ", ".join(run.record.resumed[-1].from_ckpt or []) or "the start"
    console.rule(f"[bold]{run.paper} · full[/bold] · resuming run {run.id} from {ckpts}")
    execute(ctx, run, "full")  # releases the run when its record is final
    return run


def take_for_resume(run):
    """Lock `run` for this process (one writer per run: a second --resume is refused naming the
    first), then check again, from its record as it is now, that it can be resumed, and that its
    folder holds no symbolic link a resume would write through. Returns the run, locked."""
    from repro.records import read_run

    run.lock()
    try:
        now = read_run(run.dir)
        if now.corrupt is not None:
            raise GateRefused(f"{now.unreadable}; repair or remove the file")
        if now.effective_status not in ("interrupted", "error"):
            raise GateRefused(
                f"run {run.id} is {now.effective_status}; only interrupted or errored runs "
                "can be resumed"
            )
        links = symlinks_in(run.dir)
        if links:
            raise GateRefused(
                f"{shown_path(links[0])}: expected the run's own file, found a symbolic link (to "
                f"{os.readlink(links[0])}); a resume would write through it: remove the link"
                + (f" (and {len(links) - 1} more)" if len(links) > 1 else "")
                + " and resume again"
            )
        run.adopt(now)
    except BaseException:
        run.unlock()
        raise
    return run


def symlinks_in(folder: Path) -> list[Path]:
    """Every symbolic link under `folder` (not followed), sorted."""
    found = []
    for parent, dirs, names in os.walk(folder):
        found += [Path(parent) / n for n in dirs + names if (Path(parent) / n).is_symlink()]
    return sorted(found)


def _changed_since(run, ctx, started: str, what: str) -> list[str]:
    """The fingerprint parts and files that differ between `run`'s record and now; a warning
    naming them when there are any (`what` then runs on the current code, config and data)."""
    from repro.fingerprint import changed_parts

    now = current_fingerprint(ctx.project, ctx.paper, ctx.resolved, data_files_now(ctx), ctx.code)
    fp = run.record.fingerprint
    changed = changed_parts(fp.to_dict() if fp else {}, now)
    if changed:
        ctx.console.print(
            f"[yellow]warning: since run {run.id}{started} these changed: "
            f"{escape(', '.join(changed))}; {what} uses the current code, config and data[/yellow]",
            highlight=False,
        )
    return changed
