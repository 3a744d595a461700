"""The `repro` command line: thin wrappers that turn library results and errors into terminal output.

Commands that do not train (help, init, new, status, log, show, diff, report) import neither torch nor Lightning.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import typer

from repro.errors import ReproError
from repro.terminal import SafeConsole, safe, unsafe_character

app = typer.Typer(
    help="repro: reproduce a paper through five gates (data, shapes, overfit, full, experiments) "
    "that measure, decide PASS/FAIL with evidence, and record every run.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
# Every command prints through these: control characters in what they print are shown escaped.
console = SafeConsole()
err_console = SafeConsole(stderr=True)


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

INIT_DIR_ARG = typer.Argument(
    Path("."),
    help="The folder to set up: an empty one or your own repository (created if absent).",
    show_default="the current directory",
)


def _print_version(value: bool) -> None:
    if value:
        from repro import __version__

        typer.echo(f"repro {__version__}")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print repro's version and exit.",
    ),
    debug: bool = typer.Option(
        False,
        "--debug",
        help="Print the traceback of an expected error too (or set REPRO_DEBUG=1).",
    ),
) -> None:
    # Options before the command (`repro --version`); the app's help is Typer(help=...) above.
    # main() reads --debug from the command line itself: errors raised while the command line
    # is parsed, before this runs, get their traceback too.
    pass


def _project():
    from repro.project import enter_project

    return enter_project()  # relative paths in the config mean the project root's (issue 14)


def _warn_unreadable(project, paper: str | None = None) -> None:
    """One warning per run record that cannot be read (the command skips it)."""
    from repro.display import print_unreadable
    from repro.records import list_runs

    print_unreadable(err_console, list_runs(project.runs_dir, paper=paper))


@app.command()
def init(directory: Path = INIT_DIR_ARG):
    """Make a folder a repro project: conf/ with repro's defaults, papers/, notes/; runs/ git-ignored."""
    from repro.init_project import init_project

    result = init_project(directory)
    root = directory.absolute()
    for p in result.created:
        console.print(f"  created {p.relative_to(root)}{'/' if p.is_dir() else ''}")
    if result.gitignore_added:
        console.print(f"  added {' '.join(result.gitignore_added)} to .gitignore")
    where = "" if root == Path.cwd() else f"cd {directory} && "
    console.print(
        f"\nNext: [bold]{where}repro new <paper>[/bold] (a tiny working example to replace with the paper)."
    )


@app.command()
def new(
    paper: str = typer.Argument(
        ..., help="Paper name: a lower-case Python identifier, e.g. resnet."
    ),
    title: str | None = typer.Option(None, help="The paper's title."),
    arxiv: str | None = typer.Option(None, help="arXiv id, e.g. 1512.03385."),
    use: bool = typer.Option(
        False, "--use", help="Make it the current paper (commands without --paper act on it)."
    ),
    task: str = typer.Option(
        "classification",
        "--task",
        "-t",
        help="What the paper's model predicts: classification | regression | sequence (a class "
        "per position: language models, taggers) | ranking (items grouped by a query). The "
        "scaffold is a tiny working example of it.",
    ),
):
    """Scaffold a paper: config, model, data, tests, README and lab notebook (a tiny working example)."""
    from repro.scaffold import scaffold_paper

    _plain("--title", title, "type the title as plain text")
    _plain("--arxiv", arxiv, "type the arXiv id as plain text, e.g. 1512.03385")
    project = _project()
    written = scaffold_paper(project, paper, title, arxiv, task)
    for p in written:
        console.print(f"  created {p.relative_to(project.root)}", markup=False)
    if use:
        project.use_paper(paper)
    current = (
        project.resolve_paper(None)
        if len(project.papers()) == 1 or use
        else _current_or_none(project)
    )
    if current == paper:
        console.print(f"\n{paper} is the current paper: commands without --paper act on it.")
    else:
        stays = f"The current paper stays {current}" if current else "There is no current paper"
        console.print(
            f"\n{stays}: pass --paper {paper} (or make a paper current with `repro new --use`)."
        )
    console.print(
        f"Next: [bold]repro stage data --paper {paper}[/bold], then shapes and overfit "
        "(they pass on the toy example; replace the TODOs with the paper)."
    )


def _plain(option: str, text: str | None, fix: str) -> None:
    """Free text repro writes into files (a title into the paper's config and README) must be
    plain: a control character would reach every terminal that prints it (issue 20)."""
    bad = unsafe_character(text or "")
    if bad:
        raise ReproError(
            f"{option}: expected text without control characters, found '{bad}' in "
            f"'{safe(text)}'; {fix}"
        )


def _plain_overrides(overrides: list[str]) -> None:
    """Overrides are recorded and printed with the run: no control characters in them."""
    for o in overrides:
        bad = unsafe_character(o)
        if bad:
            raise ReproError(
                f"override '{safe(o)}': expected text without control characters, found "
                f"'{bad}'; type the value as plain text"
            )


def _current_or_none(project) -> str | None:
    from repro.errors import PaperError

    try:
        return project.resolve_paper(None)
    except PaperError:
        return None


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
    preflight_only: bool = typer.Option(
        False,
        "--preflight-only",
        help="full only: run the preflight alone (a short training that must beat the trivial "
        "baseline on val) and stop; the override stage.full.preflight.only=true, recorded.",
    ),
    cold: bool = COLD_OPT,
):
    """Run one gate; a later gate refuses until the earlier ones passed on the current code."""
    from repro.stage import run_and_report
    from repro.train.distributed import joined_run_dir

    project = _project()
    joined = joined_run_dir()
    if joined is not None:  # a DDP rank > 0 re-running this command: join rank 0's run
        from repro.runner import run_joined

        run_joined(project, joined, name, resume)
        raise typer.Exit(0)
    paper = project.resolve_paper(paper)
    overrides = list(overrides or [])
    _plain_overrides(overrides)
    _full_flags(name, resume, dry_run, preflight_only, overrides)
    if dry_run:
        from repro.runner import forecast_only

        forecast_only(project, paper, overrides, console)
        raise typer.Exit(0)
    _run_in_worker(project, paper, name, overrides, force, skip=cold or resume)
    if resume:
        raise typer.Exit(_resume(project, paper, overrides))
    raise typer.Exit(run_and_report(project, paper, name, overrides, force, console, err_console))


def _full_flags(name: str, resume: bool, dry_run: bool, preflight_only: bool, overrides) -> None:
    """Refuse the full stage's flags on another stage; --preflight-only becomes its override."""
    if (resume or dry_run or preflight_only) and name != "full":
        raise ReproError(
            f"--resume, --dry-run and --preflight-only apply to the full stage only, not '{name}'"
        )
    if preflight_only:
        if resume:
            raise ReproError("--preflight-only starts a new run: drop --resume")
        overrides.append("stage.full.preflight.only=true")


def _resume(project, paper: str, args: list[str]) -> int:
    """`repro stage full --resume [run-id]`: the run continued, with its recorded config; the exit
    code, as `repro stage` gives it."""
    from repro.rerun import resume_full
    from repro.stage import INTERRUPTED, report_finished

    run_id = args.pop(0) if args and "=" not in args[0] else None
    if args:
        raise ReproError(
            f"--resume continues a run with its recorded config; drop the overrides {args} "
            "(or use `repro rerun <run-id> <overrides>` for a new run)"
        )
    try:
        run = resume_full(project, paper, run_id, console=console)
    except KeyboardInterrupt:
        err_console.print(INTERRUPTED)
        return 130
    return report_finished(console, project, run)


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
    worker or it declined (the worker's child itself calls `stage` with --cold), having chosen
    OpenMP's wait policy for this cold process before it imports torch (issue 21: spinning
    waits on busy CPUs; repro.train.threads.quiet_waits_when_busy)."""
    from repro.train.threads import quiet_waits_when_busy

    if not skip:
        from repro.dev.client import hand_to_worker

        code = hand_to_worker(project, paper, name, overrides, force)
        if code is not None:
            raise typer.Exit(code)
    quiet_waits_when_busy()


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
    from repro.stage import INTERRUPTED, report_finished

    _plain_overrides(list(overrides or []))
    project = _project()
    try:
        run, _changed = do_rerun(
            project, run_id, list(overrides or []), console=console, force=force
        )
    except KeyboardInterrupt:
        err_console.print(INTERRUPTED)
        raise typer.Exit(130) from None
    console.print(f"re-run of {(run.record.links or {})['rerun_of']}: run {run.id}")
    raise typer.Exit(report_finished(console, project, run))


@app.command()
def judge(
    run_id: str | None = typer.Argument(
        None, help="The full run to judge (id or unique prefix); default: the newest finished one."
    ),
    paper: str | None = PAPER_OPT,
):
    """Re-apply the current targets and the full stage's judgements to a full run's recorded
    metrics, without training; the new verdict is recorded as a run linked to the judged one."""
    from repro.judge import judge_run
    from repro.stage import report_finished

    project = _project()
    paper = project.resolve_paper(paper)
    run = judge_run(project, paper, run_id, console)
    raise typer.Exit(report_finished(console, project, run))


@app.command()
def diff(
    run_a: str = typer.Argument(..., help="First run id (or unique prefix)."),
    run_b: str = typer.Argument(..., help="Second run id (or unique prefix)."),
    expect: list[str] | None = EXPECT_OPT,
):
    """What differs between two runs: config, overrides, code, data, environment, model."""
    from repro.diff import (
        code_text_diff,
        diff_runs,
        format_diff,
        outcomes,
        same_inputs_different_results,
        unexpected,
    )
    from repro.records import load_run

    project = _project()
    a, b = load_run(project.runs_dir, run_a), load_run(project.runs_dir, run_b)

    def git_diff(run) -> str | None:
        path = run.dir / "git.diff"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else None

    d = diff_runs(a.record, b.record, git_diff(a), git_diff(b))
    # plain text, for scripts; control characters of the records and code shown escaped
    typer.echo(safe(format_diff(d, a.id, b.id, outcomes(a.record, b.record))))
    text = code_text_diff(a.dir, b.dir, d)
    if text:
        typer.echo(safe(text), nl=False)
    unsteady = same_inputs_different_results(d, a.record, b.record)
    if unsteady:
        typer.echo(
            f"same inputs, different results ({safe(', '.join(unsteady))}): these runs are not "
            "deterministic; look for a set or dict iterated in preprocessing, data-loader workers, "
            "or nondeterministic kernels"
        )
    if expect is not None:
        extra = unexpected(d, expect) + [f"results: {k}" for k in unsteady]
        if extra:
            typer.echo(
                safe(
                    f"Error: differences not expected (--expect {' '.join(expect)}): {', '.join(extra)}"
                ),
                err=True,
            )
            raise typer.Exit(1)


@app.command()
def report(paper: str | None = PAPER_OPT):
    """Write papers/<paper>/REPORT.md from the run records alone (results, deviations, timeline, commands)."""
    from repro.report import write_report

    project = _project()
    paper = project.resolve_paper(paper)
    _warn_unreadable(project, paper)
    path, skipped = write_report(project, paper)
    for png in skipped:
        err_console.print(
            f"Warning: {png.relative_to(project.root)}: expected a regular file inside its run "
            "folder, found a symbolic link or another kind of file; left out of the report",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"wrote {path.relative_to(project.root)}", markup=False)


@app.command()
def status(
    paper: str | None = PAPER_OPT,
    all_papers: bool = typer.Option(False, "--all", help="Every paper."),
):
    """The milestones: one row per stage of the paper's base config (no overrides): PASS / FAIL /
    STALE (with what changed) / not run, when, run id, the reason, and runs with overrides since."""
    from repro.display import print_status
    from repro.progression import milestones

    project = _project()
    papers = project.papers() if all_papers else [project.resolve_paper(paper)]
    for p in papers:
        _warn_unreadable(project, p)
        print_status(console, p, milestones(project, p))


@app.command()
def log(
    paper: str | None = typer.Option(None, "--paper", "-p", help="Only this paper."),
    stage: str | None = typer.Option(
        None, "--stage", "-s", help="Only this stage (a gate, or eval for `repro eval` runs)."
    ),
    n: int = typer.Option(20, "-n", help="How many runs (1 or more)."),
):
    """The experiment log: every gate run (and `repro eval` run), newest first."""
    from repro.display import print_log, print_unreadable
    from repro.eval_run import STAGE as EVAL_STAGE
    from repro.gates import check_stage
    from repro.records import list_runs

    if n < 1:
        raise ReproError(
            f"-n: expected how many runs to show (1 or more), found {n}; leave it out for 20"
        )
    if stage is not None and stage != EVAL_STAGE:  # eval runs are logged, never milestones
        check_stage(stage)
    project = _project()
    runs = list_runs(project.runs_dir, paper=paper, stage=stage)
    print_unreadable(err_console, runs)
    runs = [r for r in runs if r.corrupt is None][:n]
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


RUN_TO_USE_ARG = typer.Argument(
    ..., help="A full run (id or unique prefix, see `repro log -s full`): its checkpoint is used."
)
SEED_OPT = typer.Option(
    None, "--seed", help="Which seed's checkpoint of a run with several (default: the first)."
)
CODE_OPT = typer.Option(
    "current",
    "--code",
    help="current: the paper's code as it is now; recorded: the run's own code snapshot "
    "(runs/.../code/), for a checkpoint the current model no longer fits.",
)
OUTPUT_OPT = typer.Option(
    None, "--output", "-o", help="Write here instead of standard output (.tsv: TSV)."
)
EVAL_OVERRIDES_ARG = typer.Argument(
    None, help="data.* overrides: the same split of other data, e.g. data.sample_dir=other/."
)
CHECKPOINT_OPT = typer.Option(
    "best", "--checkpoint", help="best (selected on val, as tested) or last (the last epoch's)."
)


@app.command()
def predict(
    run_id: str = RUN_TO_USE_ARG,
    input_file: str | None = typer.Option(
        None,
        "--input",
        "-i",
        help="Raw examples in the paper's own input format (labels not needed; for BiMPM a TSV "
        "or JSON lines of sentence pairs); - reads standard input.",
    ),
    split: str | None = typer.Option(
        None, "--split", help="Predict a split of the run's data instead: train, val or test."
    ),
    output: Path | None = OUTPUT_OPT,
    fmt: str | None = typer.Option(
        None, "--format", "-f", help="jsonl (default) or tsv (default for an --output ending .tsv)."
    ),
    seed: int | None = SEED_OPT,
    code: str = CODE_OPT,
    checkpoint: str = CHECKPOINT_OPT,
):
    """Predict with a trained model: raw examples go through the encode that training used, with
    the data state fitted in training (the run directory's fitted_state.pt); one prediction per
    example in the task's terms (class names and probabilities, values, scores)."""
    from repro.inference import full_run, load_trained
    from repro.predict import output_format, read_examples, write
    from repro.predict import predict as do_predict

    if (input_file is None) == (split is None):
        raise ReproError(
            "predict: expected --input FILE (or - for standard input) or --split train|val|test, "
            f"found {'both' if input_file else 'neither'}"
        )
    if split is not None and split not in ("train", "val", "test"):
        raise ReproError(f"--split {split}: expected train, val or test")
    fmt = output_format(output, fmt)
    project = _project()
    run = full_run(project, run_id)
    trained = load_trained(project, run, seed, code, checkpoint)
    examples = (
        read_examples(trained.dm, input_file)
        if input_file is not None
        else trained.dm.load_splits()[split]
    )
    records = do_predict(trained, examples, err_console)
    write(records, output, fmt)
    source = input_file if input_file is not None else f"the {split} split"
    err_console.print(
        f"run {run.id}, seed {trained.seed}, {trained.checkpoint.name} ({code} code): "
        f"{len(records)} predictions of {source}"
        + (f" written to {output}" if output else "")
        + f"; fitted state: {trained.fitted}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@app.command(name="eval", context_settings={"allow_extra_args": True})
def eval_command(
    run_id: str = RUN_TO_USE_ARG,
    split: str = typer.Argument("test", help="train, val or test."),
    overrides: list[str] | None = EVAL_OVERRIDES_ARG,
    input_file: str | None = typer.Option(
        None,
        "--input",
        "-i",
        help="Evaluate these examples instead (the paper's input format, with labels).",
    ),
    code: str = CODE_OPT,
    checkpoint: str = CHECKPOINT_OPT,
):
    """Evaluate a full run's checkpoints again with the current code, on a split of its data or
    other data; recorded as a run linked to it, with its metrics beside the recorded ones."""
    from repro.display import print_verdict
    from repro.eval_run import eval_run, print_comparison

    project = _project()
    run = eval_run(
        project, run_id, split, list(overrides or []), input_file, code, checkpoint, console
    )
    print_verdict(console, run.record)
    print_comparison(console, run.record)
    console.print(f"run record: {run.dir.relative_to(project.root)}", markup=False)
    raise typer.Exit(0 if run.record.status == "passed" else 1)


def main() -> None:
    """The console script. Expected failures (a ReproError, bad command-line input, a disk that is
    full, read-only or not ours) print one `Error: ...` line and exit 1; `repro --debug ...` or
    REPRO_DEBUG=1 prints their traceback first. Anything else is a bug and keeps its traceback."""
    from typer.exceptions import TyperException  # click's exceptions, as Typer vendors them

    from repro.storage import is_storage_error, storage_error

    debug = _debug_requested(sys.argv[1:])
    try:
        code = app(prog_name="repro", standalone_mode=False)
    except ReproError as e:
        _fail(e, str(e), debug)
    except TyperException as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `repro`: the help is printed already
            sys.exit(e.exit_code)
        _fail(e, _usage_error(e), debug)
    except OSError as e:
        if not is_storage_error(e):
            raise
        _fail(e, str(storage_error(None, e)), debug)
    if isinstance(code, int) and code != 0:
        sys.exit(code)


def _debug_requested(args: list[str]) -> bool:
    """--debug before the command (`repro --debug stage data`) or REPRO_DEBUG set (not 0)."""
    if os.environ.get("REPRO_DEBUG", "0") not in ("", "0"):
        return True
    leading = next((i for i, a in enumerate(args) if not a.startswith("-")), len(args))
    return "--debug" in args[:leading]


def _usage_error(e) -> str:
    """Click's message for bad command-line input, with the command's --help to read."""
    ctx = getattr(e, "ctx", None)
    where = ctx.command_path if ctx is not None else "repro"
    return f"{where}: {e.format_message().rstrip('.')}; see `{where} --help`"


def _fail(e: BaseException, message: str, debug: bool) -> None:
    if debug:
        traceback.print_exception(e)
    # soft_wrap: one line even when stderr is not a terminal (Rich wraps at 80 columns there)
    err_console.print(f"Error: {message}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(1)


if __name__ == "__main__":
    main()
