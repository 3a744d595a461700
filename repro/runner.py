"""Run one stage: check earlier stages passed on the current fingerprint, record the run, run the gate."""

from __future__ import annotations

import json
import shlex
from typing import Any

from rich.console import Console

from repro.config import Resolved, compose
from repro.errors import GateRefused
from repro.fingerprint import STAGES, fingerprint
from repro.progression import (
    CHEAP_STAGES,
    data_files_cache,
    known_data_files,
    missing_prerequisites,
    stage_states,
)
from repro.project import Project
from repro.verdict import Verdict


def stage_command(stage: str, paper: str, overrides: list[str]) -> str:
    return " ".join(["repro stage", stage, "--paper", paper, *map(shlex.quote, overrides)])


def current_fingerprint(
    project: Project, paper: str, resolved: Resolved, data_files: list[str] | None = None
) -> dict:
    files = data_files if data_files is not None else known_data_files(project.runs_dir, paper)
    return fingerprint(resolved, project.paper_dir(paper), files)


def _data_files_now(ctx) -> list[str] | None:
    """The paper's data files from a datamodule that is built but not set up (cheap)."""
    try:
        return [str(p) for p in ctx.build_datamodule().data_files()]
    except Exception:  # the data gate itself reports a broken datamodule with its traceback
        return None


def _run_shapes(ctx) -> Verdict:
    from repro.gates.shapes import run_shapes

    dm = ctx.build_datamodule()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    model = ctx.build_model(dm)
    cfg = ctx.stage_cfg("shapes") | {"expected_params": ctx.resolved.get("paper.expected_params")}
    verdict = run_shapes(model, batch, dm.num_classes, cfg)
    verdict.evidence["init"] = ctx.extra.get("init", {})
    return verdict


def gate_function(stage: str):
    if stage == "shapes":
        return _run_shapes
    import importlib

    return importlib.import_module(f"repro.gates.{stage}").run


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
    from repro.gitstate import git_state
    from repro.records import create_run

    if stage not in STAGES:
        raise GateRefused(f"unknown stage '{stage}'; stages in order: {', '.join(STAGES)}")
    console = console or Console()
    overrides = list(overrides or [])
    resolved = compose(project, paper, overrides)
    ctx = StageContext(project, paper, resolved, console, forced=force)
    data_files = _data_files_now(ctx)
    current = current_fingerprint(project, paper, resolved, data_files)
    rows = stage_states(project.runs_dir, paper, current)
    missing = missing_prerequisites(rows, stage)
    if missing and not force:
        states = {r.stage: r.state for r in rows}
        expensive = [s for s in missing if s not in CHEAP_STAGES]
        if expensive:
            s = expensive[0]
            raise GateRefused(
                f"stage '{stage}' needs '{s}' to pass on the current code, config and data first "
                f"({s} is {states[s]}); run: {stage_command(s, paper, overrides)}"
            )
        for s in missing:
            console.print(
                f"[yellow]{s} is {states[s]} on the current code/config: running it first[/yellow]"
            )
            pre = run_stage(project, paper, s, overrides, force=False, console=console)
            if pre.record["status"] != "passed":
                reason = (pre.record.get("verdict") or {}).get("reason", pre.record["status"])
                raise GateRefused(
                    f"stage '{stage}' needs '{s}', which failed (run {pre.id}): {reason}"
                )
    from repro.envinfo import env_info

    forecast = None
    if stage == "full":
        forecast = _forecast(project, paper, resolved, console)
    run = create_run(
        project.runs_dir,
        paper,
        stage,
        config=resolved.config,
        overrides=overrides,
        provenance=resolved.provenance,
        defaults=resolved.defaults(),
        forced=bool(force and missing),
        skipped_prerequisites=missing if force else [],
        fingerprint=current,
        git=git_state(project.root),
        env=env_info(),
        links=links or {},
    )
    if forecast is not None:
        run.record["forecast"] = forecast
        run.save()
    ctx.run = run
    run.write_yaml("config.yaml", resolved.config)
    console.rule(f"[bold]{paper} · {stage}[/bold] · run {run.id}")
    if force and missing:
        console.print(
            f"[yellow]--force: running without {', '.join(missing)} passing on the current code "
            "(recorded in the run)[/yellow]"
        )
    _execute(project, paper, stage, ctx, run)
    return run


def _execute(project: Project, paper: str, stage: str, ctx, run) -> None:
    """Run the gate inside the run's guard; record verdict, env, model, peak memory and timings."""
    import time

    from repro.notebook import append_entry, format_entry

    t0 = time.perf_counter()
    try:
        with run.guard():
            verdict = gate_function(stage)(ctx)
            from repro.envinfo import (
                env_info as _env,  # torch is imported now: record the device too
            )

            run.record["env"] = _env()
            run.record["init"] = ctx.extra.get("init")
            run.record["model"] = ctx.extra.get("model")
            run.record["peak_rss_mb"] = peak_rss_mb()
            if stage == "full":
                run.record["actual"] = _actual(
                    verdict.evidence, time.perf_counter() - t0, run.record.get("actual")
                )
            run.finish(
                verdict.to_dict(),
                "passed" if verdict.passed else "failed",
                metrics=_metrics(verdict),
            )
            if stage == "data" and "data_files" in ctx.extra:
                cache = data_files_cache(project.runs_dir, paper)
                cache.write_text(json.dumps(ctx.extra["data_files"]))
    finally:
        append_entry(project.notes_dir, paper, format_entry(run.record))


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    except (ImportError, OSError):
        return None


def _actual(
    evidence: dict[str, Any], wall_s: float, before: dict[str, Any] | None
) -> dict[str, Any]:
    """What the full stage really took, beside its forecast: wall time, epochs, seconds per epoch."""
    infos = evidence.get("runs") or []
    epochs = sum(int(i.get("epochs") or 0) for i in infos)
    train_s = sum(float(i.get("train_seconds") or 0.0) for i in infos)
    prior = float((before or {}).get("wall_s") or 0.0)  # time spent before a resume
    return {
        "wall_s": round(wall_s + prior, 2),
        "train_s": round(train_s, 2),
        "epochs": epochs,
        "s_per_epoch": round(train_s / epochs, 3) if epochs else None,
        "peak_rss_mb": peak_rss_mb(),
    }


def _forecast(
    project: Project, paper: str, resolved: Resolved, console: Console | None
) -> dict[str, Any] | None:
    """Estimate the full stage's time and memory from the earlier stages' records; print it."""
    from repro.forecast import forecast_full, format_forecast, inputs_from_records

    inputs = inputs_from_records(project.runs_dir, paper, resolved)
    if inputs is None:
        if console is not None:
            console.print(
                "forecast: unavailable (needs passed data and overfit runs with throughput measured)"
            )
        return None
    fc = forecast_full(inputs)
    if console is not None:
        console.print(format_forecast(fc), highlight=False)
    return fc


def forecast_only(
    project: Project, paper: str, overrides: list[str], console: Console
) -> dict[str, Any] | None:
    """`repro stage full --dry-run`: the forecast, no run recorded."""
    return _forecast(project, paper, compose(project, paper, overrides), console)


def _metrics(verdict: Verdict) -> dict[str, Any]:
    ev = verdict.evidence
    if verdict.stage == "full":
        return {k: v["mean"] for k, v in (ev.get("summary") or {}).items()}
    if verdict.stage == "overfit":
        return {
            k: ev.get(k) for k in ("initial_loss", "final_loss", "steps_per_s", "step") if k in ev
        }
    if verdict.stage == "shapes":
        return {k: ev.get(k) for k in ("loss_at_init", "trainable_params") if k in ev}
    return {}
