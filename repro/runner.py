"""Run one stage: check earlier stages passed on the current fingerprint, record the run, run the gate."""

from __future__ import annotations

import os
from typing import Any, Protocol

from rich.console import Console
from rich.markup import escape

from repro.config.compose import compose
from repro.context import StageContext
from repro.errors import GateRefused, ReproError
from repro.gates import CHEAP_STAGES, FORECAST_STAGES, STAGES, check_stage
from repro.oneline import one_line
from repro.paper_code import PaperCode
from repro.progression import (
    REJUDGE,
    current_fingerprint,
    missing_prerequisites,
    passed_on,
    stage_command,
    stage_states,
)
from repro.project import Project
from repro.records import HeldInterrupts
from repro.terminal import SafeConsole
from repro.train.distributed import JOIN_ENV


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


class WarmStart(Protocol):
    """What a warm process gives every run it makes (repro/dev/child.py: the worker's child):
    the datamodules it set up already, for a run whose config and data code they fit, and the
    record's `worker` field saying so."""

    def datamodules(self, config: dict[str, Any], code: PaperCode) -> dict[int, Any]: ...

    def worker(self, config: dict[str, Any], code: PaperCode) -> dict[str, Any]: ...


def run_stage(
    project: Project,
    paper: str,
    stage: str,
    overrides: list[str] | None = None,
    force: bool = False,
    console: Console | None = None,
    links: dict[str, Any] | None = None,
    code: PaperCode | None = None,
    warm: WarmStart | None = None,
):
    """Run `stage` for `paper`; returns the finished Run. Raises GateRefused when an earlier stage
    has not passed (repro/progression.py: the milestones of the base config, and, for a run with
    overrides, the earlier stages those overrides change) and cannot be re-run automatically.

    The paper's code is read once (`code`, else now) and every stage this command runs imports
    it from those bytes and records them (repro/paper_code.py): a file saved meanwhile is not
    what any of its records name (issue 20). `warm`: what a warm worker hands this run and the
    cheap stages it runs first."""
    check_stage(stage)
    console = console or SafeConsole()
    overrides = list(overrides or [])
    code = code or PaperCode.read(project.paper_dir(paper))
    resolved = compose(project, paper, overrides)
    base = compose(project, paper, []) if overrides else resolved
    if not force:  # refuse first, from the records alone: as cheap as `repro status`
        _plan(project, paper, stage, overrides, base, resolved, None, code=code)
    code.install()  # the paper's modules: this copy's, imported afresh if they were another's
    ctx = StageContext(project, paper, resolved, console, forced=force, code=code)
    if warm is not None:
        ctx.datamodules.update(warm.datamodules(resolved.config, code))
    ctx.check_paper_config()
    files = data_files_now(ctx)
    plan = (project, paper, stage, overrides, base, resolved, files)
    if force:
        skipped = [s for s, _ in _plan(*plan, refuse=False, code=code)]
    else:
        skipped = _run_cheap_first(*plan, console, code, warm)
    current = current_fingerprint(project, paper, resolved, files, code)
    _note_dead_runs(project, paper, console)
    with HeldInterrupts() as held:  # from the record's creation until its guard holds the run
        missing = sorted(set(skipped), key=STAGES.index)
        worker = {"worker": warm.worker(resolved.config, code)} if warm is not None else {}
        run = _create(ctx, stage, current, missing, links or {}, **worker)
        execute(ctx, run, stage, held, milestones=base.cfg == resolved.cfg)
    return run


def _plan(
    project, paper, stage, overrides, base, resolved, files, refuse=True, code=None
) -> list[tuple[str, list[str]]]:
    """The earlier runs still needed, as (stage, overrides): base milestones first, then the
    stages the overrides change. Raises GateRefused naming the command when an expensive one is
    missing (unless refuse=False: --force lists what it skips)."""
    same_data = base is resolved or base.cfg.data == resolved.cfg.data  # then the same files
    base_fp = current_fingerprint(project, paper, base, files if same_data else None, code)
    rows = stage_states(project.runs_dir, paper, base_fp)
    states = {r.stage: r for r in rows}
    changed: list[str] = []
    if overrides:
        fp = current_fingerprint(project, paper, resolved, files, code)
        changed = [
            s for s in STAGES[: STAGES.index(stage)] if fp["stages"][s] != base_fp["stages"][s]
        ]
    # an earlier stage the overrides change is needed with them, not with the base config (an
    # overfit with model overrides ran the base config's shapes first, then its own)
    todo = [(s, []) for s in missing_prerequisites(rows, stage) if s not in changed]
    todo += [(s, overrides) for s in changed if not passed_on(project.runs_dir, paper, s, fp)]
    todo.sort(key=lambda t: STAGES.index(t[0]))
    for s, ov in todo if refuse else []:
        if s not in CHEAP_STAGES:
            row = states[s]
            state = row.state if not ov else "not passed with these overrides"
            fix = (
                f"repro judge {row.run_id}" if row.state == REJUDGE else stage_command(s, paper, ov)
            )
            raise GateRefused(
                f"stage '{stage}' needs '{s}' to pass on the current code, config and data first "
                f"({s} is {state}); run: {fix}"
            )
    return todo


def _run_cheap_first(
    project, paper, stage, overrides, base, resolved, files, console, code, warm
) -> list[str]:
    """Run the cheap earlier stages that have not passed (a failure there refuses this stage),
    on the same copy of the paper's code; returns [] (nothing was skipped)."""
    for s, ov in _plan(project, paper, stage, overrides, base, resolved, files, code=code):
        what = "the base config" if not ov else "these overrides"
        console.print(
            f"[yellow]{s} has not passed on the current code with {what}: running it first[/yellow]"
        )
        pre = run_stage(project, paper, s, ov, force=False, console=console, code=code, warm=warm)
        if pre.record.status != "passed":
            reason = pre.record.reason or pre.record.status
            raise GateRefused(f"stage '{stage}' needs '{s}', which failed (run {pre.id}): {reason}")
    return []


def _note_dead_runs(project: Project, paper: str, console: Console) -> None:
    """Earlier runs of this paper whose process died without a word (kill -9, a crash of the
    machine) get their end written now: status interrupted in the record, and the notebook line
    their process could not write."""
    from repro.errors import StorageError
    from repro.notebook import format_entry
    from repro.records import mark_dead_runs

    try:
        dead = mark_dead_runs(project.runs_dir, paper)
    except StorageError as e:  # a read-only old run must not stop this one
        console.print(f"[yellow]Warning: {escape(str(e))}[/yellow]")
        return
    for run in reversed(dead):  # oldest first, as the notebook runs
        console.print(
            f"[yellow]run {run.id} ({run.stage}) {escape(run.status_reason or '')}: recorded as "
            "interrupted, with its notebook line[/yellow]"
        )
        append_line(project, paper, format_entry(run.record))


def _create(ctx, stage: str, current: dict, missing: list[str], links: dict[str, Any], **extra):
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
        **extra,
    )
    ctx.run = run
    return run


def _snapshot(ctx, run) -> None:
    """The resolved config and the paper's code as this run used them (what `repro diff` shows):
    the very bytes it imports (ctx.code), not the files as they are by now."""
    if run.path("config.yaml").exists():  # a resumed run keeps what it started with
        return
    run.write_yaml("config.yaml", ctx.resolved.config)
    code = ctx.code or PaperCode.read(ctx.project.paper_dir(ctx.paper))
    for name in code.sources:
        run.write_text(f"code/{name}", code.text(name))


def execute(
    ctx: StageContext,
    run,
    stage: str,
    held: HeldInterrupts | None = None,
    milestones: bool = True,
) -> None:
    """Run the gate inside the run's guard; record verdict, metrics, env, model and peak memory;
    append the notebook line whatever happens (a notebook that cannot be written is a warning
    that prints the line: the verdict stands). `held`: interrupts noted since the record was
    made, acted on inside the guard. `milestones`: the run's config is the paper's base config
    (full's forecast then reads the milestone runs)."""
    from repro.envinfo import env_info, peak_rss_mb
    from repro.gates.metrics import to_record

    os.environ[JOIN_ENV] = str(run.dir)  # DDP ranks > 0, started while the gate runs, join it
    try:
        with run.guard(held):
            _announce(ctx, run, stage)
            _snapshot(ctx, run)
            if stage in FORECAST_STAGES and not ctx.resume:  # a resumed run keeps its first
                fp = run.data["fingerprint"]  # as written (the dict form)
                fc = _print_forecast(
                    ctx.project, ctx.paper, ctx.resolved, fp, milestones, ctx.console
                )
                run.annex(forecast=fc)
            verdict = _run_gate(ctx, run, stage)
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
        os.environ.pop(JOIN_ENV, None)
        with HeldInterrupts():  # the line is short: a Ctrl-C now waits for it
            run.unlock()  # the record is final: another process may mark or resume it now
            _append_notebook(ctx, run)


def _run_gate(ctx, run, stage: str):
    """The gate's verdict. When it fails because a DDP peer died (a collective then fails with
    `Connection reset by peer`), the error says which rank died and how; rank 0's traceback
    goes to the record only (issue 20)."""
    from repro.gates import gate
    from repro.train.distributed import peer_deaths

    try:
        return gate(stage).run(ctx)
    except Exception as e:
        died = peer_deaths(run.dir)
        if not died:
            raise
        raise PeerDied(
            f"DDP {'; '.join(died)}, so rank 0 stopped ({type(e).__name__}: "
            f"{one_line(str(e), 160)}); `repro show {run.id}` has rank 0's traceback"
        ) from e


class PeerDied(ReproError):
    """A DDP rank other than 0 died while rank 0 trained: the message names it and how."""


def _announce(ctx, run, stage: str) -> None:
    if ctx.resume:  # repro/rerun.py: resume_full announces the resume itself
        return
    ctx.console.rule(f"[bold]{ctx.paper} · {stage}[/bold] · run {run.id}")
    if run.record.forced:
        ctx.console.print(
            f"[yellow]--force: running without {', '.join(run.record.skipped_prerequisites or [])} "
            "passing on the current code (recorded in the run)[/yellow]"
        )


def _append_notebook(ctx, run) -> None:
    """Append the run's line to notes/<paper>.md; when that cannot be written, say so on stderr
    with the line itself, so that it is never lost (issue 14)."""
    from repro.notebook import format_entry

    append_line(ctx.project, ctx.paper, format_entry(run.record))


def append_line(project: Project, paper: str, line: str) -> None:
    from repro.errors import StorageError
    from repro.notebook import append_entry

    try:
        append_entry(project.notes_dir, paper, line)
    except StorageError as e:
        SafeConsole(stderr=True, soft_wrap=True).print(
            f"Warning: {e}; the run is recorded, this is its notebook line: {line}",
            markup=False,
            highlight=False,
        )


def run_joined(project: Project, run_dir, stage: str, resume: bool) -> None:
    """This process is a DDP rank > 0 that Lightning started by re-running the command line: run
    the same gate in rank 0's run directory, writing no record, notebook line, checkpoint or plot
    of its own (those are rank 0's), and exit if rank 0 dies."""
    from repro.gates import gate
    from repro.records import open_joined
    from repro.train.distributed import exit_with_parent, note_joined_rank

    exit_with_parent()
    run = open_joined(run_dir)
    note_joined_rank(run.dir)  # rank 0 can then say that this rank died, and how
    resolved = compose(project, run.paper, list(run.record.overrides or []))
    # rank 0's code, as its record names it (a resumed run's rank 0 runs the files as they are)
    snapshot = run.dir / "code"
    paper_dir = project.paper_dir(run.paper)
    code = (
        PaperCode.from_snapshot(snapshot, paper_dir)
        if snapshot.is_dir() and not resume
        else PaperCode.read(paper_dir)
    )
    code.install()
    ctx = StageContext(
        project, run.paper, resolved, Console(quiet=True), run=run, resume=resume, code=code
    )
    gate(check_stage(stage)).run(ctx)


def forecast_only(project: Project, paper: str, overrides: list[str], console: Console) -> None:
    """`repro stage full --dry-run`: the forecast for the config these overrides make (their data,
    their overfit's speed), no run recorded."""
    resolved = compose(project, paper, overrides)
    base = compose(project, paper, []) if overrides else resolved
    milestones = base.cfg == resolved.cfg
    current = current_fingerprint(project, paper, base if milestones else resolved)
    _print_forecast(project, paper, resolved, current, milestones, console, overrides)


def _print_forecast(project, paper, resolved, current, milestones, console, overrides=None):
    from repro.forecast import print_forecast

    return print_forecast(
        project.runs_dir, paper, resolved.cfg, current, milestones, console, overrides
    )
