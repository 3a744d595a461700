"""One full training run: LR finder (when the paper gives no LR), fit with early stopping, test."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from repro.context import StageContext, seed_everything
from repro.errors import ReproError


def quiet_lightning() -> None:
    """Lightning's banners (GPU available, tips) drown the gate's own output."""
    import logging
    import warnings

    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # CSVLogger warns that it will delete "previous log files" in the run directory: it only
    # rewrites its own metrics.csv (kept across resumes by keep_rows_before_resume), never our files
    warnings.filterwarnings("ignore", message=".*Experiment logs directory.*")


def _loggers(ctx: StageContext, out_dir: Path, name: str):
    from pytorch_lightning.loggers import CSVLogger

    # flushed as often as rows are logged: rows written before a kill survive for --resume
    every = int(ctx.resolved.get("trainer.log_every_n_steps", 10))
    loggers = [
        CSVLogger(save_dir=str(out_dir), name="", version="", flush_logs_every_n_steps=every)
    ]
    if ctx.resolved.get("logger.wandb"):
        import os

        from pytorch_lightning.loggers import WandbLogger

        # offline unless the user has logged in (an API key in the env or ~/.netrc)
        logged_in = bool(os.environ.get("WANDB_API_KEY")) or (Path.home() / ".netrc").exists()
        loggers.append(
            WandbLogger(
                project=ctx.resolved.get("logger.project", "repro"),
                name=name,
                save_dir=str(out_dir),
                offline=not logged_in,
            )
        )
    return loggers


def find_lr(ctx: StageContext, module, dm, out_dir: Path) -> dict[str, Any]:
    """Lightning's LR finder; its suggestion becomes 1cycle's max LR. Plot saved as lr_finder.png."""
    import pytorch_lightning as pl
    from pytorch_lightning.tuner import Tuner

    cfg = ctx.resolved.section("lr_finder")
    n = int(cfg.get("num_training", 100))
    # a separate trainer with room for n steps: lr_find is cut short by max_epochs otherwise (design.md)
    trainer = pl.Trainer(
        max_epochs=10_000,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator=ctx.resolved.get("trainer.accelerator", "auto"),
        devices=ctx.resolved.get("trainer.devices", 1),
        default_root_dir=str(out_dir),
    )
    finder = Tuner(trainer).lr_find(
        module,
        datamodule=dm,
        min_lr=float(cfg.get("min_lr", 1e-6)),
        max_lr=float(cfg.get("max_lr", 1.0)),
        num_training=n,
        attr_name="lr",
        update_attr=False,
    )
    lightning_suggestion = finder.suggestion()
    suggestion = steepest_descent_lr(finder.results["lr"], finder.results["loss"])
    if suggestion is None:
        suggestion = 1e-3
        note = "the finder's curve has no descending part; fell back to 1e-3"
    else:
        note = "LR finder: steepest descent of the smoothed loss vs log10(lr)"
    import matplotlib

    matplotlib.use("Agg")
    fig = finder.plot(suggest=True)
    fig.savefig(out_dir / "lr_finder.png", dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return {
        "lr": float(suggestion),
        "note": note,
        "plot": "lr_finder.png",
        "num_training": n,
        "lightning_suggestion": lightning_suggestion,
    }


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


def plot_curves(metrics_csv: Path, path: Path) -> None:
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(metrics_csv.open()))
    series: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        for key in ("train/loss_epoch", "val/loss", "val/acc"):
            if r.get(key):
                series.setdefault(key, []).append((float(r["epoch"]), float(r[key])))
    if not series:
        return
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key in ("train/loss_epoch", "val/loss"):
        if key in series:
            a1.plot(*zip(*series[key], strict=True), marker="o", label=key.replace("_epoch", ""))
    a1.set_xlabel("epoch")
    a1.set_ylabel("loss")
    a1.legend()
    if "val/acc" in series:
        a2.plot(
            *zip(*series["val/acc"], strict=True), marker="o", color="tab:green", label="val/acc"
        )
        a2.set_xlabel("epoch")
        a2.set_ylabel("accuracy %")
        a2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _read_csv(path: Path) -> list[dict[str, str]]:
    import csv

    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    import csv

    keys = sorted({k for r in rows for k in r})
    keys = [k for k in ("epoch", "step") if k in keys] + [
        k for k in keys if k not in ("epoch", "step")
    ]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def _epoch_of(row: dict[str, str]) -> float:
    try:
        return float(row.get("epoch") or "nan")
    except ValueError:
        return float("nan")


def keep_rows_before_resume(out_dir: Path, ckpt_epoch: int) -> None:
    """Lightning's CSVLogger deletes an existing metrics.csv when it starts (lightning_fabric
    csv_logs._check_log_dir_exists, Lightning 2.6.6): move the rows up to the checkpoint's epoch
    aside, to be put back in front of the resumed rows by `merge_resumed_rows`."""
    aside = out_dir / "metrics.before_resume.csv"
    rows = _read_csv(aside) + _read_csv(out_dir / "metrics.csv")
    kept = [r for r in rows if not _epoch_of(r) > ckpt_epoch]  # NaN (no epoch) is kept
    _write_csv(aside, kept)
    (out_dir / "metrics.csv").unlink(missing_ok=True)


def merge_resumed_rows(out_dir: Path) -> None:
    aside = out_dir / "metrics.before_resume.csv"
    if not aside.exists():
        return
    _write_csv(out_dir / "metrics.csv", _read_csv(aside) + _read_csv(out_dir / "metrics.csv"))
    aside.unlink()


def checkpoint_epoch(path: Path) -> int:
    """The epoch stored in a Lightning checkpoint; a clear error if the file is unreadable
    (a run killed while Lightning was writing it leaves a truncated file)."""
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])
    except Exception as e:  # truncated zip, pickle error, missing key: all mean "not usable"
        raise ReproError(
            f"cannot resume from {path}: the checkpoint is unreadable "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'}). "
            "It was probably cut off while being written. Delete it to train that seed from "
            "its start, or run the stage again without --resume."
        ) from e


def _record_lr(ctx: StageContext, seed: int, lr: float) -> None:
    """Keep the LR in the record before training, so a resume uses it instead of re-running the finder."""
    if ctx.run is None:
        return
    ctx.run.record.setdefault("lr_by_seed", {})[str(seed)] = lr
    ctx.run.save()


def fit_and_test(
    ctx: StageContext, seed: int, out_dir: Path, progress: bool = True
) -> dict[str, Any]:
    """Train with the resolved config and seed; return best-checkpoint val and test metrics.

    With ctx.extra["resume"], a seed that finished is read back from fit_result.json and one that
    was interrupted continues from out_dir/checkpoints/last.ckpt."""
    import json

    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    from repro.train.module import ClassificationModule

    out_dir.mkdir(parents=True, exist_ok=True)
    result_file = out_dir / "fit_result.json"
    resume = bool(ctx.extra.get("resume"))
    if resume and result_file.exists():
        ctx.console.print(
            f"seed {seed}: finished before the interruption; result read from {result_file.name}"
        )
        return json.loads(result_file.read_text())
    last = out_dir / "checkpoints" / "last.ckpt"
    ckpt_path = str(last) if resume and last.exists() else None
    quiet_lightning()
    r = ctx.resolved
    dm = ctx.build_datamodule(seed)
    dm.setup("fit")
    model = ctx.build_model(dm, seed)
    lr = r.get("optim.lr")
    known_lr = (ctx.extra.get("lr_by_seed") or {}).get(seed)
    module = ClassificationModule(model, r.section("optim"), r.section("schedule"), lr, seed=seed)
    info: dict[str, Any] = {"seed": seed}
    if lr is None and known_lr is not None:
        module.lr = float(known_lr)
        info["lr_finder"] = {"lr": float(known_lr), "note": "read from the record (resumed run)"}
    elif lr is None:
        info["lr_finder"] = find_lr(ctx, module, dm, out_dir)
        module.lr = info["lr_finder"]["lr"]
        seed_everything(seed, bool(r.get("deterministic", True)))
    info["lr"] = float(module.lr)
    _record_lr(ctx, seed, info["lr"])
    if ckpt_path:
        info["resumed_from"] = {
            "ckpt": str(last.relative_to(out_dir)),
            "epoch": checkpoint_epoch(last),
        }
        keep_rows_before_resume(out_dir, info["resumed_from"]["epoch"])
        ctx.console.print(
            f"seed {seed}: resuming from {info['resumed_from']['ckpt']} "
            f"(epoch {info['resumed_from']['epoch']})"
        )
    es_cfg = r.section("trainer").get("early_stopping") or {}
    monitor = es_cfg.get("monitor", "val/loss")
    mode = es_cfg.get("mode", "min")
    # save_last: last.ckpt after every epoch, what `repro stage full --resume` continues from
    ckpt = ModelCheckpoint(
        dirpath=str(out_dir / "checkpoints"),
        monitor=monitor,
        mode=mode,
        save_last=True,
        filename="best",
    )
    callbacks = [
        ckpt,
        EarlyStopping(
            monitor=monitor, patience=int(es_cfg.get("patience", 3)), mode=mode, check_finite=True
        ),
    ]
    tcfg = r.section("trainer")
    max_epochs = int(tcfg.get("max_epochs", 20))
    # 1cycle raises the LR for its first 30% (pct_start): val loss rises there by design, so early
    # stopping may not end the run before the peak (measured on the toy paper: stopped at epoch 6/15)
    min_epochs = math.ceil(0.3 * max_epochs) + 1 if r.get("schedule.name") == "onecycle" else 1
    info["min_epochs"] = min(min_epochs, max_epochs)
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        min_epochs=info["min_epochs"],
        accelerator=tcfg.get("accelerator", "auto"),
        devices=tcfg.get("devices", 1),
        precision=tcfg.get("precision", "32-true"),
        gradient_clip_val=tcfg.get("gradient_clip_val"),
        limit_train_batches=tcfg.get("limit_train_batches") or 1.0,
        log_every_n_steps=int(tcfg.get("log_every_n_steps", 10)),
        deterministic=bool(r.get("deterministic", True)),
        callbacks=callbacks,
        logger=_loggers(ctx, out_dir, f"{ctx.paper}-seed{seed}"),
        enable_progress_bar=progress,
        enable_model_summary=False,
        default_root_dir=str(out_dir),
    )
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    info["train_seconds"] = time.perf_counter() - t0
    info["epochs"] = int(trainer.current_epoch)
    if ckpt_path:  # epochs trained in this process
        info["epochs_this_process"] = info["epochs"] - info["resumed_from"]["epoch"] - 1
    info["global_steps"] = int(trainer.global_step)
    info["stopped_early"] = bool(callbacks[1].stopped_epoch)
    info["best_checkpoint"] = (
        str(Path(ckpt.best_model_path).relative_to(out_dir)) if ckpt.best_model_path else None
    )
    best = "best" if ckpt.best_model_path else None
    val = trainer.validate(module, datamodule=dm, ckpt_path=best, verbose=False)[0]
    test = trainer.test(module, datamodule=dm, ckpt_path=best, verbose=False)[0]
    metrics = {k: float(v) for k, v in {**val, **test}.items()}
    info["metrics"] = metrics
    info["train_examples"] = len(dm.splits["train"])
    for lg in trainer.loggers:
        lg.save()
    merge_resumed_rows(out_dir)
    if (out_dir / "metrics.csv").exists():
        plot_curves(out_dir / "metrics.csv", out_dir / "curves.png")
    result_file.write_text(json.dumps(info, indent=2, default=str))
    return info
