"""The LR finder where a paper gives no learning rate: Lightning's range test, our pick of the
steepest descent, and a plot that marks the LR actually used."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.config.schema import LRFinderConfig, TrainerConfig


@dataclass(frozen=True)
class LRFinderResult:
    lr: float  # the LR training uses (1cycle's max LR)
    note: str  # how it was chosen
    num_training: int
    lightning_suggestion: float | None  # Lightning's own pick, for comparison
    plot: str | None = "lr_finder.png"


def find_lr(
    module, dm, out_dir: Path, cfg: LRFinderConfig, trainer: TrainerConfig
) -> LRFinderResult:
    """Run the range test on a separate single-device trainer; save lr_finder.png in out_dir."""
    import pytorch_lightning as pl
    from pytorch_lightning.tuner import Tuner

    # Room for num_training steps: lr_find is cut short by max_epochs otherwise (design.md). One
    # device: Lightning's finder does not run under distributed strategies; the DDP ranks read
    # the chosen LR from the run directory instead (repro/train/fit.py).
    finder_trainer = pl.Trainer(
        max_epochs=10_000,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator=trainer.accelerator,
        devices=1,
        default_root_dir=str(out_dir),
    )
    try:
        finder = Tuner(finder_trainer).lr_find(
            module,
            datamodule=dm,
            min_lr=cfg.min_lr,
            max_lr=cfg.max_lr,
            num_training=cfg.num_training,
            attr_name="lr",
            update_attr=False,
        )
    finally:  # Lightning removes its checkpoint only when the range test ends normally
        remove_finder_checkpoints(out_dir)
    lrs, losses = finder.results["lr"], finder.results["loss"]
    picked = steepest_descent_lr(lrs, losses)
    if picked is None:
        lr, note = (
            cfg.fallback_lr,
            "the finder's curve has no descending part: lr_finder.fallback_lr",
        )
    else:
        lr, note = picked, "steepest descent of the finder's loss vs log10(lr)"
    plot_finder(lrs, losses, lr, finder.suggestion(), out_dir / "lr_finder.png")
    return LRFinderResult(float(lr), note, cfg.num_training, finder.suggestion())


FINDER_CHECKPOINTS = ".lr_find_*.ckpt"  # Lightning 2.6.6: the weights it restores after the test


def remove_finder_checkpoints(out_dir: Path) -> list[str]:
    """Remove the LR finder's temporary checkpoints from `out_dir`: the one it leaves on Ctrl-C or
    an error (removed on the way out) or a kill -9 (removed by the next run there, a --resume)."""
    removed = []
    for path in sorted(Path(out_dir).glob(FINDER_CHECKPOINTS)):
        path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed


def steepest_descent_lr(
    lrs: list[float], losses: list[float], skip_begin: int = 10, skip_end: int = 1
) -> float | None:
    """The LR where the finder's loss falls fastest per decade of LR (the rule Lightning documents).

    We compute it ourselves: on the toy paper Lightning 2.6.6's `suggestion()` returned 8.3e-5, a point
    on the flat part of its own curve, while the steepest descent of that curve is near 1e-2.
    """
    import numpy as np

    lr = np.asarray(lrs[skip_begin : len(lrs) - skip_end], dtype=float)
    loss = np.asarray(losses[skip_begin : len(losses) - skip_end], dtype=float)
    ok = np.isfinite(loss) & (lr > 0)
    lr, loss = lr[ok], loss[ok]
    if len(loss) < 3:
        return None
    slope = np.gradient(loss, np.log10(lr))
    i = int(np.argmin(slope))
    return float(lr[i]) if slope[i] < 0 else None


def plot_finder(
    lrs: list[float], losses: list[float], used: float, lightning: Any, path: Path
) -> None:
    """Loss vs LR (log x), the LR used marked in red and Lightning's suggestion in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(lrs, losses, color="tab:blue", label="training loss")
    ax.axvline(used, color="tab:red", label=f"used: {used:.3g}")
    if lightning:
        ax.axvline(
            float(lightning),
            color="grey",
            ls=":",
            label=f"Lightning's pick: {float(lightning):.3g}",
        )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
