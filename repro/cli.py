"""The `repro` command line: thin wrappers that turn library results and errors into terminal output.

Commands that do not train (help, new, status, log, show, diff, report) import neither torch nor Lightning.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from repro.errors import ReproError

app = typer.Typer(
    help="repro: reproduce a paper through five gates (data, shapes, overfit, full, experiments) "
    "that measure, decide PASS/FAIL with evidence, and record every run.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console()
err_console = Console(stderr=True)

PAPER_OPT = typer.Option(
    None,
    "--paper",
    "-p",
    help="Paper name (default: \\[tool.repro] paper in pyproject.toml, or the only paper).",
)
OVERRIDES_ARG = typer.Argument(None, help="Hydra overrides, e.g. optim.lr=3e-3 model.hidden=128.")
COLD_OPT = typer.Option(
    False,
    "--cold",
    help="Run in this process even when a warm worker (`repro dev`) is up for the paper "
    "(data, shapes and overfit run there otherwise: same output, same record).",
)
RERUN_OVERRIDES_ARG = typer.Argument(None, help="Overrides appended to the recorded ones.")
EXPECT_OPT = typer.Option(
    None,
    "--expect",
    "-e",
    help="A key allowed to differ (repeatable); exit 1 when anything else differs.",
)


def _project():
    from repro.project import find_project

    return find_project()


@app.command()
def new(
    paper: str = typer.Argument(
        ..., help="Paper name: a lower-case Python identifier, e.g. resnet."
    ),
    title: str | None = typer.Option(None, help="The paper's title."),
    arxiv: str | None = typer.Option(None, help="arXiv id, e.g. 1512.03385."),
):
    """Scaffold a paper: config, model, data, tests, README and lab notebook (a tiny working example)."""
    from repro.scaffold import scaffold_paper

    project = _project()
    written = scaffold_paper(project, paper, title, arxiv)
    for p in written:
        console.print(f"  created {p.relative_to(project.root)}")
    console.print(
        f"\nNext: [bold]repro stage data --paper {paper}[/bold], then shapes and overfit "
        "(they pass on the toy example; replace the TODOs with the paper)."
    )


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def stage(
    name: str = typer.Argument(..., help="data | shapes | overfit | full | experiments"),
    overrides: list[str] | None = OVERRIDES_ARG,
    paper: str | None = PAPER_OPT,
    force: bool = typer.Option(
        False, "--force", help="Run even if earlier stages have not passed (recorded in the run)."
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="full only: continue an interrupted full run from its last "
        "checkpoint, in its own run directory; give its run id as the argument after "
        "--resume, or none for the newest interrupted/errored full run.",
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="full only: print the time/memory forecast and stop (no run is recorded).",
    ),
    cold: bool = COLD_OPT,
):
    """Run one gate; a later gate refuses until the earlier ones passed on the current code."""
    from repro.runner import run_stage

    project = _project()
    paper = project.resolve_paper(paper)
    overrides = list(overrides or [])
    if (resume or dry_run) and name != "full":
        raise ReproError(f"--resume and --dry-run apply to the full stage only, not '{name}'")
    if dry_run:
        from repro.runner import forecast_only

        forecast_only(project, paper, overrides, console)
        raise typer.Exit(0)
    _run_in_worker(project, paper, name, overrides, force, skip=cold or resume)
    try:
        if resume:
            from repro.rerun import resume_full

            run_id = overrides.pop(0) if overrides and "=" not in overrides[0] else None
            if overrides:
                raise ReproError(
                    f"--resume continues a run with its recorded config; drop the overrides {overrides} "
                    "(or use `repro rerun <run-id> <overrides>` for a new run)"
                )
            run = resume_full(project, paper, run_id, console=console)
            paper = run.paper
        else:
            run = run_stage(project, paper, name, overrides, force=force, console=console)
    except KeyboardInterrupt:
        err_console.print("Interrupted: the run is recorded as interrupted (see `repro log`).")
        raise typer.Exit(130) from None
    _finish(project, paper, run)


WATCH_STAGES_OPT = typer.Option(
    None,
    "--stage",
    "-s",
    help="What --watch re-runs on a change: shapes (default) or overfit; repeat for both.",
)


@app.command()
def dev(
    paper: str | None = PAPER_OPT,
    stages: list[str] | None = WATCH_STAGES_OPT,
    watch: bool = typer.Option(
        False, "--watch", help="Re-run the gates whenever a file of the paper or conf/ changes."
    ),
):
    """Keep a warm worker for a paper: `repro stage data|shapes|overfit` runs in it without the
    start-up, recorded as usual; --watch re-runs gates when the paper's code or config changes."""
    from repro.dev.protocol import SERVED_STAGES
    from repro.dev.worker import Worker

    project = _project()
    paper = project.resolve_paper(paper)
    if stages and not watch:
        raise ReproError("--stage chooses what --watch re-runs on a change: add --watch")
    for s in stages or []:
        if s not in SERVED_STAGES:
            raise ReproError(
                f"--stage {s}: expected one of {', '.join(SERVED_STAGES)} (full and experiments "
                "run in their own process: `repro stage full`)"
            )
    Worker(project, paper, console, watch=(stages or ["shapes"]) if watch else None).run()


def _run_in_worker(project, paper, name, overrides, force, skip: bool) -> None:
    """Exit with the code of the run when the paper's warm worker ran it; return when there is no
    worker or it declined (the worker's child itself calls `stage` with --cold)."""
    if skip:
        return
    from repro.dev.client import hand_to_worker

    code = hand_to_worker(project, paper, name, overrides, force)
    if code is not None:
        raise typer.Exit(code)


def _finish(project, paper: str, run) -> None:
    """Print a finished run's verdict and the paper's status; exit 0 when it passed."""
    from repro.config import compose
    from repro.display import print_status, print_verdict
    from repro.progression import stage_states
    from repro.runner import current_fingerprint

    print_verdict(console, run.record)
    console.print(f"run record: {run.dir.relative_to(project.root)}")
    resolved = compose(
        project, paper, list(run.record.get("overrides") or [])
    )  # the config it ran with
    print_status(
        console,
        paper,
        stage_states(project.runs_dir, paper, current_fingerprint(project, paper, resolved)),
    )
    raise typer.Exit(0 if run.record["status"] == "passed" else 1)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def rerun(
    run_id: str = typer.Argument(
        ..., help="The run to re-execute (id or unique prefix, see `repro log`)."
    ),
    overrides: list[str] | None = RERUN_OVERRIDES_ARG,
    force: bool = typer.Option(
        False, "--force", help="Run even if earlier stages have not passed."
    ),
):
    """Re-execute a run from its record (stage, paper, overrides); the new run links to the old one."""
    from repro.rerun import rerun as do_rerun

    project = _project()
    try:
        run, _changed = do_rerun(
            project, run_id, list(overrides or []), console=console, force=force
        )
    except KeyboardInterrupt:
        err_console.print("Interrupted: the run is recorded as interrupted (see `repro log`).")
        raise typer.Exit(130) from None
    console.print(f"re-run of {run.record['links']['rerun_of']}: run {run.id}")
    _finish(project, run.paper, run)


@app.command()
def diff(
    run_a: str = typer.Argument(..., help="First run id (or unique prefix)."),
    run_b: str = typer.Argument(..., help="Second run id (or unique prefix)."),
    expect: list[str] | None = EXPECT_OPT,
):
    """What differs between two runs: config, overrides, code, data, environment, model."""
    from repro.diff import diff_runs, format_diff, outcomes, unexpected
    from repro.records import load_run

    project = _project()
    a, b = load_run(project.runs_dir, run_a), load_run(project.runs_dir, run_b)

    def git_diff(run) -> str | None:
        path = run.dir / "git.diff"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else None

    d = diff_runs(a.record, b.record, git_diff(a), git_diff(b))
    typer.echo(
        format_diff(d, a.id, b.id, outcomes(a.record, b.record))
    )  # plain, unwrapped: for scripts
    if expect is not None:
        extra = unexpected(d, expect)
        if extra:
            typer.echo(
                f"Error: differences not expected (--expect {' '.join(expect)}): {', '.join(extra)}",
                err=True,
            )
            raise typer.Exit(1)


@app.command()
def report(paper: str | None = PAPER_OPT):
    """Write papers/<paper>/REPORT.md from the run records alone (results, deviations, timeline, commands)."""
    from repro.report import write_report

    project = _project()
    paper = project.resolve_paper(paper)
    path = write_report(project, paper)
    console.print(f"wrote {path.relative_to(project.root)}")


@app.command()
def status(
    paper: str | None = PAPER_OPT,
    all_papers: bool = typer.Option(False, "--all", help="Every paper."),
):
    """One row per stage: PASS / FAIL / STALE / not run, when, run id, and the one-line reason."""
    from repro.config import compose
    from repro.display import print_status
    from repro.progression import stage_states
    from repro.runner import current_fingerprint

    project = _project()
    papers = project.papers() if all_papers else [project.resolve_paper(paper)]
    for p in papers:
        resolved = compose(project, p, [])
        print_status(
            console, p, stage_states(project.runs_dir, p, current_fingerprint(project, p, resolved))
        )


@app.command()
def log(
    paper: str | None = typer.Option(None, "--paper", "-p", help="Only this paper."),
    stage: str | None = typer.Option(None, "--stage", "-s", help="Only this stage."),
    n: int = typer.Option(20, "-n", help="How many runs."),
):
    """The experiment log: every gate run, newest first."""
    from repro.display import print_log
    from repro.records import list_runs

    project = _project()
    runs = list_runs(project.runs_dir, paper=paper, stage=stage)[:n]
    if not runs:
        console.print("no runs yet: start with `repro stage data`")
        return
    print_log(console, runs)


@app.command()
def show(
    run_id: str = typer.Argument(..., help="A run id or a unique prefix of one (see `repro log`)."),
):
    """One run: verdict, evidence, config with each value's provenance, git, env, metrics, plots."""
    from repro.display import print_run
    from repro.records import load_run

    project = _project()
    print_run(console, load_run(project.runs_dir, run_id))


def main() -> None:
    try:
        app()
    except ReproError as e:
        err_console.print(f"Error: {e}", markup=False, highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
