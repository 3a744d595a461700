"""The seeded, stratified, idempotent train/val/test split used when a dataset has no official one."""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Hashable, Sequence

SPLITS = ("train", "val", "test")


_FIELD, _TOKEN = "\x1e", "\x1f"  # ASCII record and unit separators


def _token_text(values: list) -> str | None:
    """Fields that are strings or lists of string tokens as one text: a list as its length and
    its tokens joined by \x1f, fields joined by \x1e. None when a field is of another kind or a
    separator occurs inside a token (the text would not tell the fields apart)."""
    parts, separators = [], 0
    for v in values:
        if type(v) is list:
            try:
                parts.append(f"{len(v)}[{_TOKEN.join(v)}")
            except TypeError:  # not all strings
                return None
            separators += max(0, len(v) - 1)
        elif type(v) is str:
            parts.append("'" + v)
        else:
            return None
    text = _FIELD.join(parts)
    if text.count(_TOKEN) != separators or text.count(_FIELD) != len(parts) - 1:
        return None
    return "\x02" + text  # never the first character of a repr


def example_hash(example: dict, fields: Sequence[str]) -> str:
    """Hash of an example's input fields (not its label or id): equal inputs => equal hash.

    Text (strings, lists of string tokens) as joined text (`_token_text`); other values by their
    repr, or their JSON with sorted keys when a field is a dict (whose repr follows insertion
    order). The JSON of every example was the cost: ~3 us a Quora pair against ~1.3 us now
    (issue 21: 1.6M calls in one data gate at Quora's size, before the gate hashed each example
    once). Hashes are compared within one version of repro, across processes too (no form
    depends on PYTHONHASHSEED unless an input holds a set), never stored.
    """
    values = [example[f] for f in fields]
    payload = _token_text(values)
    if payload is None:
        if dict in map(type, values):
            payload = json.dumps(values, sort_keys=True, default=str)
        else:
            payload = repr(values)
    return hashlib.sha1(payload.encode("utf-8", "surrogatepass")).hexdigest()


def example_hashes(examples: Sequence[dict], fields: Sequence[str]) -> list[str]:
    """example_hash(ex, fields) of each example, the same values at ~3/4 of the CPU where every
    field is a string or a list of string tokens (text datasets): the texts are made without a
    check each, and the separators are counted once over them all, which is equivalent (a join
    inserts exactly the separators expected, so a text holds more only where a token holds one,
    and then the total is larger too). Otherwise, one example_hash per example."""
    texts, tokens = [], 0
    try:
        for ex in examples:
            parts = []
            for f in fields:
                v = ex[f]
                if type(v) is list:
                    parts.append(f"{len(v)}[{_TOKEN.join(v)}")
                    tokens += max(0, len(v) - 1)
                elif type(v) is str:
                    parts.append("'" + v)
                else:
                    raise TypeError(f"{f}: {type(v).__name__}")
            texts.append("\x02" + _FIELD.join(parts))
    except TypeError:  # a field of another kind, or a list holding one
        return [example_hash(ex, fields) for ex in examples]
    whole = "".join(texts)
    if whole.count(_TOKEN) != tokens or whole.count(_FIELD) != len(texts) * (len(fields) - 1):
        return [example_hash(ex, fields) for ex in examples]  # a separator inside a token
    return [hashlib.sha1(t.encode("utf-8", "surrogatepass")).hexdigest() for t in texts]


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


def sample_indices(n: int, k: int) -> list[int]:
    """k of range(n), the same for every build of the same size (sorted; all when n <= k)."""
    if n <= k:
        return list(range(n))
    return sorted(random.Random(0).sample(range(n), k))


def sample_splits(splits: dict[str, list], k: int) -> dict[str, list]:
    """Per split, the examples at sample_indices(len(split), k): at most k, in order, the same
    for every build whose splits are the same (the data gate's comparison builds, issue 21)."""
    return {s: [exs[i] for i in sample_indices(len(exs), k)] for s, exs in splits.items()}
