"""A nearest-centroid probe fitted on each split and scored on the others: when the labels of one
split mean something else (a label mapping applied to it alone, labels shuffled apart from their
inputs), probes fitted on the two other splits score well on each other and poorly on it.

Scores are balanced accuracies (mean recall over classes: chance is 1/C whatever the class
balance). The probe needs inputs from which it can learn something; where it is at chance on every
split it sees nothing, and a dataset whose labels are shuffled in every split looks like that.
"""

from __future__ import annotations

import math

import torch

from repro.data.features import Features

VIEWS = {  # probe name -> the features it reads; each view is probed on its own, so that a
    # thousand sparse id buckets do not drown a few informative dense columns
    "inputs": lambda f: f.dense,
    "bag of ids": lambda f: f.bags,
    "overlap of id inputs": lambda f: f.overlaps,
}


class Standardiser:
    """Fitted on one split: each column centred; dense ones scaled one by one, a bag of ids as a
    block (one scale), so that rare ids do not outweigh the rest."""

    def __init__(self, x: torch.Tensor, per_column: bool):
        self.mean = x.mean(0)
        if per_column:
            std = x.std(0, unbiased=False)
        else:
            std = (x - self.mean).pow(2).mean().sqrt().expand(x.shape[1])
        self.std = torch.where(std > 1e-8, std, torch.ones_like(std))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std  # (n, F)


def nearest_centroid(z_fit: torch.Tensor, y: torch.Tensor, z: torch.Tensor, num_classes: int):
    """Class of the nearest class mean of z_fit (n, F) for each row of z (m, F)."""
    centroids = torch.zeros(num_classes, z_fit.shape[1])  # (C, F)
    present = torch.zeros(num_classes, dtype=torch.bool)
    for c in range(num_classes):
        if (y == c).any():
            centroids[c], present[c] = z_fit[y == c].mean(0), True
    dist = torch.cdist(z, centroids)  # (m, C)
    dist[:, ~present] = float("inf")  # a class the fitting split lacks is never predicted
    return dist.argmin(1)  # (m,)


def balanced_accuracy(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[float, float]:
    """(mean recall over the classes present in y, its standard error)."""
    recalls, var = [], 0.0
    for c in range(num_classes):
        n_c = int((y == c).sum())
        if n_c:
            r = float((pred[y == c] == c).float().mean())
            recalls.append(r)
            var += r * (1 - r) / n_c
    k = len(recalls)
    return (sum(recalls) / k, math.sqrt(var) / k) if k else (float("nan"), float("nan"))


def transfer_matrix(
    feats: dict[str, torch.Tensor],
    labels: dict[str, torch.Tensor],
    num_classes: int,
    per_column: bool,
) -> dict[str, dict[str, tuple[float, float]]]:
    """{fitted on: {scored on: (balanced accuracy, standard error)}} for every pair of splits,
    for features (n, F) of one view."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for a in feats:
        standardise = Standardiser(feats[a], per_column)
        z_fit = standardise(feats[a])
        out[a] = {}
        for b in feats:
            if a != b:
                pred = nearest_centroid(z_fit, labels[a], standardise(feats[b]), num_classes)
                out[a][b] = balanced_accuracy(pred, labels[b], num_classes)
    return out


def probe_views(
    feats: dict[str, Features], labels: dict[str, torch.Tensor], num_classes: int
) -> dict[str, dict[str, dict[str, tuple[float, float]]]]:
    """transfer_matrix for each view (VIEWS) that has columns."""
    out = {}
    for view, pick in VIEWS.items():
        x = {s: pick(f) for s, f in feats.items()}
        if all(v.shape[1] for v in x.values()):
            out[view] = transfer_matrix(x, labels, num_classes, per_column=view != "bag of ids")
    return out


def odd_split(
    matrix: dict[str, dict[str, tuple[float, float]]], max_drop: float, z: float = 3.0
) -> dict[str, dict] | None:
    """The split whose labels disagree with the two others', or None.

    Split s is odd when, for each other split x (with y the third), the probe fitted on x scores
    at least `max_drop` lower on s than on y, and the drop exceeds z standard errors.
    """
    names = list(matrix)
    for s in names:
        others = [n for n in names if n != s]
        drops = {}
        for x in others:
            (y,) = [n for n in others if n != x]
            (acc_y, se_y), (acc_s, se_s) = matrix[x][y], matrix[x][s]
            drop = acc_y - acc_s
            if drop < max_drop or drop < z * math.hypot(se_y, se_s):
                break
            drops[x] = {"on": y, "acc_other": acc_y, "acc_odd": acc_s}
        else:
            return {"split": s, "drops": drops}
    return None
