"""Regression: a real value (or a vector of them) per example, mean squared error."""

from __future__ import annotations

import math
from collections.abc import Mapping
from statistics import NormalDist
from typing import Any

import torch
import torch.nn.functional as F

from repro.data.batch import Batch
from repro.tasks.base import Baseline, InitLoss, Task
from repro.tasks.catalog import BUILTIN
from repro.verdict import Check


def _aligned(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The output as the label's shape: (B, 1) outputs for (B,) labels lose their last dim."""
    if out.dim() == 2 and out.shape[1] == 1 and y.dim() == 1:
        return out[:, 0]
    return out


def _labels(example: Mapping[str, Any]) -> list[float]:
    y = example["label"]
    if isinstance(y, torch.Tensor):
        return [float(v) for v in y.reshape(-1)]
    return [float(v) for v in (y if isinstance(y, list | tuple) else [y])]


class Regression(Task):
    """One real value per example (or a fixed-length vector): the model returns (B,) or (B, 1)
    for a (B,) label, (B, K) for a (B, K) label; mean squared error. Standardise the target
    (fitted on train): the loss at init is then about 1, and the gates' thresholds mean what they
    say."""

    name = "regression"
    metrics = BUILTIN["regression"].metrics
    primary = BUILTIN["regression"].primary
    baseline_name = "the mean of the training targets"
    unit_score = "minus the squared error"
    output_contract = "a value per example, (B,) or (B, 1), or (B, K) for K targets"

    # ---- raw examples ---------------------------------------------------------------------------
    def check_example(self, example: Mapping[str, Any], where: str) -> None:
        y = example.get("label") if isinstance(example, Mapping) else None
        values = y if isinstance(y, list | tuple) else [y]
        if isinstance(y, torch.Tensor):
            values = y.reshape(-1).tolist() if y.is_floating_point() or y.dim() == 0 else [None]
        ok = bool(values) and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in values
        )
        if not ok:
            raise self._bad_label(where, "a finite number (or a list of them) as 'label'", example)

    # ---- outputs, loss, metrics -----------------------------------------------------------------
    def check_output(self, out: Any, batch: Batch) -> str | None:
        problem = super().check_output(out, batch)
        if problem:
            return problem
        y = batch["label"]
        if tuple(_aligned(out, y).shape) != tuple(y.shape):
            return (
                f"output shape {tuple(out.shape)} does not fit the labels {tuple(y.shape)}: "
                f"expected {tuple(y.shape)}" + (" or (B, 1)" if y.dim() == 1 else "")
            )
        if not out.is_floating_point():
            return f"output dtype {out.dtype}: expected floating-point values"
        return None

    def loss(self, out: torch.Tensor, batch: Batch) -> torch.Tensor:
        y = batch["label"]
        return F.mse_loss(_aligned(out, y), y.to(out.dtype))

    def loss_sum(self, out: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        if type(self).loss is not Regression.loss:  # a subclass with a loss of its own
            return super().loss_sum(out, batch)
        y = batch["label"].double()
        err = (_aligned(out, y).double() - y) ** 2
        return err.sum(), torch.tensor(float(err.numel()), dtype=torch.float64, device=out.device)

    def make_metrics(self) -> dict[str, Any]:
        from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError, R2Score

        return {
            "mse": MeanSquaredError().set_dtype(torch.float64),
            "mae": MeanAbsoluteError().set_dtype(torch.float64),
            "r2": R2Score(multioutput="uniform_average").set_dtype(torch.float64),
        }

    def update_metrics(self, metrics: dict[str, Any], out: torch.Tensor, batch: Batch) -> None:
        y = batch["label"].double()
        pred = _aligned(out, y).double()
        for m in metrics.values():
            m.update(pred, y)

    def finish_metrics(self, computed: dict[str, float], loss: float) -> dict[str, float]:
        return {"loss": loss, **computed, "rmse": math.sqrt(computed["mse"])}

    # ---- per-unit scores and the baseline -------------------------------------------------------
    def collect(self, out: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        y = batch["label"].double()
        err = (_aligned(out, y).double() - y) ** 2
        return {"sq_err": err.reshape(len(y), -1).mean(1)}

    def unit_scores(self, collected: dict[str, torch.Tensor]) -> torch.Tensor:
        return -collected["sq_err"]

    def fit_baseline(self, train_labels: list[torch.Tensor]) -> Baseline | None:
        """Always the mean of the training targets."""
        mean = torch.stack([torch.as_tensor(y, dtype=torch.float64) for y in train_labels]).mean(0)
        return lambda batch: mean.to(batch["label"].device).expand_as(batch["label"]).clone()

    # ---- predictions and invariances ------------------------------------------------------------
    # A prediction "changes" under a transformation when it moves by more than this, in the
    # model's output units: 1% of the target's standard deviation for a standardised target.
    change_atol: float = 0.01

    def placeholder_label(self, example: Mapping[str, Any]) -> dict[str, Any]:
        return {**example, "label": 0.0} if example.get("label") is None else dict(example)

    def describe(self, out: torch.Tensor, batch: Batch) -> list[dict[str, Any]]:
        """The predicted value (a list of values for K targets), in the model's output units (the
        datamodule's present_prediction may turn a standardised value into the target's units)."""
        rows = out.detach().double().cpu().reshape(len(out), -1)  # (B, K)
        if rows.shape[1] == 1:
            return [{"value": float(r[0])} for r in rows]
        return [{"values": r.tolist()} for r in rows]

    def prediction_change(
        self, out: torch.Tensor, other: torch.Tensor, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Change: the mean |difference| of the values; changed: above change_atol."""
        d = (out.double() - other.double()).abs().reshape(len(out), -1).mean(1)  # (B,)
        return d > self.change_atol, d

    # ---- gates ----------------------------------------------------------------------------------
    def init_loss(self, batch: Batch) -> InitLoss | None:
        """repro's init starts the output layer small, so a fresh model outputs about 0 and its
        MSE is about mean(y²) = var(y) + mean(y)² (1 for a standardised target)."""
        y = batch["label"].double()
        ms = float((y**2).mean())
        why = "outputs start near 0 (repro's init starts the output layer small), so MSE ≈ mean(y²)"
        if ms > 100:
            why += f" = {ms:.4g}: the target is not standardised; standardise it on train"
        return InitLoss(ms, ms, why, "mean(y²)")

    def label_summary(self, examples: list[Mapping[str, Any]]) -> dict[str, Any]:
        values = [v for ex in examples for v in _labels(ex)]
        if not values:
            return {}
        t = torch.tensor(values, dtype=torch.float64)
        std = float(t.std()) if len(values) > 1 else 0.0
        return {"label_mean": round(float(t.mean()), 6), "label_std": round(std, 6)}

    def label_checks(self, dm, st) -> list[Check]:
        return [check_target_shift(dm.splits, st.max_target_shift, st.chance_p)]


def check_target_shift(splits: dict[str, list], max_shift: float, chance_p: float) -> Check:
    """val/test targets are distributed as train's: the Kolmogorov-Smirnov statistic of each
    target dimension (mean over dimensions) within max_shift, or within what chance gives splits
    this small."""
    from repro.data.shift import chance_bound, mean_shift

    name = "targets distributed alike in every split"
    train = torch.tensor([_labels(ex) for ex in splits["train"]], dtype=torch.float64)
    z = NormalDist().inv_cdf(1 - chance_p)
    ev: dict[str, Any] = {}
    over = {}
    for s in ("val", "test"):
        other = torch.tensor([_labels(ex) for ex in splits[s]], dtype=torch.float64)
        m = mean_shift(train, other) if len(train) and len(other) else None
        if m is None:
            continue
        limit = max(max_shift, chance_bound(len(train), len(other), z))
        ev[s] = {"mean_ks": round(m[0], 3), "limit": round(limit, 3)}
        if m[0] > limit:
            over[s] = (m[0], limit)
    if not ev:
        return Check.not_measured(name, "the training targets do not vary", ev)
    desc = ", ".join(f"{s} KS {v['mean_ks']:.2f} (max {v['limit']:.2g})" for s, v in ev.items())
    if over:
        s = max(over, key=lambda k: over[k][0])
        return Check(
            name,
            False,
            f"{s} targets are distributed unlike train's ({desc}): a target transformed in one "
            "split only (scaled, shifted, another unit), or a split that is not random; transform "
            "every split alike, with statistics fitted on train",
            ev,
        )
    return Check(name, True, f"targets vs train: {desc}", ev)
