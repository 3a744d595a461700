"""Run one stage: check earlier stages passed on the current fingerprint, record the run, run the gate."""

from __future__ import annotations

import shlex
from typing import Any

from rich.console import Console

from repro.config import Resolved, compose
from repro.errors import GateRefused, ReproError
from repro.fingerprint import fingerprint
from repro.gates import CHEAP_STAGES, check_stage
from repro.progression import known_data_files, missing_prerequisites, stage_states
from repro.project import Project


def stage_command(stage: str, paper: str, overrides: list[str]) -> str:
    """The command line that runs `stage` again: `repro stage <stage> --paper <p> <overrides>`."""
    return " ".join(["repro stage", stage, "--paper", paper, *map(shlex.quote, overrides)])


def current_fingerprint(
    project: Project, paper: str, resolved: Resolved, data_files: list[str] | None = None
) -> dict:
    """The fingerprint of the code, config and data now. Without `data_files`, the files the last
    data run read with the same data code and config (what `status` can know without importing
    the paper's code)."""
    files = data_files
    if files is None:
        probe = fingerprint(resolved, project.paper_dir(paper), [])
        files = known_data_files(project.runs_dir, paper, probe["parts"])
    return fingerprint(resolved, project.paper_dir(paper), files)


def data_files_now(ctx) -> list[str] | None:
    """The paper's data files from a datamodule that is built but not set up (imports its code).
    A bad config is an error now; any other failure is the data gate's to report, with its
    traceback, so it gives None here."""
    try:
        return [str(p) for p in ctx.build_datamodule().data_files()]
    except ReproError:
        raise
    except Exception:
        return None


def run_stage(
    project: Project,
    paper: str,
    stage: str,
    overrides: list[str] | None = None,
    force: bool = False,
    console: Console | None = None,
    links: dict[str, Any] | None = None,
):
    """Run `stage` for `paper`; returns the finished Run. Raises GateRefused when an earlier stage
    has not passed on the current fingerprint and cannot be re-run automatically."""
    from repro.context import StageContext

    check_stage(stage)
    console = console or Console()
    overrides = list(overrides or [])
    resolved = compose(project, paper, overrides)
    # Refuse first, from the records alone: as cheap as `repro status` (no paper code imported).
    _refuse_expensive(project, paper, stage, overrides, resolved, force)
    ctx = StageContext(project, paper, resolved, console, forced=force)
    ctx.check_paper_config()
    current = current_fingerprint(project, paper, resolved, data_files_now(ctx))
    missing = prepare(project, paper, stage, overrides, current, force, console)
    run = _create(ctx, stage, current, missing, links or {})
    console.rule(f"[bold]{paper} · {stage}[/bold] · run {run.id}")
    if missing:
        console.print(
            f"[yellow]--force: running without {', '.join(missing)} passing on the current code "
            "(recorded in the run)[/yellow]"
        )
    execute(ctx, run, stage)
    return run


def _refuse_expensive(project, paper, stage, overrides, resolved, force) -> None:
    if force:
        return
    rows = stage_states(project.runs_dir, paper, current_fingerprint(project, paper, resolved))
    _raise_if_expensive_missing(rows, stage, paper, overrides)


def _raise_if_expensive_missing(rows, stage: str, paper: str, overrides: list[str]) -> None:
    states = {r.stage: r.state for r in rows}
    expensive = [s for s in missing_prerequisites(rows, stage) if s not in CHEAP_STAGES]
    if expensive:
        s = expensive[0]
        raise GateRefused(
            f"stage '{stage}' needs '{s}' to pass on the current code, config and data first "
            f"({s} is {states[s]}); run: {stage_command(s, paper, overrides)}"
        )


def prepare(project, paper, stage, overrides, current, force, console) -> list[str]:
    """Earlier stages that have not passed on `current`: cheap ones are run first (a failure there
    refuses this stage); returns the ones skipped with --force ([] otherwise)."""
    rows = stage_states(project.runs_dir, paper, current)
    missing = missing_prerequisites(rows, stage)
    if force or not missing:
        return missing
    _raise_if_expensive_missing(rows, stage, paper, overrides)
    states = {r.stage: r.state for r in rows}
    for s in missing:
        console.print(
            f"[yellow]{s} is {states[s]} on the current code/config: running it first[/yellow]"
        )
        pre = run_stage(project, paper, s, overrides, force=False, console=console)
        if pre.record["status"] != "passed":
            reason = (pre.record.get("verdict") or {}).get("reason", pre.record["status"])
            raise GateRefused(f"stage '{stage}' needs '{s}', which failed (run {pre.id}): {reason}")
    return []


def _create(ctx, stage: str, current: dict, missing: list[str], links: dict[str, Any]):
    from repro.envinfo import env_info
    from repro.gitstate import git_state
    from repro.records import create_run

    r = ctx.resolved
    run = create_run(
        ctx.project.runs_dir,
        ctx.paper,
        stage,
        config=r.config,
        overrides=r.overrides,
        provenance=r.provenance,
        defaults=r.defaults(),
        forced=bool(missing),
        skipped_prerequisites=missing,
        fingerprint=current,
        git=git_state(ctx.project.root),
        env=env_info(),
        links=links,
    )
    run.write_yaml("config.yaml", r.config)
    ctx.run = run
    return run


def execute(ctx, run, stage: str) -> None:
    """Run the gate inside the run's guard; record verdict, metrics, env, model and peak memory;
    append the notebook line whatever happens."""
    from repro.envinfo import env_info
    from repro.gates import gate
    from repro.gates.metrics import to_record
    from repro.notebook import append_entry, format_entry

    try:
        with run.guard():
            verdict = gate(stage).run(ctx)
            info = ctx.model_info
            run.annex(
                env=env_info(),  # torch is imported now: the device is known too
                peak_rss_mb=peak_rss_mb(),
                init=info.init if info else None,
                model=info.summary if info else None,
            )
            status = "passed" if verdict.passed else "failed"
            run.finish(verdict.to_dict(), status, metrics=to_record(verdict.metrics))
    finally:
        append_entry(ctx.project.notes_dir, ctx.paper, format_entry(run.record))


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    except (ImportError, OSError):
        return None


def forecast_only(project: Project, paper: str, overrides: list[str], console: Console) -> None:
    """`repro stage full --dry-run`: the forecast, no run recorded."""
    from repro.forecast import print_forecast

    print_forecast(project.runs_dir, paper, compose(project, paper, overrides).cfg, console)
