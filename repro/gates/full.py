"""The full gate: train for real (N seeds), test, and compare with the paper's reported numbers.

Besides the targets it judges what no reproduction can show, in the task's own terms
(repro/tasks): a model no better than the task's trivial baseline (the most frequent class, the
training mean, unigram frequencies, a random order) beyond chance, unit by unit on val and test;
val and test far apart; val and test identical; two seeds' results bit-for-bit identical."""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, fields
from typing import Any

from repro.config.schema import FullStage, Target
from repro.context import StageContext
from repro.errors import ConfigError, PaperError
from repro.gates.metrics import FullMetrics, TargetResult
from repro.gates.paper_tests import slow_tests_first
from repro.tasks import MetricSpec
from repro.tasks.base import Comparison
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


def compare_target(
    target: Target, values: list[float], higher_is_better: bool | None = None
) -> Check:
    """REPRODUCED: ours matches or beats the paper; WITHIN TOLERANCE: worse by <= tolerance;
    NOT REPRODUCED: further off. Ours better than the paper by more than the tolerance still
    passes, with a warning to look for leakage. The direction is the metric's (the task's;
    `higher_is_better`), else the target's own, else higher is better. The check's evidence is
    the TargetResult (+ warning)."""
    t = target
    higher = higher_is_better if higher_is_better is not None else t.higher_is_better
    higher = True if higher is None else higher
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
    better = (mean - t.value) if higher else (t.value - mean)  # > 0: better than the paper
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
    d = 2 if abs(t.value) >= 1 else 4  # decimals: points of accuracy, or a MAP of 0.718
    spread = f" ± {std:.{d}f}" if std is not None else ""
    n = f"{len(values)} seed{'s' if len(values) > 1 else ''}"
    reason = (
        f"{label}: ours {mean:.{d}f}{spread} ({n}) vs paper {t.value:g} ({where}), gap "
        f"{mean - t.value:+.{d}f}, tolerance {t.tolerance:g}"
    )
    spread_note, within = spread_verdict(mean - t.value, t.spread)
    reason += f"; {spread_note}"
    ev: dict[str, Any] = asdict(result) | {"within_paper_spread": within}
    if better > t.tolerance:
        reason += "; above the paper by more than the tolerance: check for leakage between splits"
        ev["warning"] = "above paper"
    return Check(t.name, label != NOT_REPRODUCED, reason, ev)


def check_targets(
    targets: list[Target],
    dataset: str | None,
    per_seed: list[dict[str, float]],
    specs: dict[str, MetricSpec] | None = None,
) -> list[Check]:
    """One Check per target of this dataset (its direction from the task's metric `specs`); no
    target for the dataset is itself a failure."""
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
    specs = specs or {}

    def higher(t: Target) -> bool | None:
        spec = specs.get(t.metric.rpartition("/")[2])
        return spec.higher_is_better if spec is not None else None

    return [
        compare_target(t, [m[t.metric] for m in per_seed if t.metric in m], higher(t)) for t in mine
    ]


def check_beyond_trivial(
    split: str, comp: Comparison, trivial: str, unit: str, z: float, score: str = "score"
) -> Check:
    """The model beats the task's trivial baseline on `split` by more than chance: the mean of
    the paired per-unit differences (`score`: accuracy of an example, average precision of a
    query, minus a squared error ...) above z of its standard errors."""
    need = comp.margin(z)
    ok = comp.beyond(z)
    reason = (
        f"{split}: {score} per {unit}, ours {comp.model:.4g} vs {comp.baseline:.4g} by {trivial} "
        f"(mean difference {comp.mean_diff:+.4g} {'>' if ok else '<='} {need:.3g}: {z:g} "
        f"standard errors of the paired difference on {comp.n} {_plural(unit)})"
    )
    if not ok:
        reason += (
            ": the model learned nothing it can use on this split; are the labels aligned with "
            "the inputs (shuffled separately? a label mapping that differs between splits?)"
        )
    ev = {"n": comp.n, "ours": comp.model, "trivial": comp.baseline, "mean_diff": comp.mean_diff}
    ev |= {"sd_diff": comp.sd_diff, "needed": need}
    return Check(f"{split} beats {trivial}", ok, reason, ev)


def _plural(unit: str) -> str:
    return unit[:-1] + "ies" if unit.endswith("y") else unit + "s"


def check_majority(split: str, acc: float, base: float, n: int, z: float) -> Check:
    """Records written before tasks kept only a classifier's accuracy and the majority rate: the
    accuracy must beat a constant guess by z binomial standard errors of that guess."""
    se = math.sqrt(base * (100.0 - base) / n)  # points: a constant guess's accuracy, binomial
    need = base + z * se
    ok = acc > need
    reason = (
        f"{split}/acc {acc:.2f} vs {base:.2f} by always predicting the most frequent class "
        f"({'>' if ok else '<='} {need:.2f}: {z:g} standard errors on {n} examples)"
    )
    if not ok:
        reason += (
            ": the model learned nothing it can use on this split; are the labels aligned with "
            "the inputs (shuffled separately? a label mapping that differs between splits?)"
        )
    ev = {"acc": acc, "majority": base, "needed": need, "n": n}
    return Check(f"{split} beats the majority class", ok, reason, ev)


def check_val_test_agree(mean: dict[str, float], spec: MetricSpec, max_gap: float) -> Check | None:
    """val and test of a bounded metric (accuracy, MAP, R²) within max_gap points of its range
    (15 points of accuracy, 0.15 of MAP)."""
    val, test = mean.get(f"val/{spec.name}"), mean.get(f"test/{spec.name}")
    if val is None or test is None or spec.range is None:
        return None
    gap, limit = abs(val - test), max_gap / 100.0 * spec.range
    ok = gap <= limit
    reason = f"|val/{spec.name} - test/{spec.name}| = {gap:.4g} {'<=' if ok else '>'} {limit:g}"
    if not ok:
        reason += ": val and test disagree; a test-only label mapping, or another split served as one of them?"
    return Check("val and test agree", ok, reason, {"gap": gap, "limit": limit})


def check_val_test_differ(mean: dict[str, float], primary: str) -> Check | None:
    """val and test identical in the loss and the primary metric: one split serves the other."""
    keys = ["loss", primary] if primary != "loss" else ["loss"]
    if not all(f"val/{k}" in mean and mean[f"val/{k}"] == mean.get(f"test/{k}") for k in keys):
        return None
    values = ", ".join(f"{k} {mean[f'val/{k}']:.6g}" for k in keys)
    return Check(
        "val and test differ",
        False,
        f"val and test give identical {' and '.join(keys)} ({values}): one loader serves the "
        "other's split, or the model is selected on test",
    )


def check_sanity(
    mean: dict[str, float],
    c: FullStage,
    specs: dict[str, MetricSpec],
    primary: str,
    trivial: dict | None,
    majority: dict[str, float] | None = None,
    sizes: dict[str, int] | None = None,
) -> list[Check]:
    """What no reproduction can show: a model no better than the task's trivial baseline beyond
    chance (`trivial`: its name, unit and per-split comparisons; records written before tasks:
    the majority rate and split sizes of a classifier), val and test far apart, or identical."""
    checks = []
    comps = (trivial or {}).get("comparisons") or {}
    for split in ("val", "test"):
        if split in comps:
            comp = Comparison(**comps[split])
            name, unit, score = trivial["name"], trivial["unit"], trivial.get("score", "score")
            checks.append(check_beyond_trivial(split, comp, name, unit, c.chance_z, score))
        elif majority and split in majority and f"{split}/acc" in mean and (sizes or {}).get(split):
            checks.append(
                check_majority(
                    split, mean[f"{split}/acc"], majority[split], sizes[split], c.chance_z
                )
            )
    bounded = next((s for s in specs.values() if s.range is not None), None)
    agree = check_val_test_agree(mean, bounded, c.max_val_test_gap) if bounded else None
    differ = check_val_test_differ(mean, primary)
    return checks + [k for k in (agree, differ) if k is not None]


def check_seeds_differ(per_seed: list[dict[str, float]]) -> Check | None:
    """Two seeds' results bit-for-bit equal (every metric both have: the test loss to the last
    bit) mean the seed reaches neither the model's init nor the data order (issue 22: a model
    that seeded itself with a constant reported "98.40 +- 0.00 (2 seeds)", REPRODUCED): the
    mean over seeds is one run counted N times. None with fewer than two seeds."""
    if len(per_seed) < 2:
        return None
    same = [
        (i, j)
        for i in range(len(per_seed))
        for j in range(i + 1, len(per_seed))
        if _identical(per_seed[i], per_seed[j])
    ]
    shown = next((k for k in ("test/loss", "val/loss") if k in per_seed[0]), None)
    shown = shown or next(iter(sorted(per_seed[0])), None)
    values = ", ".join(f"{m[shown]:.6g}" for m in per_seed if shown in m) if shown else ""
    ev = {"identical_pairs": [list(p) for p in same], "metric": shown}
    if not same:
        reason = f"the {len(per_seed)} seeds' results differ ({shown}: {values})"
        return Check("seeds differ", True, reason, ev)
    pairs = ", ".join(f"{i + 1} and {j + 1}" for i, j in same)
    reason = (
        f"seed runs {pairs} of {len(per_seed)} give bit-for-bit identical results (every metric "
        f"equal; {shown}: {values}): the seed does not reach the model or the data order (a "
        "torch.manual_seed(<constant>) in the model or the datamodule? a loader seeded with a "
        "constant?), so the spread over seeds is 0 and the mean is one run counted again"
    )
    return Check("seeds differ", False, reason, ev)


def _identical(a: dict[str, float], b: dict[str, float]) -> bool:
    shared = set(a) & set(b)
    return bool(shared) and all(a[k] == b[k] for k in shared)


def judge(
    cfg,
    per_seed: list[dict[str, float]],
    dataset,
    specs: dict[str, MetricSpec],
    primary: str,
    trivial: dict | None = None,
    majority: dict[str, float] | None = None,
    sizes: dict[str, int] | None = None,
    invariances: list[dict[str, Any]] | None = None,
    preflight: dict[str, Any] | None = None,
) -> list[Check]:
    """Every judgement of the full stage from measured metrics alone: the preflight (`preflight`:
    its record; None, a record from before it: no preflight check), the paper's targets,
    the sanity checks and the declared invariances. `repro judge` calls it again on a recorded
    run with the current config."""
    from repro.gates.invariance import judge_invariances
    from repro.gates.preflight import check_preflight

    keys = sorted({k for m in per_seed for k in m})
    mean = {k: mean_std([m[k] for m in per_seed if k in m])[0] for k in keys}
    sanity = check_sanity(mean, cfg.stage.full, specs, primary, trivial, majority, sizes)
    targets = check_targets(cfg.paper.targets, dataset, per_seed, specs)
    seeds = [k for k in (check_seeds_differ(per_seed),) if k is not None]
    pre = [check_preflight(preflight, cfg.stage.full.chance_z)] if preflight is not None else []
    return pre + targets + seeds + sanity + judge_invariances(cfg, invariances)


def target_results(checks: list[Check]) -> list[TargetResult]:
    """The TargetResult inside each target check's evidence."""
    names = {f.name for f in fields(TargetResult)}
    return [
        TargetResult(**{k: v for k, v in c.evidence.items() if k in names})
        for c in checks
        if "label" in c.evidence
    ]


# ---- measurement ----------------------------------------------------------------------------
def run(ctx: StageContext) -> Verdict:
    """The preflight first (a FAIL, or preflight.only, ends the stage there); then train every
    seed (each continuing from its checkpoint on --resume), test, compare; and warn when the
    result is worse than our own best earlier passed run on the same data."""
    from repro.gates.invariance import merge_seeds
    from repro.gates.regression import warn_if_worse

    cfg = ctx.cfg
    slow_tests = slow_tests_first(ctx)  # the paper's tests marked slow: a failure trains nothing
    if any(c.measured and not c.passed for c in slow_tests):
        return Verdict.from_checks("full", slow_tests, {"not_run": "training: a slow test failed"})
    pre_check, pre = _preflight(ctx)
    if (pre_check.measured and not pre_check.passed) or cfg.stage.full.preflight.only:
        return Verdict.from_checks("full", slow_tests + [pre_check], {"preflight": pre})
    t0 = time.perf_counter()  # what the forecast (runner.py) forecasts: from here to the verdict
    seeds = [ctx.seed + i for i in range(cfg.seeds)]
    wandb = _wandb_run(ctx)
    units: dict[str, list] = {}
    try:
        fits = [_fit_seed(ctx, s, i, seeds, wandb, units) for i, s in enumerate(seeds)]
    except BaseException:
        if wandb is not None:
            wandb.finish("interrupted", None)
        raise
    dm, trivial = fits[-1][1], fits[-1][2]  # the split is the same for every seed
    results = [r for r, _, _, _ in fits]
    per_seed = [r.metrics for r in results]
    dataset = cfg.data.options.get("dataset")
    task = dm.task
    trivial = _trivial_record(task, trivial, units)
    specs = task.metric_specs()
    invariances = merge_seeds([f[3] for f in fits])  # declared invariances, measured on test
    checks = slow_tests + judge(
        cfg, per_seed, dataset, specs, task.primary, trivial, invariances=invariances, preflight=pre
    )
    metrics = _metrics(ctx, seeds, results, checks, dm, trivial, invariances, pre)
    ctx.run.annex(actual=_actual(ctx.run.prior_duration_s, time.perf_counter() - t0, metrics))
    evidence = {"runs": [asdict(r) for r in results], "preflight": pre}
    if not pre_check.measured:  # shown under `repro status` and in the report
        evidence["warnings"] = [f"preflight {pre_check.reason}"]
    verdict = Verdict.from_checks("full", checks, evidence, metrics)
    verdict = warn_if_worse(ctx, verdict, specs, task.primary)
    if wandb is not None:
        wandb.finish("passed" if verdict.passed else "failed", verdict.to_dict())
    return verdict


def _metrics(ctx, seeds, results, checks, dm, trivial, invariances, pre) -> FullMetrics:
    """The full stage's typed summary of its seeds' results."""
    per_seed = [r.metrics for r in results]
    keys = sorted({k for m in per_seed for k in m})
    stats = {k: mean_std([m[k] for m in per_seed if k in m]) for k in keys}
    return FullMetrics(
        seeds=seeds,
        per_seed=per_seed,
        mean={k: v[0] for k, v in stats.items()},
        std={k: v[1] for k, v in stats.items()},
        targets=target_results(checks),
        lr_by_seed={str(r.seed): r.lr for r in results},
        epochs=sum(r.epochs for r in results),
        train_seconds=sum(r.train_seconds for r in results),
        dataset=ctx.cfg.data.options.get("dataset"),
        baseline=_baseline(ctx, dm) if ctx.cfg.stage.full.show_baseline else None,
        eval_sizes={s: len(dm.splits[s]) for s in ("val", "test")},
        task=dm.task.name,
        trivial=trivial,
        invariances=invariances,
        preflight=pre,
    )


def _preflight(ctx) -> tuple[Check, dict[str, Any]]:
    """(the preflight's check, its record): measured now on the first seed, whose set-up
    datamodule the seed's training then reuses; read back from the record on --resume when it
    was measured before the interruption, and by DDP ranks > 0 (rank 0 measured it before it
    started them); skipped when the config says so (not measured)."""
    from repro.gates import preflight
    from repro.train.distributed import is_rank_zero

    record = preflight.skipped(ctx.cfg)
    if record is None and (ctx.resume or not is_rank_zero()) and ctx.run is not None:
        record = ctx.run.record.preflight
    if record is None:
        record, dm = preflight.measure(ctx, ctx.seed)
        ctx.datamodules.setdefault(ctx.seed, dm)
    if ctx.run is not None and is_rank_zero():
        ctx.run.annex(preflight=record)
    check = preflight.check_preflight(record, ctx.cfg.stage.full.chance_z)
    ctx.console.print(f"preflight: {check.state}: {check.reason}", markup=False, highlight=False)
    return check, record


def _fit_seed(ctx, seed: int, i: int, seeds: list[int], wandb, units: dict[str, list]):
    """Train and test one seed; then (rank 0) its best checkpoint against the task's trivial
    baseline on val and test, unit by unit: the scores are added to `units`; and the paper's
    declared invariances on test. Returns (the fit, the datamodule, the baseline's side of the
    comparison, the invariance measurements). Its fitted data state is saved first."""
    from repro.gates.invariance import measure_declared
    from repro.train.distributed import is_rank_zero
    from repro.train.evaluate import load_weights, versus_baseline
    from repro.train.fit import fit_and_test
    from repro.train.fitted_state import save_fitted_state

    out = ctx.run.dir if len(seeds) == 1 else ctx.run.dir / f"seed_{seed}"
    ctx.console.print(f"[bold]full[/bold]: training seed {seed} ({i + 1}/{len(seeds)})")
    dm = ctx.build_datamodule(seed)
    dm.setup("fit")
    if is_rank_zero():  # what predict and eval encode new inputs with (repro/inference.py)
        save_fitted_state(dm, out)
    model = ctx.build_model(dm, seed)
    loggers = (wandb.logger(f"seed{seed}"),) if wandb is not None else ()
    result = fit_and_test(ctx.cfg, dm, model, out, seed=seed, resume=ctx.resume, loggers=loggers)
    ctx.console.print(
        f"seed {seed}: trained at lr {result.lr:.3g} ({result.lr_source}); "
        + ", ".join(f"{k} {v:.4g}" for k, v in sorted(result.metrics.items())),
        highlight=False,
    )
    if not is_rank_zero():
        return result, dm, {}, []
    if result.best_checkpoint:  # a seed read back on --resume holds no weights yet
        load_weights(model, out / result.best_checkpoint)
    versus = versus_baseline(model, dm, dm.task)
    for split, scores in versus.get("units", {}).items():
        units.setdefault(split, []).append(scores)
    return result, dm, versus, measure_declared(ctx.cfg, dm, model)


def _trivial_record(task, versus: dict, units: dict[str, list]) -> dict | None:
    """What the record keeps of the trivial baseline: its name, the unit it is compared on, its
    metrics and the comparison per split (what `repro judge` re-applies)."""
    from repro.train.evaluate import comparisons

    if not versus:
        return None
    comps = comparisons(units, versus["baseline_units"])
    return {
        "name": versus["name"],
        "unit": task.unit,
        "score": task.unit_score,
        "metrics": versus["metrics"],
        "comparisons": {s: asdict(c) for s, c in comps.items()},
    }


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
    package = project.package(paper)
    if not module.startswith(f"{package}.") or not attr.isidentifier():
        raise ConfigError(
            f"paper.baseline: expected '{package}.<module>:<function>' (a function of the "
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
    from repro.envinfo import peak_rss_mb

    return {
        "wall_s": round(wall_s + prior, 2),
        "train_s": round(m.train_seconds, 2),
        "epochs": m.epochs,
        "s_per_epoch": round(m.train_seconds / m.epochs, 3) if m.epochs else None,
        "peak_rss_mb": peak_rss_mb(),
    }
