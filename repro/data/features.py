"""Encoded items as fixed-width float features, for the data gate's probe and shift tests.

Per input key: floating inputs are flattened (sequences of vectors: averaged over their first
dimension); integer inputs (token ids) give their length (non-padding ids) as a dense feature and
a bag of ids hashed into `buckets` (frequencies) as sparse ones. Two integer inputs of the same
rank (a premise and a hypothesis, two questions) also give the overlap of their id sets
(Jaccard): what a pair task's simplest baseline reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from repro.data.batch import is_input


@dataclass
class Features:
    dense: torch.Tensor  # (n, Fd) float inputs and lengths: comparable across splits one by one
    bags: torch.Tensor  # (n, Fb) hashed id frequencies
    overlaps: torch.Tensor  # (n, Fo) Jaccard overlap of each pair of same-rank id inputs
    names: list[str]  # one per dense column


def featurize(items: list[dict[str, torch.Tensor]], buckets: int) -> Features:
    """Features of encoded items (dicts of tensors with "label", as a dataset yields them)."""
    n = len(items)
    dense, bags, names = [], [], []
    id_sets: dict[str, list[set[int]]] = {}
    ranks: dict[str, int] = {}
    for key in sorted(k for k in items[0] if is_input(k)) if items else []:
        ts = [torch.as_tensor(it[key]) for it in items]
        if ts[0].dtype.is_floating_point:
            if len({t.shape for t in ts}) > 1:  # a sequence of vectors: its mean vector
                ts = [t.float().reshape(t.shape[0], -1).mean(0) if t.dim() else t for t in ts]
                if len({t.shape for t in ts}) > 1:
                    continue
            x = torch.stack([t.reshape(-1).float() for t in ts])  # (n, F)
            dense.append(x)
            names += [f"{key}[{j}]" for j in range(x.shape[1])]
            continue
        ids = [[i for i in t.reshape(-1).tolist() if i != 0] for t in ts]  # padding is not content
        lengths = torch.tensor([float(len(r)) for r in ids])  # (n,)
        dense.append(lengths[:, None])
        names.append(f"len({key})")
        owner = torch.repeat_interleave(torch.arange(n), lengths.long())  # (total,)
        flat = torch.tensor([i for r in ids for i in r], dtype=torch.long) % buckets
        counts = torch.bincount(owner * buckets + flat, minlength=n * buckets)
        bags.append(counts.float().reshape(n, buckets) / lengths.clamp(min=1)[:, None])  # (n, B)
        id_sets[key], ranks[key] = [set(r) for r in ids], ts[0].dim()
    return Features(
        dense=torch.cat(dense, 1) if dense else torch.zeros(n, 0),
        bags=torch.cat(bags, 1) if bags else torch.zeros(n, 0),
        overlaps=_overlaps(id_sets, ranks, n),
        names=names,
    )


def _overlaps(id_sets: dict[str, list[set[int]]], ranks: dict[str, int], n: int) -> torch.Tensor:
    """(n, pairs) Jaccard overlap of the id sets of each pair of same-rank id inputs."""
    keys = list(id_sets)
    pairs = [(a, b) for i, a in enumerate(keys) for b in keys[i + 1 :] if ranks[a] == ranks[b]]
    cols = [
        [len(x & y) / max(1, len(x | y)) for x, y in zip(id_sets[a], id_sets[b], strict=True)]
        for a, b in pairs
    ]
    return torch.tensor(cols).T if cols else torch.zeros(n, 0)  # (n, pairs)
