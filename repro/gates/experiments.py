"""The experiments gate: the paper's ablations/sweeps/seeds via submitit, as a table beside the paper's."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

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
    resolved = compose(project, paper, overrides)
    ctx = StageContext(project, paper, resolved, Console(quiet=True))
    info = fit_and_test(ctx, seed, Path(out_dir), progress=False)
    return {
        "metrics": info["metrics"],
        "lr": info["lr"],
        "epochs": info["epochs"],
        "train_seconds": info["train_seconds"],
    }


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
    variants: list[dict[str, Any]], results: list[dict[str, Any]], metric: str
) -> list[dict[str, Any]]:
    from repro.gates.full import mean_std

    rows = []
    for v in variants:
        vals = [
            r["metrics"][metric]
            for r in results
            if r["variant"] == v["name"] and metric in (r.get("metrics") or {})
        ]
        mean, std = mean_std(vals) if vals else (None, None)
        rows.append(
            {
                "variant": v["name"],
                "overrides": " ".join(v.get("overrides") or []) or "—",
                "ours": mean,
                "std": std,
                "n": len(vals),
                "paper": v.get("paper"),
            }
        )
    base = rows[0]["ours"] if rows else None
    for r in rows:
        r["delta"] = (r["ours"] - base) if (r["ours"] is not None and base is not None) else None
    return rows


def markdown_table(rows: list[dict[str, Any]], metric: str, where: str, common: list[str]) -> str:
    def fmt(x, spec=".2f"):
        return "—" if x is None else format(x, spec)

    lines = [
        f"# Experiments: {metric} (paper: {where})",
        "",
        f"Every variant also ran with: `{' '.join(common) or '(nothing extra)'}`. "
        "Paper values marked — are not transcribed yet.",
        "",
        f"| variant | overrides | ours ({metric}) | Δ vs first row | seeds | paper |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ours = fmt(r["ours"]) + (f" ± {r['std']:.2f}" if r["std"] is not None else "")
        lines.append(
            f"| {r['variant']} | `{r['overrides']}` | {ours} | {fmt(r['delta'], '+.2f')} | {r['n']} | "
            f"{fmt(r['paper'])} |"
        )
    return "\n".join(lines) + "\n"


def plot_table(rows: list[dict[str, Any]], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["variant"] for r in rows]
    y = range(len(rows))
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    ours = [r["ours"] if r["ours"] is not None else 0 for r in rows]
    ax.barh(
        [i + 0.2 for i in y],
        ours,
        height=0.4,
        label="ours",
        xerr=[r["std"] or 0 for r in rows],
        color="tab:blue",
    )
    paper = [r["paper"] for r in rows]
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
def make_executor(launcher: dict[str, Any], folder: Path, timeout_min: int):
    import submitit

    name = launcher.get("name", "local")
    if name == "local":
        ex = submitit.LocalExecutor(folder=str(folder))
        ex.update_parameters(timeout_min=timeout_min)
        return ex
    if name == "slurm":
        ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
        params = {k: v for k, v in launcher.items() if k != "name" and v is not None}
        ex.update_parameters(
            timeout_min=timeout_min,
            **{f"slurm_{k}" if k == "partition" else k: v for k, v in params.items()},
        )
        return ex
    raise ValueError(f"launcher.name '{name}' unknown; valid: local, slurm")


def _config_error(ctx, overrides: list[str]) -> str | None:
    """The ConfigError a variant's overrides raise when composed, or None."""
    from repro.config import compose
    from repro.errors import ConfigError

    try:
        compose(ctx.project, ctx.paper, overrides)
    except ConfigError as e:
        return f"repro.errors.ConfigError: {e}"
    return None


def run(ctx) -> Verdict:
    exp = dict(ctx.resolved.get("paper.experiments") or {})
    variants = list(exp.get("variants") or [])
    if not variants:
        return Verdict(
            "experiments",
            False,
            "the paper config declares no paper.experiments.variants: nothing to run",
            {},
        )
    metric = exp.get("metric", "test/acc")
    common = list(exp.get("overrides") or [])
    n_seeds = int(exp.get("seeds", 1))
    cfg = ctx.stage_cfg("experiments")
    parallel = max(1, int(cfg.get("parallel", 1)))
    executor = make_executor(
        ctx.resolved.section("launcher"), ctx.run.dir / "submitit", int(cfg.get("timeout_min", 120))
    )
    jobs = [(v, ctx.seed + s) for v in variants for s in range(n_seeds)]
    results: list[dict[str, Any]] = []
    pending: list[tuple[dict, int, Any, float]] = []
    from rich.progress import Progress

    with Progress(console=ctx.console, transient=True) as prog:
        task = prog.add_task(
            f"experiments ({len(jobs)} runs, {parallel} at a time)", total=len(jobs)
        )
        queue = list(jobs)
        while queue or pending:
            while queue and len(pending) < parallel:
                v, seed = queue.pop(0)
                overrides = [
                    *common,
                    *(v.get("overrides") or []),
                    *ctx.resolved.overrides_for_jobs(),
                ]
                bad = _config_error(ctx, overrides)
                if bad:  # fails here in a second instead of in a job after the others ran
                    results.append(
                        {
                            "variant": v["name"],
                            "seed": seed,
                            "overrides": v.get("overrides") or [],
                            "error": bad,
                        }
                    )
                    prog.advance(task)
                    ctx.console.print(f"  {v['name']} (seed {seed}): [red]failed[/red]: {bad}")
                    continue
                out = ctx.run.dir / "variants" / f"{len(results) + len(pending):02d}"
                job = executor.submit(
                    run_variant, str(ctx.project.root), ctx.paper, overrides, seed, str(out)
                )
                pending.append((v, seed, job, time.time()))
            time.sleep(0.5)
            for item in list(pending):
                v, seed, job, t0 = item
                if not job.done():
                    continue
                pending.remove(item)
                rec = {
                    "variant": v["name"],
                    "seed": seed,
                    "overrides": v.get("overrides") or [],
                    "job_id": job.job_id,
                }
                try:
                    rec.update(job.result())
                except Exception as e:  # a failed job is a result: the gate reports it
                    rec["error"] = job_error(e)
                results.append(rec)
                prog.advance(task)
                ctx.console.print(
                    f"  {v['name']} (seed {seed}): "
                    + (
                        f"{metric} {rec['metrics'].get(metric, float('nan')):.2f}"
                        if "metrics" in rec
                        else f"[red]failed[/red]: {rec['error']}"
                    )
                )
    rows = results_table(variants, results, metric)
    md = markdown_table(rows, metric, exp.get("where", "?"), common)
    ctx.run.write_text("results.md", md)
    plot_table(rows, metric, ctx.run.path("results.png"))
    ctx.console.print(md, markup=False, highlight=False)
    check = check_jobs(results, metric)
    return Verdict.from_checks(
        "experiments",
        [check],
        {
            "metric": metric,
            "rows": rows,
            "results": results,
            "table": "results.md",
            "plot": "results.png",
        },
    )
