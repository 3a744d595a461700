"""The full gate: train for real (N seeds), test, and compare with the paper's reported numbers."""

from __future__ import annotations

import statistics
from typing import Any

from repro.verdict import Check, Verdict

REPRODUCED, WITHIN, NOT_REPRODUCED = "REPRODUCED", "WITHIN TOLERANCE", "NOT REPRODUCED"


# ---- judgement (pure) -----------------------------------------------------------------------
def mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def spread_verdict(gap: float, spread: float | None) -> tuple[str, bool | None]:
    """Whether |ours - paper| is within the spread the paper states (its ± or std), in words."""
    if spread is None:
        return "the paper states no spread", None
    within = abs(gap) <= float(spread)
    return (
        f"gap {'within' if within else 'outside'} the paper's stated spread ±{float(spread):g}",
        within,
    )


def seeds_phrase(n: int, std: float | None) -> str:
    """How many runs back a number: 'mean ± std over 3 seeds' or '1 seed, no spread of ours'."""
    if n <= 1:
        return f"{n} seed, no spread of ours"
    return f"mean ± std over {n} seeds" if std is not None else f"mean over {n} seeds"


def compare_target(target: dict[str, Any], values: list[float]) -> Check:
    """REPRODUCED: ours matches or beats the paper; WITHIN TOLERANCE: below by <= tolerance;
    NOT REPRODUCED: further below. Ours above the paper by more than the tolerance still passes,
    with a warning to look for leakage."""
    name, value = target["name"], float(target["value"])
    tol = float(target.get("tolerance", 0.0))
    higher = bool(target.get("higher_is_better", True))
    where = target.get("where", "?")
    if not values:
        return Check(name, False, f"metric {target['metric']} was not measured", {"target": value})
    mean, std = mean_std(values)
    gap = (mean - value) if higher else (value - mean)  # > 0: better than the paper
    spread = f" ± {std:.2f}" if std is not None else ""
    n = f"{len(values)} seed{'s' if len(values) > 1 else ''}"
    ev = {
        "metric": target["metric"],
        "ours_mean": mean,
        "ours_std": std,
        "n_seeds": len(values),
        "values": values,
        "paper": value,
        "tolerance": tol,
        "gap": mean - value,
        "where": where,
    }
    if gap >= 0:
        label = REPRODUCED
    elif gap >= -tol:
        label = WITHIN
    else:
        label = NOT_REPRODUCED
    ev["label"] = label
    reason = (
        f"{label}: ours {mean:.2f}{spread} ({n}) vs paper {value:g} ({where}), gap {mean - value:+.2f}, "
        f"tolerance {tol:g}"
    )
    spread_note, ev["within_paper_spread"] = spread_verdict(mean - value, target.get("spread"))
    ev["paper_spread"] = target.get("spread")
    reason += f"; {spread_note}"
    if gap > tol:
        reason += "; above the paper by more than the tolerance: check for leakage between splits"
        ev["warning"] = "above paper"
    return Check(name, label != NOT_REPRODUCED, reason, ev)


def check_targets(
    targets: list[dict[str, Any]], dataset: str | None, per_seed: list[dict[str, float]]
) -> list[Check]:
    """One Check per target of this dataset; no target for the dataset is itself a failure."""
    mine = [t for t in targets if t.get("dataset") in (None, dataset)]
    if not mine:
        known = sorted({str(t.get("dataset")) for t in targets})
        return [
            Check(
                "targets",
                False,
                f"no target for dataset '{dataset}' in the paper config "
                f"(targets exist for: {', '.join(known) or 'none'}): nothing to compare with",
                {},
            )
        ]
    return [compare_target(t, [m[t["metric"]] for m in per_seed if t["metric"] in m]) for t in mine]


# ---- measurement ----------------------------------------------------------------------------
def run(ctx) -> Verdict:
    from repro.train.fit import fit_and_test

    n_seeds = int(ctx.resolved.get("seeds", 1))
    seeds = [ctx.seed + i for i in range(n_seeds)]
    per_seed, infos = [], []
    for s in seeds:
        out = ctx.run.dir if n_seeds == 1 else ctx.run.dir / f"seed_{s}"
        ctx.console.print(f"[bold]full[/bold]: training seed {s} ({seeds.index(s) + 1}/{n_seeds})")
        info = fit_and_test(ctx, s, out)
        infos.append(info)
        per_seed.append(info["metrics"])
    targets = list(ctx.resolved.get("paper.targets") or [])
    dataset = ctx.resolved.get("data.dataset")
    checks = check_targets(targets, dataset, per_seed)
    evidence: dict[str, Any] = {
        "seeds": seeds,
        "per_seed": per_seed,
        "runs": infos,
        "dataset": dataset,
    }
    keys = sorted({k for m in per_seed for k in m})
    evidence["summary"] = {
        k: dict(zip(("mean", "std"), mean_std([m[k] for m in per_seed if k in m]), strict=True))
        for k in keys
    }
    spec = (
        ctx.resolved.get("paper.baseline")
        if ctx.stage_cfg("full").get("show_baseline", True)
        else None
    )
    if spec:
        from repro.context import import_object

        dm = ctx.build_datamodule()
        dm.setup("fit")
        evidence["baseline"] = {"name": spec, "metrics": import_object(ctx.project, spec)(dm)}
    return Verdict.from_checks("full", checks, evidence)
