"""The overfit gate: can the model drive *training* loss to ~0 on a tiny fixed subset?

The judgement (`check_overfit`) is a pure function of the measured curve; `train_on_batch` trains
and stops early when the gate is decided (passed, diverged, stuck above its start, probabilities
for outputs); `run` writes the curve into the run directory as it goes, so a run stopped by
Ctrl-C keeps its partial curve, and re-checks on the trained model that an example's output does
not depend on its batch-mates' padding (a bug the untrained model may hide: issue 13).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from repro.config.schema import OverfitStage
from repro.context import StageContext
from repro.data.batch import batch_size, model_inputs
from repro.gates.metrics import OverfitMetrics
from repro.verdict import Check, Verdict

NAME = "memorise a fixed subset"


# ---- judgement (pure) -----------------------------------------------------------------------
@dataclass(frozen=True)
class Stops:
    """When training on the subset stops early, besides passing (conf/stage/overfit.yaml).

    diverge_factor/diverge_window: the median of the last `window` losses above factor x the
    initial loss. stall_steps: no loss below the initial one for that many steps. probability_atol:
    outputs within this of [0, 1] whose rows sum to 1 within it are probabilities. floor_rtol: a
    best loss within this fraction above the probability floor counts as stalled on it."""

    diverge_factor: float
    diverge_window: int
    stall_steps: int
    probability_atol: float
    floor_rtol: float

    @classmethod
    def of(cls, c: OverfitStage) -> Stops:
        return cls(
            c.diverge_factor, c.diverge_window, c.stall_steps, c.probability_atol, c.floor_rtol
        )


def diverging(losses: list[float], factor: float, window: int) -> bool:
    """The median of the last `window` losses is above factor x the initial loss (a median, so
    one spike of a healthy run does not count: BiMPM at its paper LR spiked to 1.7x at step 1)."""
    if len(losses) < window:
        return False
    return statistics.median(losses[-window:]) > factor * losses[0]


def stalled(losses: list[float], steps: int) -> bool:
    """No loss of the last `steps` steps went below the initial loss."""
    return len(losses) > steps and min(losses[-steps:]) >= losses[0]


def probability_floor(num_classes: int) -> float:
    """The lowest cross-entropy of outputs in [0, 1] fed as logits: one-hot probabilities,
    -ln(e / (e + C - 1)) (0.3133 for C = 2, 0.5514 for C = 3)."""
    return -math.log(math.e / (math.e + num_classes - 1))


def output_kind(out: dict[str, float] | None, atol: float) -> str | None:
    """'probabilities' (in [0, 1], rows summing to 1), 'bounded' (in [0, 1]) or None (logits)."""
    if not out or not (out["min"] >= -atol and out["max"] <= 1 + atol):
        return None
    return "probabilities" if out["row_sum_gap"] <= atol else "bounded"


def check_overfit(
    losses: list[float],
    accs: list[float],
    loss_ratio: float = 0.01,
    accept_full_accuracy: bool = True,
    *,
    stops: Stops | None = None,
    num_classes: int | None = None,
    outputs: dict[str, float] | None = None,
    lr: float | None = None,
    floor: float = 0.0,
) -> Check:
    """Pass when loss <= loss_ratio * initial loss (or accuracy hits 100%); else a diagnosis.

    accs: the task's progress per step (accuracy on the subset), empty for a task without one.
    stops: the early-stop rules (divergence, stall, probability outputs) judged here too;
    num_classes and outputs (min, max, row_sum_gap of the last logits; None when the task's
    outputs are not logits) let the diagnosis name probability outputs and the cross-entropy
    floor they stall on; lr goes into the reasons. floor: the loss no model can go below on
    this batch (the task's overfit_floor: a language model cannot know which of its sequences
    it reads before their tokens tell), added to the threshold."""
    if not losses:
        return Check(NAME, False, "no training steps were run", {})
    first, last, best = losses[0], losses[-1], min(losses)
    threshold = floor + loss_ratio * first
    ev = {
        "initial_loss": first,
        "final_loss": last,
        "min_loss": best,
        "threshold": threshold,
        "floor": floor,
        "steps": len(losses),
        "final_acc": accs[-1] if accs else None,
        "lr": lr,
    }
    early = _early_failure(losses, stops, num_classes, outputs, lr)
    if early is not None:
        return Check(NAME, False, early, ev)
    hit = _passed_at(losses, accs, threshold, accept_full_accuracy)
    if hit is not None:
        plus = f"the floor {floor:.4g} + " if floor else ""
        how = (
            f"loss {losses[hit]:.4g} <= {plus}{loss_ratio:g} x initial {first:.4f}"
            if losses[hit] <= threshold
            else f"100% accuracy on the subset (loss {losses[hit]:.4g}, initial {first:.4f})"
        )
        return Check(NAME, True, f"{how} at step {hit} of {len(losses)}", ev | {"step": hit})
    acc_desc = f", accuracy {100 * accs[-1]:.1f}%" if accs else ""
    return Check(
        NAME,
        False,
        f"loss {first:.4f} -> {last:.4f} (best {best:.4f}) after {len(losses)} steps, threshold "
        f"{threshold:.4g}{acc_desc}; {_hint(losses, stops, num_classes, outputs, lr)}",
        ev,
    )


def _passed_at(
    losses: list[float], accs: list[float], threshold: float, accept_full_accuracy: bool
) -> int | None:
    hit_loss = next((i for i, v in enumerate(losses) if v <= threshold), None)
    hit_acc = (
        next((i for i, a in enumerate(accs) if a >= 1.0), None) if accept_full_accuracy else None
    )
    hits = [h for h in (hit_loss, hit_acc) if h is not None]
    return min(hits) if hits else None


def _lr(lr: float | None) -> str:
    return f" (lr {lr:g})" if lr is not None else ""


def _early_failure(losses, stops, num_classes, outputs, lr) -> str | None:
    """The reason when the curve failed before it could pass: a non-finite loss, divergence,
    probability outputs; None otherwise."""
    first = losses[0]
    bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
    if bad is not None:
        return (
            f"diverged: loss became {losses[bad]} at step {bad} (from {first:.4f}): lower the "
            f"learning rate{_lr(lr)}, look for log(0) or division by zero"
        )
    if stops is None:
        return None
    w, f = stops.diverge_window, stops.diverge_factor
    at = next((i for i in range(w, len(losses) + 1) if diverging(losses[:i], f, w)), None)
    if at is not None:
        median = statistics.median(losses[at - w : at])
        return (
            f"diverged: the median loss of steps {at - w}-{at - 1} is {median:.4g}, above "
            f"{f:g} x the initial {first:.4f} (max {max(losses):.4g}); training stopped at step "
            f"{at - 1}: lower the learning rate{_lr(lr)}"
        )
    if output_kind(outputs, stops.probability_atol) == "probabilities":
        return _probabilities(losses, num_classes, outputs)
    return None


def _probabilities(losses: list[float], num_classes: int | None, outputs) -> str:
    floor = (
        f"; cross-entropy cannot go below {probability_floor(num_classes):.4f} on probabilities "
        f"(C = {num_classes})"
        if num_classes
        else ""
    )
    return (
        f"the model outputs probabilities (outputs in [{outputs['min']:.3g}, "
        f"{outputs['max']:.3g}], rows summing to 1 within {outputs['row_sum_gap']:.2g}); "
        f"cross-entropy expects logits: drop the softmax (loss {losses[0]:.4f} -> "
        f"{losses[-1]:.4f}{floor})"
    )


def _hint(losses, stops, num_classes, outputs, lr) -> str:
    """What a curve that did not reach the threshold suggests."""
    first, last, best = losses[0], losses[-1], min(losses)
    if num_classes and stops is not None:
        floor = probability_floor(num_classes)
        kind = output_kind(outputs, stops.probability_atol)
        at_floor = floor * (1 - stops.floor_rtol) <= best <= floor * (1 + stops.floor_rtol)
        if kind is not None or at_floor:
            seen = (
                f"every output lies in [{outputs['min']:.3g}, {outputs['max']:.3g}]"
                if kind
                else f"the best loss {best:.4f} sits on it"
            )
            return (
                f"stalled at the cross-entropy floor of outputs in [0, 1], -ln(e/(e+C-1)) = "
                f"{floor:.4f} for C = {num_classes}, and {seen}: the model outputs probabilities "
                "(a softmax or sigmoid at the end); cross-entropy expects logits: drop it"
            )
    if stops is not None and stalled(losses, stops.stall_steps):
        return (
            f"no loss in the last {stops.stall_steps} steps went below the initial {first:.4f}: "
            f"the learning rate{_lr(lr)} is too high, or the loss/labels are wired wrong"
        )
    if last >= first:
        return "loss rose or stayed: learning rate too high, or the loss/labels are wired wrong"
    if best > 0.9 * first:
        return (
            "loss barely moved: gradients may not reach the model, the learning rate may be too "
            "low, or inputs and labels are misaligned"
        )
    return "loss fell but not far enough: more steps, a higher learning rate, or more capacity"


# ---- measurement ----------------------------------------------------------------------------
def overfit_lr(cfg) -> float:
    """The learning rate of the overfit gate: the paper's (optim.lr), else stage.overfit.lr."""
    return cfg.optim.lr if cfg.optim.lr is not None else cfg.stage.overfit.lr


def disable_dropout(model) -> dict[str, float]:
    """Set every nn.Dropout's p to 0; returns the old values to restore."""
    from torch import nn

    old = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            old[name] = m.p
            m.p = 0.0
    return old


@dataclass
class Curve:
    """The curve as it is measured (loss and accuracy of the subset before each step), why
    training stopped, and the range of the last outputs; kept by the caller, so an interrupted
    run still has what was measured."""

    losses: list[float] = field(default_factory=list)
    accs: list[float] = field(default_factory=list)
    outputs: dict[str, float] | None = None
    num_classes: int | None = None
    floor: float = 0.0  # the loss no model can go below on the batch (Task.overfit_floor)
    stopped: str | None = None  # "passed" | "non-finite" | "diverged" | "stalled" | "probabilities"


def output_range(logits) -> dict[str, float]:
    """min, max of the outputs, and max |row sum - 1| (probabilities sum to 1)."""
    return {
        "min": float(logits.min()),
        "max": float(logits.max()),
        "row_sum_gap": float((logits.sum(-1) - 1).abs().max()),
    }


def _stop_reason(curve: Curve, loss_ratio, accept_full_accuracy, stops: Stops | None):
    losses, accs = curve.losses, curve.accs
    if not math.isfinite(losses[-1]):
        return "non-finite"
    full = accept_full_accuracy and bool(accs) and accs[-1] >= 1.0
    if losses[-1] <= curve.floor + loss_ratio * losses[0] or full:
        return "passed"
    if stops is None:
        return None
    if output_kind(curve.outputs, stops.probability_atol) == "probabilities":
        return "probabilities"
    if diverging(losses, stops.diverge_factor, stops.diverge_window):
        return "diverged"
    return "stalled" if stalled(losses, stops.stall_steps) else None


def train_on_batch(
    model,
    task,
    batch: dict,
    steps: int,
    lr: float,
    loss_ratio: float,
    accept_full_accuracy: bool,
    progress: Callable[[int, float, float], None] | None = None,
    stops: Stops | None = None,
    curve: Curve | None = None,
) -> dict[str, Any]:
    """Adam on one fixed batch with the task's loss; records the loss (and the task's progress:
    accuracy) of those examples before each step into `curve` (a fresh one unless given) and
    stops as soon as the gate is decided (_stop_reason)."""
    import torch

    curve = Curve() if curve is None else curve
    curve.floor = task.overfit_floor(batch)
    inputs = model_inputs(batch)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    model.train()
    step_times = []
    t0 = time.perf_counter()
    for step in range(steps):
        t_step = time.perf_counter()
        logits = model(**inputs)
        loss = task.loss(logits, batch)
        curve.losses.append(loss.item())
        with torch.no_grad():
            acc = task.step_progress(logits, batch)
            if acc is not None:
                curve.accs.append(acc)
            if task.outputs_logits(logits):
                curve.outputs, curve.num_classes = output_range(logits), logits.shape[-1]
        if progress:
            progress(step, curve.losses[-1], acc)
        curve.stopped = _stop_reason(curve, loss_ratio, accept_full_accuracy, stops)
        if curve.stopped:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step_times.append(time.perf_counter() - t_step)
    elapsed = time.perf_counter() - t0
    # the median full step (forward + backward + Adam), not the mean: the first steps pay for
    # warm-up, and on 2 busy cores OpenMP spin-waits make single steps 10x slower (design.md)
    median = statistics.median(step_times) if step_times else elapsed / max(len(curve.losses), 1)
    return {
        "losses": curve.losses,
        "accs": curve.accs,
        "seconds": elapsed,
        "steps_per_s": 1.0 / max(median, 1e-9),
        "mean_steps_per_s": len(curve.losses) / max(elapsed, 1e-9),
        "stopped": curve.stopped,
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
    ax.set_ylabel("training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- the gate -------------------------------------------------------------------------------
class CurveFile:
    """overfit_losses.csv written one line per step (flushed), so the curve survives Ctrl-C and
    kill -9; `close` also draws overfit_curve.png from what was measured."""

    def __init__(self, run, loss_ratio: float):
        self.run, self.loss_ratio, self.floor = run, loss_ratio, 0.0
        self.file = None
        if run is not None:
            self.file = open(run.path("overfit_losses.csv"), "w")  # noqa: SIM115 (closed in close)
            self.file.write("step,loss,acc\n")
            self.file.flush()

    def add(self, step: int, loss: float, acc: float | None) -> None:
        if self.file is not None:
            self.file.write(f"{step},{loss},{'' if acc is None else acc}\n")
            self.file.flush()

    def close(self, losses: list[float]) -> str | None:
        """Close the CSV and plot the curve; the plot's file name (None: nothing to plot)."""
        if self.file is None:
            return None
        self.file.close()
        finite = [v for v in losses if math.isfinite(v)]
        if not finite:
            return None
        threshold = self.floor + self.loss_ratio * losses[0]
        plot_curve(losses, threshold, self.run.path("overfit_curve.png"))
        return "overfit_curve.png"


def run(ctx: StageContext) -> Verdict:
    """Train the freshly built model on one fixed batch of training examples; judge the curve."""
    c = ctx.cfg.stage.overfit
    dm = ctx.build_datamodule()
    dm.setup("fit")
    batch = dm.fixed_batch("train", c.examples)
    task = dm.task
    model = ctx.build_model(dm)
    if c.disable_dropout:
        disable_dropout(model)
    lr = overfit_lr(ctx.cfg)
    curve, stops = Curve(), Stops.of(c)
    out, plot = None, None
    file = CurveFile(ctx.run, c.loss_ratio)
    try:
        out = _train_with_progress(ctx, model, task, batch, lr, c, stops, curve, file)
    finally:  # Ctrl-C included: the partial curve stays in the run directory
        file.floor = curve.floor
        plot = file.close(curve.losses)
    check = check_overfit(
        curve.losses,
        curve.accs,
        c.loss_ratio,
        c.accept_full_accuracy,
        stops=stops,
        num_classes=curve.num_classes,
        outputs=curve.outputs,
        lr=float(lr),
        floor=curve.floor,
    )
    checks = [check] + _trained_model_checks(ctx, model, batch, curve)
    # after the checks: the speed measurement trains the model further
    speed = _speed(ctx, model, dm, lr) if all(k.passed or not k.measured for k in checks) else None
    evidence = check.evidence | {
        "seconds": out["seconds"],
        "dropout_disabled": c.disable_dropout,
        "max_steps": c.max_steps,
        "stopped": curve.stopped,
    }
    if plot:
        evidence["plot"] = plot
    metrics = _metrics(check, out, batch, lr, speed)
    return Verdict.from_checks("overfit", checks, evidence, metrics)


def _train_with_progress(ctx, model, task, batch, lr, c: OverfitStage, stops, curve, file) -> dict:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("overfit"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} {task.fields[info]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=ctx.console, transient=True) as prog:
        bar = prog.add_task("overfit", total=c.max_steps, info="")

        def progress(step, loss, acc):
            file.add(step, loss, acc)
            info = f"loss {loss:.4f}" + (f" acc {100 * acc:.0f}%" if acc is not None else "")
            prog.update(bar, completed=step + 1, info=info)

        return train_on_batch(
            model,
            task,
            batch,
            c.max_steps,
            lr,
            c.loss_ratio,
            c.accept_full_accuracy,
            progress,
            stops,
            curve,
        )


def _trained_model_checks(ctx, model, batch, curve: Curve) -> list[Check]:
    """After training, an example's logits alone (trimmed to its length) vs inside the batch, as
    in the shapes gate: a padding bug that the zero-bias init hides shows once the weights have
    moved (measured on BiMPM with unmasked max-pooling: 1.2e-5 at init, 1.7e-3 after 10 steps)."""
    from repro.gates.shapes import check_alone_vs_batch, measure_alone_vs_batch

    if not curve.losses or not math.isfinite(curve.losses[-1]):
        return []
    s = ctx.cfg.stage.shapes
    m = measure_alone_vs_batch(model, batch, s.alone_examples)
    check = check_alone_vs_batch(m, s.roundoff_eps)
    check.name = "alone_vs_batch after training"
    return [check]


def _metrics(check: Check, out: dict | None, batch: dict, lr: float, speed) -> OverfitMetrics:
    losses = out["losses"] if out else []
    return OverfitMetrics(
        initial_loss=losses[0] if losses else None,
        final_loss=losses[-1] if losses else None,
        min_loss=min(losses) if losses else None,
        steps=len(losses),
        passed_at_step=check.evidence.get("step"),
        steps_per_s=out["steps_per_s"] if out else 0.0,
        batch_size=batch_size(batch),
        lr=float(lr),
        speed=speed,
    )


def _speed(ctx, model, dm, lr: float):
    """Training and evaluation steps timed through Lightning on the real loaders: the full
    stage's forecast uses them (repro/speed.py). Run after the judgement, on the same model."""
    from repro.speed import measure_speed
    from repro.train.fit import quiet_lightning
    from repro.train.module import TaskModule

    quiet_lightning()
    t0 = time.perf_counter()  # a fresh build, as each seed of the full stage does (not warm)
    fresh = ctx.build_datamodule(fresh=True)
    fresh.setup("fit")
    ctx.build_model(fresh)
    build_s = time.perf_counter() - t0
    module = TaskModule(model, dm.task, ctx.cfg.optim, ctx.cfg.schedule, lr)
    c = ctx.cfg
    return measure_speed(module, dm, c.stage.overfit.speed_steps, c.trainer.accelerator, build_s)
