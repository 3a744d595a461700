"""The `repro` command line: thin wrappers that turn library results and errors into terminal output.

Commands that do not train (help, new, status, log, show) import neither torch nor Lightning.
"""

from __future__ import annotations

import sys
from typing import Optional

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

PAPER_OPT = typer.Option(None, "--paper", "-p", help="Paper name (default: [tool.repro] paper in pyproject.toml, or the only paper).")


def _project():
    from repro.project import find_project

    return find_project()


@app.command()
def new(
    paper: str = typer.Argument(..., help="Paper name: a lower-case Python identifier, e.g. resnet."),
    title: Optional[str] = typer.Option(None, help="The paper's title."),
    arxiv: Optional[str] = typer.Option(None, help="arXiv id, e.g. 1512.03385."),
):
    """Scaffold a paper: config, model, data, tests, README and lab notebook (a tiny working example)."""
    from repro.scaffold import scaffold_paper

    project = _project()
    written = scaffold_paper(project, paper, title, arxiv)
    for p in written:
        console.print(f"  created {p.relative_to(project.root)}")
    console.print(f"\nNext: [bold]repro stage data --paper {paper}[/bold], then shapes and overfit "
                  "(they pass on the toy example; replace the TODOs with the paper).")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def stage(
    name: str = typer.Argument(..., help="data | shapes | overfit | full | experiments"),
    overrides: Optional[list[str]] = typer.Argument(None, help="Hydra overrides, e.g. optim.lr=3e-3 model.hidden=128."),
    paper: Optional[str] = PAPER_OPT,
    force: bool = typer.Option(False, "--force", help="Run even if earlier stages have not passed (recorded in the run)."),
):
    """Run one gate; a later gate refuses until the earlier ones passed on the current code."""
    from repro.display import print_status, print_verdict
    from repro.runner import current_fingerprint, run_stage

    project = _project()
    paper = project.resolve_paper(paper)
    try:
        run = run_stage(project, paper, name, list(overrides or []), force=force, console=console)
    except KeyboardInterrupt:
        err_console.print("Interrupted: the run is recorded as interrupted (see `repro log`).")
        raise typer.Exit(130)
    print_verdict(console, run.record)
    from repro.config import compose
    from repro.progression import stage_states

    console.print(f"run record: {run.dir.relative_to(project.root)}")
    resolved = compose(project, paper, [])
    print_status(console, paper, stage_states(project.runs_dir, paper, current_fingerprint(project, paper, resolved)))
    raise typer.Exit(0 if run.record["status"] == "passed" else 1)


@app.command()
def status(paper: Optional[str] = PAPER_OPT, all_papers: bool = typer.Option(False, "--all", help="Every paper.")):
    """One row per stage: PASS / FAIL / STALE / not run, when, run id, and the one-line reason."""
    from repro.config import compose
    from repro.display import print_status
    from repro.progression import stage_states
    from repro.runner import current_fingerprint

    project = _project()
    papers = project.papers() if all_papers else [project.resolve_paper(paper)]
    for p in papers:
        resolved = compose(project, p, [])
        print_status(console, p, stage_states(project.runs_dir, p, current_fingerprint(project, p, resolved)))


@app.command()
def log(
    paper: Optional[str] = typer.Option(None, "--paper", "-p", help="Only this paper."),
    stage: Optional[str] = typer.Option(None, "--stage", "-s", help="Only this stage."),
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
def show(run_id: str = typer.Argument(..., help="A run id or a unique prefix of one (see `repro log`).")):
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
