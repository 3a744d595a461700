"""Forecast the full stage's wall time and peak memory from what earlier stages measured.

Inputs come from the records: the overfit gate's steps/s (one fixed batch, forward + backward +
optimizer step), the data gate's split sizes, the model's parameter count and the overfit
process's peak RSS. It is arithmetic, not a simulation: see `forecast_full` for every assumption.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from repro.config.schema import RunConfig

EVAL_COST = (
    1 / 3
)  # a forward pass costs about a third of forward + backward + step (2 of 3 passes skipped)
BYTES_PER_PARAM = 16  # fp32 weights + gradients + Adam's two moments, 4 bytes each


@dataclass
class ForecastInputs:
    steps_per_s: float  # measured by the overfit gate at `measured_batch`
    measured_batch: int
    n_train: int
    n_val: int
    n_test: int
    batch_size: int
    eval_batch_size: int
    max_epochs: int
    seeds: int = 1
    lr_finder_steps: int = 0  # 0 when optim.lr is set (no finder)
    limit_train_batches: float | int | None = None
    params: int | None = None
    overfit_peak_rss_mb: float | None = None
    device: str = "cpu"


def step_seconds(steps_per_s: float, measured_batch: int, batch: int) -> float:
    """Seconds for one training step at `batch`: the measured step, scaled up linearly when the
    batch is larger than the measured one (never scaled down: small steps are overhead-bound)."""
    return (1.0 / steps_per_s) * max(1.0, batch / max(1, measured_batch))


def train_batches(n_train: int, batch: int, limit: float | int | None) -> int:
    n = math.ceil(n_train / batch)
    if limit is None:
        return n
    if isinstance(limit, float) and limit <= 1.0:
        return max(1, int(n * limit))
    return min(n, int(limit))


def forecast_full(i: ForecastInputs) -> dict[str, Any]:
    """Upper-bound time (every epoch runs: early stopping can only shorten it) and a rough memory figure."""
    step_s = step_seconds(i.steps_per_s, i.measured_batch, i.batch_size)
    eval_step_s = step_seconds(i.steps_per_s, i.measured_batch, i.eval_batch_size) * EVAL_COST
    n_steps = train_batches(i.n_train, i.batch_size, i.limit_train_batches)
    val_s = math.ceil(i.n_val / i.eval_batch_size) * eval_step_s
    test_s = math.ceil(i.n_test / i.eval_batch_size) * eval_step_s
    epoch_s = n_steps * step_s + val_s
    finder_s = i.lr_finder_steps * step_s
    per_seed_s = (
        finder_s + i.max_epochs * epoch_s + val_s + test_s
    )  # + validate and test the best checkpoint
    total_s = i.seeds * per_seed_s
    state_mb = (i.params or 0) * BYTES_PER_PARAM / 2**20
    # The overfit process held the same model, Adam state and the dataset; activations at a larger
    # batch are not measured, hence the wide band.
    peak_mb = (i.overfit_peak_rss_mb + state_mb) if i.overfit_peak_rss_mb is not None else None
    return {
        "inputs": asdict(i),
        "step_s": step_s,
        "train_steps_per_epoch": n_steps,
        "s_per_epoch": epoch_s,
        "lr_finder_s": finder_s,
        "eval_s": val_s + test_s,
        "epochs": i.max_epochs,
        "seeds": i.seeds,
        "total_s": total_s,
        "param_state_mb": state_mb,
        "peak_rss_mb": peak_mb,
        "note": "upper bound on time (all epochs, no early stopping); overfit's steps/s scaled linearly with "
        "batch size; Lightning's per-step overhead and data loading not measured; memory ±50%",
    }


def _minutes(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def format_forecast(fc: dict[str, Any]) -> str:
    i = fc["inputs"]
    seeds = f" × {fc['seeds']} seeds" if fc["seeds"] > 1 else ""
    text = (
        f"forecast: ≤ {_minutes(fc['total_s'])} for {fc['epochs']} epochs{seeds} "
        f"(≈ {fc['s_per_epoch']:.2f} s/epoch: {fc['train_steps_per_epoch']} steps of batch {i['batch_size']} at "
        f"{i['steps_per_s']:.1f} steps/s measured by overfit at batch {i['measured_batch']}, + val at 1/3 cost)"
    )
    if fc["lr_finder_s"]:
        text += f"; LR finder ≈ {fc['lr_finder_s']:.0f} s per seed"
    if fc["peak_rss_mb"] is not None:
        text += f"; peak memory ≈ {fc['peak_rss_mb']:.0f} MB (overfit's peak RSS + {fc['param_state_mb']:.1f} MB"
        text += " weights/grads/Adam; ±50%)"
    return text + f"; device {i['device']}"


def inputs_from_records(runs_dir: Path, paper: str, cfg: RunConfig) -> ForecastInputs | None:
    """The forecast inputs from the newest passed data and overfit runs, or None when missing."""
    from repro.gates.metrics import DataMetrics, OverfitMetrics, load_metrics
    from repro.records import latest_run

    data = latest_run(runs_dir, paper, "data", status="passed")
    overfit = latest_run(runs_dir, paper, "overfit", status="passed")
    sizes = load_metrics(DataMetrics, data.record) if data else None
    speed = load_metrics(OverfitMetrics, overfit.record) if overfit else None
    if sizes is None or speed is None or not speed.steps_per_s:
        return None
    model = overfit.record.get("model") or {}
    device = ((overfit.record.get("env") or {}).get("device") or {}).get("device", "?")
    return ForecastInputs(
        steps_per_s=speed.steps_per_s,
        measured_batch=speed.batch_size,
        n_train=sizes.sizes.get("train", 0),
        n_val=sizes.sizes.get("val", 0),
        n_test=sizes.sizes.get("test", 0),
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch,
        max_epochs=cfg.trainer.max_epochs,
        seeds=cfg.seeds,
        lr_finder_steps=0 if cfg.optim.lr is not None else cfg.lr_finder.num_training,
        limit_train_batches=cfg.trainer.limit_train_batches,
        params=model.get("total"),
        overfit_peak_rss_mb=overfit.record.get("peak_rss_mb"),
        device=str(device),
    )


def print_forecast(runs_dir: Path, paper: str, cfg: RunConfig, console) -> dict[str, Any] | None:
    """Estimate the full stage's time and memory from the earlier stages' records; print it."""
    inputs = inputs_from_records(runs_dir, paper, cfg)
    if inputs is None:
        console.print(
            "forecast: unavailable (needs passed data and overfit runs with throughput measured)"
        )
        return None
    fc = forecast_full(inputs)
    console.print(format_forecast(fc), highlight=False)
    return fc


def compare(forecast: dict[str, Any] | None, actual: dict[str, Any] | None) -> str | None:
    """One line: forecast vs actual per-epoch time and total, for `repro show`."""
    if not forecast or not actual:
        return None
    parts = [
        f"forecast ≤ {_minutes(forecast['total_s'])} vs actual {_minutes(actual.get('wall_s') or 0)} wall"
    ]
    if actual.get("s_per_epoch") is not None:
        parts.append(
            f"{forecast['s_per_epoch']:.2f} vs {actual['s_per_epoch']:.2f} s/epoch "
            f"({actual.get('epochs')} epochs run of {forecast['epochs'] * forecast['seeds']} forecast)"
        )
    if forecast.get("peak_rss_mb") is not None and actual.get("peak_rss_mb") is not None:
        parts.append(
            f"peak memory ≈ {forecast['peak_rss_mb']:.0f} vs {actual['peak_rss_mb']:.0f} MB"
        )
    return "; ".join(parts)
