"""A batch is a dict of tensors: "label" plus the model's keyword arguments. One place splits it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from repro.errors import PaperError

if TYPE_CHECKING:
    import torch

Batch = dict[str, "torch.Tensor"]


def model_inputs(batch: Batch) -> Batch:
    """Every key but "label": what `model(**inputs)` takes."""
    return {k: v for k, v in batch.items() if k != "label"}


def split_batch(batch: Batch) -> tuple[Batch, torch.Tensor]:
    """(model kwargs, labels); a batch without "label" breaks the paper contract."""
    if "label" not in batch:
        raise PaperError(
            f"batch: expected a 'label' key beside the model's inputs, found keys {sorted(batch)}; "
            "the paper's collate must return the labels under 'label'"
        )
    return model_inputs(batch), batch["label"]
