"""Evaluating a model outside Lightning: load a checkpoint's weights, run a split through the model
in eval mode, and gather what the task needs (metrics, per-unit scores, the trivial baseline's).

The full gate compares the model with the task's trivial baseline unit by unit on val and test
(repro/tasks/base.py: Comparison); `repro predict` and `repro eval` go through the same loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from repro.data.batch import Batch, model_inputs
from repro.errors import ReproError
from repro.storage import shown_path
from repro.tasks.base import Comparison, Task, compare_units


def split_loader(dm, split: str) -> DataLoader:
    """Every example of a split once, in order, in this process alone (no DDP sharding)."""
    from repro.data.datamodule import ShardSampler

    ds = dm.datasets[split]
    return DataLoader(
        ds,
        batch_size=dm.cfg.eval_batch,
        sampler=ShardSampler(len(ds), 0, 1),
        collate_fn=dm.collate,
        num_workers=0,
    )


class CheckpointMismatch(ReproError):
    """A checkpoint whose parameters do not fit the model: missing, unexpected, mis-shaped."""

    def __init__(self, checkpoint: Path, missing, unexpected, misshaped):
        self.checkpoint, self.missing, self.unexpected = checkpoint, missing, unexpected
        self.misshaped = misshaped  # [(name, shape in the checkpoint, shape in the model)]
        super().__init__(
            f"{shown_path(checkpoint)}: expected the parameters of the current model, found "
            + mismatch_text(missing, unexpected, misshaped)
        )


def mismatch_text(missing: list[str], unexpected: list[str], misshaped: list) -> str:
    """'missing: a, b; unexpected: c; mis-shaped: d (checkpoint (3, 4), model (3, 8))', each list
    cut at a few names (+N more)."""

    def names(items: list[str], n: int = 4) -> str:
        more = f" (+{len(items) - n} more)" if len(items) > n else ""
        return ", ".join(items[:n]) + more

    parts = []
    if missing:
        parts.append(f"missing in the checkpoint: {names(missing)}")
    if unexpected:
        parts.append(f"unexpected (not in the model): {names(unexpected)}")
    if misshaped:
        shown = [f"{k} (checkpoint {tuple(a)}, model {tuple(b)})" for k, a, b in misshaped]
        parts.append(f"mis-shaped: {names(shown, 3)}")
    return "; ".join(parts)


def read_checkpoint_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The model's weights of a Lightning checkpoint of repro's TaskModule (its keys carry the
    `model.` prefix, removed here), read with weights_only=True."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    except Exception as e:  # a truncated file, a refused pickle, a missing key: not usable
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ReproError(
            f"{checkpoint}: expected a Lightning checkpoint of tensors and plain values, found an "
            f"unreadable file ({detail[:200]})"
        ) from e
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


def load_weights(model: torch.nn.Module, checkpoint: Path) -> None:
    """Load a checkpoint's weights into `model`; CheckpointMismatch names every parameter (and
    buffer) that is missing, unexpected or of another shape, instead of torch's error."""
    weights = read_checkpoint_weights(checkpoint)
    mine = model.state_dict()
    missing = sorted(k for k in mine if k not in weights)
    unexpected = sorted(k for k in weights if k not in mine)
    misshaped = sorted(
        (k, list(v.shape), list(mine[k].shape))
        for k, v in weights.items()
        if k in mine and tuple(v.shape) != tuple(mine[k].shape)
    )
    if missing or unexpected or misshaped:
        raise CheckpointMismatch(checkpoint, missing, unexpected, misshaped)
    model.load_state_dict(weights)


def outputs(
    forward: Callable[[Batch], torch.Tensor],
    batches: Iterable[Batch],
    task: Task,
    metrics: bool,
    on_batch: Callable[[torch.Tensor, Batch], None] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """(the task's collected records of every example, concatenated; the split's metrics, {}
    unless `metrics`) of `forward` over `batches`, without gradients. `on_batch(out, batch)` sees
    every batch's output too (predictions, invariances)."""
    parts: dict[str, list[torch.Tensor]] = {}
    meters = task.make_metrics() if metrics else {}
    for m in meters.values():  # this process's examples are the whole split: gather nothing
        m.sync_on_compute = m._to_sync = False  # torchmetrics 1.9 reads _to_sync in compute()
    loss_sum, units = 0.0, 0.0
    with torch.no_grad():
        for batch in batches:
            out = forward(batch)
            if on_batch is not None:
                on_batch(out, batch)
            for k, v in task.collect(out, batch).items():
                parts.setdefault(k, []).append(v.detach().cpu())
            if metrics:
                s, n = task.loss_sum(out, batch)
                loss_sum, units = loss_sum + float(s), units + float(n)
                task.update_metrics(meters, out, batch)
    collected = {k: torch.cat(v) for k, v in parts.items()}
    if not metrics or not units:
        return collected, {}
    computed = {k: float(m.compute()) for k, m in meters.items()}
    return collected, task.finish_metrics(computed, loss_sum / units)


def encoded_loader(dm, items: list[dict[str, torch.Tensor]]) -> DataLoader:
    """Encoded examples in their order, in batches of the evaluation batch size, through the
    paper's collate: how the test phase batches its split."""
    from repro.data.datamodule import ListDataset

    return DataLoader(
        ListDataset(items), batch_size=dm.cfg.eval_batch, shuffle=False, collate_fn=dm.collate
    )


def model_forward(model: torch.nn.Module) -> Callable[[Batch], torch.Tensor]:
    model.eval()
    return lambda batch: model(**model_inputs(batch))


def train_labels(dm) -> list[torch.Tensor]:
    """The encoded label of every training example (what a trivial baseline is fitted on)."""
    ds = dm.datasets["train"]
    return [torch.as_tensor(ds[i]["label"]) for i in range(len(ds))]


def versus_baseline(
    model: torch.nn.Module, dm, task: Task, splits: tuple[str, ...] = ("val", "test")
) -> dict[str, Any]:
    """The trivial baseline fitted on train, its metrics on each split, and the model against it
    unit by unit: {"name", "metrics": {"val/acc": ...}, "units": {split: model's unit scores},
    "baseline_units": {split: ...}}; {} when the task has no baseline."""
    baseline = task.fit_baseline(train_labels(dm))
    if baseline is None:
        return {}
    forward = model_forward(model)
    result: dict[str, Any] = {"name": task.baseline_name, "metrics": {}, "units": {}}
    result["baseline_units"] = {}
    for split in splits:
        if not len(dm.datasets[split]):
            continue
        mine, _ = outputs(forward, split_loader(dm, split), task, metrics=False)
        theirs, m = outputs(baseline, split_loader(dm, split), task, metrics=True)
        result["units"][split] = task.unit_scores(mine)
        result["baseline_units"][split] = task.unit_scores(theirs)
        result["metrics"] |= {f"{split}/{k}": v for k, v in m.items()}
    return result


def comparisons(
    units: dict[str, list[torch.Tensor]], baseline_units: dict[str, torch.Tensor]
) -> dict[str, Comparison]:
    """Per split: the model's unit scores (averaged over seeds) against the baseline's."""
    return {
        split: compare_units(torch.stack(per_seed).mean(0), baseline_units[split])
        for split, per_seed in units.items()
        if split in baseline_units
    }
