"""The full stage's preflight: a short real training before the full schedule (issue 22).

A fresh model trains for `stage.full.preflight.steps` optimizer steps (or until its time budget
runs out) on the training loader, with the paper's optimizer at a constant LR, and must then
beat the task's trivial baseline on val beyond chance, unit by unit: the comparison the full
stage makes after training (repro/train/evaluate.py, repro/tasks/base.py: Comparison). A model
that ignores an input, labels shifted against their examples, a training split sorted by label
and not shuffled: each learned nothing usable, and each was found only after the whole schedule.
A FAIL stops the full stage before it trains.

Not a sixth stage: `repro stage full --preflight-only` runs it alone (stage.full.preflight.only,
an override: a run around the milestones, never one)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Any

from repro.config.schema import RunConfig
from repro.tasks.base import Comparison
from repro.verdict import Check

NAME = "preflight"


# ---- judgement (pure) -----------------------------------------------------------------------
def p_value(comp: Comparison) -> float:
    """One-sided p of the paired comparison (normal approximation): the chance that a model no
    better than the baseline shows this mean difference or more."""
    if comp.n < 2:
        return 1.0
    if comp.sd_diff == 0:
        return 0.0 if comp.mean_diff > 0 else 1.0
    z = comp.mean_diff / (comp.sd_diff / math.sqrt(comp.n))
    return 0.5 * math.erfc(z / math.sqrt(2))


def check_preflight(result: dict[str, Any] | None, z: float) -> Check:
    """PASS when the briefly trained model beats the trivial baseline on val by more than z
    standard errors of the paired per-unit difference. `result`: what measure() recorded (None,
    or one marked skipped: not measured)."""
    if result is None or result.get("skipped"):
        why = (result or {}).get("skipped") or "no preflight was recorded for this run"
        return Check.not_measured(NAME, why)
    comp = Comparison(**result["comparison"])
    ok = comp.beyond(z)
    metric, trivial = result["metric"], result["trivial"]
    budget = ""
    if result["out_of_time"]:
        budget = f" of {result['planned_steps']} (its {result['max_seconds']:g} s ran out)"
    numbers = (
        f"val {metric} {_num(result['val'])} vs {_num(result['trivial_val'])} by {trivial}; "
        f"{result['score']} per {result['unit']} {comp.model:.4g} vs {comp.baseline:.4g}, mean "
        f"difference {comp.mean_diff:+.4g} {'>' if ok else '<='} {comp.margin(z):.3g} ({z:g} "
        f"standard errors on {comp.n}), p={p_value(comp):.2g}"
    )
    steps = f"{result['steps']} steps{budget}, {result['seconds']:.1f} s, lr {result['lr']:g}"
    if ok:
        return Check(NAME, True, f"learned in {steps}: {numbers}", dict(result))
    hint = (
        " If the model needs more steps than its time allowed, raise "
        "stage.full.preflight.max_seconds."
        if result["out_of_time"]
        else ""
    )
    return Check(
        NAME,
        False,
        f"learned nothing in {steps} ({numbers}): the full schedule is unlikely to help; does the model "
        "use every input, are the labels aligned with their examples, is the training split "
        f"shuffled?{hint} Nothing was trained further",
        dict(result),
    )


def _num(x: float | None) -> str:
    return "?" if x is None else f"{x:.4g}"


def skipped(cfg: RunConfig) -> dict[str, Any] | None:
    """The record of a preflight the config skips (None: it runs)."""
    if cfg.stage.full.preflight.enabled:
        return None
    return {"skipped": "skipped (stage.full.preflight.enabled: false)"}


# ---- measurement ----------------------------------------------------------------------------
def preflight_lr(cfg: RunConfig) -> float:
    """The paper's optim.lr, else stage.full.preflight.lr."""
    return cfg.optim.lr if cfg.optim.lr is not None else cfg.stage.full.preflight.lr


def train_device(cfg: RunConfig):
    """Where the full stage trains: the first CUDA device when the trainer's accelerator allows
    one and there is one, else the CPU."""
    import torch

    cuda = cfg.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return torch.device("cuda", 0) if cuda else torch.device("cpu")


def train_briefly(cfg: RunConfig, dm, model, lr: float) -> dict[str, Any]:
    """The paper's optimizer at a constant `lr` for preflight.steps steps on the training loader
    (epoch after epoch), or fewer when preflight.max_seconds runs out, on train_device(cfg);
    gradient clipping as the trainer's. Returns steps, seconds, whether time ran out, the first
    and last losses; the model is back on the CPU."""
    import torch

    from repro.config.schema import ScheduleConfig
    from repro.train.module import TaskModule

    p, clip = cfg.stage.full.preflight, cfg.trainer.gradient_clip_val
    device = train_device(cfg)
    module = TaskModule(model.to(device), dm.task, cfg.optim, ScheduleConfig("constant"), lr)
    opt = module.configure_optimizers()
    params = [q for q in model.parameters() if q.requires_grad]
    model.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    out_of_time = False
    while len(losses) < p.steps and not out_of_time:
        for batch in dm.train_dataloader():
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = dm.task.loss(module(batch), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            losses.append(loss.item())
            out_of_time = time.perf_counter() - t0 > p.max_seconds
            if len(losses) >= p.steps or out_of_time:
                break
    model.cpu()  # evaluated on the CPU (versus_trivial_on_val), as the baseline is
    return {
        "device": str(device),
        "planned_steps": p.steps,
        "max_seconds": p.max_seconds,
        "steps": len(losses),
        "seconds": round(time.perf_counter() - t0, 2),
        "out_of_time": out_of_time,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
    }


def versus_trivial_on_val(model, dm, n: int, seed: int) -> dict[str, Any] | None:
    """The model's val metrics and the trivial baseline's (fitted on train) on `n` val examples
    drawn with `seed` (all when fewer; drawn, not the first n: a val file sorted by label would
    give one class), and the paired per-unit comparison; None when the task has no baseline."""
    import random

    from torch.utils.data import DataLoader, Subset

    from repro.tasks.base import compare_units
    from repro.train.evaluate import model_forward, outputs, train_labels

    task = dm.task
    baseline = task.fit_baseline(train_labels(dm))
    ds = dm.datasets["val"]
    if baseline is None or len(ds) < 2:
        return None
    sub = Subset(ds, sorted(random.Random(seed).sample(range(len(ds)), min(n, len(ds)))))

    def loader():
        return DataLoader(sub, batch_size=dm.cfg.eval_batch, collate_fn=dm.collate)

    mine, ours = outputs(model_forward(model), loader(), task, metrics=True)
    theirs, base = outputs(baseline, loader(), task, metrics=True)
    comp = compare_units(task.unit_scores(mine), task.unit_scores(theirs))
    return {"comparison": asdict(comp), "ours": ours, "base": base}


def measure(ctx, seed: int) -> tuple[dict[str, Any], Any]:
    """Train a fresh model of `seed` briefly and compare it with the trivial baseline on val.
    Returns (the record, the datamodule: set up, handed on to the seed's full training)."""
    cfg = ctx.cfg
    dm = ctx.build_datamodule(seed)
    dm.setup("fit")
    task = dm.task
    model = ctx.build_model(dm, seed)
    lr = preflight_lr(cfg)
    ctx.console.print(
        f"[bold]full[/bold]: preflight, {cfg.stage.full.preflight.steps} steps at lr {lr:g} "
        f"(at most {cfg.stage.full.preflight.max_seconds:g} s), then val against "
        f"{task.baseline_name}"
    )
    trained = train_briefly(cfg, dm, model, lr)
    versus = versus_trivial_on_val(model, dm, cfg.stage.full.preflight.val_examples, seed)
    if versus is None:
        why = f"the {task.name} task has no trivial baseline, or val has fewer than 2 examples"
        return {"skipped": why}, dm
    primary = task.primary
    record = trained | {
        "lr": lr,
        "seed": seed,
        "metric": primary,
        "val": versus["ours"].get(primary),
        "trivial": task.baseline_name,
        "trivial_val": versus["base"].get(primary),
        "unit": task.unit,
        "score": task.unit_score,
        "comparison": versus["comparison"],
    }
    return record, dm
