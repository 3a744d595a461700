"""Regression against our own best (issue 22): a full run compared with the best earlier passed
full run of the same paper, on the same data and with the same overrides.

The paper's tolerance is about the paper: two bugs that cost 4.6 and 2.6 points of accuracy
passed as WITHIN TOLERANCE. So the full stage also says when its primary test metric is worse
than the best we reached before by more than that run's spread across seeds (its std with two
or more seeds, else stage.full.regression_margin percent of the metric's range). A warning, in
the verdict's reason and evidence (`repro status`, `repro report`, the notebook line show it),
never a FAIL: the gate's PASS/FAIL is about the paper's targets.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from repro.config.schema import DataConfig
from repro.records.record import Record
from repro.tasks import MetricSpec

NO_EARLIER = "no earlier reproduced run on the same data to compare"


def same_data(a: Record, b: Record) -> bool:
    """Two full records trained on the same data: the same data files (their content digests,
    fingerprint part data_files) and the same data config, the loader's keys aside."""

    def data(rec: Record) -> tuple[Any, Any]:
        cfg = dict((rec.config or {}).get("data") or {})
        files = (rec.fingerprint.parts if rec.fingerprint else {}).get("data_files")
        return files, {k: v for k, v in cfg.items() if k not in DataConfig.LOADER_KEYS}

    return data(a) == data(b)


def primary_key(mean: dict[str, float], primary: str) -> str | None:
    """The metric compared: test/<primary>, else val/<primary>, else none."""
    return next((k for k in (f"test/{primary}", f"val/{primary}") if k in mean), None)


def candidates(runs: list, record: Record) -> list[tuple[Any, Any]]:
    """(run, its FullMetrics) of the earlier passed full runs comparable with `record`: same
    data, same overrides, not `record` itself."""
    from repro.gates.metrics import FullMetrics, load_metrics

    out = []
    for r in runs:
        if r.corrupt is not None or r.id == record.id or r.effective_status != "passed":
            continue
        if sorted(r.record.overrides or []) != sorted(record.overrides or []):
            continue
        m = load_metrics(FullMetrics, r.record)
        if m is not None and same_data(r.record, record):
            out.append((r, m))
    return out


def margin_of(best, key: str, spec: MetricSpec, percent: float) -> tuple[float, str]:
    """(the margin, how it was chosen): the best run's std over its seeds, else `percent` of
    the metric's range (of the best value for an open metric)."""
    std = best.std.get(key)
    if len(best.seeds) >= 2 and std is not None:
        return float(std), f"the std of its {len(best.seeds)} seeds"
    base = spec.range if spec.range is not None else abs(best.mean[key])
    what = "range" if spec.range is not None else "best value"
    return percent / 100.0 * base, f"{percent:g}% of the metric's {what}: that run had one seed"


def compare(
    ours: dict[str, float], primary: str, spec: MetricSpec, found: list, percent: float
) -> dict[str, Any]:
    """What the record keeps: the best earlier run (by the metric's direction), both numbers, the
    margin, whether ours is worse beyond it and the warning's text."""
    key = primary_key(ours, primary)
    found = [(r, m) for r, m in found if key is not None and key in m.mean]
    if not found:
        return {"compared_with": None, "note": NO_EARLIER, "worse": False}
    sign = 1.0 if spec.higher_is_better else -1.0
    run, best = max(found, key=lambda rm: sign * rm[1].mean[key])
    margin, why = margin_of(best, key, spec, percent)
    gap = sign * (ours[key] - best.mean[key])  # < 0: worse
    worse = gap < -margin
    ev = {"compared_with": run.id, "metric": key, "ours": ours[key], "best": best.mean[key]}
    ev |= {"margin": margin, "margin_from": why, "worse": worse}
    if worse:
        d = ".2f" if abs(best.mean[key]) >= 1 else ".4f"
        side = "below" if spec.higher_is_better else "above"
        ev["warning"] = (
            f"{key} {ours[key]:{d}} is {abs(ours[key] - best.mean[key]):{d}} {side} our best "
            f"earlier passed run {run.id} on the same data ({best.mean[key]:{d}}), beyond "
            f"{margin:.3g} ({why}): a regression?"
        )
    return ev


def warn_if_worse(ctx, verdict, specs: dict[str, MetricSpec], primary: str):
    """The verdict with the comparison in its evidence ("regression") and, when ours is worse
    beyond the margin, the warning added to its reason and evidence["warnings"]."""
    from rich.markup import escape

    from repro.records import list_runs

    if verdict.metrics is None or ctx.run is None:
        return verdict
    runs = list_runs(ctx.project.runs_dir, paper=ctx.paper, stage="full")
    found = candidates(runs, ctx.run.record)
    spec = specs[primary]
    ev = compare(verdict.metrics.mean, primary, spec, found, ctx.cfg.stage.full.regression_margin)
    evidence = verdict.evidence | {"regression": ev}
    if not ev.get("warning"):
        return replace(verdict, evidence=evidence)
    evidence["warnings"] = [*evidence.get("warnings", []), ev["warning"]]
    ctx.console.print(f"[yellow]warning: {escape(ev['warning'])}[/yellow]", highlight=False)
    return replace(verdict, evidence=evidence, reason=f"{verdict.reason}; warning: {ev['warning']}")
