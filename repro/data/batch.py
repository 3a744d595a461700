"""A batch is a dict of tensors: the targets ("label", and "group" for ranking) plus the model's
keyword arguments. One place says which keys are which."""

from __future__ import annotations

from typing import TYPE_CHECKING

from repro.errors import PaperError

if TYPE_CHECKING:
    import torch

Batch = dict[str, "torch.Tensor"]

# Keys that are never passed to the model: the label, and the query a ranked item belongs to.
TARGET_KEYS = ("label", "group")
# Keys of a raw example that are not inputs (an example's id is not content either).
NON_INPUT_FIELDS = (*TARGET_KEYS, "id")


def is_input(key: str) -> bool:
    return key not in TARGET_KEYS


def model_inputs(batch: Batch) -> Batch:
    """Every key but the targets: what `model(**inputs)` takes."""
    return {k: v for k, v in batch.items() if k not in TARGET_KEYS}


def split_batch(batch: Batch) -> tuple[Batch, torch.Tensor]:
    """(model kwargs, labels); a batch without "label" breaks the paper contract."""
    if "label" not in batch:
        raise PaperError(
            f"batch: expected a 'label' key beside the model's inputs, found keys {sorted(batch)}; "
            "the paper's collate must return the labels under 'label'"
        )
    return model_inputs(batch), batch["label"]


def batch_size(batch: Batch) -> int:
    """Rows of the batch (its label's first dimension)."""
    return int(batch["label"].shape[0])


def rows(batch: Batch, index) -> Batch:
    """The same rows of every tensor of the batch (`index`: a slice, a list or a tensor)."""
    return {k: v[index] for k, v in batch.items()}
