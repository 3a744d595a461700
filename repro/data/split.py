"""The seeded, stratified, idempotent train/val/test split used when a dataset has no official one."""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Sequence

SPLITS = ("train", "val", "test")


def example_hash(example: dict, fields: Sequence[str]) -> str:
    """Hash of an example's input fields (not its label or id): equal inputs => equal hash."""
    payload = json.dumps([example[f] for f in fields], sort_keys=True, default=str)
    return hashlib.sha1(payload.encode("utf-8")).hexdigest()


def split_indices(
    labels: Sequence[int], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, list[int]]:
    """Indices per split, stratified by label so every class lands in every split when it can.

    Deterministic in (labels, fractions, seed): calling it twice gives the same split.
    """
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(
            f"split fractions must be 3 positive numbers summing to 1, got {list(fractions)}"
        )
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        by_class[y].append(i)
    rng = random.Random(seed)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for y in sorted(by_class):
        idx = by_class[y]
        rng.shuffle(idx)
        n = len(idx)
        n_val = max(1, round(fractions[1] * n)) if n >= 3 else 0
        n_test = max(1, round(fractions[2] * n)) if n >= 3 else 0
        out["val"] += idx[:n_val]
        out["test"] += idx[n_val : n_val + n_test]
        out["train"] += idx[n_val + n_test :]
    for s in SPLITS:
        out[s].sort()
    return out
