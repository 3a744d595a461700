"""The overfit gate: can the model drive *training* loss to ~0 on a tiny fixed subset?"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

from repro.data.batch import split_batch
from repro.gates.metrics import OverfitMetrics
from repro.verdict import Check, Verdict


# ---- judgement (pure) -----------------------------------------------------------------------
def check_overfit(
    losses: list[float],
    accs: list[float],
    loss_ratio: float = 0.01,
    accept_full_accuracy: bool = True,
) -> Check:
    """Pass when loss <= loss_ratio * initial loss (or accuracy hits 100%); else a diagnosis."""
    if not losses:
        return Check("memorise a fixed subset", False, "no training steps were run", {})
    first, last, best = losses[0], losses[-1], min(losses)
    threshold = loss_ratio * first
    ev = {
        "initial_loss": first,
        "final_loss": last,
        "min_loss": best,
        "threshold": threshold,
        "steps": len(losses),
        "final_acc": accs[-1] if accs else None,
    }
    bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
    if bad is not None:
        return Check(
            "memorise a fixed subset",
            False,
            f"loss became {losses[bad]} at step {bad} (from {first:.4f}): lower the learning rate, "
            "look for log(0) or division by zero",
            ev,
        )
    hit_loss = next((i for i, v in enumerate(losses) if v <= threshold), None)
    hit_acc = (
        next((i for i, a in enumerate(accs) if a >= 1.0), None) if accept_full_accuracy else None
    )
    hits = [h for h in (hit_loss, hit_acc) if h is not None]
    if hits:
        step = min(hits)
        how = (
            f"loss {losses[step]:.4g} <= {loss_ratio:g} x initial {first:.4f}"
            if step == hit_loss
            else f"100% accuracy on the subset (loss {losses[step]:.4g}, initial {first:.4f})"
        )
        return Check(
            "memorise a fixed subset",
            True,
            f"{how} at step {step} of {len(losses)}",
            ev | {"step": step},
        )
    if last >= first:
        hint = "loss rose or stayed: learning rate too high, or the loss/labels are wired wrong"
    elif best > 0.9 * first:
        hint = (
            "loss barely moved: gradients may not reach the model, the learning rate may be too low, "
            "or inputs and labels are misaligned"
        )
    else:
        hint = "loss fell but not far enough: more steps, a higher learning rate, or more capacity"
    acc_desc = f", accuracy {100 * accs[-1]:.1f}%" if accs else ""
    return Check(
        "memorise a fixed subset",
        False,
        f"loss {first:.4f} -> {last:.4f} (best {best:.4f}) after {len(losses)} steps, threshold "
        f"{threshold:.4g}{acc_desc}; {hint}",
        ev,
    )


# ---- measurement ----------------------------------------------------------------------------
def disable_dropout(model) -> dict[str, float]:
    """Set every nn.Dropout's p to 0; returns the old values to restore."""
    from torch import nn

    old = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            old[name] = m.p
            m.p = 0.0
    return old


def train_on_batch(
    model,
    batch: dict,
    steps: int,
    lr: float,
    loss_ratio: float,
    accept_full_accuracy: bool,
    progress=None,
) -> dict[str, Any]:
    """Adam on one fixed batch; records the loss/accuracy of those examples before each step."""
    import torch
    import torch.nn.functional as F

    inputs, y = split_batch(batch)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    model.train()
    losses, accs, step_times = [], [], []
    t0 = time.perf_counter()
    for step in range(steps):
        t_step = time.perf_counter()
        logits = model(**inputs)
        loss = F.cross_entropy(logits, y)
        losses.append(loss.item())
        accs.append(float((logits.argmax(-1) == y).float().mean()))
        if progress:
            progress(step, losses[-1], accs[-1])
        if (
            not math.isfinite(losses[-1])
            or losses[-1] <= loss_ratio * losses[0]
            or (accept_full_accuracy and accs[-1] >= 1.0)
        ):
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step_times.append(time.perf_counter() - t_step)
    elapsed = time.perf_counter() - t0
    # the median full step (forward + backward + Adam), not the mean: the first steps pay for
    # warm-up, and on 2 busy cores OpenMP spin-waits make single steps 10x slower (design.md)
    median = statistics.median(step_times) if step_times else elapsed / max(len(losses), 1)
    return {
        "losses": losses,
        "accs": accs,
        "seconds": elapsed,
        "steps_per_s": 1.0 / max(median, 1e-9),
        "mean_steps_per_s": len(losses) / max(elapsed, 1e-9),
    }


def plot_curve(losses: list[float], threshold: float, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(len(losses)), losses, label="training loss (fixed subset)")
    ax.axhline(threshold, color="tab:red", ls="--", label=f"threshold {threshold:.3g}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(ctx) -> Verdict:
    """Train the freshly built model on one fixed batch of training examples; judge the curve."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    c = ctx.cfg.stage.overfit
    dm = ctx.build_datamodule()
    dm.setup("fit")
    batch = dm.fixed_batch("train", c.examples)
    model = ctx.build_model(dm)
    if c.disable_dropout:
        disable_dropout(model)
    lr = c.lr or ctx.cfg.optim.lr or c.fallback_lr
    columns = (
        TextColumn("overfit"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} {task.fields[info]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=ctx.console, transient=True) as prog:
        task = prog.add_task("overfit", total=c.max_steps, info="")

        def progress(step, loss, acc):
            prog.update(task, completed=step + 1, info=f"loss {loss:.4f} acc {100 * acc:.0f}%")

        out = train_on_batch(
            model, batch, c.max_steps, lr, c.loss_ratio, c.accept_full_accuracy, progress
        )
    check = check_overfit(out["losses"], out["accs"], c.loss_ratio, c.accept_full_accuracy)
    losses = out["losses"]
    metrics = OverfitMetrics(
        initial_loss=losses[0] if losses else None,
        final_loss=losses[-1] if losses else None,
        min_loss=min(losses) if losses else None,
        steps=len(losses),
        passed_at_step=check.evidence.get("step"),
        steps_per_s=out["steps_per_s"],
        batch_size=int(batch["label"].shape[0]),
        lr=float(lr),
        speed=_speed(ctx, model, dm, lr) if check.passed else None,
    )
    evidence = check.evidence | {
        "seconds": out["seconds"],
        "dropout_disabled": c.disable_dropout,
        "max_steps": c.max_steps,
    }
    if ctx.run is not None and losses:
        plot_curve(losses, check.evidence["threshold"], ctx.run.path("overfit_curve.png"))
        rows = "".join(
            f"{i},{loss},{acc}\n"
            for i, (loss, acc) in enumerate(zip(losses, out["accs"], strict=True))
        )
        ctx.run.write_text("overfit_losses.csv", "step,loss,acc\n" + rows)
        evidence["plot"] = "overfit_curve.png"
    return Verdict.from_checks("overfit", [check], evidence, metrics)


def _speed(ctx, model, dm, lr: float):
    """Training and evaluation steps timed through Lightning on the real loaders: the full
    stage's forecast uses them (repro/speed.py). Run after the judgement, on the same model."""
    from repro.speed import measure_speed
    from repro.train.fit import quiet_lightning
    from repro.train.module import ClassificationModule

    quiet_lightning()
    module = ClassificationModule(model, ctx.cfg.optim, ctx.cfg.schedule, lr)
    return measure_speed(module, dm, ctx.cfg.stage.overfit.speed_steps, ctx.cfg.trainer.accelerator)
