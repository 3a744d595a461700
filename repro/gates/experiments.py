"""The experiments gate: the paper's ablations/sweeps/seeds via submitit, as a table beside the paper's."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.markup import escape

from repro.config.schema import Variant
from repro.context import StageContext
from repro.gates.metrics import ExperimentsMetrics, VariantRow
from repro.terminal import safe
from repro.verdict import Check, Verdict


def run_variant(
    project_root: str,
    paper: str,
    overrides: list[str],
    seed: int,
    out_dir: str,
    code_dir: str | None = None,
) -> dict[str, Any]:
    """One job (runs in a submitit worker): compose the config with the variant's overrides, train,
    test; the paper's code is imported from the experiments run's `code/` snapshot, the code its
    record names (not the files as they are when the job starts: issue 20)."""
    from rich.console import Console

    from repro.config.compose import compose
    from repro.paper_code import PaperCode
    from repro.project import Project
    from repro.train.fit import fit_and_test

    project = Project(Path(project_root))
    project.activate()
    paper_dir = project.paper_dir(paper)
    code = (
        PaperCode.from_snapshot(Path(code_dir), paper_dir)
        if code_dir and Path(code_dir).is_dir()
        else PaperCode.read(paper_dir)
    )
    code.install()
    resolved = compose(project, paper, overrides)
    ctx = StageContext(project, paper, resolved, Console(quiet=True), code=code)
    dm = ctx.build_datamodule(seed)
    dm.setup("fit")
    model = ctx.build_model(dm, seed)
    r = fit_and_test(ctx.cfg, dm, model, Path(out_dir), seed=seed, progress=False)
    return {"metrics": r.metrics, "lr": r.lr, "epochs": r.epochs, "train_seconds": r.train_seconds}


# ---- judgement (pure) -----------------------------------------------------------------------
def check_jobs(results: list[dict[str, Any]], metric: str) -> Check:
    failed = [
        f"{r['variant']} (seed {r['seed']}): {r.get('error', 'no ' + metric)}"
        for r in results
        if r.get("error") or metric not in (r.get("metrics") or {})
    ]
    if failed:
        return Check(
            "every run finished",
            False,
            f"{len(failed)} of {len(results)} runs failed: " + "; ".join(failed[:3]),
            {"failed": failed},
        )
    return Check("every run finished", True, f"{len(results)} runs finished with {metric}", {})


def override_key(override: str) -> str:
    """The key an override sets: `+model.x=1` -> model.x (Hydra's prefixes dropped)."""
    return override.split("=", 1)[0].lstrip("+~")


def replaced(overrides: list[str], by: list[str]) -> dict[str, str]:
    """{override: the later one that replaced it} for each of `overrides` whose key `by` sets
    again (the command line comes last when a job's config is composed, so it wins)."""
    later = {override_key(o): o for o in by}
    return {o: later[override_key(o)] for o in overrides if override_key(o) in later}


def results_table(
    variants: list[Variant],
    results: list[dict[str, Any]],
    metric: str,
    command_line: list[str] | tuple[str, ...] = (),
) -> list[VariantRow]:
    """One row per variant: mean ± std over its seeds, the delta to the first row; a variant's
    override that the command line replaced is shown with what replaced it."""
    from repro.gates.full import mean_std

    rows = []
    for v in variants:
        vals = [
            r["metrics"][metric]
            for r in results
            if r["variant"] == v.name and metric in (r.get("metrics") or {})
        ]
        mean, std = mean_std(vals) if vals else (None, None)
        gone = replaced(list(v.overrides), list(command_line))
        shown = [
            f"{o} (replaced by the command line's {gone[o]})" if o in gone else o
            for o in v.overrides
        ]
        rows.append(VariantRow(v.name, " ".join(shown) or "—", mean, std, len(vals), v.paper, None))
    base = rows[0].ours if rows else None
    return [
        replace(r, delta=(r.ours - base) if r.ours is not None and base is not None else None)
        for r in rows
    ]


def _cell(text: Any) -> str:
    """Text for a markdown table cell: one line, `|` escaped, control characters shown escaped."""
    return safe(" ".join(str(text).split())).replace("|", "\\|")


def _code(text: Any) -> str:
    """A markdown code span holding `text` (in a table cell): fenced with more backticks than
    it holds."""
    text = _cell(text)
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def markdown_table(
    rows: list[VariantRow],
    metric: str,
    where: str | None,
    common: list[str],
    command_line: list[str] | tuple[str, ...] = (),
) -> str:
    """The results table, saying every override that applied to every variant: the paper
    config's (`common`) and the command line's, and which of the former the latter replaced."""

    def fmt(x, spec=".2f"):
        return "—" if x is None else format(x, spec)

    gone = replaced(list(common), list(command_line))
    applied = [o for o in common if o not in gone]
    parts = []
    if applied:
        parts.append(f"{_code(' '.join(applied))} (paper config)")
    if command_line:
        parts.append(f"{_code(' '.join(command_line))} (command line)")
    also = " and ".join(parts) or "`(nothing extra)`"
    lines = [
        f"# Experiments: {_cell(metric)} (paper: {_cell(where or '?')})",
        "",
        f"Every variant also ran with: {also}."
        + "".join(
            f" The command line's {_code(new)} replaced the paper config's {_code(old)}."
            for old, new in gone.items()
        )
        + " Paper values marked — are not transcribed yet.",
        "",
        f"| variant | overrides | ours ({_cell(metric)}) | Δ vs first row | seeds | paper |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ours = fmt(r.ours) + (f" ± {r.std:.2f}" if r.std is not None else "")
        lines.append(
            f"| {_cell(r.variant)} | {_code(r.overrides)} | {ours} | {fmt(r.delta, '+.2f')} | {r.n} "
            f"| {fmt(r.paper)} |"
        )
    return "\n".join(lines) + "\n"


def plot_table(rows: list[VariantRow], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.variant for r in rows]
    y = range(len(rows))
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    ours = [r.ours if r.ours is not None else 0 for r in rows]
    ax.barh(
        [i + 0.2 for i in y],
        ours,
        height=0.4,
        label="ours",
        xerr=[r.std or 0 for r in rows],
        color="tab:blue",
    )
    paper = [r.paper for r in rows]
    if any(p is not None for p in paper):
        ax.barh(
            [i - 0.2 for i in y],
            [p or 0 for p in paper],
            height=0.4,
            label="paper",
            color="tab:orange",
        )
    ax.set_yticks(list(y), names)
    ax.invert_yaxis()
    ax.set_xlabel(metric)
    lo = min([v for v in ours if v] + [p for p in paper if p] or [0])
    ax.set_xlim(max(0, lo - 10), None)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- measurement ----------------------------------------------------------------------------
def job_name(paper: str, variant: str, seed: int, taken: set[str]) -> str:
    """`<paper>-<variant>-s<seed>` with the variant's name reduced to [a-z0-9-] (Slurm job names
    and file names); a number is appended when two variants reduce to the same name."""
    slug = re.sub(r"[^a-z0-9]+", "-", variant.lower()).strip("-") or "variant"
    name, n = f"{paper}-{slug}-s{seed}", 2
    while name in taken:
        name, n = f"{paper}-{slug}{n}-s{seed}", n + 1
    taken.add(name)
    return name


def _config_error(ctx, overrides: list[str]) -> str | None:
    """The error a variant's overrides give when composed and checked against the paper's own
    config classes, or None."""
    from repro.config.compose import compose
    from repro.errors import ReproError

    try:
        resolved = compose(ctx.project, ctx.paper, overrides)
        StageContext(
            ctx.project, ctx.paper, resolved, ctx.console, code=ctx.code
        ).check_paper_config()
    except ReproError as e:
        return f"{type(e).__name__}: {e}"
    return None


def run(ctx: StageContext) -> Verdict:
    """Launch every variant x seed, collect what became of each job, write the table and plot."""
    exp = ctx.cfg.paper.experiments
    if exp is None or not exp.variants:
        return Verdict(
            "experiments",
            False,
            "the paper config declares no paper.experiments.variants: nothing to run",
        )
    entries, specs = plan(ctx, exp)
    ctx.run.annex(forecast=forecast_experiments(ctx, len(specs)))
    results = collect(ctx, entries, specs, exp.metric)
    rows = results_table(exp.variants, results, exp.metric, ctx.resolved.overrides)
    write_results(ctx, rows, exp)
    failed = sum(1 for r in results if r.get("error"))
    metrics = ExperimentsMetrics(exp.metric, len(results), failed, rows)
    evidence = {"results": results, "table": "results.md", "plot": "results.png"}
    return Verdict.from_checks("experiments", [check_jobs(results, exp.metric)], evidence, metrics)


def plan(ctx, exp) -> tuple[list[dict[str, Any]], list]:
    """One entry per (variant, seed); a JobSpec for each whose config composes (the others fail
    here, in a second, instead of in a job after the rest ran)."""
    from repro.launch import JobSpec

    entries, specs, taken = [], [], set()
    for v in exp.variants:
        for seed in (ctx.seed + s for s in range(exp.seeds)):
            entry: dict[str, Any] = {
                "variant": v.name,
                "seed": seed,
                "overrides": list(v.overrides),
            }
            entry["job"] = job_name(ctx.paper, v.name, seed, taken)
            overrides = [*exp.overrides, *v.overrides, *ctx.resolved.overrides]
            bad = _config_error(ctx, overrides)
            if bad:
                entry["error"] = bad
            else:
                out = ctx.run.dir / "variants" / entry["job"]
                code_dir = str(ctx.run.dir / "code")  # what this run's record names
                args = (str(ctx.project.root), ctx.paper, overrides, seed, str(out), code_dir)
                specs.append(JobSpec(entry["job"], run_variant, args))
            entries.append(entry)
    return entries, specs


def collect(ctx, entries: list[dict[str, Any]], specs: list, metric: str) -> list[dict[str, Any]]:
    """Launch the jobs (repro/launch.py) and fold each outcome into its entry, printing progress
    and an ETA as jobs finish."""
    from repro.launch import SlurmOptions, launch

    for e in entries:
        if "error" in e:
            _report(ctx, e, metric)
    by_job = {e["job"]: e for e in entries}
    progress = _Progress(ctx.console, len(specs), ctx.cfg.stage.experiments.parallel)

    def on_done(outcome) -> None:
        e = by_job[outcome.name]
        e["job_id"], e["state"] = outcome.job_id, outcome.state
        if outcome.ok:
            e.update(outcome.result)
        else:
            e["error"] = f"{outcome.state}: {outcome.error}"
        progress.done()
        _report(ctx, e, metric, progress.eta())

    la, c = ctx.cfg.launcher, ctx.cfg.stage.experiments
    slurm = None
    if la.name == "slurm":
        slurm = SlurmOptions(
            la.partition, la.cpus_per_task or 1, la.mem_gb, la.gpus_per_node, dict(la.sbatch)
        )
    if specs:
        launch(
            specs,
            launcher=la.name,
            folder=ctx.run.dir / "submitit",
            timeout_min=c.timeout_min,
            max_parallel=c.parallel,
            poll_s=la.poll_s,
            unknown_after_s=la.unknown_after_s,
            slurm=slurm,
            on_done=on_done,
            give_up_after_s=la.give_up_after_s,
            on_wait=lambda message: ctx.console.print(
                f"  [yellow]{escape(message)}[/yellow]", highlight=False
            ),
        )
    return entries


class _Progress:
    """Jobs done out of n, and the time left at the rate seen so far."""

    def __init__(self, console, n: int, parallel: int):
        self.console, self.n, self.parallel, self.k = console, n, parallel, 0
        self.t0 = time.monotonic()
        if n:
            console.print(f"experiments: {n} jobs, {parallel} at a time", highlight=False)

    def done(self) -> None:
        self.k += 1

    def eta(self) -> str:
        left = self.n - self.k
        if not left:
            return f"{self.k}/{self.n} done"
        per_job = (time.monotonic() - self.t0) / self.k
        return f"{self.k}/{self.n} done, ~{left * per_job / 60:.1f} min left"


def _report(ctx, entry: dict[str, Any], metric: str, progress: str = "") -> None:
    what = (
        f"{metric} {entry['metrics'].get(metric, float('nan')):.2f}"
        if "metrics" in entry
        else f"[red]failed[/red]: {escape(entry['error'])}"
    )
    tail = f" [dim]({progress})[/dim]" if progress else ""
    ctx.console.print(f"  {escape(entry['variant'])} (seed {entry['seed']}): {what}{tail}")


def forecast_experiments(ctx, jobs: int) -> dict[str, Any] | None:
    """≤ time for every job from the full stage's measured seconds per epoch (its newest passed
    run): each job assumed to cost no more per epoch than the full run; printed and returned."""
    from repro.config.compose import compose
    from repro.records import latest_run

    full = latest_run(ctx.project.runs_dir, ctx.paper, "full", status="passed")
    per_epoch = (full.record.actual.s_per_epoch if full and full.record.actual else None) or None
    if not jobs or per_epoch is None:
        ctx.console.print("forecast: unavailable (needs a passed full run with its time measured)")
        return None
    exp = ctx.cfg.paper.experiments
    epochs = compose(
        ctx.project, ctx.paper, [*exp.overrides, *ctx.resolved.overrides]
    ).cfg.trainer.max_epochs
    waves = -(-jobs // ctx.cfg.stage.experiments.parallel)
    total = waves * epochs * per_epoch
    ctx.console.print(
        f"forecast: ≤ {total / 60:.1f} min for {jobs} jobs ({waves} at a time x ≤ {epochs} epochs x "
        f"{per_epoch:.2f} s/epoch measured by full run {full.id}; each job assumed no slower per epoch)",
        highlight=False,
    )
    return {
        "total_s": total,
        "jobs": jobs,
        "epochs": epochs,
        "s_per_epoch": per_epoch,
        "from_run": full.id,
    }


def write_results(ctx, rows: list[VariantRow], exp) -> None:
    md = markdown_table(rows, exp.metric, exp.where, list(exp.overrides), ctx.resolved.overrides)
    ctx.run.write_text("results.md", md)
    plot_table(rows, exp.metric, ctx.run.path("results.png"))
    ctx.console.print(md, markup=False, highlight=False)
