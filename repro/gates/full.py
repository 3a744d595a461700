"""The full gate: train for real (N seeds), test, and compare with the paper's reported numbers."""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, fields
from typing import Any

from repro.config.schema import FullStage, Target
from repro.errors import ConfigError, PaperError
from repro.gates.metrics import FullMetrics, TargetResult
from repro.verdict import Check, Verdict

REPRODUCED, WITHIN, NOT_REPRODUCED = "REPRODUCED", "WITHIN TOLERANCE", "NOT REPRODUCED"
NOT_MEASURED = "NOT MEASURED"


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


def compare_target(target: Target, values: list[float]) -> Check:
    """REPRODUCED: ours matches or beats the paper; WITHIN TOLERANCE: below by <= tolerance;
    NOT REPRODUCED: further below. Ours above the paper by more than the tolerance still passes,
    with a warning to look for leakage. The check's evidence is the TargetResult (+ warning)."""
    t = target
    where = t.where or "?"
    if not values:
        result = TargetResult(
            t.name,
            t.metric,
            t.value,
            t.tolerance,
            None,
            None,
            0,
            None,
            NOT_MEASURED,
            t.where,
            t.spread,
        )
        return Check(t.name, False, f"metric {t.metric} was not measured", asdict(result))
    mean, std = mean_std(values)
    better = (
        (mean - t.value) if t.higher_is_better else (t.value - mean)
    )  # > 0: better than the paper
    label = REPRODUCED if better >= 0 else WITHIN if better >= -t.tolerance else NOT_REPRODUCED
    result = TargetResult(
        t.name,
        t.metric,
        t.value,
        t.tolerance,
        mean,
        std,
        len(values),
        mean - t.value,
        label,
        t.where,
        t.spread,
    )
    spread = f" ± {std:.2f}" if std is not None else ""
    n = f"{len(values)} seed{'s' if len(values) > 1 else ''}"
    reason = (
        f"{label}: ours {mean:.2f}{spread} ({n}) vs paper {t.value:g} ({where}), gap {mean - t.value:+.2f}, "
        f"tolerance {t.tolerance:g}"
    )
    spread_note, within = spread_verdict(mean - t.value, t.spread)
    reason += f"; {spread_note}"
    ev: dict[str, Any] = asdict(result) | {"within_paper_spread": within}
    if better > t.tolerance:
        reason += "; above the paper by more than the tolerance: check for leakage between splits"
        ev["warning"] = "above paper"
    return Check(t.name, label != NOT_REPRODUCED, reason, ev)


def check_targets(
    targets: list[Target], dataset: str | None, per_seed: list[dict[str, float]]
) -> list[Check]:
    """One Check per target of this dataset; no target for the dataset is itself a failure."""
    mine = [t for t in targets if t.dataset in (None, dataset)]
    if not mine:
        known = sorted({str(t.dataset) for t in targets})
        return [
            Check(
                "targets",
                False,
                f"no target for dataset '{dataset}' in the paper config "
                f"(targets exist for: {', '.join(known) or 'none'}): nothing to compare with",
                {},
            )
        ]
    return [compare_target(t, [m[t.metric] for m in per_seed if t.metric in m]) for t in mine]


def check_sanity(
    mean: dict[str, float], majority: dict[str, float], sizes: dict[str, int], c: FullStage
) -> list[Check]:
    """What no reproduction can show: accuracy no better than predicting the most frequent class
    (beyond chance: `chance_z` standard errors of a constant guess on that many examples), val
    and test far apart, or val and test metrics identical (the same examples serve both)."""
    checks = []
    for split in ("val", "test"):
        acc, base, n = mean.get(f"{split}/acc"), majority.get(split), sizes.get(split)
        if acc is None or base is None or not n:
            continue
        se = math.sqrt(base * (100.0 - base) / n)  # points: a constant guess's accuracy, binomial
        need = base + c.chance_z * se
        ok = acc > need
        reason = (
            f"{split}/acc {acc:.2f} vs {base:.2f} by always predicting the most frequent class "
            f"({'>' if ok else '<='} {need:.2f}: {c.chance_z:g} standard errors on {n} examples)"
        )
        if not ok:
            reason += (
                ": the model learned nothing it can use on this split; are the labels aligned with "
                "the inputs (shuffled separately? a label mapping that differs between splits?)"
            )
        ev = {"acc": acc, "majority": base, "needed": need, "n": n}
        checks.append(Check(f"{split} beats the majority class", ok, reason, ev))
    if "val/acc" in mean and "test/acc" in mean:
        gap = abs(mean["val/acc"] - mean["test/acc"])
        ok = gap <= c.max_val_test_gap
        reason = (
            f"|val/acc - test/acc| = {gap:.2f} {'<=' if ok else '>'} {c.max_val_test_gap:g} points"
        )
        if not ok:
            reason += ": val and test disagree; a test-only label mapping, or another split served as one of them?"
        checks.append(Check("val and test agree", ok, reason, {"gap": gap}))
    same = [
        k
        for k in ("loss", "acc")
        if f"val/{k}" in mean and mean[f"val/{k}"] == mean.get(f"test/{k}")
    ]
    if len(same) == 2:
        checks.append(
            Check(
                "val and test differ",
                False,
                f"val and test give identical loss and accuracy ({mean['val/loss']:.6g}, "
                f"{mean['val/acc']:.2f}): one loader serves the other's split, or the model is selected on test",
            )
        )
    return checks


def judge(
    cfg,
    per_seed: list[dict[str, float]],
    majority: dict[str, float],
    sizes: dict[str, int],
    dataset,
) -> list[Check]:
    """Every judgement of the full stage from measured metrics alone: the paper's targets and the
    sanity checks. `repro judge` calls it again on a recorded run with the current config."""
    keys = sorted({k for m in per_seed for k in m})
    mean = {k: mean_std([m[k] for m in per_seed if k in m])[0] for k in keys}
    sanity = check_sanity(mean, majority, sizes, cfg.stage.full)
    return check_targets(cfg.paper.targets, dataset, per_seed) + sanity


def majority_rates(dm) -> tuple[dict[str, float], dict[str, int]]:
    """(% of val and test examples in their split's most frequent class, what a constant guess
    gets; the splits' sizes)."""
    rates, sizes = {}, {}
    for split in ("val", "test"):
        labels = [int(ex["label"]) for ex in dm.splits[split]]
        sizes[split] = len(labels)
        if labels:
            rates[split] = 100.0 * max(labels.count(y) for y in set(labels)) / len(labels)
    return rates, sizes


def target_results(checks: list[Check]) -> list[TargetResult]:
    """The TargetResult inside each target check's evidence."""
    names = {f.name for f in fields(TargetResult)}
    return [
        TargetResult(**{k: v for k, v in c.evidence.items() if k in names})
        for c in checks
        if "label" in c.evidence
    ]


# ---- measurement ----------------------------------------------------------------------------
def run(ctx) -> Verdict:
    """Train every seed (each continuing from its checkpoint on --resume), test, compare."""
    from repro.forecast import print_forecast

    cfg = ctx.cfg
    if not ctx.resume:
        ctx.run.annex(forecast=print_forecast(ctx.project, ctx.paper, cfg, ctx.console))
    t0 = time.perf_counter()  # what the forecast forecasts: from here to the verdict
    seeds = [ctx.seed + i for i in range(cfg.seeds)]
    wandb = _wandb_run(ctx)
    try:
        results = [_fit_seed(ctx, s, i, seeds, wandb) for i, s in enumerate(seeds)]
    except BaseException:
        if wandb is not None:
            wandb.finish("interrupted", None)
        raise
    dm = results[-1][1]  # the split is the same for every seed (data.split_seed)
    results = [r for r, _ in results]
    per_seed = [r.metrics for r in results]
    dataset = cfg.data.options.get("dataset")
    majority, sizes = majority_rates(dm)
    checks = judge(cfg, per_seed, majority, sizes, dataset)
    keys = sorted({k for m in per_seed for k in m})
    stats = {k: mean_std([m[k] for m in per_seed if k in m]) for k in keys}
    metrics = FullMetrics(
        seeds=seeds,
        per_seed=per_seed,
        mean={k: v[0] for k, v in stats.items()},
        std={k: v[1] for k, v in stats.items()},
        targets=target_results(checks),
        lr_by_seed={str(r.seed): r.lr for r in results},
        epochs=sum(r.epochs for r in results),
        train_seconds=sum(r.train_seconds for r in results),
        dataset=dataset,
        baseline=_baseline(ctx, dm) if cfg.stage.full.show_baseline else None,
        majority=majority,
        eval_sizes=sizes,
    )
    ctx.run.annex(actual=_actual(ctx.run.prior_duration_s, time.perf_counter() - t0, metrics))
    verdict = Verdict.from_checks("full", checks, {"runs": [asdict(r) for r in results]}, metrics)
    if wandb is not None:
        wandb.finish("passed" if verdict.passed else "failed", verdict.to_dict())
    return verdict


def _fit_seed(ctx, seed: int, i: int, seeds: list[int], wandb):
    from repro.train.fit import fit_and_test

    out = ctx.run.dir if len(seeds) == 1 else ctx.run.dir / f"seed_{seed}"
    ctx.console.print(f"[bold]full[/bold]: training seed {seed} ({i + 1}/{len(seeds)})")
    dm = ctx.build_datamodule(seed)
    dm.setup("fit")
    model = ctx.build_model(dm, seed)
    loggers = (wandb.logger(f"seed{seed}"),) if wandb is not None else ()
    result = fit_and_test(ctx.cfg, dm, model, out, seed=seed, resume=ctx.resume, loggers=loggers)
    ctx.console.print(
        f"seed {seed}: trained at lr {result.lr:.3g} ({result.lr_source}); "
        + ", ".join(f"{k} {v:.4g}" for k, v in sorted(result.metrics.items())),
        highlight=False,
    )
    return result, dm


def _wandb_run(ctx):
    """A W&B run for this repro run when logger=wandb (rank 0 only: other DDP ranks log nothing)."""
    from repro.train.distributed import is_rank_zero

    if ctx.cfg.logger.name != "wandb" or not is_rank_zero():
        return None
    from repro.train.loggers import WandbRun

    r = ctx.resolved
    return WandbRun(
        ctx.run.id,
        ctx.cfg.logger.project,
        ctx.run.dir,
        r.config,
        r.provenance,
        tags=[ctx.paper, "full"],
    )


def _baseline(ctx, dm) -> dict[str, Any] | None:
    """The paper's baseline (papers.<paper>.<module>:<function>) on the same data, if it names one."""
    from repro.train.distributed import is_rank_zero

    spec = ctx.cfg.paper.baseline
    if not spec or not is_rank_zero():
        return None
    return {"name": spec, "metrics": paper_function(ctx.project, ctx.paper, spec)(dm)}


def paper_function(project, paper: str, spec: str):
    """'papers.<paper>.<module>:<function>' -> the function; only the paper's own package is
    accepted (the spec comes from config and the command line: it must not import anything)."""
    import importlib

    module, _, attr = spec.partition(":")
    if not module.startswith(f"papers.{paper}.") or not attr.isidentifier():
        raise ConfigError(
            f"paper.baseline: expected 'papers.{paper}.<module>:<function>' (a function of the "
            f"paper's own package), found {spec!r}"
        )
    project.activate()
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise PaperError(f"paper.baseline: cannot import {spec!r}: {e}") from e


def _actual(prior: float, wall_s: float, m: FullMetrics) -> dict[str, Any]:
    """What the full stage really took, beside its forecast: wall time (with the attempts before a
    resume), epochs, seconds per epoch, peak memory."""
    from repro.runner import peak_rss_mb

    return {
        "wall_s": round(wall_s + prior, 2),
        "train_s": round(m.train_seconds, 2),
        "epochs": m.epochs,
        "s_per_epoch": round(m.train_seconds / m.epochs, 3) if m.epochs else None,
        "peak_rss_mb": peak_rss_mb(),
    }
