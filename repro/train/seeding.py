"""Seeding: same seed and config -> same numbers on CPU (python, numpy and torch RNGs, deterministic
algorithms)."""

from __future__ import annotations

import os


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed python, numpy and torch; deterministic algorithms on when asked (config `deterministic`)."""
    import random

    import numpy as np
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
