"""The experiments gate: the paper's ablations/sweeps/seeds via submitit, as a table beside the paper's."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.markup import escape

from repro.config.schema import LauncherConfig, Variant
from repro.gates.metrics import ExperimentsMetrics, VariantRow
from repro.verdict import Check, Verdict


def run_variant(
    project_root: str, paper: str, overrides: list[str], seed: int, out_dir: str
) -> dict[str, Any]:
    """One job (runs in a submitit worker): compose the config with the variant's overrides, train, test."""
    from rich.console import Console

    from repro.config import compose
    from repro.context import StageContext
    from repro.project import Project
    from repro.train.fit import fit_and_test

    project = Project(Path(project_root))
    project.activate()
    ctx = StageContext(project, paper, compose(project, paper, overrides), Console(quiet=True))
    dm = ctx.build_datamodule(seed)
    dm.setup("fit")
    model = ctx.build_model(dm, seed)
    r = fit_and_test(ctx.cfg, dm, model, Path(out_dir), seed=seed, progress=False)
    return {"metrics": r.metrics, "lr": r.lr, "epochs": r.epochs, "train_seconds": r.train_seconds}


def job_error(exc: BaseException) -> str:
    """The line of a failed job's error that names the exception (submitit's message ends with
    the path of its log file, which says nothing about what went wrong)."""
    import re

    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b.*", line)]
    if named:
        return named[-1]
    return lines[-1] if lines else type(exc).__name__


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


def results_table(
    variants: list[Variant], results: list[dict[str, Any]], metric: str
) -> list[VariantRow]:
    from repro.gates.full import mean_std

    rows = []
    for v in variants:
        vals = [
            r["metrics"][metric]
            for r in results
            if r["variant"] == v.name and metric in (r.get("metrics") or {})
        ]
        mean, std = mean_std(vals) if vals else (None, None)
        rows.append(
            VariantRow(v.name, " ".join(v.overrides) or "—", mean, std, len(vals), v.paper, None)
        )
    base = rows[0].ours if rows else None
    return [
        replace(r, delta=(r.ours - base) if r.ours is not None and base is not None else None)
        for r in rows
    ]


def markdown_table(
    rows: list[VariantRow], metric: str, where: str | None, common: list[str]
) -> str:
    def fmt(x, spec=".2f"):
        return "—" if x is None else format(x, spec)

    lines = [
        f"# Experiments: {metric} (paper: {where or '?'})",
        "",
        f"Every variant also ran with: `{' '.join(common) or '(nothing extra)'}`. "
        "Paper values marked — are not transcribed yet.",
        "",
        f"| variant | overrides | ours ({metric}) | Δ vs first row | seeds | paper |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ours = fmt(r.ours) + (f" ± {r.std:.2f}" if r.std is not None else "")
        lines.append(
            f"| {r.variant} | `{r.overrides}` | {ours} | {fmt(r.delta, '+.2f')} | {r.n} | {fmt(r.paper)} |"
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
def make_executor(launcher: LauncherConfig, folder: Path, timeout_min: int):
    import submitit

    if launcher.name == "local":
        ex = submitit.LocalExecutor(folder=str(folder))
        ex.update_parameters(timeout_min=timeout_min)
        return ex
    ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    params = {
        "slurm_partition": launcher.partition,
        "cpus_per_task": launcher.cpus_per_task,
        "mem_gb": launcher.mem_gb,
        "gpus_per_node": launcher.gpus_per_node or None,
    }
    ex.update_parameters(
        timeout_min=timeout_min, **{k: v for k, v in params.items() if v is not None}
    )
    return ex


def _config_error(ctx, overrides: list[str]) -> str | None:
    """The error a variant's overrides give when composed and checked against the paper's own
    config classes, or None."""
    from repro.config import compose
    from repro.context import StageContext
    from repro.errors import ReproError

    try:
        resolved = compose(ctx.project, ctx.paper, overrides)
        StageContext(ctx.project, ctx.paper, resolved, ctx.console).check_paper_config()
    except ReproError as e:
        return f"{type(e).__name__}: {e}"
    return None


def run(ctx) -> Verdict:
    """Launch every variant x seed, collect what became of each job, write the table and plot."""
    exp = ctx.cfg.paper.experiments
    if exp is None or not exp.variants:
        return Verdict(
            "experiments",
            False,
            "the paper config declares no paper.experiments.variants: nothing to run",
        )
    jobs = [(v, ctx.seed + s) for v in exp.variants for s in range(exp.seeds)]
    results = collect(ctx, launch(ctx, exp, jobs), exp.metric)
    rows = results_table(exp.variants, results, exp.metric)
    write_results(ctx, rows, exp)
    metrics = ExperimentsMetrics(
        exp.metric, len(results), sum(1 for r in results if r.get("error")), rows
    )
    evidence = {"results": results, "table": "results.md", "plot": "results.png"}
    return Verdict.from_checks("experiments", [check_jobs(results, exp.metric)], evidence, metrics)


def launch(ctx, exp, jobs: list[tuple[Variant, int]]) -> list[dict[str, Any]]:
    """Submit each (variant, seed) whose config composes; the others become failed results now."""
    c = ctx.cfg.stage.experiments
    executor = make_executor(ctx.cfg.launcher, ctx.run.dir / "submitit", c.timeout_min)
    launched = []
    for i, (v, seed) in enumerate(jobs):
        entry: dict[str, Any] = {"variant": v.name, "seed": seed, "overrides": list(v.overrides)}
        overrides = [*exp.overrides, *v.overrides, *ctx.resolved.overrides]
        bad = _config_error(ctx, overrides)  # fails here in a second, not in a job after the others
        if bad:
            launched.append(entry | {"error": bad})
            continue
        out = ctx.run.dir / "variants" / f"{i:02d}"
        entry["job"] = (
            executor,
            run_variant,
            (str(ctx.project.root), ctx.paper, overrides, seed, str(out)),
        )
        launched.append(entry)
    return launched


def collect(ctx, launched: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Run the jobs (at most stage.experiments.parallel at a time) and gather each one's result or
    error, printing progress as they finish."""
    from rich.progress import Progress

    parallel = ctx.cfg.stage.experiments.parallel
    queue = [e for e in launched if "job" in e]
    results = [e for e in launched if "job" not in e]
    pending: list[tuple[dict[str, Any], Any]] = []
    for e in results:
        _report(ctx, e, metric)
    with Progress(console=ctx.console, transient=True) as prog:
        task = prog.add_task(
            f"experiments ({len(launched)} runs, {parallel} at a time)", total=len(launched)
        )
        prog.advance(task, len(results))
        while queue or pending:
            while queue and len(pending) < parallel:
                entry = queue.pop(0)
                executor, fn, args = entry.pop("job")
                pending.append((entry, executor.submit(fn, *args)))
            time.sleep(0.5)
            for item in [p for p in pending if p[1].done()]:
                pending.remove(item)
                entry, job = item
                entry["job_id"] = job.job_id
                try:
                    entry.update(job.result())
                except Exception as e:  # a failed job is a result: the gate reports it
                    entry["error"] = job_error(e)
                results.append(entry)
                prog.advance(task)
                _report(ctx, entry, metric)
    return results


def _report(ctx, entry: dict[str, Any], metric: str) -> None:
    what = (
        f"{metric} {entry['metrics'].get(metric, float('nan')):.2f}"
        if "metrics" in entry
        else f"[red]failed[/red]: {escape(entry['error'])}"
    )
    ctx.console.print(f"  {escape(entry['variant'])} (seed {entry['seed']}): {what}")


def write_results(ctx, rows: list[VariantRow], exp) -> None:
    md = markdown_table(rows, exp.metric, exp.where, list(exp.overrides))
    ctx.run.write_text("results.md", md)
    plot_table(rows, exp.metric, ctx.run.path("results.png"))
    ctx.console.print(md, markup=False, highlight=False)
