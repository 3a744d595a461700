"""Counting a model's parameters (shared parameters counted once)."""

from __future__ import annotations

from torch import nn


def count_params(model: nn.Module) -> dict[str, int]:
    """{"trainable": ..., "total": ...}: model.parameters() yields a shared parameter once."""
    params = list(model.parameters())
    return {
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "total": sum(p.numel() for p in params),
    }
