"""Invariances: changes to the inputs that must, or must not, change the model's predictions.

- Every input field matters (no declaration needed): each field of the batch, replaced alone by
  another example's (rolled by one across the batch), must change the outputs; a field the model
  ignores is named. Checked by shapes on the untrained model.
- Declared invariances (paper.invariances): a transformation of a raw example that the paper's
  datamodule defines (BiMPM: swap the two questions) must not change the prediction, exactly
  (by construction: shapes checks it on the untrained model) or approximately (learned). full
  measures every one on the trained model on the test split: the fraction of predictions that
  change and the mean change of the scores; the judgement (a threshold) is re-applied by
  `repro judge` from the record.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

import torch

from repro.config.schema import Invariance, RunConfig
from repro.data.batch import Batch, model_inputs, rows
from repro.errors import PaperError
from repro.verdict import Check, Verdict

INPUTS_USED = "inputs_used"


def declared(cfg: RunConfig) -> list[Invariance]:
    """The paper's invariances that apply to the configured dataset."""
    dataset = cfg.data.options.get("dataset")
    return [i for i in cfg.paper.invariances if i.dataset in (None, dataset)]


def transformation(dm, name: str) -> Callable[[dict], dict]:
    """The datamodule's transformation `name`; a PaperError naming the ones it defines."""
    defined = dm.transformations()
    if name not in defined:
        raise PaperError(
            f"paper.invariances: transform {name!r}: expected a transformation "
            f"{type(dm).__name__}.transformations() defines ({', '.join(sorted(defined)) or 'none'}); "
            "define it there (raw example -> raw example), or fix the name"
        )
    return defined[name]


def roundoff(out: torch.Tensor, eps_units: float) -> float:
    """What rounding alone explains between two computations of `out` (as the shapes gate's
    roundoff_tol: eps_units machine epsilons of its dtype, times 1 + its largest magnitude)."""
    from repro.gates.shapes.judge import roundoff_tol

    scale = float(out.detach().abs().max()) if out.numel() else 0.0
    return roundoff_tol(str(out.dtype).removeprefix("torch."), scale, eps_units)


# ---- every input field matters ----------------------------------------------------------------
def rolled(batch: Batch, key: str) -> Batch:
    """The batch with field `key` taken from the next example (the last takes the first's)."""
    return {**batch, key: batch[key].roll(1, 0)}


def measure_inputs_used(model: torch.nn.Module, batch: Batch) -> dict[str, dict[str, Any]]:
    """Per input field: whether rolling it across the batch changes it at all ("varies"), and the
    largest change of the outputs when only it is rolled (eval mode, no grad)."""
    from repro.gates.shapes.measure import preserved

    inputs = model_inputs(batch)
    out: dict[str, dict[str, Any]] = {}
    with preserved(model), torch.no_grad():
        model.eval()
        base = model(**inputs)
        for key, value in inputs.items():
            varies = len(value) > 1 and not torch.equal(value, value.roll(1, 0))
            change = math.nan
            if varies:
                other = model(**model_inputs(rolled(batch, key)))
                change = float((other.double() - base.double()).abs().max())
            out[key] = {"varies": varies, "change": change}
    return {"fields": out, "base": base}


def check_inputs_used(
    fields: dict[str, dict[str, Any]], tol: float, unused_ok: list[str], size: int
) -> Check:
    """Every input field whose rolling changes it must change the outputs by more than rounding;
    fields listed in stage.shapes.unused_inputs_ok may be ignored."""
    name = INPUTS_USED
    measured = {k: v for k, v in fields.items() if v["varies"]}
    same = sorted(k for k, v in fields.items() if not v["varies"])
    ev = {
        "change": {k: v["change"] for k, v in measured.items()},
        "tol": tol,
        "not_varying": same,
        "unused_ok": list(unused_ok),
    }
    if not measured:
        why = f"batch of {size}" if size < 2 else f"every field is the same in all {size} examples"
        return Check.not_measured(name, f"no input field can be shuffled ({why})", ev)
    ignored = [k for k, v in measured.items() if not v["change"] > tol]  # NaN counts as ignored
    bad = [k for k in ignored if k not in unused_ok]
    if bad:
        shown = ", ".join(f"{k} (max change {measured[k]['change']:.3g})" for k in bad)
        return Check(
            name,
            False,
            f"{shown}: each replaced alone by another example's (shuffled across the batch), the "
            f"outputs did not change beyond rounding ({tol:.3g}): the model ignores "
            f"{'it' if len(bad) == 1 else 'them'}; is the input wired into forward()? (an "
            "ablation that drops it on purpose: list it in stage.shapes.unused_inputs_ok)",
            ev,
        )
    used = [k for k in measured if k not in ignored]
    least = min(used, key=lambda k: measured[k]["change"]) if used else None
    reason = (
        f"each of {len(used)} input fields, shuffled alone across {size} examples, changes the "
        "outputs"
    )
    if least is not None:
        reason += f" (least: {least}, {measured[least]['change']:.3g} > {tol:.3g})"
    if ignored:
        reason += f"; {', '.join(ignored)} ignored, as stage.shapes.unused_inputs_ok allows"
    if same:
        reason += f"; {', '.join(same)} alike in every example: not measured"
    return Check(name, True, reason, ev)


# ---- declared invariances: measurement ---------------------------------------------------------
def measure_invariance(
    model: torch.nn.Module,
    dm,
    task,
    examples: list[dict],
    transform: Callable[[dict], dict],
) -> dict[str, Any]:
    """The model on raw examples and on their transformed copies, encoded by the paper's encode
    and batched by its collate alike: how many predictions change (the task's notion), the mean
    and largest change, and the largest difference of the raw outputs (None when the
    transformation changes the output's shape) with the rounding that explains it."""
    from repro.gates.shapes.measure import preserved
    from repro.train.evaluate import encoded_loader, outputs

    def raw_outputs(exs: list[dict]) -> tuple[list[torch.Tensor], list[Batch]]:
        outs, batches = [], []

        def keep(out: torch.Tensor, batch: Batch) -> None:
            outs.append(out.detach())
            batches.append(batch)

        items = [dm.encode(task.placeholder_label(ex)) for ex in exs]
        forward = lambda b: model(**model_inputs(b))  # noqa: E731
        outputs(forward, encoded_loader(dm, items), task, metrics=False, on_batch=keep)
        return outs, batches

    with preserved(model), torch.no_grad():
        model.eval()
        mine, batches = raw_outputs(examples)
        theirs, _ = raw_outputs([transform(dict(ex)) for ex in examples])
    changed, change, diff, tol = [], [], 0.0, 0.0
    for a, b, batch in zip(mine, theirs, batches, strict=True):
        c, d = task.prediction_change(a, b, batch)
        changed.append(c.cpu())
        change.append(d.double().cpu())
        if diff is not None and a.shape == b.shape:
            diff = max(diff, float((a.double() - b.double()).abs().max()))
            tol = max(tol, float(a.abs().max()), float(b.abs().max()))
        else:
            diff = None
    flags, deltas = torch.cat(changed), torch.cat(change)
    n = len(flags)
    return {
        "n": n,
        "changed": float(flags.double().mean()) if n else math.nan,
        "mean_change": float(deltas.mean()) if n else math.nan,
        "max_change": float(deltas.max()) if n else math.nan,
        "max_output_diff": diff,
        "output_scale": tol,
        "dtype": str(mine[0].dtype).removeprefix("torch.") if mine else "float32",
    }


def check_exact(inv: Invariance, m: dict[str, Any], eps_units: float, where: str) -> Check:
    """An exact invariance: the raw outputs agree to rounding (or, when the transformation
    changes their shape, no prediction changes)."""
    from repro.gates.shapes.judge import roundoff_tol

    name = f"invariant to {inv.transform}"
    if m["max_output_diff"] is None:
        ok = m["changed"] == 0
        reason = (
            f"{100 * m['changed']:.1f}% of {m['n']} predictions change {where} (declared exact; "
            "outputs of another shape, compared as predictions)"
        )
        return Check(name, ok, reason, m)
    tol = roundoff_tol(m["dtype"], m["output_scale"], eps_units)
    ok = m["max_output_diff"] <= tol
    reason = (
        f"outputs change by up to {m['max_output_diff']:.3g} {'<=' if ok else '>'} {tol:.3g} "
        f"(rounding) {where}; {100 * m['changed']:.1f}% of {m['n']} predictions change"
    )
    if not ok:
        reason += (
            ": declared exact, but the architecture is not invariant to it (a learned "
            "invariance is declared exact: false)"
        )
    return Check(name, ok, reason, m | {"tol": tol})


# ---- the shapes gate: inputs used, exact invariances on the untrained model -------------------
def shapes_checks(cfg: RunConfig, dm, model: torch.nn.Module, batch: Batch) -> list[Check]:
    """Every input field matters on the first stage.shapes.inputs_used_examples of `batch`; each
    declared exact invariance holds on the first stage.shapes.invariance_examples training
    examples. A measurement that raises is a failed check of its name."""
    c = cfg.stage.shapes
    checks = []
    few = rows(batch, slice(0, c.inputs_used_examples))  # (n, ...): a forward per field
    try:
        used = measure_inputs_used(model, few)
        tol = roundoff(used["base"], c.roundoff_eps)
        size = len(few["label"])
        checks.append(check_inputs_used(used["fields"], tol, list(c.unused_inputs_ok), size))
    except Exception as e:  # the model raised on a shuffled batch: the check fails with it
        checks.append(Check(INPUTS_USED, False, f"the model raised {type(e).__name__}: {e}"))
    examples = dm.splits["train"][: c.invariance_examples]
    for inv in declared(cfg):
        if not inv.exact:
            continue
        transform = transformation(dm, inv.transform)
        try:
            m = measure_invariance(model, dm, dm.task, examples, transform)
        except Exception as e:
            checks.append(
                Check(f"invariant to {inv.transform}", False, f"raised {type(e).__name__}: {e}")
            )
            continue
        where = f"at init on {m['n']} training examples"
        checks.append(check_exact(inv, m, c.roundoff_eps, where))
    return checks


def with_shapes_checks(verdict: Verdict, ctx, dm, model, batch: Batch) -> Verdict:
    """The shapes gate's verdict with these checks added (the gate's one call into this module)."""
    checks = shapes_checks(ctx.cfg, dm, model, batch)
    evidence = dict(verdict.evidence)
    return Verdict.from_checks(verdict.stage, verdict.checks + checks, evidence, verdict.metrics)


# ---- the full gate: every declared invariance on the trained model ----------------------------
def measure_declared(cfg: RunConfig, dm, model: torch.nn.Module) -> list[dict[str, Any]]:
    """Each declared invariance measured on the test split with the trained model: one
    measurement per invariance ({"transform", "exact", "where", **measure_invariance})."""
    examples = dm.splits["test"]
    out = []
    for inv in declared(cfg):
        m = measure_invariance(model, dm, dm.task, examples, transformation(dm, inv.transform))
        out.append({"transform": inv.transform, "exact": inv.exact, "where": inv.where, **m})
    return out


def merge_seeds(per_seed: list[list[dict[str, Any]]]) -> list[dict[str, Any]] | None:
    """The seeds' measurements of each invariance together: [{"transform", "exact", "where",
    "per_seed": [...]}] (None when none is declared)."""
    merged: dict[str, dict[str, Any]] = {}
    for seed in per_seed:
        for m in seed:
            entry = merged.setdefault(
                m["transform"],
                {"transform": m["transform"], "exact": m["exact"], "where": m["where"]},
            )
            keep = {k: v for k, v in m.items() if k not in ("transform", "exact", "where")}
            entry.setdefault("per_seed", []).append(keep)
    return list(merged.values()) or None


def judge_invariances(cfg: RunConfig, invariances: list[dict[str, Any]] | None) -> list[Check]:
    """The full stage's judgement of the recorded measurements with the current config: an exact
    invariance agrees to rounding on every seed; a learned one changes at most its max_changed
    (else stage.full.invariance_max_changed) of the test predictions, averaged over seeds."""
    checks = []
    limits = {i.transform: i.max_changed for i in cfg.paper.invariances}
    for entry in invariances or []:
        seeds = entry.get("per_seed") or []
        if not seeds:
            continue
        inv = Invariance(entry["transform"], bool(entry["exact"]), entry.get("where"))
        where = f"on {seeds[0]['n']} test examples"
        if inv.exact:
            per = [check_exact(inv, m, cfg.stage.shapes.roundoff_eps, where) for m in seeds]
            failed = [c for c in per if not c.passed]
            checks.append(failed[0] if failed else per[0])
            continue
        limit = limits.get(inv.transform)
        limit = cfg.stage.full.invariance_max_changed if limit is None else limit
        changed = statistics.fmean(m["changed"] for m in seeds)
        mean_change = statistics.fmean(m["mean_change"] for m in seeds)
        ok = changed <= limit
        n = f"{len(seeds)} seeds" if len(seeds) > 1 else "the trained model"
        reason = (
            f"{100 * changed:.1f}% of the test predictions change under {inv.transform} "
            f"({'<=' if ok else '>'} {100 * limit:g}%; mean change {mean_change:.3g}, {n}, "
            f"{seeds[0]['n']} examples)"
        )
        if inv.where:
            reason += f"; declared because: {inv.where}"
        if not ok:
            reason += (
                ": the model has not learned an invariance the paper's task has (more data, "
                "augmentation with the transformation, or a symmetric architecture)"
            )
        ev = {"changed": changed, "mean_change": mean_change, "limit": limit, "seeds": len(seeds)}
        checks.append(Check(f"invariant to {inv.transform}", ok, reason, ev))
    return checks
