"""The seeded, stratified, idempotent train/val/test split used when a dataset has no official one."""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Hashable, Sequence

SPLITS = ("train", "val", "test")


def example_hash(example: dict, fields: Sequence[str]) -> str:
    """Hash of an example's input fields (not its label or id): equal inputs => equal hash."""
    payload = json.dumps([example[f] for f in fields], sort_keys=True, default=str)
    return hashlib.sha1(payload.encode("utf-8")).hexdigest()


def split_indices(
    n: int,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    strata: Sequence[Hashable] | None = None,
    groups: Sequence[Hashable] | None = None,
) -> dict[str, list[int]]:
    """Indices of n examples per split: whole groups when `groups` is given (a ranking query and
    its items stay together), else stratified by `strata` (a class label: every class lands in
    every split when it can), else one shuffled stratum.

    Deterministic in (n, fractions, seed, strata, groups): calling it twice gives the same split.
    """
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(
            f"split fractions must be 3 positive numbers summing to 1, got {list(fractions)}"
        )
    rng = random.Random(seed)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    if groups is not None:
        members: dict[Hashable, list[int]] = defaultdict(list)
        for i, g in enumerate(groups):
            members[g].append(i)
        parts = _divide(list(members), fractions, rng)  # first-seen order, then shuffled
        for s in SPLITS:
            out[s] = sorted(i for g in parts[s] for i in members[g])
        return out
    by_stratum: dict[Hashable, list[int]] = defaultdict(list)
    for i, y in enumerate(strata if strata is not None else [0] * n):
        by_stratum[y].append(i)
    for y in sorted(by_stratum):
        for s, idx in _divide(by_stratum[y], fractions, rng).items():
            out[s] += idx
    for s in SPLITS:
        out[s].sort()
    return out


def _divide(items: list, fractions: Sequence[float], rng: random.Random) -> dict[str, list]:
    """items shuffled, then cut: val and test get their fraction (at least 1 of 3 or more)."""
    rng.shuffle(items)
    n = len(items)
    n_val = max(1, round(fractions[1] * n)) if n >= 3 else 0
    n_test = max(1, round(fractions[2] * n)) if n >= 3 else 0
    return {
        "val": items[:n_val],
        "test": items[n_val : n_val + n_test],
        "train": items[n_val + n_test :],
    }
