"""Checkpoints written atomically: a run killed while saving leaves the previous file intact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from repro.storage import atomic_replace


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save to a new hidden temp file beside the target (created exclusively: never through a
    symbolic link planted there), fsync it, then rename it over the target: a kill mid-write
    leaves the old checkpoint (or none), never a truncated one that --resume reads; a link at
    the target is replaced, not written through (issue 20)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_replace(path, lambda f: torch.save(checkpoint, f), "a checkpoint")
